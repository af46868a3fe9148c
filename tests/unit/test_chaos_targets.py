"""Chaos targets and partitions by rules, without Docker: the target grammar and its messages, the checks
against a lab, the choice of nodes (by the schedule and from canned /status answers), the retry-then-skip
rule for a live target that names nobody, the firewall rules each partition makes, and what is refused."""

from __future__ import annotations

import os
import random
import subprocess
import textwrap
from pathlib import Path

import pytest

from orchestrator import chaos
from orchestrator.backends.base import FAULT_KINDS, PROCESS_FAULTS
from orchestrator.backends.docker.firewall import (
    partition_rules,
    rule_comment,
    rule_tag,
    tag_owner_alive,
    tagged_rules,
)
from orchestrator.chaos import ScenarioError, Target, TargetError, make_schedule, parse_scenario, parse_target
from orchestrator.chaos.targets import choose_live, choose_static, group_size, live_candidates, target_problem

from .test_chaos import LAB, FakeBackend, ok_fetch

ROLES = dict(LAB)

# what the nodes' /status says (the fields nodes/roles and nodes/net add for targets)
STATUS = {
    "hs": {"role": "onion_service", "intro_points": ["relay3", "relay1", "relay2"],
           "hsdirs": {"period": 20400, "relays": ["relay5", "relay2", "relay6", "relay1"]},
           "guards": {"primary": ["relay4", "relay6"]},
           "live_circuits": [
               {"circ_id": 1, "purpose": "intro", "path": ["relay4", "relay5", "relay3"]},
               {"circ_id": 2, "purpose": "rendezvous", "path": ["relay4", "relay2", "relay6"]}]},
    "client": {"role": "client", "rendezvous_points": ["relay6"], "guards": {"primary": ["relay1"]},
               "live_circuits": [
                   {"circ_id": 7, "purpose": "rendezvous", "path": ["relay1", "relay3", "relay6"]}]},
}


def status_of(name: str) -> dict | None:
    return STATUS.get(name)


# -- the grammar ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "parsed"), [
    ("relay3", Target("node", "relay3")),
    ("random relay", Target("random", "relay")),
    ("random   onion_service", Target("random", "onion_service")),
    ("intro points of hs", Target("intro_points", "hs")),
    ("hsdirs of hs", Target("hsdirs", "hs")),
    ("rendezvous point of client", Target("rendezvous_point", "client")),
    ("path of client", Target("path", "client")),
    ("path of hs", Target("path", "hs")),
    ("guards of hs", Target("guards", "hs")),
    ("minority of authorities", Target("authorities", "minority")),
    ("majority of authorities", Target("authorities", "majority")),
    ("all authorities", Target("authorities", "all")),
    ("intro point", Target("intro_points", None, "service")),
    ("service guard", Target("guards", None, "service")),
    ("client guard", Target("guards", None, "client")),
])
def test_every_form_parses(text: str, parsed: Target) -> None:
    assert parse_target(text) == parsed


@pytest.mark.parametrize(("text", "ending"), [
    ("intro pints of hs", "(did you mean 'intro points of hs'?)"),
    ("hs dirs of hs", "(did you mean 'hsdirs of hs'?)"),
    ("gaurds of client", "(did you mean 'guards of client'?)"),
    ("majority of authoritys", "(did you mean 'majority of authorities'?)"),
    ("random rely", "no role 'rely' in 'random ROLE' (did you mean 'relay'?)"),
    ("guards of", "'guards' of what? expected 'guards of NODE' with NODE a node name, got 'guards of'"),
    ("path of Client_1", "expected 'path of NODE' with NODE a node name, got 'path of Client_1'"),
])
def test_near_misses_get_a_suggestion(text: str, ending: str) -> None:
    with pytest.raises(TargetError) as caught:
        parse_target(text)
    assert str(caught.value).endswith(ending)


def test_the_aliases_are_the_protocol_targets_of_the_workload() -> None:
    """`intro point` is `intro points of <service>`: one implementation, the same candidates."""
    for alias, full in (("intro point", "intro points of hs"), ("service guard", "guards of hs"),
                        ("client guard", "guards of client")):
        assert live_candidates(parse_target(alias), status_of, "hs", "client") == \
            live_candidates(parse_target(full), status_of, "hs", "client")


