"""kill, pause and unpause of a swarm task on whichever host runs it (orchestrator/backends/swarm/
taskaction.py), without an engine: the one-shot service that does it (pinned to the task's node, the host's
socket, no privileges beyond it, removed whatever happened), its script against a stand-in engine API on a
unix socket, and the backend's kill/pause/start/node_state on a task of another swarm node."""

from __future__ import annotations

import http.server
import socketserver
import subprocess
import sys
import threading

import pytest

from orchestrator.backends import RunInfo, RunNode
from orchestrator.backends.swarm import lifecycle, taskaction
from orchestrator.backends.swarm.engine import Task
from orchestrator.backends.swarm.taskaction import Action, TaskActionFailed, run_action

WORKER_TASK = Task("t1", "olr1_relay1", "worker2", "running", "running", "", "c0ffee" * 10,
                   "2026-01-01T00:00:00Z")


def one_shot(state: str, error: str = "") -> Task:
    return Task("os1", "olr1_kill_abcdef", "worker2", state, "shutdown", error, "d" * 64,
                "2026-01-01T00:00:05Z")


def _engine(monkeypatch, states: list[list[Task]], logs: str = "") -> list[tuple]:
    """A manager whose one-shot has the tasks `states` at each look (the last one from then on); the docker
    calls made, in order."""
    calls: list[tuple] = []
    monkeypatch.setattr(taskaction, "docker", lambda *args, **kw: calls.append(args))
    monkeypatch.setattr(taskaction, "service_tasks",
                        lambda name: states.pop(0) if len(states) > 1 else states[0])
    monkeypatch.setattr(taskaction.observe, "service_logs", lambda name, tail=None: ("", logs))
    monkeypatch.setattr(taskaction.time, "sleep", lambda s: None)
    return calls


def test_the_one_shot_runs_on_the_tasks_node_with_its_socket_only_and_is_removed(monkeypatch):
    calls = _engine(monkeypatch, [[], [one_shot("pending")], [one_shot("running")], [one_shot("complete")]])
    act = Action("relay1", WORKER_TASK, "onionlab/node:x", "kill", "SIGTERM")
    run_action(act, "olr1", {"com.docker.stack.namespace": "olr1", "onionlab.run": "r1"})
    create, remove = calls
    name = create[create.index("--name") + 1]
    assert name.startswith("olr1_kill_") and remove == ("service", "rm", name)
    args = " ".join(create[:create.index("onionlab/node:x")])
    assert "--constraint node.id==worker2" in args and "--restart-condition none" in args
    assert "--mount type=bind,source=/var/run/docker.sock,target=/var/run/docker.sock" in args
    assert "--user 0 --cap-drop ALL --read-only" in args and "--entrypoint python3" in args
    assert "--label=com.docker.stack.namespace=olr1" in args and "--label=onionlab.run=r1" in args
    assert "--publish" not in args and "--privileged" not in args
    assert create[-6:] == ("onionlab/node:x", "-c", taskaction.SCRIPT, "kill", "c0ffee" * 10, "SIGTERM")


def test_a_failed_one_shot_says_what_the_engine_said_and_is_removed_all_the_same(monkeypatch):
    calls = _engine(monkeypatch, [[one_shot("failed", "task: non-zero exit (1)")]],
                    logs="Traceback ...\nthe engine answered 409: Container c0ffee is not running\n")
    with pytest.raises(TaskActionFailed, match=r"pause of relay1 \(container c0ffeec0ffee\) on its host "
                                               r"failed: the engine answered 409: Container c0ffee is not"):
        run_action(Action("relay1", WORKER_TASK, "img", "pause"), "olr1", {})
    assert calls[-1][:2] == ("service", "rm")


def test_a_one_shot_that_never_ends_times_out_and_is_removed(monkeypatch):
    calls = _engine(monkeypatch, [[one_shot("pending", "no suitable node (1 node not available)")]])
    with pytest.raises(TaskActionFailed, match=r"did not finish within 0 s \(pending: no suitable node"):
        run_action(Action("relay1", WORKER_TASK, "img", "kill", "SIGKILL"), "olr1", {}, timeout=0)
    assert calls[-1][:2] == ("service", "rm")


def test_a_task_without_a_container_is_refused_before_anything_is_created(monkeypatch):
    calls = _engine(monkeypatch, [[]])
    starting = Task("t2", "olr1_relay1", "worker2", "assigned", "running", "", "", "2026-01-01T00:00:00Z")
    with pytest.raises(TaskActionFailed, match="no container yet"):
        run_action(Action("relay1", starting, "img", "kill", "SIGKILL"), "olr1", {})
    assert calls == []


class _Engine(http.server.BaseHTTPRequestHandler):
    """The engine API's answer to POST /containers/ID/ACTION: 204, or 404 for an unknown container."""

    seen: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.seen.append(self.path)
        known = self.path.startswith("/containers/c0ffee/")
        self.send_response(204 if known else 404)
        body = b"" if known else b'{"message":"No such container: nope"}'
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass

    def address_string(self) -> str:  # a unix socket's peer has no (host, port)
        return "engine"


def test_the_one_shots_script_makes_the_engine_api_call_and_fails_on_its_refusal(tmp_path):
    sock = tmp_path / "docker.sock"
    script = taskaction.SCRIPT.replace(repr(taskaction.SOCKET), repr(str(sock)))
    assert script != taskaction.SCRIPT
    with socketserver.UnixStreamServer(str(sock), _Engine) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            def run(*args: str) -> subprocess.CompletedProcess:
                return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                                      timeout=30)

            assert run("kill", "c0ffee", "SIGTERM").returncode == 0
            assert run("pause", "c0ffee", "").returncode == 0
            refused = run("unpause", "nope", "")
        finally:
            server.shutdown()
    assert _Engine.seen == ["/containers/c0ffee/kill?signal=SIGTERM", "/containers/c0ffee/pause",
                            "/containers/nope/unpause"]
    assert refused.returncode == 1
    assert refused.stderr.strip() == 'the engine answered 404: {"message":"No such container: nope"}'


