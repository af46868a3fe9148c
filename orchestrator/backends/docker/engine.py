"""The engine: connecting to it, the labels on every object of a run, and looking a run's objects up. The
base of DockerBackend (lifecycle.py); the only place but its siblings that imports docker-py."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors
import requests
from docker.models.containers import Container

from nodes.__main__ import FATAL_PREFIX
from orchestrator import readiness

from .. import (
    BackendError,
    RunInfo,
    RunNode,
    default_run_dir,
    require_state,
)

# -- labels: on every object the backend makes -------------------------------------------------------------
RUN = "onionlab.run"  # the run id; `onionlab.run` alone (the key) selects everything of every run
NODE = "onionlab.node"  # containers and volumes: the node's name ("init" for the init container)
ROLE = "onionlab.role"  # containers and volumes: the node's role ("init" for the init container)
IMPL = "onionlab.impl"  # node containers: what plays the node (onionlab, or tor for a stock tor)
NETWORK = "onionlab.network"  # networks: the topology's name for it
TOPOLOGY = "onionlab.topology"  # the topology file
LAB = "onionlab.lab"  # the topology's name
RUN_DIR = "onionlab.run-dir"  # where the run's state file lives (on the owner's host)
OWNER_PID = "onionlab.owner-pid"  # the orchestrator process running `up`
OWNER_START = "onionlab.owner-start"  # its start time (clock ticks since boot): a reused PID is not it
OWNER_HOST = "onionlab.owner-host"  # the host it runs on
OWNER_BOOT = "onionlab.owner-boot"  # that host's boot id: after a reboot no owner is alive
EXTRA_LABELS_ENV = "ONIONLAB_LABELS"  # "k=v,k2=v2": labels added to every object (tests, CI)

INIT = "init"
STOP_TIMEOUT = 10  # seconds from SIGTERM to SIGKILL in `down`
STATUS_TIMEOUT = 1.0  # `status` asks every node once; a node slower than this is not ready
TAIL_LINES = 20
LOGS_DIR = "logs"
NODE_USER = "10001:10001"  # the node image's user (images/node/Dockerfile)


def labels_from_env() -> dict[str, str]:
    text = os.environ.get(EXTRA_LABELS_ENV, "").strip()
    labels = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BackendError(f"${EXTRA_LABELS_ENV}: expected KEY=VALUE[,KEY=VALUE...], found {item!r}")
        if key.startswith("onionlab.") and not key.startswith("onionlab.test"):
            raise BackendError(f"${EXTRA_LABELS_ENV}: {key} is onionlab's own label")
        labels[key] = value
    return labels


def connect() -> docker.DockerClient:
    """A client of the engine DOCKER_HOST (or the default socket) names; BackendError when none answers."""
    try:
        client = docker.from_env(timeout=ENGINE_TIMEOUT)
        client.ping()
    except (docker.errors.DockerException, requests.RequestException) as e:
        raise BackendError(f"no Docker engine answers ({e}); start one, or use `--backend local`") from None
    return client


# Seconds one engine call may take. docker-py's default (60 s) was too short while 300 containers started on
# 2 cores (load average 500): one container's start answered later and `up` failed with a traceback.
ENGINE_TIMEOUT = 300


def api_error(e: docker.errors.APIError) -> str:
    return str(e.explanation or e)


class Engine:
    """A run dir and a client of the engine; how the run's objects are named and found."""

    name = "docker"

    def __init__(self, run_dir: str | os.PathLike[str] | None = None, *,
                 labels: dict[str, str] | None = None, exact_subnets: bool = False) -> None:
        self.run_dir = Path(run_dir if run_dir is not None else default_run_dir()).absolute()
        self.extra_labels = {**labels_from_env(), **(labels or {})}
        self.exact_subnets = exact_subnets  # a taken subnet fails `up` instead of moving the network
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = connect()
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @staticmethod
    def _network_name(run_id: str, network: str) -> str:
        return f"onionlab-{run_id}-{network}"

    @staticmethod
    def _object_name(run_id: str, node: str) -> str:
        return f"onionlab-{run_id}-{node}"

    def _state(self) -> RunInfo:
        info = require_state(self.run_dir)
        if info.backend != self.name or not info.run_id:
            raise BackendError(f"{self.run_dir} holds a {info.backend} run, not a docker one")
        return info

    def _containers(self, run_id: str | None, status: str | list[str] | None = None) -> list[Container]:
        if not run_id:
            return []
        filters: dict = {"label": f"{RUN}={run_id}"}
        if status is not None:
            filters["status"] = status
        return self.client.containers.list(all=True, filters=filters)

    def _container(self, info: RunInfo, name: str) -> Container | None:
        found = self.client.containers.list(all=True, filters={"label": [f"{RUN}={info.run_id}",
                                                                         f"{NODE}={name}"]})
        return found[0] if found else None

    def _running_container(self, name: str) -> Container:
        info = self._state()
        info.node(name)
        container = self._container(info, name)
        if container is None:
            raise BackendError(f"{name} has no container in run {info.run_id}")
        if container.status != "running":
            raise BackendError(f"{name} ({container.name}) is not running: {container.status}")
        return container

    def _fetch(self, node: RunNode) -> dict | None:
        endpoint = control_endpoint(node)
        return readiness.fetch_status(endpoint.host, endpoint.port, timeout=STATUS_TIMEOUT)

    def _tail_report(self, info: RunInfo, name: str, lines: int) -> str:
        container = self._container(info, name)
        if container is None:
            return f"{name}: no container"
        return log_report(f"{name} ({container.name})", log_lines(container)[-lines:])

    def _attached(self, info: RunInfo, container: Container) -> dict[str, str]:
        """{topology network: address} the container is on now."""
        container.reload()
        prefix = f"onionlab-{info.run_id}-"
        networks = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
        return {net.removeprefix(prefix): ((settings.get("IPAMConfig") or {}).get("IPv4Address")
                                           or settings.get("IPAddress") or "")
                for net, settings in networks.items() if net.startswith(prefix)}

    def _read_ports(self, container: Container, node: RunNode) -> None:
        """Record where Docker published the node's ports on this host."""
        container.reload()
        ports = container.attrs["NetworkSettings"].get("Ports") or {}

        def published(port: int) -> str | None:
            bindings = ports.get(f"{port}/tcp") or []
            return next((f"{b['HostIp']}:{b['HostPort']}" for b in bindings if b.get("HostPort")), None)

        if node.role == "client":
            node.socks = published(node.ports["socks_port"])
        node.control = published(node.ports["control_port"])

    def _reach_directly(self) -> bool:
        """Can this process reach containers at their addresses? Yes when the engine runs on this Linux host
        as root (its bridges are this host's interfaces); not with rootless Docker, Docker Desktop or a remote
        engine. ONIONLAB_DOCKER_CONTROL=published|direct decides instead."""
        choice = os.environ.get("ONIONLAB_DOCKER_CONTROL", "")
        if choice in ("published", "direct"):
            return choice == "direct"
        if platform.system() != "Linux" or not self.client.api.base_url.startswith("http+docker://localhost"):
            return False
        info = self.client.info()
        rootless = any("rootless" in option for option in info.get("SecurityOptions") or [])
        return not rootless and "Docker Desktop" not in (info.get("OperatingSystem") or "")