# -- against a lab -------------------------------------------------------------------------------------------


def test_subjects_must_exist_with_the_right_role() -> None:
    assert target_problem(parse_target("hsdirs of client"), ROLES) == (
        "'hsdirs of HS' needs HS to be onion_service, and client is a client (the lab's: hs)")
    assert target_problem(parse_target("rendezvous point of hs"), ROLES) == (
        "'rendezvous point of CLIENT' needs CLIENT to be client, and hs is a onion_service (the lab's: "
        "client)")
    assert target_problem(parse_target("guards of relay1"), ROLES).startswith(
        "'guards of NODE' needs NODE to be client or onion_service, and relay1 is a relay")
    assert target_problem(parse_target("path of clinet"), ROLES) == (
        "the lab has no node 'clinet' (did you mean 'client'?)")
    assert target_problem(parse_target("intro points of hs"), ROLES) is None
    two = {"a1": "authority", "a2": "authority"}
    assert target_problem(parse_target("minority of authorities"), two) == (
        "the lab has 2 authorities: its minority is empty")


def test_a_scenario_is_checked_against_the_lab_with_every_problem_at_once() -> None:
    text = textwrap.dedent("""\
        name: x
        duration: 30
        faults:
          - {fault: kill, target: hsdirs of client}
          - {fault: kill, target: guards of relay9}
          - {fault: partition, target: relay1, from: [relay2, relay77]}
          - {fault: split, groups: [[relay1, hs], [relay8]]}
          - {fault: kill, target: rendezvous point of client}
        """)
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "s.yaml", lab=LAB)
    assert [str(p) for p in caught.value.problems] == [
        "s.yaml:4:5: faults[0].target: 'hsdirs of HS' needs HS to be onion_service, and client is a client "
        "(the lab's: hs)",
        "s.yaml:5:5: faults[1].target: the lab has no node 'relay9' (it has: client, hs)",
        "s.yaml:6:5: faults[2].from: the lab has no node 'relay77' (did you mean 'relay6'?)",
        "s.yaml:7:5: faults[3].groups: the lab has no node 'relay8' (did you mean 'relay6'?)"]


def test_the_new_parameters_are_checked() -> None:
    base = "name: x\nduration: 100\nfaults:\n  - "

    def problems(entry: str) -> list[str]:
        with pytest.raises(ScenarioError) as caught:
            parse_scenario(base + entry + "\n", "s.yaml")
        return [str(p) for p in caught.value.problems]

    assert problems("{fault: partition, target: relay1, direction: up}") == [
        "s.yaml:4:51: faults[0].direction: expected a direction (both, in, out), got 'up' (expected one of: "
        "both, in, out)"]
    assert problems("{fault: partition, target: relay1, from: random relay}") == [
        "s.yaml:4:46: faults[0].from: 'from' takes node names or a target that names nodes, not a random "
        "pick"]
    assert problems("{fault: split, groups: [[relay1]]}") == [
        "s.yaml:4:28: faults[0].groups: expected two or more groups of node names, e.g. [[relay1, relay2], "
        "[relay3, hs]]"]
    assert problems("{fault: split, groups: [[relay1, relay2], [relay2]]}") == [
        "s.yaml:4:28: faults[0].groups: relay2 is in group 0 and group 1: the groups must not overlap"]
    assert problems("{fault: split, target: relay1, groups: [[relay1], [relay2]]}") == [
        "s.yaml:4:28: faults[0].target: fault split takes its nodes from 'groups', not a target"]
    assert problems("{fault: partition, direction: in}") == [
        "s.yaml:4:5: faults[0]: missing required key 'target'"]
    assert problems("{fault: kill, target: majority of authorities, count: 2}")[0].endswith(
        "a count needs a target that has candidates ('random ROLE' or a protocol target such as 'intro "
        "points of HS'), not 'majority of authorities'")
    partition = parse_scenario(base + "{fault: partition, target: relay1, direction: out, "
                                      "from: hsdirs of hs}")
    assert dict(partition.faults[0].params) == {"direction": "out", "from": "hsdirs of hs", "network": None}
    split = parse_scenario(base + "{fault: split, groups: [[relay1, hs], [relay2]]}")
    assert split.faults[0].target == "split"
    assert dict(split.faults[0].params) == {"groups": (("relay1", "hs"), ("relay2",))}


