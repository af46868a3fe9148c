"""Talking to a Swarm manager through the `docker` command: stacks, services, tasks and nodes.

The swarm backend drives the `docker` CLI rather than docker-py: `docker stack deploy` (secrets, configs and
networks from one file) exists only there, and the docker backend stays the only importer of docker-py. Every
call has a timeout and turns a failure into a BackendError that quotes docker's own words. DOCKER_HOST (or
DOCKER_CONTEXT) chooses the manager, as for any `docker` command.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field

from .. import BackendError

COMMAND_TIMEOUT = 120.0
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Task:
    """One task of a service, as the manager sees it."""

    id: str
    service: str  # the service's name, `<stack>_<node>`
    node_id: str  # the swarm node it was scheduled on ("" before scheduling)
    state: str  # new, pending, assigned, ..., running, complete, failed, shutdown, rejected, orphaned
    desired: str  # running or shutdown
    error: str
    container: str  # its container's ID ("" before it has one)
    created: str
    addresses: dict[str, str] = field(default_factory=dict)  # overlay network name -> address

    @property
    def current(self) -> bool:
        """The task that Swarm wants running (older ones are kept for history)."""
        return self.desired == "running"


def docker(*args: str, input: str | None = None, timeout: float = COMMAND_TIMEOUT,
           check: bool = True) -> subprocess.CompletedProcess:
    """Run `docker ARGS`; BackendError (with docker's message) when it fails and `check`."""
    if shutil.which("docker") is None:
        raise BackendError("the swarm backend needs the `docker` command (Debian: apt-get install docker.io)")
    try:
        result = subprocess.run(["docker", *args], input=input, capture_output=True, text=True,
                                timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BackendError(f"`docker {' '.join(args[:3])} ...` took more than {timeout:g} s") from None
    if check and result.returncode != 0:
        raise BackendError(f"`docker {' '.join(args[:3])} ...` failed: "
                           f"{(result.stderr or result.stdout).strip()}")
    return result


def inspect(kind: str, *ids: str) -> list[dict]:
    """`docker inspect` of swarm objects of one kind (task, service, node); [] for none. Objects that
    vanished meanwhile are left out (docker still prints the others)."""
    if not ids:
        return []
    result = docker("inspect", "--type", kind, *ids, check=False)
    try:
        return json.loads(result.stdout or "[]")
    except ValueError:
        raise BackendError(f"`docker inspect` gave no JSON: {result.stderr.strip()}") from None


def swarm_info() -> dict:
    """The engine's Swarm section of `docker info` (LocalNodeState, NodeID, ControlAvailable, ...)."""
    result = docker("info", "--format", "{{json .Swarm}}")
    return json.loads(result.stdout)


def require_manager() -> dict:
    """The Swarm info of a manager; BackendError saying what to do on anything else."""
    info = swarm_info()
    state = info.get("LocalNodeState")
    if state != "active":
        raise BackendError(f"this Docker engine is not in a swarm (state: {state or 'unknown'}); make it a "
                           "one-node swarm with `docker swarm init` (docs/swarm.md), or join it to yours")
    if not info.get("ControlAvailable"):
        raise BackendError("this Docker engine is a swarm worker: run onionlab against a manager "
                           "(DOCKER_HOST, or on a manager host)")
    return info


def stack_tasks(stack: str) -> list[Task]:
    """Every task of the stack's services (current and past); [] when the stack has none."""
    result = docker("stack", "ps", "--quiet", "--no-trunc", stack, check=False)
    if result.returncode != 0:
        if "nothing found in stack" in result.stderr.lower():
            return []
        raise BackendError(f"`docker stack ps {stack}` failed: {result.stderr.strip()}")
    ids = result.stdout.split()
    tasks = inspect("task", *ids)
    names = service_names({t.get("ServiceID", "") for t in tasks})
    return [_task(t, names) for t in tasks]


def service_tasks(service: str) -> list[Task]:
    """The tasks of one service, oldest first; [] when it has none (yet)."""
    result = docker("service", "ps", "--quiet", "--no-trunc", service, check=False)
    tasks = inspect("task", *result.stdout.split()) if result.returncode == 0 else []
    return sorted((_task(t, {}) for t in tasks), key=lambda t: t.created)


def service_names(ids: set[str]) -> dict[str, str]:
    found = inspect("service", *sorted(i for i in ids if i))
    return {s["ID"]: s["Spec"]["Name"] for s in found}


def _task(data: dict, names: dict[str, str]) -> Task:
    status = data.get("Status") or {}
    addresses = {}
    for attachment in data.get("NetworksAttachments") or []:
        spec = (attachment.get("Network") or {}).get("Spec") or {}
        if attachment.get("Addresses"):
            addresses[spec.get("Name", "")] = attachment["Addresses"][0].split("/")[0]
    return Task(id=data["ID"], service=names.get(data.get("ServiceID", ""), ""),
                node_id=data.get("NodeID", ""), state=status.get("State", ""),
                desired=data.get("DesiredState", ""), error=status.get("Err", ""),
                container=(status.get("ContainerStatus") or {}).get("ContainerID", ""),
                created=data.get("CreatedAt", ""), addresses=addresses)


def engine_is_local() -> bool:
    """Whether the engine we talk to runs on this machine (its published ports are on our loopback)."""
    host = os.environ.get("DOCKER_HOST", "")
    return (not host or host.startswith("unix://")) and not os.environ.get("DOCKER_CONTEXT")


def node_hosts(node_ids: set[str], local_node: str) -> dict[str, tuple[str, str]]:
    """{node ID: (address where its published ports are reached, hostname)}. The engine's own node is
    127.0.0.1 when that engine runs here; the others their advertised address (a manager may report
    0.0.0.0 as its Status.Addr: then the address of its manager endpoint)."""
    out = {}
    for node in inspect("node", *sorted(i for i in node_ids if i)):
        hostname = (node.get("Description") or {}).get("Hostname", "")
        address = (node.get("Status") or {}).get("Addr", "")
        if address in ("", "0.0.0.0"):
            address = ((node.get("ManagerStatus") or {}).get("Addr") or "").rpartition(":")[0] or address
        if node["ID"] == local_node and engine_is_local():
            address = LOOPBACK
        out[node["ID"]] = (address, hostname)
    return out
