"""Backends run a topology: `docker` (one container per node on real Docker networks, backends/docker.py, the
default) and `local` (processes on 127.0.0.x, backends/local.py).

Every backend keeps what it started in `<run dir>/state.json` (RunInfo), so that `onionlab status`, `down` and
`logs` work from a later process. The run dir is `$ONIONLAB_RUN_DIR`, else `.onionlab/run` in the current
directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nodes.config import command_word
from orchestrator.signals import signal_of

BACKENDS = ("docker", "local")
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


def open_backend(name: str, run_dir: str | os.PathLike[str] | None = None):
    """The backend called `name`, working in `run_dir` (default: default_run_dir())."""
    if name == "local":
        from .local import LocalBackend

        return LocalBackend(run_dir)
    if name == "docker":
        from .docker import DockerBackend  # imports docker-py: only when the docker backend is asked for

        return DockerBackend(run_dir)
    raise BackendError(f"unknown backend {name!r}; available: {', '.join(BACKENDS)}")
