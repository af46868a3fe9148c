"""SwarmBackend: a topology as a stack on the current swarm (Backend, and FaultBackend's container faults).

`up` makes the run's keys and configs here (material.py), writes the stack file (stackfile.py) and runs
`docker stack deploy` of it as the stack `ol<run id>`; the material is removed from this disk right after.
It then waits until every service has a running task and every node's /status says ready, at the task's host
and the control port published there. Whatever makes `up` fail, the stack and its volumes are removed again
(`docker stack rm` also removes its secrets, configs and networks).

Faults: kill, pause and unpause of the task's container on whichever host runs it (taskaction.py: a
one-shot service on that host, through its own engine) and stop (scale to 0: SIGTERM, SIGKILL after 10 s).
No partition, no tc shaping (the overlay's links are not the orchestrator's) and no link-layer shaping or
clock skew (not implemented for Swarm yet): chaos refuses those up front.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from orchestrator import readiness
from orchestrator.compose import stack_plan
from orchestrator.control import new_secret, post_control, run_secret
from orchestrator.signals import signals_deferred
from orchestrator.topology import Topology

from .. import (
    BackendError,
    NodeFailed,
    RunInfo,
    RunNode,
    StartFailed,
    default_run_dir,
    failure_reason,
    fresh_run_dir,
    lab_status,
    read_state,
    require_state,
    write_state,
)
from ..base import FAULT_KINDS, LINK_LAYER, ExecSpec, LogLine, Progress
from . import observe
from .engine import (
    Task,
    docker,
    engine_is_local,
    inspect,
    node_hosts,
    require_manager,
    stack_tasks,
    swarm_info,
)
from .material import make_material, remove_material
from .reaper import RUN_LABELS, ReapReport, owner_labels, reap, remove_stack
from .stackfile import render_stack
from .taskaction import Action, run_action

PORTS = ("control_port", "or_port", "dir_port", "socks_port")
PUBLISHED = ("control_port", "socks_port")  # what the orchestrator and users reach from outside
STACK_FILE = "stack.json"
PAUSED_FILE = "paused.json"  # {node: the ID of its task that `pause` froze}: Swarm's task state stays running
STATUS_TIMEOUT = 1.0
CHECK_EVERY = 1.0
# A task whose container the engine could not start for a moment ("unable to remount dir as readonly: mount
# tmpfs:.../mounts/secrets ...: device or resource busy"; seen after a kill, and during `up` on an engine in
# Docker-in-Docker): `up` and `start` ask for another task this often a node
ENGINE_BUSY = "device or resource busy"
ENGINE_RETRIES = 2
TAIL_LINES = 20
FAILED_STATES = frozenset({"failed", "rejected", "orphaned", "shutdown", "complete", "remove"})
SWARM_FAULTS = frozenset({"kill", "stop", "pause"})
SWARM_ADDRESS = "(Swarm's, each task its own)"  # node_state's address on each of a node's networks
# labels of a node's service that are not the run's: the one-shot of taskaction.py runs another image
NOT_INHERITED = frozenset({"com.docker.stack.image"})


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on this host now (all held open together, so none repeats)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def stack_name(run_id: str) -> str:
    return f"ol{run_id}"


class SwarmBackend:
    name = "swarm"

    def __init__(self, run_dir: str | os.PathLike[str] | None = None) -> None:
        self.run_dir = Path(run_dir if run_dir is not None else default_run_dir()).absolute()

    # -- the lifecycle ---------------------------------------------------------------------------------------

    def up(self, topology: Topology, *, timeout: float = 60.0, progress: Progress | None = None) -> RunInfo:
        say = progress or (lambda _: None)
        require_manager()
        try:
            plan = stack_plan(topology)
        except ValueError as e:  # relays that the consensus cannot tell apart, with several networks
            raise BackendError(f"topology {topology.name!r}: {e}") from None
        old = read_state(self.run_dir)
        if old is not None and not old.failed and old.backend == self.name and \
                stack_tasks(stack_name(old.run_id or "")):
            raise BackendError(f"a lab is already running from {self.run_dir} (stack "
                               f"{stack_name(old.run_id or '')}); stop it with `onionlab down` first")
        fresh_run_dir(self.run_dir, old, "onionlab run files (the swarm holds the keys)")
        run_id = os.urandom(5).hex()
        stack = stack_name(run_id)
        ports_needed = sum(1 + (n.role == "client") for n in topology.nodes)
        free = iter(free_ports(ports_needed))
        published = {n.name: {key: next(free) for key in PUBLISHED if getattr(n, key) is not None}
                     for n in topology.nodes}
        info = RunInfo(backend=self.name, run_dir=str(self.run_dir), topology=topology.source,
                       lab=topology.name, run_id=run_id, nodes=[
                           RunNode(name=n.name, role=n.role, address=n.name, impl=n.impl,
                                   ports={k: v for k in PORTS if (v := getattr(n, k)) is not None},
                                   services=[s.port for s in n.services], container=f"{stack}_{n.name}")
                           for n in topology.nodes])
        write_state(info)
        labels = {**owner_labels(self.run_dir, run_id), **extra_labels()}
        try:
            secret = new_secret(self.run_dir)
            material = make_material(plan, self.run_dir, secret)
            try:
                text = render_stack(topology, material, published, labels)
                (self.run_dir / STACK_FILE).write_text(text)
                docker("stack", "deploy", "--resolve-image", "never", "--prune", "--compose-file",
                       str(self.run_dir / STACK_FILE), stack, timeout=300)
            finally:
                remove_material(self.run_dir)
            say(f"deployed stack {stack}: {len(topology.nodes)} services (run dir {self.run_dir})")
            self._locate(info, published, timeout, say)
            statuses = self._wait_ready(info, timeout, say)
        except BaseException as failure:
            with signals_deferred():
                try:
                    remove_stack(stack, run_id)
                except BackendError as e:
                    failure.add_note(str(e))
                info.failed = failure_reason(failure)
                write_state(info)
            raise
        for node in info.nodes:
            status = statuses[node.name]
            if node.role == "onion_service":
                node.onion = status.get("onion")
        info.complete = True
        write_state(info)
        return info

    def down(self, keep: bool = False) -> list[str]:
        """`docker stack rm`, then wait until its containers and networks are gone here and remove its
        volumes on this host (volumes on other hosts are theirs: docs/swarm.md); the run dir unless `keep`."""
        info = read_state(self.run_dir)
        stopped: list[str] = []
        if info is not None and info.run_id:
            stack = stack_name(info.run_id)
            tasks = stack_tasks(stack)
            running = {t.service for t in tasks if t.current and t.state == "running"}
            stopped = [n.name for n in info.nodes if n.container in running]
            remove_stack(stack, info.run_id)
        if not keep and info is not None:
            shutil.rmtree(self.run_dir)
        return stopped

    def status(self) -> dict:
        info = self._state()
        endpoints = self._endpoints(info)
        live = {n.name: readiness.fetch_status(*endpoints[n.name], timeout=STATUS_TIMEOUT)
                if n.name in endpoints else None for n in info.nodes}
        out = lab_status(info, live, live_socks=False)
        for client in out["clients"]:
            node = info.node(client["name"])
            host = endpoints.get(node.name, (None,))[0]
            client["socks"] = f"{host}:{node.socks.rpartition(':')[2]}" if host and node.socks else node.socks
        return out

    # -- up, step by step ------------------------------------------------------------------------------------

    def _state(self) -> RunInfo:
        info = require_state(self.run_dir)
        if info.backend != self.name:
            raise BackendError(f"the run in {self.run_dir} is a {info.backend} run, not a swarm one")
        return info

    def _stack(self, info: RunInfo) -> str:
        return stack_name(info.run_id or "")

    def _current(self, info: RunInfo) -> dict[str, Task]:
        """Each node's newest task, by node name. Not only those Swarm wants running: a task that failed
        (restart_policy none) is marked to shut down at once, and its failure is what `up` must report."""
        prefix = self._stack(info) + "_"
        out: dict[str, Task] = {}
        for task in sorted(stack_tasks(self._stack(info)), key=lambda t: t.created):
            out[task.service.removeprefix(prefix)] = task
        return out

    def _endpoints(self, info: RunInfo) -> dict[str, tuple[str, int]]:
        """{node: (host, published control port)} of every node whose task runs now."""
        tasks = {n: t for n, t in self._current(info).items() if t.state == "running"}
        hosts = node_hosts({t.node_id for t in tasks.values()}, swarm_info().get("NodeID", ""))
        published = self._published(info)
        return {name: (hosts[t.node_id][0], published[name]) for name, t in tasks.items()
                if t.node_id in hosts and name in published}

    def _published(self, info: RunInfo) -> dict[str, int]:
        out = {}
        for node in info.nodes:
            if node.control:
                out[node.name] = int(node.control.rpartition(":")[2])
        return out

    def _locate(self, info: RunInfo, published: dict[str, dict[str, int]], timeout: float,
                say: Progress) -> None:
        """Wait until every service has a running task; record where each runs."""
        for node in info.nodes:
            node.control = f"{node.name}:{published[node.name]['control_port']}"
            if node.role == "client":
                node.socks = f"127.0.0.1:{published[node.name]['socks_port']}"
        deadline = time.monotonic() + timeout
        retries: dict[str, int] = {}
        replaced: set[str] = set()  # tasks the engine failed to start, for which another was asked
        while True:
            tasks = self._current(info)
            for node in info.nodes:
                task = tasks.get(node.name)
                if task is not None and task.id not in replaced and task.state in FAILED_STATES and \
                        self._another_task(node, task, retries):
                    replaced.add(task.id)
                    say(f"{node.name}: the engine could not start its task ({task.error}); asked for another")
            tasks = {n: t for n, t in tasks.items() if t.id not in replaced}  # its successor: not yet listed
            self._check_tasks(info, tasks)
            running = [n for n, t in tasks.items() if t.state == "running"]
            if len(running) == len(info.nodes):
                break
            if time.monotonic() > deadline:
                waiting = {n.name: (tasks[n.name].state if n.name in tasks else "no task yet")
                           for n in info.nodes if n.name not in running}
                raise StartFailed(f"tasks not running after {timeout:g} s: " +
                                  ", ".join(f"{k} ({v})" for k, v in waiting.items()))
            time.sleep(CHECK_EVERY)
        hosts = node_hosts({t.node_id for t in tasks.values()}, swarm_info().get("NodeID", ""))
        for node in info.nodes:
            host, hostname = hosts[tasks[node.name].node_id]
            node.control = f"{host}:{published[node.name]['control_port']}"
            if node.role == "client":
                node.socks = f"{host}:{published[node.name]['socks_port']}"
        write_state(info)
        spread = sorted({h for _, h in hosts.values()})
        say(f"every task runs, on {len(spread)} swarm node(s): {', '.join(spread)}")

    def _check_tasks(self, info: RunInfo, tasks: dict[str, Task], only: list[str] | None = None) -> None:
        """NodeFailed when a node's current task ended or could not start (with its log's last lines)."""
        for node in info.nodes:
            if only is not None and node.name not in only:
                continue
            task = tasks.get(node.name)
            if task is not None and task.state in FAILED_STATES:
                out, err = observe.service_logs(node.container or "", tail=TAIL_LINES)
                lines = (err or out).splitlines()
                fatal = [line for line in lines if line.startswith("fatal: ")]
                cause = fatal[-1].removeprefix("fatal: ") if fatal else task.error or task.state
                tail = "\n".join(f"  | {line}" for line in lines) or "  (its logs are empty)"
                raise NodeFailed(node.name, f"{node.name} ({node.role}): task {task.state}: {cause}\n"
                                            f"last lines of {node.name}'s log:\n{tail}")

    def _wait_ready(self, info: RunInfo, timeout: float, say: Progress,
                    only: list[str] | None = None) -> dict[str, dict]:
        started = time.monotonic()

        def on_change(name: str, condition: str | None, value: bool) -> None:
            if condition is None:
                say(f"{name}: {'answers' if value else 'stopped answering'} /status")
            else:
                say(f"{name}: {condition}" if value else f"{name}: lost {condition}")

        nodes_ = [n for n in info.nodes if only is None or n.name in only]
        endpoints = [readiness.Endpoint(n.name, *_host_port(n.control or "")) for n in nodes_]
        last_check = [0.0]

        def check() -> None:  # a task that ended stops the wait (at most one look at the swarm a second)
            if time.monotonic() - last_check[0] >= CHECK_EVERY:
                last_check[0] = time.monotonic()
                self._check_tasks(info, self._current(info), only)

        try:
            statuses = readiness.wait_until_ready(endpoints, timeout=timeout, on_change=on_change,
                                                  check=check)
        except readiness.ReadinessTimeout as e:
            raise StartFailed(str(e)) from None
        say(f"all {len(nodes_)} nodes ready in {time.monotonic() - started:.1f} s")
        return statuses

    # -- one node --------------------------------------------------------------------------------------------

    def logs(self, name: str) -> str:
        node = self._state().node(name)
        out, err = observe.service_logs(node.container or "")
        return f"==> {name} stdout <==\n{out}\n==> {name} stderr <==\n{err}"

    def log_lines(self, name: str, stream: str, *, follow: bool = False,
                  since: float | None = None) -> Iterator[LogLine | None]:
        node = self._state().node(name)
        return observe.log_lines(node.container or "", name, stream, follow=follow, since=since)

    def _running_task(self, info: RunInfo, name: str) -> Task:
        info.node(name)
        task = self._current(info).get(name)
        if task is None or task.state != "running":
            raise BackendError(f"{name} is not running")
        return task

    def _local_task(self, name: str) -> Task:
        """The node's running task, when it runs on the engine's own host (its container is ours to touch)."""
        task = self._running_task(self._state(), name)
        if task.node_id != swarm_info().get("NodeID") or not engine_is_local() or not task.container:
            raise BackendError(f"{name} runs on another swarm node: Swarm gives no way to reach a task's "
                               "container from the manager (use `onionlab restart`, or docker on that host)")
        return task

    def exec_spec(self, name: str, command: list[str], *, tty: bool = False) -> ExecSpec:
        task = self._local_task(name)
        return ExecSpec(["docker", "exec", "-it" if tty else "-i", task.container, *command])

    def inspect(self) -> dict:
        info = self._state()
        tasks = self._current(info)
        hosts = node_hosts({t.node_id for t in tasks.values()}, swarm_info().get("NodeID", ""))
        nodes_ = []
        for node in info.nodes:
            task = tasks.get(node.name)
            nodes_.append({"name": node.name, "role": node.role, "impl": node.impl, "service": node.container,
                           "state": task.state if task else "none",
                           "host": hosts.get(task.node_id, ("", ""))[1] if task else "",
                           "addresses": task.addresses if task else {}, "ports": node.ports,
                           "control": node.control, **({"socks": node.socks} if node.socks else {}),
                           **({"onion": node.onion} if node.onion else {})})
        return {"backend": self.name, "run_dir": str(self.run_dir), "lab": info.lab, "run_id": info.run_id,
                "stack": self._stack(info), "topology": info.topology, "failed": info.failed, "nodes": nodes_}

    def kill(self, name: str, signal: str = "SIGKILL") -> None:
        if signal not in _SIGNALS:
            raise BackendError(f"no signal named {signal!r} (e.g. SIGKILL, SIGTERM)")
        self._act(name, "kill", signal)

    def _act(self, name: str, action: str, signal: str = "") -> Task:
        """`action` (taskaction.ACTIONS) on the node's running task, on whichever host runs it: that task."""
        info = self._state()
        node = info.node(name)
        task = self._running_task(info, name)
        found = inspect("service", node.container or "")
        if not found:
            raise BackendError(f"{name}: its service {node.container} is gone")
        spec = found[0]["Spec"]
        labels = {k: v for k, v in (spec.get("Labels") or {}).items() if k not in NOT_INHERITED}
        image = spec["TaskTemplate"]["ContainerSpec"]["Image"]
        run_action(Action(name, task, image, action, signal), self._stack(info), labels)
        return task

    def restart(self, name: str, *, timeout: float = 60.0) -> dict:
        """A new task for the node (`docker service update --force`): same configs, secrets and volume (on
        the same host; a task placed elsewhere starts with a fresh volume there)."""
        result = self._start(name, timeout=timeout, wait=True, force=True)
        assert result is not None
        return result

    def supported_faults(self) -> frozenset[str]:
        return SWARM_FAULTS

    def fault_problem(self, fault: str) -> str | None:
        if fault not in FAULT_KINDS:
            return f"no fault named {fault!r}"
        if fault not in SWARM_FAULTS:
            return ("the overlay network's links are Swarm's, not the orchestrator's (no partition, no tc), "
                    "and link-layer shaping and clock skew are not implemented for Swarm yet")
        return None

    def control(self, name: str, command: dict) -> dict:
        host, port = self._endpoint(name)
        return post_control(host, port, run_secret(self.run_dir) or "", command)

    def _endpoint(self, name: str) -> tuple[str, int]:
        info = self._state()
        info.node(name)
        found = self._endpoints(info).get(name)
        if found is None:
            raise BackendError(f"{name} is not running")
        return found

    def node_addresses(self, name: str) -> dict[str, str]:
        info = self._state()
        task = self._current(info).get(info.node(name).name)
        return dict(task.addresses) if task else {}

    def shaping_path(self, fault: str, params: dict) -> tuple[str, str]:
        return LINK_LAYER, "Swarm's overlay links are not the orchestrator's"

    def node_status(self, name: str) -> dict | None:
        try:
            return readiness.fetch_status(*self._endpoint(name), timeout=STATUS_TIMEOUT)
        except BackendError:
            return None

    def node_metrics(self, name: str) -> list[tuple[str, dict[str, str], float]] | None:
        try:
            return readiness.fetch_metrics(*self._endpoint(name), timeout=STATUS_TIMEOUT)
        except BackendError:
            return None

    def node_state(self, name: str) -> dict:
        """The networks without their addresses: Swarm gives every new task addresses afresh, so a node that
        chaos killed and started again is on the same networks at other addresses, as it should be (node_
        addresses and inspect say where)."""
        info = self._state()
        task = self._current(info).get(info.node(name).name)
        status = "running" if task is not None and task.state == "running" else "exited"
        if status == "running" and self._paused().get(name) == task.id:
            status = "paused"
        networks = dict.fromkeys(task.addresses, SWARM_ADDRESS) if task else {}
        return {"status": status, "networks": networks, "qdiscs": []}

    def stop(self, name: str, *, timeout: float = 10.0) -> None:
        """Scale the node's service to 0 (SIGTERM, SIGKILL after the stop grace period) and wait."""
        info = self._state()
        node = info.node(name)
        docker("service", "scale", "--detach", f"{node.container}=0")
        deadline = time.monotonic() + timeout + 30
        while any(t.state == "running" for n, t in self._running_tasks(info).items() if n == name):
            if time.monotonic() > deadline:
                raise BackendError(f"{name} still runs {timeout + 30:g} s after scaling it to 0")
            time.sleep(0.5)

    def _running_tasks(self, info: RunInfo) -> dict[str, Task]:
        prefix = self._stack(info) + "_"
        return {t.service.removeprefix(prefix): t for t in stack_tasks(self._stack(info))
                if t.state == "running"}

    def start(self, name: str, *, timeout: float = 60.0, wait: bool = True) -> dict | None:
        """A task for the node again when none runs (after kill or stop); when `wait`, wait until it runs
        and is ready: its /status."""
        self.unpause(name)
        return self._start(name, timeout=timeout, wait=wait, force=False)

    @staticmethod
    def _new_task(node: RunNode) -> None:
        docker("service", "update", "--detach", "--force", "--replicas", "1", node.container or "")

    def _another_task(self, node: RunNode, task: Task, retries: dict[str, int]) -> bool:
        """When the engine, not the node, failed to start `task` (ENGINE_BUSY), ask for another task, at most
        ENGINE_RETRIES times a node (`retries` counts them): whether it did."""
        if ENGINE_BUSY not in task.error or retries.get(node.name, 0) >= ENGINE_RETRIES:
            return False
        retries[node.name] = retries.get(node.name, 0) + 1
        self._new_task(node)
        return True

    def _start(self, name: str, *, timeout: float, wait: bool, force: bool) -> dict | None:
        info = self._state()
        node = info.node(name)
        task = self._current(info).get(name)
        replaced = task.id if task is not None else None
        if force or task is None or task.state in FAILED_STATES:
            self._new_task(node)
        else:
            replaced = None  # it runs: nothing to replace
        if not wait:
            return None
        deadline = time.monotonic() + timeout
        retries: dict[str, int] = {}
        while True:
            task = self._current(info).get(name)
            if task is not None and task.state == "running" and task.id != replaced:
                break
            if task is not None and task.id != replaced and task.state in FAILED_STATES:
                if self._another_task(node, task, retries):  # the engine's failure, not the node's
                    replaced = task.id
                    continue
                self._check_tasks(info, {name: task}, [name])
            if time.monotonic() > deadline:
                raise StartFailed(f"{name}: no running task after {timeout:g} s "
                                  f"({task.state if task else 'no task'})")
            time.sleep(0.5)
        host, _ = node_hosts({task.node_id}, swarm_info().get("NodeID", ""))[task.node_id]
        node.control = f"{host}:{(node.control or '').rpartition(':')[2]}"
        if node.role == "client" and node.socks:
            node.socks = f"{host}:{node.socks.rpartition(':')[2]}"
        write_state(info)
        left = max(1.0, deadline - time.monotonic())
        return self._wait_ready(info, left, lambda _: None, only=[name])[name]

    def pause(self, name: str) -> None:
        """`docker pause` of the task's container on its host (the cgroup freezer). Swarm still calls the task
        running, so the run dir records which task was paused (node_state, unpause)."""
        task = self._act(name, "pause")
        self._set_paused(name, task.id)

    def unpause(self, name: str) -> None:
        paused = self._paused().get(name)
        if paused is None:
            return
        task = self._current(self._state()).get(name)
        if task is not None and task.id == paused and task.state == "running":
            self._act(name, "unpause")
        self._set_paused(name, None)  # or a task that is gone, or another one (restart): nothing frozen

    def _paused(self) -> dict[str, str]:
        path = self.run_dir / PAUSED_FILE
        return json.loads(path.read_text()) if path.exists() else {}

    def _set_paused(self, name: str, task_id: str | None) -> None:
        paused = self._paused()
        paused.pop(name, None)
        if task_id is not None:
            paused[name] = task_id
        (self.run_dir / PAUSED_FILE).write_text(json.dumps(paused))

    # -- leftovers -------------------------------------------------------------------------------------------

    def reap(self, everything: bool = False) -> ReapReport:
        return reap(everything=everything)


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


_SIGNALS = frozenset(s.name for s in signal.Signals)


def extra_labels() -> dict[str, str]:
    """$ONIONLAB_LABELS (KEY=VALUE,...): labels for every object (tests find theirs by them)."""
    out = {}
    for item in filter(None, (p.strip() for p in os.environ.get("ONIONLAB_LABELS", "").split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BackendError(f"$ONIONLAB_LABELS: expected KEY=VALUE[,KEY=VALUE...], found {item!r}")
        out[key] = value
    return out


__all__ = ["RUN_LABELS", "SwarmBackend"]