def gone_or(remove: Callable[[], object]) -> int:
    """1 after removing, 0 when it was gone already."""
    try:
        remove()
    except docker.errors.NotFound:
        return 0
    return 1


def control_endpoint(node: RunNode) -> readiness.Endpoint:
    if node.control:
        host, _, port = node.control.rpartition(":")
        return readiness.Endpoint(node.name, host, int(port))
    return readiness.Endpoint(node.name, node.address, node.ports["control_port"])


def node_order(info: RunInfo) -> Callable[[str], int]:
    names = [n.name for n in info.nodes]
    return lambda name: names.index(name) if name in names else len(names)


def container_addresses(container: Container) -> list[str]:
    networks = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
    return [n["IPAMConfig"]["IPv4Address"] for n in networks.values()
            if (n.get("IPAMConfig") or {}).get("IPv4Address")]


def log_lines(container: Container) -> list[str]:
    """The container's stderr, or its stdout when stderr is empty."""
    for stdout, stderr in ((False, True), (True, False)):
        text = container.logs(stdout=stdout, stderr=stderr, tail=200).decode(errors="replace")
        if text.strip():
            return text.splitlines()
    return []


def log_cause(lines: list[str]) -> str:
    """The real cause: the last `fatal: ` line, else the last line that says anything."""
    fatal = [line for line in lines if line.startswith(FATAL_PREFIX)]
    if fatal:
        return fatal[-1].removeprefix(FATAL_PREFIX)
    return next((line for line in reversed(lines) if line.strip()), "(its logs are empty)")


def log_report(who: str, lines: list[str]) -> str:
    body = "\n".join(f"  | {line}" for line in lines) if lines else "  (its logs are empty)"
    return f"last lines of {who}'s log:\n{body}"


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), "" when unknown."""
    try:
        return Path("/proc", str(pid), "stat").read_text().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return ""