# -- choosing ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "minority", "majority"),
                         [(1, 0, 1), (2, 0, 2), (3, 1, 2), (4, 1, 3), (5, 2, 3), (9, 4, 5)])
def test_authority_groups(n: int, minority: int, majority: int) -> None:
    sizes = (group_size("minority", n), group_size("majority", n), group_size("all", n))
    assert sizes == (minority, majority, n)
    roles = {f"auth{i}": "authority" for i in range(n)} | {"relay1": "relay"}
    for group, size in (("minority", minority), ("majority", majority), ("all", n)):
        chosen = choose_static(Target("authorities", group), 1, roles, random.Random(4), lambda _: True)
        if size == 0:
            assert isinstance(chosen, str)
        else:
            assert len(chosen) == size and all(roles[c] == "authority" for c in chosen)
            assert chosen == choose_static(Target("authorities", group), 1, roles, random.Random(4),
                                           lambda _: True)


def test_authority_groups_in_the_schedule_and_a_majority_that_is_busy() -> None:
    head = "name: x\nduration: 60\nfaults:\n  - {fault: pause, target: majority of authorities}\n"
    scenario = parse_scenario(head + "  - {fault: kill, target: minority of authorities, at: 20}\n")
    majority, minority = make_schedule(scenario, 5, LAB)
    assert len(majority.nodes) == 2 and len(minority.nodes) == 1
    assert {n for n in majority.nodes + minority.nodes} <= {"auth1", "auth2", "auth3"}
    clash = parse_scenario(head + "  - {fault: kill, target: majority of authorities, at: 5}\n", "s.yaml")
    with pytest.raises(ScenarioError) as caught:
        make_schedule(clash, 5, LAB)
    assert [str(p) for p in caught.value.problems] == [
        "s.yaml:5:5: faults[1].target: the lab has 1 authority node(s) free from 5 to 15 s, the majority of "
        "its 3 authorities is 2"]


def test_live_candidates_from_status() -> None:
    def names(text: str) -> list[str]:
        return live_candidates(parse_target(text), status_of, "hs", "client")[0]

    assert names("intro points of hs") == ["relay1", "relay2", "relay3"]
    assert names("hsdirs of hs") == ["relay1", "relay2", "relay5", "relay6"]
    assert names("rendezvous point of client") == ["relay6"]
    assert names("path of client") == ["relay1", "relay3", "relay6"]
    assert names("path of hs") == ["relay2", "relay3", "relay4", "relay5", "relay6"]
    assert names("guards of hs") == ["relay4", "relay6"]
    assert live_candidates(parse_target("guards of client"), status_of, "hs", "client") == (
        ["relay1"], "guards of client: relay1")
    # a node that does not answer, or that has no such state yet, names nobody, and says why
    assert live_candidates(parse_target("path of client2"), status_of, "hs", "client") == (
        [], "path of client2: its /status does not answer")
    assert live_candidates(parse_target("rendezvous point of client"), lambda _: {}, "hs", "client") == (
        [], "rendezvous point of client: none")


def test_choose_live_counts_leaves_busy_nodes_out_and_is_seeded() -> None:
    target = parse_target("hsdirs of hs")
    two, _ = choose_live(target, 2, 11, status_of, "hs", "client")
    assert len(two) == 2 and set(two) <= {"relay1", "relay2", "relay5", "relay6"}
    assert two == choose_live(target, 2, 11, status_of, "hs", "client")[0]
    every, _ = choose_live(target, None, 11, status_of, "hs", "client", busy={"relay2"})
    assert every == ["relay1", "relay5", "relay6"]


