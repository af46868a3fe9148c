"""`onionlab` and `python -m nodes` command lines: parsing, exit codes, messages, status output (no sockets:
the nodes' /status answers are faked)."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

import nodes.__main__ as node_main
from orchestrator import cli, readiness
from orchestrator.backends import RunInfo, RunNode, default_run_dir, write_state

REPO = Path(__file__).resolve().parents[2]
BAD_TOPOLOGY = """\
name: lab
nodes:
  - {name: auth, role: authority, count: 3}
  - {name: relay, role: relay, count: 3}
  - {name: hs, role: onoin_service, services: [{port: 80, target: http}]}
"""


def parse(*argv):
    return cli.build_parser().parse_args(list(argv))


def test_up_defaults():
    args = parse("up")
    assert (args.command, args.backend, args.topology) == ("up", "docker", None)
    assert (args.timeout, args.run_dir) == (None, None)  # None: chosen from the lab's size


def test_up_arguments():
    args = parse("up", "--backend", "local", "--timeout", "5", "--run-dir", "/tmp/r", "lab.yaml")
    assert (str(args.topology), args.backend, args.timeout, str(args.run_dir)) == ("lab.yaml", "local", 5.0,
                                                                                   "/tmp/r")


@pytest.mark.parametrize("argv", [["up", "--backend", "k8s"], ["up", "a.yaml", "b.yaml"],
                                  ["logs", "a", "b"], ["exec"], ["status", "--yaml"], ["launch"],
                                  ["reap", "run1"]])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse(*argv)
    assert exit_.value.code == 2


def test_other_commands():
    assert parse("status", "--json").json is True
    assert parse("status").json is False
    assert parse("down", "--keep").keep is True
    assert parse("down").keep is False
    assert parse("logs", "auth1").node == "auth1"
    assert parse("reap").everything is False
    assert parse("reap", "--all").everything is True
    assert parse("up", "--backend", "local").backend == "local"
    assert parse("up", "--backend", "swarm").backend == "swarm"
    assert (parse("reap").backend, parse("reap", "--backend", "swarm").backend) == ("docker", "swarm")


def test_no_command_prints_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert "up" in capsys.readouterr().err


def test_help_says_docker_is_the_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["up", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "docker (the default)" in help_text and "local:" in help_text


def test_bad_topology_exits_2_with_file_and_line(tmp_path, capsys):
    path = tmp_path / "lab.yaml"
    path.write_text(BAD_TOPOLOGY)
    assert cli.main(["up", "--run-dir", str(tmp_path / "run"), str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:5:" in err and "nodes.hs.role: unknown role 'onoin_service'" in err
    assert "did you mean 'onion_service'?" in err
    assert not (tmp_path / "run").exists()  # nothing was started


def test_missing_topology_exits_2(tmp_path, capsys):
    assert cli.main(["up", "--run-dir", str(tmp_path / "run"), str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml: cannot read" in capsys.readouterr().err


def test_default_run_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("ONIONLAB_RUN_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_run_dir() == tmp_path / ".onionlab" / "run"
    monkeypatch.setenv("ONIONLAB_RUN_DIR", "/somewhere/else")
    assert str(default_run_dir()) == "/somewhere/else"


# -- commands on a recorded run ------------------------------------------------------------------------------

ONION = "a" * 56 + ".onion"
LIVE = {  # what each node's /status answers (relay2 does not answer)
    ("127.0.0.2", 9052): {"role": "authority", "name": "auth1", "conditions": {"consensus": True},
                          "or_port": 9001, "dir_port": 9030, "v3ident": "C" * 40, "fingerprint": "D" * 40,
                          "voting_interval": 10},
    ("127.0.0.3", 9052): {"role": "relay", "name": "relay1", "conditions": {"consensus": True,
                                                                            "descriptor_uploaded": False}},
    ("127.0.0.5", 9052): {"role": "onion_service", "name": "hs", "conditions": {"intro_points": True},
                          "onion": ONION, "ports": [80, 7]},
    ("127.0.0.6", 9052): {"role": "client", "name": "client", "conditions": {}, "socks": "127.0.0.6:9050"},
}


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    """A run recorded in a state file (made-up PIDs, no processes), with faked /status answers."""
    run_dir = tmp_path / "run"
    (run_dir / "nodes" / "auth1").mkdir(parents=True)
    (run_dir / "nodes" / "auth1" / "events.jsonl").write_text('{"event":"authority_started"}\n')
    (run_dir / "nodes" / "auth1" / "stderr.log").write_text("fatal: boom\n")
    node = RunNode
    write_state(RunInfo("local", str(run_dir), "lab.yaml", "lab", [
        node("auth1", "authority", "127.0.0.2", {"control_port": 9052, "dir_port": 9030}, pid=101),
        node("relay1", "relay", "127.0.0.3", {"control_port": 9052, "or_port": 9001}, pid=102),
        node("relay2", "relay", "127.0.0.4", {"control_port": 9052, "or_port": 9001}, pid=103),
        node("hs", "onion_service", "127.0.0.5", {"control_port": 9052}, pid=104, services=[80, 7]),
        node("client", "client", "127.0.0.6", {"control_port": 9052, "socks_port": 9050}, pid=105,
             socks="127.0.0.6:9050"),
    ]))
    monkeypatch.setattr(readiness, "fetch_status", lambda host, port, timeout: LIVE.get((host, port)))
    # the made-up PIDs "run" (a test that stops the lab says they are not ours, so none is signalled)
    monkeypatch.setattr("orchestrator.backends.local._is_node_process", lambda pid, config: True)
    return run_dir


def test_status_json_shape(run_dir, capsys):
    assert cli.main(["status", "--json", "--run-dir", str(run_dir)]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "nodes": [
            {"name": "auth1", "role": "authority", "address": "127.0.0.2", "ready": True},
            {"name": "relay1", "role": "relay", "address": "127.0.0.3", "ready": False},
            {"name": "relay2", "role": "relay", "address": "127.0.0.4", "ready": False},
            {"name": "hs", "role": "onion_service", "address": "127.0.0.5", "ready": True},
            {"name": "client", "role": "client", "address": "127.0.0.6", "ready": True},
        ],
        "onion_services": [{"name": "hs", "onion": ONION, "ports": [80, 7]}],
        "authorities": [{"name": "auth1", "address": "127.0.0.2", "or_port": 9001, "dir_port": 9030,
                         "v3ident": "C" * 40, "fingerprint": "D" * 40, "voting_interval": 10}],
        "clients": [{"name": "client", "socks": "127.0.0.6:9050"}],
    }


def test_export_torrc_of_the_running_lab(run_dir, capsys, monkeypatch, tmp_path):
    assert cli.main(["export", "torrc", "--run-dir", str(run_dir), "--socks-port", "127.0.0.1:19050"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"DirAuthority auth1 orport=9001 no-v2 v3ident={'C' * 40} 127.0.0.2:9030 {'D' * 40}" in lines
    assert "SocksPort 127.0.0.1:19050" in lines

    slow = {**LIVE, ("127.0.0.2", 9052): {**LIVE[("127.0.0.2", 9052)], "voting_interval": 4}}
    monkeypatch.setattr(readiness, "fetch_status", lambda host, port, timeout: slow.get((host, port)))
    assert cli.main(["export", "torrc", "--run-dir", str(run_dir)]) == 1
    assert "under 10 s" in capsys.readouterr().err


def test_status_falls_back_to_the_state_file_when_a_node_is_silent(run_dir, monkeypatch, capsys):
    monkeypatch.setattr(readiness, "fetch_status", lambda host, port, timeout: None)
    assert cli.main(["status", "--json", "--run-dir", str(run_dir)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert not any(n["ready"] for n in status["nodes"])
    assert status["onion_services"] == [{"name": "hs", "onion": None, "ports": [80, 7]}]
    assert status["clients"] == [{"name": "client", "socks": "127.0.0.6:9050"}]


def test_status_table(run_dir, capsys):
    assert cli.main(["status", "--run-dir", str(run_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["NAME", "ROLE", "ADDRESS", "READY"]
    assert out[1].split() == ["auth1", "authority", "127.0.0.2", "yes"]
    assert out[2].split() == ["relay1", "relay", "127.0.0.3", "no"]
    assert f"  hs  {ONION}  ports 80, 7" in out
    assert "  client  127.0.0.6:9050" in out


def test_commands_without_a_run(tmp_path, capsys):
    empty = str(tmp_path / "nothing")
    assert cli.main(["status", "--run-dir", empty]) == 1
    assert "no lab is running" in capsys.readouterr().err
    assert cli.main(["logs", "auth1", "--run-dir", empty]) == 1
    assert cli.main(["down", "--run-dir", empty]) == 0
    assert "nothing to stop" in capsys.readouterr().out


def test_logs(run_dir, capsys):
    assert cli.main(["logs", "auth1", "--run-dir", str(run_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split() for line in lines] == [["auth1", "authority_started"],
                                                 ["auth1", "!", "fatal:", "boom"]]
    assert cli.main(["logs", "auth9", "--run-dir", str(run_dir)]) == 1
    assert "no node named 'auth9'" in capsys.readouterr().err


def test_down_keep_then_down(run_dir, capsys, monkeypatch):
    # the recorded PIDs are not node processes (no /proc entry with this run's config): nothing to signal
    monkeypatch.setattr("orchestrator.backends.local._is_node_process", lambda pid, config: False)
    assert cli.main(["down", "--keep", "--run-dir", str(run_dir)]) == 0
    assert run_dir.exists() and "kept" in capsys.readouterr().out
    assert cli.main(["down", "--run-dir", str(run_dir)]) == 0
    assert not run_dir.exists() and "removed" in capsys.readouterr().out


# -- python -m nodes -----------------------------------------------------------------------------------------


def test_node_config_errors_exit_2(tmp_path, capsys):
    assert node_main.main(["authority", "--config", str(tmp_path / "none.json")]) == 2
    assert capsys.readouterr().err.startswith(f"fatal: {tmp_path / 'none.json'}: cannot read")
    config = tmp_path / "relay.json"
    config.write_text(json.dumps({"name": "r", "role": "relay", "address": "127.0.0.2", "data_dir": "d",
                                  "control_port": 1, "authorities": []}))
    assert node_main.main(["authority", "--config", str(config)]) == 2
    assert "role is 'relay', but the command line says 'authority'" in capsys.readouterr().err


def test_node_unknown_role_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        node_main.main(["exit", "--config", "x.json"])
    assert exit_.value.code == 2


def test_fatal_line_names_the_causes_inside_exception_groups():
    group = ExceptionGroup("nursery", [ExceptionGroup("inner", [OSError(98, "Address already in use")]),
                                       ValueError("bad")])
    assert node_main.fatal_line(group) == "fatal: OSError: [Errno 98] Address already in use; ValueError: bad"


def test_wait_for_file_polls_with_backoff_until_the_deadline(tmp_path):
    now = [0.0]
    sleeps = []
    target = tmp_path / "config.json"

    def sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds
        if now[0] >= 1.0:
            target.write_text("{}")

    assert node_main.wait_for_file(target, 10, clock=lambda: now[0], sleep=sleep) is True
    assert sleeps == [0.05, 0.1, 0.2, 0.4, 0.8] and now[0] < 2  # doubling; stops once it is there
    sleeps.clear()
    assert node_main.wait_for_file(tmp_path / "never", 3, clock=lambda: now[0], sleep=sleep) is False
    assert sum(sleeps) == pytest.approx(3) and max(sleeps) == node_main.WAIT_POLL_MAX  # not past the deadline


def test_node_wait_config_gives_up_with_exit_2(tmp_path, capsys):
    missing = tmp_path / "config.json"
    assert node_main.main(["relay", "--config", str(missing), "--wait-config", "0"]) == 2
    assert f"fatal: {missing}: did not appear within 0 s (--wait-config)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        node_main.main(["relay", "--config", str(missing), "--wait-config", "-1"])
    assert exit_.value.code == 2


def test_node_wait_config_reads_the_file_once_it_is_there(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"name": "r", "role": "relay", "address": "127.0.0.1", "data_dir": "/x",
                                  "control_port": 1, "authorities": []}))
    assert node_main.main(["authority", "--config", str(config), "--wait-config", "5"]) == 2  # read: role
    assert "role is 'relay', but the command line says 'authority'" in capsys.readouterr().err


# -- kill --signal: a usage error before anything is sent ---------------------------------------------------


class KillRecorder:
    def __init__(self):
        self.sent = []

    def kill(self, name, sig):
        self.sent.append((name, sig))


@pytest.mark.parametrize("bad", ["SIGFOO", "0", "-9", "", "SIG_DFL", "999"])
def test_kill_with_an_unknown_signal_is_a_usage_error(bad, monkeypatch, capsys):
    backend = KillRecorder()
    monkeypatch.setattr(cli, "_lab", lambda args: backend)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["kill", "relay1", "--signal", bad])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "usage: onionlab kill" in err and "--signal" in err and "SIGKILL" in err
    assert backend.sent == []  # nothing reached the backend (docker-py used to raise a traceback for it)


@pytest.mark.parametrize("given, sent", [("SIGTERM", "SIGTERM"), ("term", "SIGTERM"), ("15", "SIGTERM"),
                                         ("STOP", "SIGSTOP"), ("SIGKILL", "SIGKILL")])
def test_kill_takes_signal_names_and_numbers(given, sent, monkeypatch, capsys):
    backend = KillRecorder()
    monkeypatch.setattr(cli, "_lab", lambda args: backend)
    assert cli.main(["kill", "relay1", "--signal", given]) == 0
    assert backend.sent == [("relay1", sent)]
    assert capsys.readouterr().out == f"sent {sent} to relay1\n"


# -- down keeps chaos histories ------------------------------------------------------------------------------


def test_down_keeps_the_chaos_histories_and_says_where(run_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("orchestrator.backends.local._is_node_process", lambda pid, config: False)
    monkeypatch.chdir(tmp_path)
    (run_dir / "chaos").mkdir()
    (run_dir / "chaos" / "kill-seed7-20250101-000000.jsonl").write_text('{"type": "run"}\n')
    (run_dir / "chaos" / "kill.html").write_text("<html></html>")
    assert cli.main(["down", "--run-dir", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert not run_dir.exists()
    kept = tmp_path / ".onionlab" / "chaos"
    assert (kept / "kill-seed7-20250101-000000.jsonl").read_text() == '{"type": "run"}\n'
    assert (kept / "kill.html").exists()
    assert f"kept 2 chaos history and report file(s): moved to {kept}" in out


def test_chaos_histories_go_outside_the_run_dir_by_default(run_dir, tmp_path, monkeypatch, capsys):
    from orchestrator import chaos

    monkeypatch.chdir(tmp_path)
    seen = {}

    def run_scenario(scenario, backend, *, seed, history_path, say):
        seen["history"] = history_path
        raise chaos.ChaosRefused("not today")

    monkeypatch.setattr(chaos, "run_scenario", run_scenario)
    scenario = tmp_path / "s.yaml"
    scenario.write_text("name: s\nduration: 10\nseed: 3\n")
    assert cli.main(["chaos", str(scenario), "--run-dir", str(run_dir)]) == 1
    assert seen["history"].parent == tmp_path / ".onionlab" / "chaos"
    assert seen["history"].name.startswith("s-seed3-") and seen["history"].suffix == ".jsonl"


# -- an interrupted up ---------------------------------------------------------------------------------------


def _interrupt_with(sig):
    def start(self, info, nodes_=None):
        os.kill(os.getpid(), sig)  # as if Ctrl-C or `kill` came while the nodes were being started
        time.sleep(5)  # the handler interrupts this at once
        raise AssertionError(f"{sig!r} did not interrupt `up`")

    return start


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_up_exits_128_plus_the_signal_and_status_says_it_failed(sig, code, tmp_path,
                                                                             monkeypatch, capsys):
    from orchestrator.backends.local import LocalBackend

    monkeypatch.setattr(LocalBackend, "_start", _interrupt_with(sig))
    run_dir = tmp_path / "run"
    topology = REPO / "topologies" / "default.yaml"
    handler = signal.getsignal(signal.SIGTERM)
    assert cli.main(["up", "--backend", "local", "--run-dir", str(run_dir), str(topology)]) == code
    assert signal.getsignal(signal.SIGTERM) is handler  # the handler is gone again
    name = signal.Signals(sig).name
    assert f"onionlab: interrupted by {name}" in capsys.readouterr().err

    assert cli.main(["status", "--run-dir", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert f"the lab 'default' in {run_dir} did not come up (interrupted by {name}): nothing of it " in err
    assert cli.main(["status", "--json", "--run-dir", str(run_dir)]) == 1
    out = capsys.readouterr().out
    assert json.loads(out) == {"failed": f"interrupted by {name}", "nodes": [], "onion_services": [],
                               "clients": []}
    assert cli.main(["flow", "--run-dir", str(run_dir)]) == 1
    assert "did not come up" in capsys.readouterr().err
    assert cli.main(["logs", "auth1", "--run-dir", str(run_dir)]) == 0  # what it left is still readable
    assert cli.main(["down", "--run-dir", str(run_dir)]) == 0
    assert not run_dir.exists()


def test_up_checks_every_onion_through_every_client(monkeypatch, capsys):
    asked = []

    def reach(socks, onion, *, deadline):
        asked.append((socks, onion))
        if (socks, onion) == ("c2:9050", "b.onion"):
            raise OSError("no route")
        return 0.25

    monkeypatch.setattr(cli, "check_reachable", reach)
    status = {"clients": [{"name": "client1", "socks": "c1:9050"}, {"name": "client2", "socks": "c2:9050"}],
              "onion_services": [{"name": "hs1", "onion": "a.onion"}, {"name": "hs2", "onion": "b.onion"}]}
    said = []
    assert not cli._check_onions(status, said.append, deadline=0)
    assert sorted(asked) == [("c1:9050", "a.onion"), ("c1:9050", "b.onion"), ("c2:9050", "a.onion"),
                             ("c2:9050", "b.onion")]
    assert said == ["hs1: onion reachable via client1 (250 ms), client2 (250 ms)",
                    "hs2: onion reachable via client1 (250 ms)"]
    assert "hs2 is not reachable through client2: no route" in capsys.readouterr().err
