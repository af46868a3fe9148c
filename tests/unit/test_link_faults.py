"""Shaping and clock faults: the link-layer path (rules through the nodes' control call) against a fake
lab, the netem path's tc commands (both sides of a veth), and how the docker backend picks its path on this
host."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from orchestrator import chaos, report
from orchestrator.backends.base import LINK_LAYER, QDISC
from orchestrator.backends.docker import DockerBackend, shaping
from orchestrator.chaos import parse_scenario
from orchestrator.chaos.faults import prepare_fault
from tests.unit.test_chaos import LAB, FakeBackend, ok_fetch

NODES = [name for name, _ in LAB]


def link_layer(tmp_path: Path) -> FakeBackend:
    backend = FakeBackend(tmp_path)
    backend.link_layer = True
    return backend


def test_a_node_fault_is_a_rule_on_it_and_one_on_each_peer(tmp_path: Path) -> None:
    backend = link_layer(tmp_path)
    undo = prepare_fault(backend, "delay", "relay1", {"delay": "100ms", "jitter": "20ms"}, NODES)
    rules = {entry["node"]: entry["rule"] for entry in undo["shaper_rules"]}
    assert set(rules) == set(NODES)
    assert rules["relay1"]["peers"] == "all" and rules["relay1"]["delay"] == pytest.approx(0.1)
    assert rules["relay1"]["jitter"] == pytest.approx(0.02)
    mine = backend.node_addresses("relay1")["labnet"]
    assert all(rules[n]["peers"] == [mine] for n in NODES if n != "relay1")
    assert len({r["id"] for r in rules.values()}) == 1  # one id: undone together


def test_peer_direction_and_loss(tmp_path: Path) -> None:
    backend = link_layer(tmp_path)
    undo = prepare_fault(backend, "loss", "relay1", {"percent": 2, "peer": "relay2"}, NODES)
    rules = {entry["node"]: entry["rule"] for entry in undo["shaper_rules"]}
    assert set(rules) == {"relay1", "relay2"}
    assert rules["relay1"]["peers"] == [backend.node_addresses("relay2")["labnet"]]
    assert rules["relay2"]["peers"] == [backend.node_addresses("relay1")["labnet"]]
    assert rules["relay1"]["loss"] == pytest.approx(0.02)
    out = prepare_fault(backend, "bandwidth", "relay1", {"rate": "1mbit", "direction": "out"}, NODES)
    assert [(e["node"], e["rule"]["rate"]) for e in out["shaper_rules"]] == [("relay1", 125000.0)]
    inbound = prepare_fault(backend, "delay", "relay1", {"delay": "5ms", "direction": "in"}, NODES)
    assert "relay1" not in {e["node"] for e in inbound["shaper_rules"]}
    assert len(inbound["shaper_rules"]) == len(NODES) - 1


LINKS = textwrap.dedent("""\
    name: links
    duration: 1.0
    workload: {interval: 0.05}
    faults:
      - {fault: delay, target: relay2, delay: 100ms, jitter: 20ms, at: 0.1, for: 0.4}
      - {fault: loss, target: relay3, peer: relay4, percent: 2, at: 0.1, for: 0.4}
      - {fault: skew, target: hs, offset: 600, at: 0.2, for: 0.5}
    """)


def test_a_run_applies_and_undoes_link_layer_faults(tmp_path: Path) -> None:
    backend = link_layer(tmp_path)
    lines: list[str] = []
    result = chaos.run_scenario(parse_scenario(LINKS), backend, seed=1, history_path=tmp_path / "h.jsonl",
                                say=lines.append, fetch=ok_fetch)
    assert result.ok, report.render_summary(result.history)
    assert "delay via link-layer shaper (no netem here)" in lines
    assert "loss on one link via link-layer shaper (no netem here)" in lines
    assert "skew via the nodes' control call (their clock offset)" in lines
    assert all(not s.get("rules") and not s.get("offset") for s in backend.state.values())
    shapes = [c for c in backend.calls if c[0] == "control" and c[2] == "shape"]
    assert len(shapes) == len(NODES) + 2  # relay2 and its every peer; relay3 and relay4
    assert ("control", "hs", "skew") in backend.calls and ("control", "hs", "unskew") in backend.calls
    assert not (tmp_path / chaos.JOURNAL).exists()


def test_a_rule_left_behind_fails_the_faults_checker(tmp_path: Path) -> None:
    backend = link_layer(tmp_path)
    before = chaos.lab_snapshot(backend, NODES)
    backend.control("relay1", {"command": "shape", "rules": [{"id": "stray"}]})
    backend.control("hs", {"command": "skew", "offset": 5})
    left = chaos.compare_snapshots(before, chaos.lab_snapshot(backend, NODES))
    assert sorted(left) == ["hs: clock offset 5, was 0.0", "relay1: link-layer rules ['stray'], were []"]
    assert sorted(chaos.clear_node_control(backend, NODES)) == ["hs", "relay1"]
    assert chaos.compare_snapshots(before, chaos.lab_snapshot(backend, NODES)) == []
    # a node that does not answer /status yet (started again without waiting) has nothing to compare
    backend.node_status = lambda name: None if name == "relay1" else FakeBackend.node_status(backend, name)
    assert chaos.compare_snapshots(before, chaos.lab_snapshot(backend, NODES)) == []


def test_heal_removes_link_layer_rules_a_killed_run_left(tmp_path: Path) -> None:
    backend = link_layer(tmp_path)
    undo = prepare_fault(backend, "delay", "relay1", {"delay": "50ms", "peer": "relay2"}, NODES)
    chaos.apply_fault(backend, undo, {"delay": "50ms", "peer": "relay2"})
    assert backend.state["relay1"]["rules"] and backend.state["relay2"]["rules"]
    (tmp_path / chaos.JOURNAL).write_text(json.dumps([undo]))
    assert [how for _, how in chaos.heal(backend)] == ["link-layer rules removed from 2 node(s)"]
    assert not backend.state["relay1"]["rules"] and not backend.state["relay2"]["rules"]
    # a node that is not running lost its rules with its process: nothing to undo there
    chaos.apply_fault(backend, undo, {})
    backend.state["relay2"]["status"] = "exited"
    backend.control = _refuse_on(backend, "relay2")
    how = chaos.undo_fault(backend, undo)
    assert how == "link-layer rules removed from 1 node(s); relay2 is not running (its rules went with it)"


def _refuse_on(backend: FakeBackend, name: str):
    from orchestrator.control import ControlCallError

    real = backend.control

    def control(node: str, command: dict) -> dict:
        if node == name:
            raise ControlCallError(f"{node} did not answer")
        return real(node, command)

    return control


# -- the netem path: commands --------------------------------------------------------------------------------


def test_qdisc_commands_on_both_sides_of_a_veth() -> None:
    assert shaping.qdisc_command("veth12ab", "replace", ["netem", "delay", "100ms"]) == [
        "tc", "qdisc", "replace", "dev", "veth12ab", "root", "netem", "delay", "100ms"]
    assert shaping.qdisc_command("4242:eth1", "replace", ["netem", "loss", "2%"]) == [
        "nsenter", "-t", "4242", "-n", "tc", "qdisc", "replace", "dev", "eth1", "root", "netem", "loss", "2%"]
    assert shaping.qdisc_command("4242:eth0", "del") == [
        "nsenter", "-t", "4242", "-n", "tc", "qdisc", "del", "dev", "eth0", "root"]


def test_shape_puts_the_qdisc_on_the_directions_asked(tmp_path: Path, monkeypatch) -> None:
    backend = DockerBackend(tmp_path)
    monkeypatch.setattr(backend, "_links", lambda name, network=None: {
        "a": ("vethA", "77:eth0"), "b": ("vethB", "77:eth1")})
    ran: list[list[str]] = []
    monkeypatch.setattr(shaping, "_run", lambda command: ran.append(command) or "")
    assert backend.interfaces("relay1", direction="in") == ["vethA", "vethB"]
    assert backend.interfaces("relay1", direction="out") == ["77:eth0", "77:eth1"]
    assert backend.shape("relay1", ["netem", "delay", "100ms", "20ms"]) == [
        "vethA", "vethB", "77:eth0", "77:eth1"]
    assert ran == [shaping.qdisc_command(i, "replace", ["netem", "delay", "100ms", "20ms"])
                   for i in ("vethA", "vethB", "77:eth0", "77:eth1")]
    assert ran[2][:5] == ["nsenter", "-t", "77", "-n", "tc"]


def test_a_failed_shape_undoes_what_it_did(tmp_path: Path, monkeypatch) -> None:
    backend = DockerBackend(tmp_path)
    monkeypatch.setattr(backend, "_links", lambda name, network=None: {"a": ("vethA", "77:eth0")})

    def run(command: list[str]) -> str:
        if command[0] == "nsenter":
            raise shaping.BackendError("no such namespace")
        return ""

    undone: list[list[str]] = []
    monkeypatch.setattr(shaping, "_run", run)
    monkeypatch.setattr(DockerBackend, "unshape", staticmethod(lambda veths: undone.append(veths) or veths))
    with pytest.raises(shaping.BackendError):
        backend.shape("relay1", ["netem", "loss", "2%"])
    assert undone == [["vethA"]]


# -- the path this host takes ------------------------------------------------------------------------------


def _netem_works_here() -> bool:
    """An independent look: a dummy interface of our own gets a netem qdisc, or not."""
    if os.geteuid() != 0:
        return False
    name = f"olt{os.getpid() % 100000}"
    if subprocess.run(["ip", "link", "add", name, "type", "dummy"], capture_output=True).returncode != 0:
        return False
    try:
        return subprocess.run(["tc", "qdisc", "add", "dev", name, "root", "netem", "delay", "1ms"],
                              capture_output=True).returncode == 0
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True)


def test_netem_detection_and_the_path_chosen_on_this_host(tmp_path: Path, monkeypatch) -> None:
    has_netem = _netem_works_here()
    problem = shaping._netem_problem()
    assert (problem is None) == has_netem, problem
    backend = DockerBackend(tmp_path)
    monkeypatch.setattr(backend, "_reach_directly", lambda: True)  # the engine's veths are ours
    can_tc = backend.shaping_problem() is None
    path, why = backend.shaping_path("delay", {"delay": "100ms"})
    assert path == (QDISC if has_netem and can_tc else LINK_LAYER)
    if can_tc and not has_netem:
        assert why == "no netem here"
        assert backend.shaping_path("bandwidth", {"rate": "1mbit"})[0] == QDISC  # tbf needs no netem
    assert backend.shaping_path("delay", {"peer": "relay2"})[0] == LINK_LAYER  # one link: always
    # no control secret and no netem: delay is refused before anything changes; with one it runs
    if path == LINK_LAYER:
        assert "no control secret" in backend.fault_problem("delay")
        (tmp_path / "control.secret").write_text("s\n")
        assert backend.fault_problem("delay") is None


def test_delay_with_loss_is_one_netem_qdisc_or_one_rule(tmp_path: Path) -> None:
    from orchestrator.chaos.faults import _qdisc

    params = {"delay": "100ms", "jitter": "20ms", "loss": 2.0}
    assert _qdisc("delay", params) == ["netem", "delay", "100ms", "20ms", "loss", "2%"]
    undo = prepare_fault(link_layer(tmp_path), "delay", "hs", {**params, "direction": "out"}, NODES)
    rules = [e["rule"] for e in undo["shaper_rules"]]
    assert rules == [{"id": rules[0]["id"], "peers": "all", "delay": 0.1, "jitter": 0.02, "loss": 0.02}]
    assert parse_scenario(Path(__file__).resolve().parents[2].joinpath(
        "topologies/chaos/latency-loss.yaml").read_text()).faults[0].params == tuple(sorted(
            {**params, "direction": "out", "network": None, "peer": None}.items()))


def test_a_node_side_interface_that_went_needs_no_undo() -> None:
    """A partition takes the node's interface away (and its qdisc with it): unshape has nothing to do there;
    a namespace whose process is gone neither. Read from this process's own namespace."""
    assert shaping._exists(f"{os.getpid()}:lo")
    assert not shaping._exists(f"{os.getpid()}:olgone0")
    assert not shaping._exists("999999999:eth0")
    assert shaping.Shaping.unshape([f"{os.getpid()}:olgone0", "999999999:eth0"]) == []
