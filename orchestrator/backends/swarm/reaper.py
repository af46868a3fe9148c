"""Who owns a swarm run, removing a run's stack, and `reap`: stacks that no orchestrator owns any more.

Every service, network, volume, secret and config of a run carries onionlab.run (its id), onionlab.backend=
swarm and its owner: the run dir and the host and PID of the `onionlab up` that made it. A stack is a
leftover when its run dir no longer records it (removed, or another run since), or when its `up` never
finished and the process that ran it is gone (a crash mid-`up`); `--all` takes every swarm run.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import BackendError, read_state
from .engine import docker, engine_is_local

RUN = "onionlab.run"
BACKEND = "onionlab.backend"
RUN_DIR = "onionlab.run-dir"
OWNER_HOST = "onionlab.owner-host"
OWNER_PID = "onionlab.owner-pid"
RUN_LABELS = (RUN, BACKEND, RUN_DIR, OWNER_HOST, OWNER_PID)
STACK = "com.docker.stack.namespace"
REMOVE_TIMEOUT = 120.0


@dataclass
class ReapReport:
    removed: dict[str, str] = field(default_factory=dict)  # run id -> why
    kept: dict[str, str] = field(default_factory=dict)
    containers: int = 0  # the stacks' services (Swarm removes their containers)
    networks: int = 0
    volumes: int = 0
    rules: int = 0  # no firewall rules on swarm


def owner_labels(run_dir: Path, run_id: str) -> dict[str, str]:
    return {RUN: run_id, BACKEND: "swarm", RUN_DIR: str(run_dir), OWNER_HOST: socket.gethostname(),
            OWNER_PID: str(os.getpid())}


def _leftovers(run_id: str) -> tuple[list[str], list[str], list[str]]:
    """(services, networks, volumes here) of the run."""
    label = f"label={RUN}={run_id}"
    services = docker("service", "ls", "-q", "--filter", label).stdout.split()
    networks = docker("network", "ls", "-q", "--filter", label).stdout.split()
    volumes = docker("volume", "ls", "-q", "--filter", label).stdout.split() if engine_is_local() else []
    return services, networks, volumes


def remove_stack(stack: str, run_id: str) -> tuple[int, int, int]:
    """`docker stack rm`, wait until its services and networks are gone, remove its volumes on this host
    (busy ones are retried while their containers go): (services, networks, volumes) removed."""
    before = _leftovers(run_id)
    docker("stack", "rm", stack, check=False)
    deadline, delay = time.monotonic() + REMOVE_TIMEOUT, 0.2
    while True:
        services, networks, volumes = _leftovers(run_id)
        if not services and not networks:
            if volumes:
                docker("volume", "rm", "--force", *volumes, check=False)
                volumes = _leftovers(run_id)[2]
            if not volumes:
                return len(before[0]), len(before[1]), len(before[2])
        if time.monotonic() > deadline:
            raise BackendError(f"stack {stack} still has {len(services)} services, {len(networks)} networks "
                               f"and {len(volumes)} volumes {REMOVE_TIMEOUT:g} s after `docker stack rm`")
        time.sleep(delay)
        delay = min(2 * delay, 2.0)


def _alive(host: str, pid: str) -> bool:
    if host != socket.gethostname():
        return True  # another machine's orchestrator: not ours to judge
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def why_leftover(labels: dict[str, str]) -> str | None:
    """Why the run these labels describe belongs to no orchestrator, or None when one still owns it."""
    run_id, run_dir = labels.get(RUN, ""), labels.get(RUN_DIR, "")
    try:
        info = read_state(run_dir) if run_dir else None
    except BackendError:
        info = None
    if info is None or info.run_id != run_id:
        return f"its run dir {run_dir or '(none)'} no longer records it"
    if not info.complete and not info.failed and not _alive(labels.get(OWNER_HOST, ""),
                                                              labels.get(OWNER_PID, "")):
        return "its `onionlab up` never finished and that process is gone"
    if info.failed:
        return f"its `up` failed ({info.failed})"
    return None


def reap(*, everything: bool = False) -> ReapReport:
    report = ReapReport()
    ids = docker("service", "ls", "-q", "--filter", f"label={BACKEND}=swarm").stdout.split()
    runs: dict[str, dict[str, str]] = {}
    if ids:
        for service in json.loads(docker("service", "inspect", *ids).stdout or "[]"):
            labels = service["Spec"].get("Labels") or {}
            if labels.get(RUN):
                runs.setdefault(labels[RUN], {**labels, STACK: labels.get(STACK, "")})
    for run_id, labels in runs.items():
        why = "--all" if everything else why_leftover(labels)
        if why is None:
            report.kept[run_id] = "its orchestrator still owns it"
            continue
        services, networks, volumes = remove_stack(labels[STACK], run_id)
        report.removed[run_id] = why
        report.containers += services
        report.networks += networks
        report.volumes += volumes
    return report