def test_choose_live_leaves_out_what_is_no_node_of_the_lab() -> None:
    """The fresh-clone CI run's relay-pause: the service's live circuits listed a hop its consensus did not
    list with that onion key, shown as "unlisted", and chaos tried to pause a node named "unlisted"."""
    def with_stranger(name: str) -> dict | None:
        status = status_of(name)
        if name == "hs":
            status = {**status, "live_circuits": [{"path": ["relay4", "unlisted", "relay6"]}]}
        return status

    lab = {f"relay{i}": "relay" for i in range(1, 7)} | {"hs": "onion_service", "client": "client"}
    nodes, why = choose_live(parse_target("path of hs"), None, 1, with_stranger, "hs", "client", lab=lab)
    assert nodes == ["relay4", "relay6"]
    assert why == "path of hs: relay4, relay6, unlisted (unlisted: no node of the lab, left out)"


# -- the run: a live target that names nobody yet ----------------------------------------------------------


class TargetsBackend(FakeBackend):
    """FakeBackend whose client makes a rendezvous circuit only after `rendezvous_after` reads of its
    rendezvous points, and which records firewall rules per node."""

    def __init__(self, run_dir: Path, rendezvous_after: float = 0) -> None:
        super().__init__(run_dir)
        self.rendezvous_after = rendezvous_after
        self.asked = 0
        self.rules: dict[str, list[list[str]]] = {}

    def node_status(self, name: str) -> dict:
        if name == "client":
            return _CountedStatus(self, {**STATUS["client"], **super().node_status(name)})
        return {**STATUS.get(name, {}), **super().node_status(name)}

    def node_state(self, name: str) -> dict:
        return {**super().node_state(name), "rules": [" ".join(r) for r in self.rules.get(name, [])]}

    def firewall_rules(self, name: str, direction: str, peers: list[str] | None = None,
                       network: str | None = None) -> list[list[str]]:
        addresses = None if peers is None else [self.state[p]["networks"]["labnet"] for p in peers]
        return partition_rules("onionlab:test:1:1", direction, addresses)

    def add_rules(self, name: str, rules: list[list[str]]) -> None:
        self.calls.append(("add_rules", name, len(rules)))
        self.rules.setdefault(name, []).extend(rules)

    def remove_rules(self, name: str, rules: list[list[str]]) -> int:
        self.calls.append(("remove_rules", name, len(rules)))
        self.rules[name] = [r for r in self.rules.get(name, []) if r not in rules]
        return len(rules)


class _CountedStatus(dict):
    """The client's /status, whose rendezvous points appear once they were read `rendezvous_after` times
    (the lab snapshot and the lab sampler read other fields of the same /status)."""

    def __init__(self, backend: TargetsBackend, status: dict) -> None:
        super().__init__(status)
        self.backend = backend

    def get(self, key: str, default: object = None) -> object:
        if key != "rendezvous_points":
            return super().get(key, default)
        self.backend.asked += 1
        return ["relay6"] if self.backend.asked > self.backend.rendezvous_after else []


def rendezvous_scenario(at: float, length: float) -> chaos.Scenario:
    return parse_scenario(f"name: x\nduration: 2\nworkload: {{interval: 0.05, timeout: 1}}\nfaults:\n"
                          f"  - {{fault: pause, target: rendezvous point of client, at: {at}, "
                          f"for: {length}}}\n")


def test_a_live_target_that_names_nobody_is_retried_until_it_does(tmp_path: Path) -> None:
    backend = TargetsBackend(tmp_path, rendezvous_after=1)  # the second try finds it
    result = chaos.run_scenario(rendezvous_scenario(0.1, 1.5), backend, fetch=ok_fetch)
    assert result.ok
    records = [r for r in result.history if r["type"] == "target"]
    assert [r["event"] for r in records] == ["waiting", "found"]
    assert records[0]["why"] == "rendezvous point of client: none" and records[1]["nodes"] == ["relay6"]
    assert 0.5 <= records[1]["waited"] < 0.8  # one retry, 0.5 s later
    assert ("pause", "relay6") in backend.calls and ("unpause", "relay6") in backend.calls


