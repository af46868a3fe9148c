"""The swarm backend's stack file and material, without an engine: keys only as Swarm secrets (never in the
stack file, the environment or an image), configs as Swarm configs, dnsrr, placement from the topology."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from orchestrator.backends.swarm.material import SECRET_PREFIX, entry_script, make_material, remove_material
from orchestrator.backends.swarm.stackfile import render_stack
from orchestrator.compose import stack_plan
from orchestrator.topology import load_topology, parse_topology

REPO = Path(__file__).resolve().parents[2]


def _stack(tmp_path, topology):
    material = make_material(stack_plan(topology), tmp_path, "the-secret")
    ports = {n.name: {"control_port": 20000 + n.index} for n in topology.nodes}
    ports["client"]["socks_port"] = 30000
    return material, json.loads(render_stack(topology, material, ports, {"onionlab.run": "r1"}))


def test_keys_are_secrets_configs_are_configs_and_the_stack_file_holds_no_key(tmp_path):
    topology = load_topology(REPO / "topologies" / "default.yaml")
    material, stack = _stack(tmp_path, topology)
    text = json.dumps(stack)
    key_files = [p for p in (tmp_path / "material").rglob("keys/*")]
    assert key_files, "init made the authorities' and the onion service's keys"
    for path in key_files:
        assert path.read_bytes().decode(errors="replace").strip()[:40] not in text
    assert "the-secret" not in text
    hs = stack["services"]["hs"]
    assert {s["target"] for s in hs["secrets"]} == {SECRET_PREFIX + "control.secret",
                                                     SECRET_PREFIX + "hs_identity.key"}
    assert all(s["uid"] == "10001" and s["mode"] == 0o400 for s in hs["secrets"])
    assert [c["target"] for c in stack["services"]["client"]["configs"]] == [
        "/etc/onionlab/config.json", "/etc/onionlab/petnames.json"]
    for name, service in stack["services"].items():
        assert "environment" not in service, name
        assert service["deploy"]["endpoint_mode"] == "dnsrr"
        assert service["deploy"]["restart_policy"] == {"condition": "none"}
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"] and service["user"] == "10001"
        assert all(p["mode"] == "host" for p in service["ports"])
    assert stack["services"]["client"]["ports"][1] == {"target": 9050, "published": 30000, "protocol": "tcp",
                                                        "mode": "host"}
    assert set(stack["secrets"]) >= {"control-secret", "key-hs-hs_identity.key"}
    remove_material(tmp_path)
    assert not (tmp_path / "material").exists()


def test_placement_comes_from_the_topology_only(tmp_path):
    text = (REPO / "topologies" / "default.yaml").read_text().replace(
        "  client: {socks_port: 9050, guards: 1}",
        "  client: {socks_port: 9050, guards: 1, placement: [node.labels.onionlab==clients]}")
    topology = parse_topology(text, "lab.yaml")
    _, stack = _stack(tmp_path, topology)
    assert stack["services"]["client"]["deploy"]["placement"] == {
        "constraints": ["node.labels.onionlab==clients"]}
    assert "placement" not in stack["services"]["relay3"]["deploy"]
    assert "placement" not in stack["services"]["auth1"]["deploy"]


def test_the_entry_puts_the_secrets_into_the_keys_dir_and_starts_the_node(tmp_path):
    secrets = tmp_path / "run-secrets"
    secrets.mkdir()
    (secrets / f"{SECRET_PREFIX}identity.key").write_text("k1")
    (secrets / f"{SECRET_PREFIX}control.secret").write_text("s")
    (tmp_path / "petnames.json").write_text("{}")
    data = tmp_path / "data" / "auth1"
    script = entry_script(str(data), ["echo", "started"], petnames=True)
    script = script.replace("/run/secrets/", f"{secrets}/").replace("/etc/onionlab", str(tmp_path))
    # the stack deploy's interpolation turns $$ into $
    done = subprocess.run(["sh", "-c", script.replace("$$", "$")], capture_output=True, text=True, check=True)
    assert done.stdout == "started\n"
    assert (data / "keys" / "identity.key").read_text() == "k1"
    assert (data / "keys" / "control.secret").read_text() == "s"
    assert oct((data / "keys").stat().st_mode & 0o777) == "0o700"
    assert oct((data / "keys" / "identity.key").stat().st_mode & 0o777) == "0o600"
    assert (data / "petnames.json").exists()
    again = subprocess.run(["sh", "-c", script.replace("$$", "$")], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr  # a restarted task overwrites its own 0600 copies


def test_secret_and_config_names_fit_swarm_limits_with_the_stack_prefix():
    from orchestrator.backends.swarm.material import MAX_KEY, _key

    short = _key("auth1", "key", "identity.key")
    assert short == "key-auth1-identity.key"
    long_a = _key("relay-with-a-really-long-name-indeed", "key", "authority_identity.pem")
    long_b = _key("relay-with-a-really-long-name-indeed", "key", "authority_signing.pem")
    assert len(long_a) <= MAX_KEY and len(long_b) <= MAX_KEY and long_a != long_b
    assert len("ol0123456789_" + long_a) <= 64


def test_up_refuses_relays_it_cannot_tell_apart_and_a_non_manager_before_deploying(tmp_path, monkeypatch):
    import pytest

    from orchestrator.backends import BackendError
    from orchestrator.backends.swarm import SwarmBackend, lifecycle

    deployed = []
    monkeypatch.setattr(lifecycle, "docker", lambda *args, **kw: deployed.append(args))
    monkeypatch.setattr(lifecycle, "require_manager", lambda: {"LocalNodeState": "active"})
    backend = SwarmBackend(tmp_path / "run")
    clash = (REPO / "topologies" / "multi-network.yaml").read_text().replace(
        "  - {name: relay, role: relay, count: 6}", "  - {name: relay, role: relay, count: 6}\n"
                                                   "  - {name: relay-1, role: relay}")
    with pytest.raises(BackendError, match=r"multi-network.*relays with the same nickname \(relay1\)"):
        backend.up(parse_topology(clash, "multi.yaml"))
    from orchestrator.backends.swarm import engine

    monkeypatch.setattr(lifecycle, "require_manager", engine.require_manager)
    monkeypatch.setattr(engine, "swarm_info", lambda: {"LocalNodeState": "inactive"})
    with pytest.raises(BackendError, match=r"not in a swarm \(state: inactive\); make it a one-node swarm "
                                           r"with `docker swarm init`"):
        backend.up(load_topology(REPO / "topologies" / "default.yaml"))
    monkeypatch.setattr(engine, "swarm_info", lambda: {"LocalNodeState": "active", "ControlAvailable": False})
    with pytest.raises(BackendError, match="is a swarm worker"):
        backend.up(load_topology(REPO / "topologies" / "default.yaml"))
    assert deployed == [] and not (tmp_path / "run").exists()


def test_service_log_lines_keep_the_engines_nanosecond_timestamps():
    from orchestrator.backends.swarm.observe import _split

    line = _split("relay1", "stdout", '2026-12-07T13:56:01.793123456Z {"event": "link_up"}')
    assert (line.text, line.ts) == ('{"event": "link_up"}', 1796651761.793123)
    assert _split("relay1", "stderr", "2026-12-07T13:56:01Z fatal: x").ts == 1796651761.0
    assert _split("relay1", "stderr", "no stamp here") == ("relay1", "stderr", "no stamp here", None)


def test_a_task_that_failed_stops_up_at_once_though_swarm_marks_it_to_shut_down(tmp_path, monkeypatch):
    import pytest

    from orchestrator.backends import NodeFailed, RunInfo, RunNode
    from orchestrator.backends.swarm import lifecycle
    from orchestrator.backends.swarm.engine import Task

    error = "mkdir /sys/fs/cgroup/cpuset/docker: read-only file system"
    tasks = [Task("t1", "olr1_auth1", "n1", "running", "running", "", "c1", "2026-01-01T00:00:00Z"),
             Task("t2", "olr1_relay1", "n1", "failed", "shutdown", error, "", "2026-01-01T00:00:01Z")]
    monkeypatch.setattr(lifecycle, "stack_tasks", lambda stack: tasks)
    monkeypatch.setattr(lifecycle.observe, "service_logs", lambda service, tail=None: ("", ""))
    backend = lifecycle.SwarmBackend(tmp_path)
    info = RunInfo("swarm", str(tmp_path), "t.yaml", "lab", run_id="r1", nodes=[
        RunNode("auth1", "authority", "auth1", {}, container="olr1_auth1"),
        RunNode("relay1", "relay", "relay1", {}, container="olr1_relay1")])
    current = backend._current(info)
    assert current["relay1"].state == "failed"  # the newest task, whatever Swarm wants of it now
    with pytest.raises(NodeFailed, match=f"relay1 \\(relay\\): task failed: {error}"):
        backend._check_tasks(info, current)


ENGINE_BUSY = ("starting container failed: unable to remount dir as readonly: mount tmpfs:/var/lib/docker/"
               "containers/x/mounts/secrets, flags: 0x21, data: uid=0,gid=0: device or resource busy")


def _engine_with_tasks(monkeypatch, tasks: list, after_updates: tuple, host: str) -> list[tuple]:
    """lifecycle's view of a one-node swarm whose service tasks are `tasks`: each `docker service update`
    (recorded in the list returned) adds the next of `after_updates`; no sleeping, no logs, no state file."""
    from orchestrator.backends.swarm import lifecycle

    updates: list[tuple] = []

    def docker(*args, **kw):
        updates.append(args)
        tasks.append(after_updates[len(updates) - 1])

    monkeypatch.setattr(lifecycle, "stack_tasks", lambda stack: list(tasks))
    monkeypatch.setattr(lifecycle, "docker", docker)
    monkeypatch.setattr(lifecycle.time, "sleep", lambda s: None)
    monkeypatch.setattr(lifecycle.observe, "service_logs", lambda service, tail=None: ("", ""))
    monkeypatch.setattr(lifecycle, "node_hosts", lambda ids, local: {"n1": ("127.0.0.1", host)})
    monkeypatch.setattr(lifecycle, "swarm_info", lambda: {"NodeID": "n1"})
    monkeypatch.setattr(lifecycle, "write_state", lambda info: None)
    return updates


def test_start_asks_for_another_task_when_the_engine_could_not_start_its_container(tmp_path, monkeypatch):
    """The fresh-clone CI run's swarm test: after a kill, the restarted relay's task failed with the engine's
    "unable to remount dir as readonly ... secrets ...: device or resource busy", not the node's failure:
    `start` asks for another task (twice at most); a node's own failure still stops it at once."""
    import pytest

    from orchestrator.backends import NodeFailed, RunInfo, RunNode
    from orchestrator.backends.swarm import lifecycle
    from orchestrator.backends.swarm.engine import Task

    busy = ENGINE_BUSY

    def task(n: int, state: str, error: str = "") -> Task:
        return Task(f"t{n}", "olr1_relay1", "n1", state, "running", error, f"c{n}", f"2026-01-01T00:00:0{n}Z")

    def run(*after_updates: Task) -> list[tuple]:
        tasks = [task(0, "failed", "task: non-zero exit (137)")]  # the killed one
        updates = _engine_with_tasks(monkeypatch, tasks, after_updates, "")
        backend = lifecycle.SwarmBackend(tmp_path)
        info = RunInfo("swarm", str(tmp_path), "t.yaml", "lab", run_id="r1", nodes=[
            RunNode("relay1", "relay", "relay1", {}, container="olr1_relay1", control="127.0.0.1:9052")])
        monkeypatch.setattr(backend, "_state", lambda: info)
        monkeypatch.setattr(backend, "_wait_ready", lambda info, left, say, only: {"relay1": {"ok": True}})
        assert backend.start("relay1", timeout=5) == {"ok": True}
        return updates

    assert len(run(task(1, "failed", busy), task(2, "running"))) == 2
    with pytest.raises(NodeFailed, match="device or resource busy"):  # not forever
        run(task(1, "failed", busy), task(2, "failed", busy), task(3, "failed", busy))
    with pytest.raises(NodeFailed, match="exit"):  # the node's own failure: no second task
        run(task(1, "failed", "task: non-zero exit (1)"))


