"""Backends run a topology: `docker` (one container per node on real Docker networks, backends/docker/, the
default), `local` (processes on 127.0.0.x, backends/local.py) and `swarm` (a stack on a Docker Swarm,
backends/swarm/). Both keep the contract of backends/base.py
(typed Protocols: Backend, FaultBackend, NetworkFaultBackend) and say which chaos faults they support.

Every backend keeps what it started in `<run dir>/state.json` (RunInfo), so that `onionlab status`, `down` and
`logs` work from a later process. The run dir is `$ONIONLAB_RUN_DIR`, else `.onionlab/run` in the current
directory.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nodes.config import command_word
from orchestrator import readiness
from orchestrator.signals import signal_of

BACKENDS = ("docker", "local", "swarm")
DEFAULT_BACKEND = "docker"
STATE_FILE = "state.json"


class BackendError(Exception):
    """A run could not be started, inspected or stopped; the message is written for the user."""


class StartFailed(BackendError):
    """`up` started nodes but the run did not become ready; every node is stopped, the logs are kept."""


class NodeFailed(StartFailed):
    """A node process died while the run was coming up; the message starts with the cause, then its log."""

    def __init__(self, node: str, message: str) -> None:
        self.node = node
        super().__init__(message)


def failure_reason(failure: BaseException) -> str:
    """What RunInfo.failed says about what ended an `up`: "interrupted by SIGTERM", the first line of a
    BackendError, else the exception."""
    if isinstance(failure, KeyboardInterrupt):
        return f"interrupted by {signal_of(failure).name}"
    text = str(failure).splitlines()[0] if str(failure) else ""
    return text if isinstance(failure, BackendError) and text else f"{type(failure).__name__}: {text}"


def default_run_dir() -> Path:
    return Path(os.environ.get("ONIONLAB_RUN_DIR") or Path.cwd() / ".onionlab" / "run")


@dataclass(slots=True)
class RunNode:
    name: str
    role: str
    address: str  # where it listens and what the others dial
    ports: dict[str, int]  # control_port, and or_port / dir_port / socks_port where the role has them
    pid: int | None = None  # the process (group leader), once started
    services: list[int] = field(default_factory=list)  # onion services: the virtual ports
    onion: str | None = None  # onion services, once their /status reports it
    socks: str | None = None  # clients: "HOST:PORT" (docker: the port published on the host's 127.0.0.1)
    container: str | None = None  # docker: the container's name
    control: str | None = None  # "HOST:PORT" where the orchestrator reaches /status, when not address:port
    impl: str = "onionlab"  # "tor": a stock tor plays the node (`python -m nodes tor`)

    @property
    def command(self) -> str:
        """The word after `python -m nodes` that starts this node (nodes.config.command_word)."""
        return command_word(self.role, self.impl)


@dataclass(slots=True)
class RunInfo:
    backend: str
    run_dir: str
    topology: str  # the topology file (or "<string>")
    lab: str
    nodes: list[RunNode]
    run_id: str | None = None  # docker: the value of the onionlab.run label on every object of the run
    complete: bool = False  # docker: `up` finished and every node was ready (`reap` leaves such runs alone)
    failed: str | None = None  # why `up` did not finish (interrupted, a node crashed): nothing of it runs

    def node(self, name: str) -> RunNode:
        for node in self.nodes:
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.nodes)
        raise BackendError(f"no node named {name!r} in this run (nodes: {known})")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> RunInfo:
        return cls(**{**data, "nodes": [RunNode(**n) for n in data["nodes"]]})


def node_env(node: RunNode, config: Path | str) -> dict[str, str]:
    """What `onionlab exec` tells a command about the node it runs in (both backends set these)."""
    env = {"ONIONLAB_NODE": node.name, "ONIONLAB_ROLE": node.role, "ONIONLAB_CONFIG": str(config),
           "ONIONLAB_ADDRESS": node.address,
           "ONIONLAB_CONTROL": f"{node.address}:{node.ports['control_port']}"}
    if node.role == "client":
        env["ONIONLAB_SOCKS"] = f"{node.address}:{node.ports['socks_port']}"
    return env


def write_state(info: RunInfo) -> None:
    """Replace the state file atomically: a reader never sees half of it."""
    path = Path(info.run_dir, STATE_FILE)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(info.to_json() + "\n")
    os.replace(tmp, path)


def read_state(run_dir: str | os.PathLike[str]) -> RunInfo | None:
    """The run recorded in `run_dir`, or None when there is none."""
    path = Path(run_dir, STATE_FILE)
    try:
        return RunInfo.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError) as e:
        raise BackendError(f"{path}: not a state file onionlab can read ({e})") from None


def lab_status(info: RunInfo, live: dict[str, dict | None], *, live_socks: bool) -> dict:
    """What `status` returns, from each node's /status (`live`, None for a node that does not answer): the
    nodes, onion services, authorities and clients. `live_socks`: a client's SOCKS address is the one its
    /status reports (else the one recorded: docker's, published on this host)."""
    return {
        "nodes": [{"name": n.name, "role": n.role, "address": n.address,
                   "ready": readiness.is_ready(live[n.name])} for n in info.nodes],
        "onion_services": [{"name": n.name, "onion": (live[n.name] or {}).get("onion") or n.onion,
                            "ports": (live[n.name] or {}).get("ports") or n.services}
                           for n in info.nodes if n.role == "onion_service"],
        "authorities": readiness.authority_entries(info.nodes, live),
        "clients": [{"name": n.name,
                     "socks": ((live[n.name] or {}).get("socks") if live_socks else None) or n.socks}
                    for n in info.nodes if n.role == "client"],
    }


def require_state(run_dir: Path) -> RunInfo:
    """The run recorded in `run_dir`; BackendError, saying how to start one, when there is none."""
    info = read_state(run_dir)
    if info is None:
        raise BackendError(f"no lab is running here (no state file in {run_dir}); start one with "
                           "`onionlab up`")
    return info


def fresh_run_dir(run_dir: Path, old: RunInfo | None, what: str) -> None:
    """Make `run_dir` an empty run dir for a new run: the files of `old` (the run recorded there, which the
    caller found not running) go; a dir that holds anything else is refused. Its .gitignore says `what`."""
    if old is not None:
        shutil.rmtree(run_dir)
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise BackendError(f"{run_dir} is not empty and holds no onionlab run; remove it or choose "
                           "another run dir ($ONIONLAB_RUN_DIR)")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / ".gitignore").write_text(f"# {what}\n*\n")


def open_backend(name: str, run_dir: str | os.PathLike[str] | None = None):
    """The backend called `name`, working in `run_dir` (default: default_run_dir())."""
    if name == "local":
        from .local import LocalBackend

        return LocalBackend(run_dir)
    if name == "docker":
        from .docker import DockerBackend  # imports docker-py: only when the docker backend is asked for

        return DockerBackend(run_dir)
    if name == "swarm":
        from .swarm import SwarmBackend  # the `docker` command on a swarm manager (docs/swarm.md)

        return SwarmBackend(run_dir)
    raise BackendError(f"unknown backend {name!r}; available: {', '.join(BACKENDS)}")
