"""The guard-discovery attack's logic without a network: the mark's detection, the adversary relay's
observer, no-guards path selection, the curves, the topology settings, the control call's action fields, a
trial against a scripted lab, and the report."""

import io
import json
import random
from collections import Counter
from types import SimpleNamespace

import pytest

from nodes.core.attack_signature import BURST_CELLS, CircuitWatch, Verdict
from nodes.core.netview import Relay
from nodes.net.adversary import AdversaryObserver
from nodes.net.control import Action, parse_command
from nodes.net.events import EventLog
from nodes.net.guards import NoGuards
from nodes.net.hs_paths import three_hop_path
from nodes.net.metrics import Metrics
from orchestrator.attack import curves
from orchestrator.attack.report import render_html, render_png, write_report
from orchestrator.attack.run import Lab, result_data, run_trial
from orchestrator.topology import TopologyError, parse_topology
from tests.unit.test_node_control import control, post

# -- the mark --------------------------------------------------------------------------------------------


def test_a_burst_behind_a_non_relay_is_located_once():
    watch = CircuitWatch("127.0.0.9", prev_is_relay=False, opened=0.0)
    assert watch.feed(1.0, 2) is None  # EXTENDED2s and the like
    assert watch.feed(5.0, BURST_CELLS - 1) is None
    assert watch.feed(5.01, 1) is Verdict.LOCATED
    assert watch.feed(5.02, BURST_CELLS) is None  # reported once per circuit
    assert watch.backward_cells == 2 * BURST_CELLS + 2


def test_a_burst_behind_a_relay_is_only_seen():
    watch = CircuitWatch("127.0.0.3", prev_is_relay=True, opened=0.0)
    assert watch.feed(0.5, BURST_CELLS) is Verdict.SEEN


def test_cells_spread_beyond_the_window_are_no_mark():
    watch = CircuitWatch("127.0.0.9", prev_is_relay=False, opened=0.0, cells=40, window=1.0)
    assert all(watch.feed(0.1 * i, 3) is None for i in range(200))  # 30 cells a second, for 20 s
    assert watch.verdict is None and watch.backward_cells == 600
    assert watch.feed(20.0, 0) is None


def test_a_mark_needs_cells_and_a_window():
    with pytest.raises(ValueError):
        CircuitWatch("a", False, 0.0, cells=0)
    with pytest.raises(ValueError):
        CircuitWatch("a", False, 0.0, window=0)


class _Channel:
    def __init__(self, address):
        self.address = address


class _Circuit:
    def __init__(self, address):
        self.prev = _Channel(address)


def test_the_observer_reports_only_from_what_the_relay_sees():
    out = io.StringIO()
    now = [100.0]
    relays = frozenset({"127.0.0.3", "127.0.0.4"})
    observer = AdversaryObserver(EventLog("evil1", "relay", out), Metrics(), lambda: relays,
                                 clock=lambda: now[0])
    service_side, middle, quiet = _Circuit("127.0.0.20"), _Circuit("127.0.0.3"), _Circuit("127.0.0.21")
    for circuit in (service_side, middle, quiet):
        observer.opened(circuit)
    observer.backward(quiet, 5)
    observer.backward(middle, BURST_CELLS)
    now[0] = 101.5
    observer.backward(service_side, BURST_CELLS)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["attack_pattern_seen", "attack_located"]
    assert events[0]["previous_hop"] == "127.0.0.3" and events[0]["previous_is_relay"] is True
    located = events[1]
    assert (located["address"], located["circuits"], located["seconds_open"]) == ("127.0.0.20", 2, 1.5)
    status = observer.status()
    assert status["marked"] == 2 and [r["address"] for r in status["located"]] == ["127.0.0.20"]
    for circuit in (service_side, middle, quiet):
        observer.closed(circuit)
    assert observer.status()["watching"] == 0
    observer.backward(service_side, BURST_CELLS)  # a closed circuit is forgotten
    assert observer.status()["marked"] == 2


# -- no guards -------------------------------------------------------------------------------------------


def _relay(n: int, bandwidth: int = 1000) -> Relay:
    return Relay(f"relay{n}", bytes([n]) * 20, bytes([n]) * 32, bytes([255 - n]) * 32, f"10.0.0.{n}", 9001, 0,
                 bandwidth, frozenset({"Running", "Valid"}), "")