def test_a_live_target_that_never_names_anyone_is_skipped_with_the_reason(tmp_path: Path) -> None:
    backend = TargetsBackend(tmp_path, rendezvous_after=10**9)
    lines: list[str] = []
    result = chaos.run_scenario(rendezvous_scenario(0.1, 1.5), backend, fetch=ok_fetch, say=lines.append)
    records = [r for r in result.history if r["type"] == "target"]
    assert [r["event"] for r in records] == ["waiting", "skipped"]
    assert records[1]["why"] == "rendezvous point of client: none"
    assert 0.9 <= records[1]["waited"] <= 1.1  # the workload's timeout: 1 s (the fault ends at 1.6 s)
    assert not any(c[0] == "pause" for c in backend.calls)
    assert any("SKIPPED, still no target after" in line for line in lines)
    faults = next(v for v in result.verdicts if v.name == "faults")
    assert "op 0 skipped" in " ".join(faults.details)


def test_a_partition_from_a_live_target_cuts_the_node_from_those_nodes_only(tmp_path: Path) -> None:
    backend = TargetsBackend(tmp_path)
    scenario = parse_scenario("name: x\nduration: 1\nworkload: {interval: 0.05}\nfaults:\n"
                              "  - {fault: partition, target: relay2, direction: in, from: hsdirs of hs, "
                              "at: 0.1, for: 0.5}\n"
                              "  - {fault: split, groups: [[auth1, relay1], [auth2]], at: 0.1, for: 0.5}\n")
    result = chaos.run_scenario(scenario, backend, fetch=ok_fetch)
    assert result.ok, [v.details for v in result.verdicts]
    starts = {(r["op"], r["node"]): r for r in result.history
              if r["type"] == "fault" and r["event"] == "start"}
    partition = next(r for (op, node), r in starts.items() if node == "relay2")
    # the HSDirs of hs but relay2 itself (relay1, relay5, relay6 at 10.0.0.{5,9,10}): one INPUT rule each
    assert sorted(tuple(r[:3]) for r in partition["undo"]["rules"]) == [
        ("INPUT", "-s", "10.0.0.10/32"), ("INPUT", "-s", "10.0.0.5/32"), ("INPUT", "-s", "10.0.0.9/32")]
    assert all("ORIGINAL" in r for r in partition["undo"]["rules"])
    assert "hsdirs of hs: relay1, relay2, relay5, relay6" in partition["chosen_from"]
    auth1 = next(r for (op, node), r in starts.items() if node == "auth1")
    assert {r[2] for r in auth1["undo"]["rules"]} == {"10.0.0.3/32"}  # auth2 only, both chains
    assert sorted(r[0] for r in auth1["undo"]["rules"]) == ["INPUT", "OUTPUT"]
    assert {c[1] for c in backend.calls if c[0] == "add_rules"} == {"relay2", "auth1", "relay1", "auth2"}
    assert all(not rules for rules in backend.rules.values())


def test_a_rule_left_behind_fails_the_faults_checker(tmp_path: Path) -> None:
    backend = TargetsBackend(tmp_path)
    backend.remove_rules = lambda name, rules: 0  # the undo "works" but leaves the rules
    scenario = parse_scenario("name: x\nduration: 1\nworkload: {interval: 0.05}\nfaults:\n"
                              "  - {fault: partition, target: relay2, from: [relay3], at: 0.1, for: 0.3}\n")
    result = chaos.run_scenario(scenario, backend, fetch=ok_fetch)
    faults = next(v for v in result.verdicts if v.name == "faults")
    assert not faults.ok and "relay2: firewall rules" in faults.details[0]


# -- refusals ------------------------------------------------------------------------------------------------


