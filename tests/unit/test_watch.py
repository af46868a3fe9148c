"""`onionlab watch`: the snapshot model (orchestrator/watch/snapshot.py) from given /status and /metrics
answers, rates between two snapshots, the chaos journal, and the rendering (render.py) of those values."""

from __future__ import annotations

import io
import json

from rich.console import Console

from orchestrator.backends import RunInfo, RunNode, write_state
from orchestrator.watch import collect, render
from orchestrator.watch.snapshot import add_rates, faults_in_place, node_view

NOW = 1_800_000_100.0
VALID_AFTER = 1_800_000_080
STATUS = {
    "auth1": {"role": "authority", "ready": True, "conditions": {"consensus": True}, "voting_interval": 10,
              "consensus": {"valid_after": VALID_AFTER}},
    "relay1": {"role": "relay", "circuits": 5, "links": 8, "hsdir_descriptors": 2,
               "intro_auth_keys": ["a", "b"], "conditions": {"consensus": True, "listed": False}},
    "hs": {"role": "onion_service", "circuits": 4, "links": 2, "intro_points": ["relay4", "relay2"],
           "published": {"7485992": 6, "7485993": 5}, "conditions": {"consensus": True}},
    "client": {"role": "client", "circuits": 1, "links": 1, "descriptors_cached": 1, "rendezvous_circuits": 1,
               "conditions": {"consensus": True, "socks_listening": True}},
}


def metrics(succeeded: float, refused: float, errors: float) -> list:
    return [("onionlab_consensus_valid_after", {}, VALID_AFTER - 10),
            ("onionlab_socks_replies_total", {"code": "SUCCEEDED"}, succeeded),
            ("onionlab_socks_replies_total", {"code": "HS_INTRO_FAILED"}, refused),
            ("onionlab_errors_total", {"kind": "status"}, errors),
            ("onionlab_errors_total", {"kind": "decode"}, 1)]


def test_node_views_take_their_values_from_status_and_metrics():
    auth = node_view("auth1", "authority", STATUS["auth1"], metrics(0, 0, 0), "up", now=NOW)
    assert (auth.ready, auth.consensus_age, auth.errors) == (True, 20.0, 1)  # status's consensus wins
    relay = node_view("relay1", "relay", STATUS["relay1"], metrics(0, 0, 2), "up", now=NOW)
    assert (relay.ready, relay.waiting, relay.descriptors, relay.intro_for, relay.circuits, relay.links) == (
        False, ["listed"], 2, 2, 5, 8)
    assert relay.consensus_age == 30.0  # no consensus in its status: the metric's valid-after
    hs = node_view("hs", "onion_service", STATUS["hs"], None, "up", now=NOW)
    assert (hs.descriptors, hs.intro_points, hs.consensus_age) == (11, ["relay4", "relay2"], None)
    client = node_view("client", "client", STATUS["client"], metrics(7, 2, 3), "up", now=NOW)
    assert (client.fetches, client.failures, client.errors, client.rendezvous) == (7, 2, 4, 1)
    gone = node_view("relay2", "relay", None, None, "exited", now=NOW)
    assert (gone.state, gone.ready, gone.consensus_age) == ("exited", False, None)


class FakeBackend:
    def __init__(self, run_dir, answers: dict) -> None:
        self.run_dir = run_dir
        self.answers = answers

    def node_status(self, name):
        return self.answers[name][0]

    def node_metrics(self, name):
        return self.answers[name][1]

    def node_state(self, name):
        return {"status": "paused"}


def test_collect_rates_faults_and_render(tmp_path):
    write_state(RunInfo("local", str(tmp_path), "lab.yaml", "lab", [
        RunNode("auth1", "authority", "127.0.0.2", {"control_port": 1}),
        RunNode("relay1", "relay", "127.0.0.3", {"control_port": 1}),
        RunNode("client", "client", "127.0.0.4", {"control_port": 1})]))
    answers = {"auth1": (STATUS["auth1"], metrics(0, 0, 0)), "relay1": (None, None),
               "client": (STATUS["client"], metrics(10, 1, 0))}
    backend = FakeBackend(tmp_path, answers)
    first = collect(backend, now=lambda: NOW)
    assert [n.state for n in first.nodes] == ["up", "paused", "up"]
    assert (first.ready, first.voting_interval, first.faults, first.nodes[2].fetch_rate) == (2, 10, [], None)
    (tmp_path / "chaos-faults.json").write_text(json.dumps([{"fault": "pause", "node": "relay1"}]))
    answers["client"] = (STATUS["client"], metrics(16, 2, 3))
    second = collect(backend, first, now=lambda: NOW + 2)
    client = second.nodes[2]
    assert (second.interval, client.fetch_rate, client.failure_rate, client.error_rate) == (2, 3.0, 0.5, 1.5)
    assert second.faults == [{"fault": "pause", "node": "relay1"}]
    console = Console(width=160, record=True, color_system=None, file=io.StringIO())
    console.print(render(second))
    text = console.export_text()
    assert "ready 2/3" in text and "consensus age 22-32 s" in text and "fetches 16 ok, 2 failed" in text
    assert "chaos faults in place: pause relay1" in text
    row = next(line for line in text.splitlines() if line.startswith("client"))
    assert row.split() == ["client", "client", "ready", "32", "s", "1", "1", "1", "-", "3.00", "(16", "ok,",
                           "2", "failed)", "4", "(+1.50/s)"]
    assert next(line for line in text.splitlines() if line.startswith("relay1")).split()[2] == "paused"
    assert second.to_dict()["ready"] == 2


def test_a_restarted_counter_counts_from_zero():
    class Snap:
        def __init__(self, taken, fetches):
            view = node_view("c", "client", STATUS["client"], metrics(fetches, 0, 0), "up", now=0)
            self.taken, self.nodes, self.interval = taken, [view], None

    later = Snap(NOW + 4, 2)
    add_rates(later, Snap(NOW, 10))
    assert later.nodes[0].fetch_rate == 0.5


def test_a_broken_journal_shows_no_faults(tmp_path):
    (tmp_path / "chaos-faults.json").write_text("{half")
    assert faults_in_place(tmp_path) == []
    assert faults_in_place(tmp_path / "none") == []
