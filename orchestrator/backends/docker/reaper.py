"""Who owns a run (labels naming the orchestrator process, its host and boot), and the reaper: removing every
object of a run by its label, and the runs no live orchestrator answers for."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors

from .. import (
    BackendError,
    read_state,
)
from .engine import (
    LOGS_DIR,
    NODE,
    OWNER_BOOT,
    OWNER_HOST,
    OWNER_PID,
    OWNER_START,
    RUN,
    RUN_DIR,
    STOP_TIMEOUT,
    boot_id,
    gone_or,
    process_start,
)
from .firewall import Firewall


def owner_labels() -> dict[str, str]:
    pid = os.getpid()
    return {OWNER_PID: str(pid), OWNER_START: process_start(pid), OWNER_HOST: socket.gethostname(),
            OWNER_BOOT: boot_id()}


def owner_alive(labels: dict[str, str]) -> bool | None:
    """Is the orchestrator that made an object with these labels still running? None: it runs on another
    host (or this host cannot tell), so nobody here can know."""
    if labels.get(OWNER_HOST) != socket.gethostname():
        return None
    boot = boot_id()
    if boot and labels.get(OWNER_BOOT) and labels[OWNER_BOOT] != boot:
        return False  # this host rebooted since
    try:
        pid = int(labels.get(OWNER_PID, ""))
    except ValueError:
        return False
    if not Path("/proc/self").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    start = process_start(pid)
    if not start:
        return False  # no such process
    recorded = labels.get(OWNER_START)
    return not recorded or recorded == start


@dataclass
class ReapReport:
    """What `reap` did: runs removed (run id -> why) and runs left alone (run id -> why)."""

    removed: dict[str, str] = field(default_factory=dict)
    kept: dict[str, str] = field(default_factory=dict)
    containers: int = 0
    networks: int = 0
    volumes: int = 0
    rules: int = 0  # firewall rules of chaos runs that are gone, in containers that stay


class Reaper(Firewall):
    def reap(self, *, everything: bool = False) -> ReapReport:
        """Remove what no live orchestrator answers for: every object labelled `onionlab.run` whose run

        - was never marked complete (its state file says so, or is gone) while the orchestrator that made it
          is dead (crashed, killed or rebooted away mid-`up`), or
        - was complete, but its state file no longer names it (the run dir was removed: nothing can `down`
          it any more).

        A run whose owner runs on another host is left alone (nobody here can tell) unless `everything`,
        which removes every onionlab run on this engine. Then, in the containers that stay, the firewall rules
        of chaos runs whose process is gone (firewall.py: every rule names its maker). Returns what was
        removed and what was kept, why."""
        report = ReapReport()
        runs: dict[str, dict[str, str]] = {}
        for labels in self._labelled():
            runs.setdefault(labels[RUN], labels)
        for run_id, labels in sorted(runs.items()):
            why = "--all" if everything else _reap_reason(run_id, labels)
            if why.startswith("keep: "):
                report.kept[run_id] = why.removeprefix("keep: ")
                continue
            counts = self._remove_run(run_id)
            report.containers += counts[0]
            report.networks += counts[1]
            report.volumes += counts[2]
            report.removed[run_id] = why
            run_dir = labels.get(RUN_DIR)
            if run_dir and labels.get(OWNER_HOST) == socket.gethostname():
                _forget_run(Path(run_dir), run_id)
        report.rules = self.sweep_rules(everything=everything)
        return report

    def _labelled(self) -> Iterator[dict[str, str]]:
        """The labels of every container, network and volume carrying `onionlab.run`, of any run."""
        for container in self.client.containers.list(all=True, filters={"label": RUN}):
            yield container.labels
        for network in self.client.networks.list(filters={"label": RUN}):
            yield network.attrs.get("Labels") or {}
        for volume in self.client.volumes.list(filters={"label": RUN}):
            yield volume.attrs.get("Labels") or {}

    def _save_logs(self, run_id: str) -> None:
        """Copy every container's stdout and stderr of the run into <run dir>/logs/ before they go."""
        containers = self._containers(run_id)
        if not containers:
            return
        saved = self.run_dir / LOGS_DIR
        saved.mkdir(parents=True, exist_ok=True)
        for container in containers:
            name = container.labels.get(NODE, container.name)
            try:
                (saved / f"{name}.stdout").write_bytes(container.logs(stdout=True, stderr=False))
                (saved / f"{name}.stderr").write_bytes(container.logs(stdout=False, stderr=True))
            except docker.errors.NotFound:
                continue

    def _remove_run(self, run_id: str, *, stop: bool = False,
                    save_logs: bool = False) -> tuple[int, int, int]:
        """Remove every container (stopped gracefully first when `stop`, its logs saved in the run dir first
        when `save_logs`), network and volume labelled with the run id; (containers, networks, volumes)
        removed. Raises BackendError if any is left."""
        selector = {"label": f"{RUN}={run_id}"}
        containers = self.client.containers.list(all=True, filters=selector)
        if stop:
            for container in containers:
                if container.status == "running":
                    try:
                        container.stop(timeout=STOP_TIMEOUT)
                    except docker.errors.NotFound:
                        pass
        if save_logs:
            self._save_logs(run_id)
        removed = [0, 0, 0]
        for container in containers:
            removed[0] += gone_or(lambda c=container: c.remove(force=True, v=True))
        for network in self.client.networks.list(filters=selector):
            removed[1] += gone_or(network.remove)
        for volume in self.client.volumes.list(filters=selector):
            removed[2] += gone_or(lambda v=volume: v.remove(force=True))
        left = (len(self.client.containers.list(all=True, filters=selector)),
                len(self.client.networks.list(filters=selector)),
                len(self.client.volumes.list(filters=selector)))
        if any(left):
            raise BackendError(f"run {run_id}: {left[0]} containers, {left[1]} networks and {left[2]} "
                               "volumes are left after removing them (did something create more meanwhile?)")
        return removed[0], removed[1], removed[2]


def _reap_reason(run_id: str, labels: dict[str, str]) -> str:
    """Why a run is to be removed, or "keep: why not"."""
    alive = owner_alive(labels)
    if alive is None:
        return f"keep: made on host {labels.get(OWNER_HOST)!r}, not this one ({socket.gethostname()})"
    if alive:
        return f"keep: its orchestrator (pid {labels.get(OWNER_PID)}) is running"
    run_dir = labels.get(RUN_DIR)
    try:
        state = read_state(run_dir) if run_dir else None
    except BackendError:
        state = None
    if state is not None and state.run_id == run_id:
        if state.complete:
            return f"keep: a complete run, recorded in {run_dir} (`onionlab down --run-dir {run_dir}`)"
        return f"its orchestrator (pid {labels.get(OWNER_PID)}) died during `up`"
    return f"its orchestrator (pid {labels.get(OWNER_PID)}) is gone and no state file names it"


def _forget_run(run_dir: Path, run_id: str) -> None:
    """Remove a reaped run's run dir, if it is still that run's."""
    try:
        state = read_state(run_dir)
    except BackendError:
        return
    if state is not None and state.run_id == run_id:
        shutil.rmtree(run_dir, ignore_errors=True)