def test_backends_without_rules_refuse_up_front(tmp_path: Path) -> None:
    local_like = FakeBackend(tmp_path, supports=PROCESS_FAULTS)
    for entry in ("{fault: split, groups: [[relay1], [relay2]]}",
                  "{fault: partition, target: relay1, direction: out}"):
        scenario = parse_scenario(f"name: x\nduration: 30\nfaults:\n  - {entry}\n")
        fault = "split" if "split" in entry else "partition"
        with pytest.raises(chaos.ChaosRefused, match=f"fault {fault} is not supported by the fake backend"):
            chaos.run_scenario(scenario, local_like, fetch=ok_fetch)

    class NoIptables(TargetsBackend):
        def fault_problem(self, fault: str) -> str | None:
            return "partitions by rules need root" if fault == "split" else super().fault_problem(fault)

    scenario = parse_scenario("name: x\nduration: 30\nfaults:\n  - {fault: partition, target: relay1, from: "
                              "[relay2]}\n  - {fault: partition, target: relay3}\n")
    with pytest.raises(chaos.ChaosRefused) as caught:
        chaos.run_scenario(scenario, NoIptables(tmp_path), fetch=ok_fetch)
    assert str(caught.value) == ("fault partition with direction or from (firewall rules) cannot run here: "
                                 "partitions by rules need root")
    assert FAULT_KINDS >= {"split"}


# -- the rules -----------------------------------------------------------------------------------------------


def test_rules_per_direction() -> None:
    tag = "onionlab:r1:10:20"
    both = partition_rules(tag, "both", ["10.0.0.2"])
    assert both == [["INPUT", "-s", "10.0.0.2/32", "-m", "comment", "--comment", tag, "-j", "DROP"],
                    ["OUTPUT", "-d", "10.0.0.2/32", "-m", "comment", "--comment", tag, "-j", "DROP"]]
    one_way = ["-m", "conntrack", "--ctdir", "ORIGINAL", "-j", "DROP"]
    assert partition_rules(tag, "in", ["10.0.0.2", "10.0.0.3"]) == [
        ["INPUT", "-s", f"10.0.0.{i}/32", "-m", "comment", "--comment", tag, *one_way] for i in (2, 3)]
    assert partition_rules(tag, "out", None, ["10.0.1.5"]) == [
        ["OUTPUT", "-s", "10.0.1.5/32", "!", "-o", "lo", "-m", "comment", "--comment", tag, *one_way]]
    assert partition_rules(tag, "both", None)[0][:4] == ["INPUT", "!", "-i", "lo"]
    with pytest.raises(ValueError, match="no peer addresses"):
        partition_rules(tag, "both", [])
    with pytest.raises(ValueError, match="direction must be one of both, in, out"):
        partition_rules(tag, "sideways", None)


def test_tags_name_their_maker() -> None:
    tag = rule_tag("abc123")
    assert tag.startswith(f"onionlab:abc123:{os.getpid()}:") and tag_owner_alive(tag)
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert not tag_owner_alive(rule_tag("abc123", dead.pid).rsplit(":", 1)[0] + ":1")
    assert not tag_owner_alive("onionlab:abc123:notapid:1")
    listing = ('-P INPUT ACCEPT\n-A INPUT -s 10.0.0.2/32 -m comment --comment "onionlab:abc123:1:2" -j DROP\n'
               '-A OUTPUT -d 10.9.9.9/32 -m comment --comment "someone else" -j DROP\n'
               '# Warning: iptables-legacy tables present, use iptables-legacy to see them\n')
    (rule,) = tagged_rules(listing)
    assert rule == ["INPUT", "-s", "10.0.0.2/32", "-m", "comment", "--comment", "onionlab:abc123:1:2", "-j",
                    "DROP"]
    assert rule_comment(rule) == "onionlab:abc123:1:2"


def test_dry_run_shows_the_new_parameters_plainly() -> None:
    scenario = parse_scenario(textwrap.dedent("""\
        name: x
        duration: 60
        faults:
          - {fault: split, groups: [[auth1, relay1], [auth2, auth3]]}
          - {fault: partition, target: relay2, direction: out, from: [relay5, relay6], at: 1}
          - {fault: partition, target: hs, direction: in, from: hsdirs of hs, at: 2}
          - {fault: pause, target: path of client, count: all, at: 3}
        """), lab=LAB)
    assert [op.describe() for op in make_schedule(scenario, 1, LAB)] == [
        "split groups=[auth1,relay1] [auth2,auth3] auth1, auth2, auth3, relay1",
        "partition direction=out from=relay5,relay6 relay2",
        "partition direction=in from='hsdirs of hs' hs",
        "pause all x path of client (chosen when applied)"]
