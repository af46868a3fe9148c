"""`onionlab chaos` against a local-backend lab (processes on 127.0.0.x): 3 authorities, 5 relays, an onion
service with 2 intro points and a client, started with `onionlab up --backend local`.

A scenario that SIGKILLs one of the service's intro points (chosen when the fault starts) and SIGSTOPs a
relay later (pause) runs through `onionlab chaos --json`: each fault is applied and undone (the intro point
started again from its data dir, the relay resumed with SIGCONT), the checkers pass and every node is ready
again. A scenario with a partition (and a delay, which runs here) is refused before anything changes,
naming the fault and the backend. No fixed sleep: `up` and the restarted nodes wait on /status, the run's
baseline on a successful fetch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from .helpers import small_lab

TOPOLOGY = small_lab("localchaos", "10.98.0.0/24", relays=5, intro_points=2)

SCENARIO = textwrap.dedent("""\
    name: local-kill-and-pause
    seed: 5
    duration: 50
    ready_timeout: 60
    workload: {bytes: 5000, interval: 1, timeout: 10}
    faults:
      - {fault: kill, target: intro point, at: 3, for: 8}
      - {fault: pause, target: random relay, at: 16, for: 4}
    checkers:
      recovers: {within: 25}
      availability: {after_heal: 0.8, grace: 10}
    """)

NETWORK_FAULTS = textwrap.dedent("""\
    name: local-network-faults
    duration: 20
    faults:
      - {fault: kill, target: relay1, at: 1, for: 3}
      - {fault: partition, target: relay2, at: 1, for: 3}
      - {fault: delay, target: relay3, delay: 50ms, at: 5, for: 3}
    """)


def _onionlab(env: dict, *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_chaos_on_the_local_backend(tmp_path: Path) -> None:
    env = {**os.environ, "ONIONLAB_RUN_DIR": str(tmp_path / "run")}
    (tmp_path / "lab.yaml").write_text(TOPOLOGY)
    (tmp_path / "kill.yaml").write_text(SCENARIO)
    (tmp_path / "net.yaml").write_text(NETWORK_FAULTS)
    up = _onionlab(env, "up", "--backend", "local", "--timeout", "90", str(tmp_path / "lab.yaml"),
                   timeout=150)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        before = json.loads((tmp_path / "run" / "state.json").read_text())["nodes"]

        refused = _onionlab(env, "chaos", str(tmp_path / "net.yaml"), "--json", timeout=60)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        why = json.loads(refused.stdout)["refused"]
        assert why.startswith("fault partition is not supported by the local backend (it supports: "
                              "bandwidth, delay, kill, loss, pause, skew, stop): its nodes are processes "
                              "sharing this host's loopback")
        assert "delay" not in why.partition(")")[2]  # delay runs here, through the nodes' shapers
        assert "chaos refused, nothing was changed" in refused.stderr
        assert json.loads((tmp_path / "run" / "state.json").read_text())["nodes"] == before  # nobody touched
        assert not (tmp_path / "run" / "chaos-faults.json").exists()

        history = tmp_path / "history.jsonl"
        run = _onionlab(env, "chaos", str(tmp_path / "kill.yaml"), "--json", "--history", str(history),
                        timeout=240)
        assert run.returncode == 0, run.stdout + run.stderr[-4000:]
        result = json.loads(run.stdout)
        verdicts = {v["name"]: v for v in result["verdicts"]}
        assert set(verdicts) == {"no_wrong_bytes", "faults", "lab_state", "anonymity", "consensus_health",
                                 "recovers", "availability"}
        assert all(v["ok"] for v in verdicts.values()), verdicts
        # judged from real links: the restarted intro point's new links, the nodes on their own 127.0.0.x
        assert not verdicts["anonymity"]["summary"].startswith("0 link(s)"), verdicts["anonymity"]
        assert [op["fault"] for op in result["schedule"]] == ["kill", "pause"]
        records = [json.loads(line) for line in history.read_text().splitlines()]
        faults = [(r["event"], r["fault"], r["ok"]) for r in records if r["type"] == "fault"]
        assert faults == [("start", "kill", True), ("end", "kill", True), ("start", "pause", True),
                          ("end", "pause", True)]
        killed = next(r["node"] for r in records if r["type"] == "fault" and r["fault"] == "kill")
        assert killed.startswith("relay")  # an intro point of hs
        after = {n["name"]: n for n in json.loads((tmp_path / "run" / "state.json").read_text())["nodes"]}
        assert after[killed]["pid"] != next(n["pid"] for n in before if n["name"] == killed)  # started anew
        status = json.loads(_onionlab(env, "status", "--json", timeout=30).stdout)
        assert all(n["ready"] for n in status["nodes"]), status["nodes"]
        assert not (tmp_path / "run" / "chaos-faults.json").exists()
    finally:
        down = _onionlab(env, "down", timeout=90)
    assert down.returncode == 0, down.stderr