def test_no_guards_draws_a_fresh_weighted_first_hop_never_the_last_hop():
    relays = [_relay(1, 7000), *(_relay(n) for n in range(2, 9))]  # relay1: half the weight
    guards = NoGuards(metrics=Metrics(), events=EventLog("hs", "onion_service", io.StringIO()),
                      rng=random.Random(7).randbytes)
    assert guards.sample(relays) == [] and guards.primary() == []
    consensus = SimpleNamespace(routers=relays)
    firsts = Counter(three_hop_path(consensus, guards.ordered(), relays[1])[0].nickname for _ in range(4000))
    assert "relay2" not in firsts  # the last hop is never the first
    assert 0.45 < firsts["relay1"] / 4000 < 0.6  # 7000 / (14000 - 1000) = 0.54: weighted, excluding the last
    assert len(firsts) == 7


def test_seeded_no_guards_repeat_their_draws():
    relays = [_relay(n) for n in range(1, 11)]

    def draws(seed):
        g = NoGuards(metrics=Metrics(), events=EventLog("hs", "onion_service", io.StringIO()),
                     rng=random.Random(seed).randbytes)
        g.sample(relays)
        return [g.pick().nickname for _ in range(20)]

    assert draws(3) == draws(3) != draws(4)


# -- curves ----------------------------------------------------------------------------------------------

TOPOLOGY = """\
name: lab
networks:
  net: {subnet: 10.0.0.0/24}
roles:
  relay: {bandwidth: 1000000}
nodes:
  - {name: auth, role: authority, count: 3}
  - {name: relay, role: relay, count: 6}
  - {name: evil, role: relay, count: 2, adversary: true, bandwidth: 2000000}
  - name: hs
    role: onion_service
    guards: 0
    services:
      - {port: 80, target: http}
  - {name: client, role: client}
"""


def test_curves():
    assert curves.theoretical_located(0.1, 0) == 0.0
    assert curves.theoretical_located(0.1, 1) == pytest.approx(0.1)
    assert curves.theoretical_located(0.1, 10) == pytest.approx(1 - 0.9**10)
    assert curves.theoretical_located(1.0, 3) == 1.0
    with pytest.raises(ValueError):
        curves.theoretical_located(1.5, 3)
    assert curves.empirical_located([1, 3, None, 3], 4) == [0.25, 0.25, 0.75, 0.75]
    assert curves.empirical_located([], 2) == [0.0, 0.0]
    assert curves.expected_circuits(0.1) == pytest.approx(10)
    assert curves.expected_circuits(0.0) == float("inf")


def test_the_adversary_share_is_its_consensus_weight():
    topology = parse_topology(TOPOLOGY)
    assert curves.adversary_share(topology) == pytest.approx(4000 / 10000)
    assert curves.first_hop_share(topology, "evil1") == pytest.approx(2000 / 8000)
    assert curves.consensus_weight(999) == 1 and curves.consensus_weight(1_000_000) == 1000


# -- topology ----------------------------------------------------------------------------------------------


def test_adversary_and_guards_0_in_the_topology():
    topology = parse_topology(TOPOLOGY)
    assert [n.name for n in topology.nodes_by_role("relay") if n.adversary] == ["evil1", "evil2"]
    assert topology.node("relay1").adversary is False and topology.node("hs").adversary is None
    assert topology.node("hs").guards == 0 and topology.node("client").guards == 1
    assert topology.node("evil1").to_dict()["adversary"] is True
    assert parse_topology(json.dumps(topology.to_dict())) == topology


@pytest.mark.parametrize("old, new, message", [
    ("adversary: true, bandwidth", "adversary: 1, bandwidth", "nodes.evil.adversary: expected true or false"),
    ("    guards: 0\n", "    guards: -1\n", "nodes.hs.guards: expected a number of guards (0: none), got -1"),
    ("{name: client, role: client}", "{name: client, role: client, adversary: true}",
     "'adversary' does not apply to role client"),
    ("{name: client, role: client}", "{name: client, role: client, impl: tor, guards: 0}",
     "guards: 0 needs impl onionlab"),
])
def test_bad_attack_settings(old, new, message):
    assert TOPOLOGY.count(old) == 1
    with pytest.raises(TopologyError) as info:
        parse_topology(TOPOLOGY.replace(old, new))
    assert message in str(info.value)


# -- the control call's fields ---------------------------------------------------------------------------


def test_actions_take_their_own_fields():
    assert parse_command(b'{"command": "attack", "onion": "x", "cells": 3}', {"attack": ("onion", "cells")}) \
        == Action("attack", (("cells", 3), ("onion", "x")))
    c, _ = control()
    c.add_action("reset_guards", lambda guards=None: {"guards": guards} if guards is not None else
                 (_ for _ in ()).throw(ValueError("guards: 0 (none) to 1000")), ("guards",))
    assert post(c, {"command": "reset_guards", "guards": 0}) == (200, {"ok": True, "guards": 0})
    code, answer = post(c, {"command": "reset_guards", "seeds": 1})
    assert code == 400 and answer["message"] == "reset_guards takes guards, not seeds"
    code, answer = post(c, {"command": "reset_guards"})
    assert code == 400 and answer["message"] == "reset_guards: guards: 0 (none) to 1000"


