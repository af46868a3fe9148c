"""Latency and clock skew on a local-backend lab (processes on 127.0.0.x, no netem, no root needed): the
faults run through the nodes' control call, with the run's secret, and are undone.

`onionlab up --backend local` makes the run's control secret (0600 in the run dir and in each node's key
directory); a control call without it is refused by a real node (401). A scenario delays everything the
client sends by 300 ms for a while and puts the onion service's clock 10 minutes ahead: the fetches made
while the delay is in place are slower than those before it by at least the delays on their path, the
service's events carry `skew`, everything succeeds, and afterwards every node's /status shows no rule and
a true clock. No fixed sleep: `up` waits on /status, the run's baseline on a successful fetch."""

from __future__ import annotations

import json
import os
import stat
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

from orchestrator import readiness
from orchestrator.control import ControlCallError, post_control
from tests.net.test_local_chaos import TOPOLOGY

SCENARIO = textwrap.dedent("""\
    name: local-delay-and-skew
    seed: 2
    duration: 42
    workload: {bytes: 5000, interval: 1, timeout: 15}
    faults:
      - {fault: delay, target: client, delay: 300ms, jitter: 50ms, direction: out, at: 10, for: 22}
      - {fault: skew, target: hs, offset: 600, at: 4, for: 34}
    checkers:
      availability: {min: 0.9}
    """)


def _onionlab(env: dict, *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_delay_and_skew_on_the_local_backend(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = {**os.environ, "ONIONLAB_RUN_DIR": str(run_dir)}
    (tmp_path / "lab.yaml").write_text(TOPOLOGY)
    (tmp_path / "s.yaml").write_text(SCENARIO)
    up = _onionlab(env, "up", "--backend", "local", "--timeout", "90", str(tmp_path / "lab.yaml"),
                   timeout=150)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        nodes = {n["name"]: n for n in json.loads((run_dir / "state.json").read_text())["nodes"]}
        secret = (run_dir / "control.secret").read_text().strip()
        assert stat.S_IMODE((run_dir / "control.secret").stat().st_mode) == 0o600
        for name in nodes:
            node_secret = run_dir / "nodes" / name / "keys" / "control.secret"
            assert node_secret.read_text().strip() == secret
            assert stat.S_IMODE(node_secret.stat().st_mode) == 0o600
        relay = nodes["relay1"]
        try:
            post_control(relay["address"], relay["ports"]["control_port"], "wrong", {"command": "unskew"})
            raise AssertionError("a wrong secret was accepted")
        except ControlCallError as e:
            assert e.status == 401

        history = tmp_path / "history.jsonl"
        run = _onionlab(env, "chaos", str(tmp_path / "s.yaml"), "--json", "--history", str(history),
                        timeout=240)
        assert run.returncode == 0, run.stdout + run.stderr[-4000:]
        assert "delay via link-layer shaper (processes on loopback" in run.stderr
        result = json.loads(run.stdout)
        assert all(v["ok"] for v in result["verdicts"]), result["verdicts"]
        records = [json.loads(line) for line in history.read_text().splitlines()]
        delay = {r["event"]: r for r in records if r["type"] == "fault" and r["fault"] == "delay"}
        began, ended = delay["start"]["began"], delay["end"]["began"]
        fetches = [r for r in records if r["type"] == "fetch" and r["ok"]]
        before = [f["latency_ms"] for f in fetches if f["end"] < began]
        during = [f["latency_ms"] for f in fetches if f["start"] > began + 1 and f["end"] < ended]
        assert len(before) >= 3 and len(during) >= 3, (before, during)
        # a fetch sends at least twice (BEGIN, then the request once CONNECTED came back), each held
        # 300 ms (+- 50); new circuits (EXTEND2 round trips, INTRODUCE1) add more
        assert statistics.median(during) >= statistics.median(before) + 2 * 250, (before, during)

        lines = (run_dir / "nodes" / "hs" / "events.jsonl").read_text().splitlines()
        skewed = [e for e in map(json.loads, lines) if e.get("skew") == 600.0]
        assert skewed and skewed[0]["event"] == "clock_skewed"
        t0 = next(r["t0_wall"] for r in records if r["type"] == "start")
        assert t0 < skewed[0]["ts"] < t0 + 60  # its timestamps stay true time

        for name, node in nodes.items():
            status = readiness.fetch_status(node["address"], node["ports"]["control_port"])
            assert status is not None and status["shaping"] == [] and status["clock_offset"] == 0.0, name
        assert not (run_dir / "chaos-faults.json").exists()
    finally:
        down = _onionlab(env, "down", timeout=90)
    assert down.returncode == 0, down.stderr