def test_up_asks_for_another_task_when_the_engine_could_not_start_a_container(tmp_path, monkeypatch):
    """tests/swarm_multi: during `up` on three Docker-in-Docker engines, auth1's first task failed with the
    engine's "unable to remount dir as readonly ... secrets ...: device or resource busy" and the whole run
    was removed. `up` asks for another task (twice at most a node) and waits for it; a node's own failure
    still fails `up` at once."""
    import pytest

    from orchestrator.backends import NodeFailed, RunInfo, RunNode
    from orchestrator.backends.swarm import lifecycle
    from orchestrator.backends.swarm.engine import Task

    busy = ENGINE_BUSY

    def task(node: str, n: int, state: str, error: str = "") -> Task:
        return Task(f"{node}-t{n}", f"olr1_{node}", "n1", state, "running", error, f"c{n}",
                    f"2026-01-01T00:00:0{n}Z")

    def locate(*auth1_tasks: Task) -> list[tuple]:
        first, *after_updates = auth1_tasks
        tasks = [first, task("relay1", 0, "running")]
        updates = _engine_with_tasks(monkeypatch, tasks, tuple(after_updates), "host1")
        info = RunInfo("swarm", str(tmp_path), "t.yaml", "lab", run_id="r1", nodes=[
            RunNode("auth1", "authority", "auth1", {}, container="olr1_auth1"),
            RunNode("relay1", "relay", "relay1", {}, container="olr1_relay1")])
        said: list[str] = []
        lifecycle.SwarmBackend(tmp_path)._locate(info, {"auth1": {"control_port": 1},
                                                        "relay1": {"control_port": 2}}, 5, said.append)
        assert info.node("auth1").control == "127.0.0.1:1"
        assert sum("asked for another" in line for line in said) == len(updates)
        return updates

    assert locate(task("auth1", 1, "failed", busy), task("auth1", 2, "running")) == [
        ("service", "update", "--detach", "--force", "--replicas", "1", "olr1_auth1")]
    with pytest.raises(NodeFailed, match="device or resource busy"):  # not forever
        locate(*(task("auth1", n, "failed", busy) for n in (1, 2, 3)))
    with pytest.raises(NodeFailed, match="exit"):  # the node's own failure: no second task
        locate(task("auth1", 1, "failed", "task: non-zero exit (1)"))


def test_service_logs_are_asked_again_when_docker_service_logs_hangs(monkeypatch):
    """tests/swarm_multi's chaos run: `docker service logs` of the onion service (on a worker, killed and
    started again during the run) never ended its stream, a Docker bug, and the 120 s timeout lost the
    node's events for every checker. A call that hangs is made again, a few times at most."""
    import pytest

    from orchestrator.backends import BackendError
    from orchestrator.backends.swarm import observe

    answers: list = [BackendError("took more than 45 s"), BackendError("took more than 45 s"),
                     subprocess.CompletedProcess([], 0, "events\n", "diagnostics\n")]
    timeouts: list[float] = []

    def docker(*args, timeout, check):
        timeouts.append(timeout)
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    monkeypatch.setattr(observe, "docker", docker)
    assert observe.service_logs("olr1_hs") == ("events\n", "diagnostics\n")
    assert timeouts == [observe.SERVICE_LOG_TIMEOUT] * 3
    answers[:] = [BackendError("took more than 45 s")] * observe.SERVICE_LOG_ATTEMPTS
    with pytest.raises(BackendError, match="took more than"):
        observe.service_logs("olr1_hs")