# -- a trial against a scripted lab ----------------------------------------------------------------------


class ScriptedLab:
    """The service's first hops in order; an adversary relay reports `located` when it is one (with the
    address it saw, which is the service's unless `wrong`)."""

    def __init__(self, first_hops, adversary=("evil1", "evil2"), guard="relay1", wrong=False):
        self.first_hops = list(first_hops)
        self.adversary = set(adversary)
        self.guard = guard
        self.wrong = wrong
        self.attempts = []
        self.located = {name: [] for name in adversary}
        self.paths = []

    def control(self, name, command):
        if command["command"] == "reset_guards":
            self.mode = command["guards"]
            return {"ok": True, "guards": {"primary": [self.guard] if command["guards"] else []}}
        assert command["command"] == "attack" and command["rendezvous"] in self.adversary
        hop = self.first_hops.pop(0)
        self.paths.append([hop, "relay9", command["rendezvous"]])
        self.attempts.append({"attempt": len(self.attempts) + 1, "ok": True})
        if hop in self.adversary:
            self.located[hop].append({"address": "10.0.0.99" if self.wrong else "10.0.0.50",
                                      "ts": 4e9, "circuits": 1})
        return {"ok": True, "attempt": len(self.attempts)}

    def node_status(self, name):
        if name == "client":
            return {"attack": {"finished": self.attempts}}
        if name == "hs":
            return {"rendezvous_sent": {"count": len(self.paths), "recent": self.paths}}
        return {"adversary": {"located": self.located[name]}}


LAB_INFO = Lab("hs", "client", "x.onion", 80, "10.0.0.50", {"evil1": "evil1", "evil2": "evil2"})


def test_a_trial_counts_circuits_until_an_adversary_relay_locates_the_service():
    lab = ScriptedLab(["relay3", "relay4", "evil2", "relay5"])
    trial = run_trial(lab, LAB_INFO, "no guards", 1, 10, say=lambda line: None)
    assert (trial.located_at, trial.circuits, trial.located_by, trial.correct) == (3, 3, "evil2", True)
    assert trial.first_hops == ["relay3", "relay4", "evil2"] and trial.guard_adversarial is None


def test_a_trial_with_a_clean_guard_is_not_located_and_a_wrong_address_is_judged_wrong():
    trial = run_trial(ScriptedLab(["relay1"] * 5), LAB_INFO, "guards", 2, 5, say=lambda line: None)
    assert (trial.located_at, trial.circuits, trial.guards, trial.guard_adversarial) == (None, 5, ["relay1"],
                                                                                          False)
    trial = run_trial(ScriptedLab(["evil1"], wrong=True, guard="evil1"), LAB_INFO, "guards", 3, 5,
                      say=lambda line: None)
    assert (trial.located_at, trial.correct, trial.guard_adversarial) == (1, False, True)


# -- the report ------------------------------------------------------------------------------------------


def test_the_report_has_both_curves_and_the_papers_setting(tmp_path):
    topology = parse_topology(TOPOLOGY)
    trials = [run_trial(ScriptedLab(hops, guard=hops[0]), LAB_INFO, mode, seed, 6, say=lambda line: None)
              for mode, seed, hops in (("guards", 1, ["relay1"] * 6), ("guards", 2, ["evil1"]),
                                       ("no guards", 1, ["relay2", "evil1"]),
                                       ("no guards", 2, ["relay3"] * 6))]
    data = result_data(trials, LAB_INFO, topology, circuits=6, cells=40, seconds=1.0)
    paths = write_report(data, tmp_path / "out")
    saved = json.loads(paths["json"].read_text())
    assert saved["curves"]["no guards"]["observed"] == [0.0, 0.5, 0.5, 0.5, 0.5, 0.5]
    assert saved["curves"]["guards"]["observed"] == [0.5] * 6
    assert saved["curves"]["guards"]["adversarial_guards"] == 1
    assert saved["curves"]["no guards"]["theory"][0] == pytest.approx(0.4)
    assert paths["png"].read_bytes().startswith(b"\x89PNG") and render_png(data)[:4] == b"\x89PNG"
    page = render_html(data, "attack.png")
    assert "Locating Hidden Servers" in page and "about 450 server nodes" in page
    assert "circuit 2 (evil1)" in page and 'src="attack.png"' in page