def _backend(tmp_path, monkeypatch, tasks: list[Task]) -> tuple[lifecycle.SwarmBackend, list[Action]]:
    """A swarm backend whose relay1 runs on another node than the manager's, on a manager elsewhere
    (DOCKER_HOST tcp://): the actions it asked of taskaction."""
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.2:2375")
    backend = lifecycle.SwarmBackend(tmp_path)
    info = RunInfo("swarm", str(tmp_path), "t.yaml", "lab", run_id="r1", nodes=[
        RunNode("relay1", "relay", "relay1", {}, container="olr1_relay1", control="10.0.0.3:9052")])
    monkeypatch.setattr(backend, "_state", lambda: info)
    monkeypatch.setattr(lifecycle, "stack_tasks", lambda stack: list(tasks))
    monkeypatch.setattr(lifecycle, "swarm_info", lambda: {"NodeID": "manager1"})
    spec = {"Labels": {"com.docker.stack.namespace": "olr1", "com.docker.stack.image": "onionlab/node:x",
                       "onionlab.run": "r1"},
            "TaskTemplate": {"ContainerSpec": {"Image": "onionlab/node:x"}}}
    monkeypatch.setattr(lifecycle, "inspect", lambda kind, *ids: [{"Spec": spec}] if ids == ("olr1_relay1",)
                        else [])
    done: list[tuple] = []
    monkeypatch.setattr(lifecycle, "run_action", lambda act, stack, labels: done.append((act, stack, labels)))
    return backend, done


def test_kill_reaches_a_task_on_another_host_through_that_hosts_engine(tmp_path, monkeypatch):
    """Before: `kill` refused every task off the manager's own host ("Swarm gives no way to reach a task's
    container from the manager"), and chaos refused kill against a manager elsewhere."""
    backend, done = _backend(tmp_path, monkeypatch, [WORKER_TASK])
    assert backend.fault_problem("kill") is None and backend.fault_problem("pause") is None
    backend.kill("relay1", "SIGTERM")
    ((act, stack, labels),) = done
    assert (act.task, act.image, act.action, act.signal, stack) == (WORKER_TASK, "onionlab/node:x", "kill",
                                                                    "SIGTERM", "olr1")
    assert labels == {"com.docker.stack.namespace": "olr1", "onionlab.run": "r1"}  # the run's, not the image
    with pytest.raises(lifecycle.BackendError, match="no signal named 'SIGNOPE'"):
        backend.kill("relay1", "SIGNOPE")
    assert len(done) == 1


def test_pause_is_recorded_for_its_task_and_start_resumes_it(tmp_path, monkeypatch):
    tasks = [WORKER_TASK]
    backend, done = _backend(tmp_path, monkeypatch, tasks)
    assert backend.node_state("relay1")["status"] == "running"
    backend.pause("relay1")
    assert backend.node_state("relay1")["status"] == "paused"  # Swarm still says running
    monkeypatch.setattr(backend, "_start", lambda name, **kw: {"ready": True})
    assert backend.start("relay1") == {"ready": True}
    assert [a.action for a, _, _ in done] == ["pause", "unpause"]
    assert backend.node_state("relay1")["status"] == "running"
    backend.unpause("relay1")  # nothing paused: nothing done
    assert len(done) == 2


def test_a_paused_task_that_swarm_replaced_is_not_resumed(tmp_path, monkeypatch):
    tasks = [WORKER_TASK]
    backend, done = _backend(tmp_path, monkeypatch, tasks)
    backend.pause("relay1")
    tasks.append(Task("t2", "olr1_relay1", "worker2", "running", "running", "", "e" * 64,
                      "2026-01-01T00:01:00Z"))
    assert backend.node_state("relay1")["status"] == "running"  # a new task (restart): never frozen
    backend.unpause("relay1")
    assert [a.action for a, _, _ in done] == ["pause"]
    assert backend._paused() == {}


def test_a_node_killed_and_started_again_is_left_as_chaos_found_it_though_at_another_address(tmp_path,
                                                                                              monkeypatch):
    """tests/swarm_multi's chaos run: after kill and stop, each relay's new task had a new overlay address
    (Swarm's, per task), and chaos's `faults` checker called that a fault left behind ("left behind: relay3:
    on networks {'ol..._onionnet': '10.0.1.19'}, was on {... '10.0.1.6'}")."""
    from orchestrator.chaos.faults import compare_snapshots

    first = Task("t1", "olr1_relay1", "worker2", "running", "running", "", "c1", "2026-01-01T00:00:00Z",
                 {"olr1_onionnet": "10.0.1.6"})
    tasks = [first]
    backend, _ = _backend(tmp_path, monkeypatch, tasks)
    before = {"relay1": backend.node_state("relay1")}
    tasks.append(Task("t2", "olr1_relay1", "worker2", "running", "running", "", "c2", "2026-01-01T00:01:00Z",
                      {"olr1_onionnet": "10.0.1.19"}))
    assert compare_snapshots(before, {"relay1": backend.node_state("relay1")}) == []
    tasks.append(Task("t3", "olr1_relay1", "worker2", "running", "running", "", "c3", "2026-01-01T00:02:00Z",
                      {}))  # off its network: that is left behind
    assert compare_snapshots(before, {"relay1": backend.node_state("relay1")}) == [
        f"relay1: on networks {{}}, was on {{'olr1_onionnet': {lifecycle.SWARM_ADDRESS!r}}}"]
