"""What the docker and the local suite modules share: the default topology on another subnet, and running
one scenario of the suite so that a checker that fails fails the test with the run's summary."""

from __future__ import annotations

import re
import time
from ipaddress import IPv4Network
from pathlib import Path

from orchestrator.backends.base import FaultBackend
from orchestrator.chaos.suite import run_one
from orchestrator.report import recovery_line, render_summary
from orchestrator.topology import Topology, parse_topology

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "topologies" / "default.yaml"


def suite_lab(subnet: IPv4Network, name: str) -> Topology:
    """topologies/default.yaml (the nodes the scenarios name: auth1-3, relay1-6, hs, client) on `subnet`."""
    text = re.sub(r"subnet: \S+\}", f"subnet: {subnet}}}", DEFAULT.read_text())
    text = re.sub(r"^name: \S+", f"name: {name}", text, flags=re.M)
    return parse_topology(text, str(DEFAULT))


def assert_scenario_passes(scenario, backend: FaultBackend, history_dir: Path) -> dict:
    """Run it once (its own seed); every checker must pass, else the test fails with the chaos summary."""
    started = time.monotonic()
    run = run_one(scenario, backend, scenario.seed, history_dir)
    took = time.monotonic() - started
    assert not run["refused"], f"{scenario.name} refused: {run['refused']}"
    summary = render_summary(run["history"])
    assert run["ok"], f"{scenario.name} failed ({run['history_path']}):\n{summary}"
    print(f"\n{scenario.name} on {backend.name}: PASS in {took:.0f} s; {recovery_line(run['stats'])}")
    return run
