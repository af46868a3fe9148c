"""A pytest plugin for end-to-end tests against a running lab: the session fixture `onionlab_lab`.

Installed with onionlab (entry point `pytest11`), so any test can ask for it:

    def test_fetch_through_the_lab(onionlab_lab):
        host, port = onionlab_lab.socks_address()           # the client's SOCKS5, on 127.0.0.1
        onion = onionlab_lab.onion()                        # the onion service's address
        ...
        onionlab_lab.kill("relay3"); onionlab_lab.restart("relay3")

The lab comes up once per test session, the first time a test asks for it, and goes down when the session
ends, whatever happened (by label: every container, network and volume of the run). Which lab, in order:

    --onionlab-topology FILE   command line
    $ONIONLAB_TOPOLOGY         environment
    onionlab_topology = FILE   ini option (pytest.ini, pyproject.toml [tool.pytest.ini_options], ...),
                               relative to the ini file's directory
    topologies/default.yaml    in the rootdir, else the one shipped with onionlab

and `--onionlab-backend` / `onionlab_backend` (docker, the default, or local), `--onionlab-timeout` /
`onionlab_timeout` (seconds until every node must be ready; default 120). A lab that does not come up fails
the tests that use it with the cause (a node's own log when it crashed).
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.backends import BACKENDS, DEFAULT_BACKEND, BackendError, RunInfo, StartFailed, open_backend
from orchestrator.topology import TopologyError, load_topology

TOPOLOGY_ENV = "ONIONLAB_TOPOLOGY"
DEFAULT_TOPOLOGY = Path("topologies", "default.yaml")
BUNDLED_TOPOLOGY = Path(__file__).resolve().parents[1] / DEFAULT_TOPOLOGY
DEFAULT_TIMEOUT = 120.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("onionlab", "onionlab lab for end-to-end tests (fixture onionlab_lab)")
    group.addoption("--onionlab-topology", metavar="FILE", default=None,
                    help=f"the topology of the lab (default: ${TOPOLOGY_ENV}, the onionlab_topology ini "
                         f"option, else {DEFAULT_TOPOLOGY})")
    group.addoption("--onionlab-backend", choices=BACKENDS, default=None,
                    help=f"docker or local (default: the onionlab_backend ini option, else "
                         f"{DEFAULT_BACKEND})")
    group.addoption("--onionlab-timeout", type=float, default=None, metavar="S",
                    help=f"seconds for the lab to become ready (default: {DEFAULT_TIMEOUT:g})")
    parser.addini("onionlab_topology", "the topology file of the onionlab_lab fixture", default="")
    parser.addini("onionlab_backend", "the backend of the onionlab_lab fixture", default=DEFAULT_BACKEND)
    parser.addini("onionlab_timeout", "seconds for the onionlab_lab fixture's lab to become ready",
                  default=str(DEFAULT_TIMEOUT))


@dataclass(frozen=True, slots=True)
class ExecResult:
    exit_code: int
    output: str  # stdout and stderr, interleaved


class Lab:
    """A running lab: its addresses, and a way to act on its nodes (exec, kill, restart need docker)."""

    def __init__(self, backend, info: RunInfo, progress: list[str]) -> None:
        self.backend = backend
        self.info = info
        self.progress = progress  # what `up` reported, with seconds since it began

    @property
    def run_id(self) -> str | None:
        return self.info.run_id

    @property
    def nodes(self) -> list[str]:
        return [n.name for n in self.info.nodes]

    @property
    def onions(self) -> dict[str, str]:
        """Each onion service's address ("<56 chars>.onion") by node name."""
        return {s["name"]: s["onion"] for s in self.status()["onion_services"] if s["onion"]}

    @property
    def socks(self) -> dict[str, str]:
        """Each client's SOCKS5 address ("127.0.0.1:PORT" under docker) by node name."""
        return {c["name"]: c["socks"] for c in self.status()["clients"] if c["socks"]}

    def onion(self, name: str | None = None) -> str:
        """The onion address of the service `name`, or of the lab's only onion service."""
        return self._one(self.onions, name, "onion service")

    def socks_address(self, name: str | None = None) -> tuple[str, int]:
        """(host, port) of the client `name`'s SOCKS5 port, or of the lab's only client."""
        host, _, port = self._one(self.socks, name, "client").rpartition(":")
        return host, int(port)

    def status(self) -> dict:
        """{"nodes": [{name, role, address, ready}], "onion_services": [...], "clients": [...]}, live."""
        return self.backend.status()

    def logs(self, name: str) -> str:
        return self.backend.logs(name)

    def exec(self, name: str, command: list[str] | str) -> ExecResult:
        """Run `command` (a list, or a string split like a shell would) in the node's container."""
        argv = shlex.split(command) if isinstance(command, str) else list(command)
        code, output = self._docker("exec").exec(name, argv)
        return ExecResult(code, output)

    def kill(self, name: str, signal: str = "SIGKILL") -> None:
        """Send `signal` (default SIGKILL) to the node."""
        self._docker("kill").kill(name, signal)

    def restart(self, name: str, *, timeout: float = 60.0) -> dict:
        """Restart the node (or start it again after `kill`) and wait until it is ready; its /status."""
        status = self._docker("restart").restart(name, timeout=timeout)
        self.info = self.backend._state()  # a client's SOCKS port may be published elsewhere now
        return status

    def _docker(self, what: str):
        if self.backend.name != "docker":
            raise BackendError(f"{what} needs the docker backend; this lab runs on {self.backend.name}")
        return self.backend

    @staticmethod
    def _one(found: dict[str, str], name: str | None, what: str) -> str:
        if name is not None:
            if name not in found:
                raise KeyError(f"no {what} named {name!r} with an address (known: {', '.join(found)})")
            return found[name]
        if len(found) != 1:
            raise KeyError(f"the lab has {len(found)} {what}s with an address ({', '.join(found)}); name one")
        return next(iter(found.values()))


def _topology_path(config: pytest.Config) -> Path:
    option = config.getoption("onionlab_topology")
    if option:
        return Path(option)
    if os.environ.get(TOPOLOGY_ENV):
        return Path(os.environ[TOPOLOGY_ENV])
    ini = config.getini("onionlab_topology")
    if ini:
        base = config.inipath.parent if config.inipath else config.rootpath
        return base / ini
    found = config.rootpath / DEFAULT_TOPOLOGY
    return found if found.exists() else BUNDLED_TOPOLOGY


@pytest.fixture(scope="session")
def onionlab_lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The session's lab, up and ready; removed (by label) when the session ends."""
    config = request.config
    path = _topology_path(config)
    try:
        topology = load_topology(path)
    except TopologyError as e:
        pytest.fail(f"onionlab_lab: bad topology:\n{e}", pytrace=False)
    backend_name = config.getoption("onionlab_backend") or config.getini("onionlab_backend")
    timeout = config.getoption("onionlab_timeout") or float(config.getini("onionlab_timeout"))
    run_dir = tmp_path_factory.mktemp("onionlab-run")
    progress: list[str] = []
    started = time.monotonic()

    def say(line: str) -> None:
        progress.append(f"[{time.monotonic() - started:5.1f}s] {line}")

    try:
        backend = open_backend(backend_name, run_dir)
        info = backend.up(topology, timeout=timeout, progress=say)
    except (StartFailed, BackendError) as e:  # up has removed what it made
        log = "\n".join(progress)
        pytest.fail(f"onionlab_lab: {path} did not come up ({backend_name}): {e}\n{log}", pytrace=False)
    try:
        yield Lab(backend, info, progress)
    finally:
        backend.down()
