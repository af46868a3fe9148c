"""Partitions by firewall rules against real containers (one lab for the module: 3 authorities, 3 relays):
iptables rules in the nodes' network namespaces, entered from the host with nsenter. Each cut is checked with
real TCP connections to the relays' OR ports, opened from inside the nodes' namespaces: a one-way partition
blocks exactly the connections opened in its direction, and only with the nodes named in `from`; a split
cuts every group from every other and nothing within a group. Each is undone (by the fault's undo, and by
`onionlab chaos --heal` from the journal), the lab snapshot sees the rules while they are in place, and
`reap` removes a rule whose maker is gone while it keeps the rules of a live one."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from orchestrator import chaos
from orchestrator.backends.docker import DockerBackend
from orchestrator.backends.docker.firewall import partition_rules, rule_tag
from orchestrator.chaos.faults import (
    apply_fault,
    heal,
    lab_snapshot,
    prepare_fault,
    undo_fault,
    write_journal,
)
from orchestrator.topology import parse_topology

from .conftest import SESSION, SESSION_LABEL, TEST_LABEL, _remove_labelled
from .test_docker_backend import free_subnet, topology_text

pytestmark = pytest.mark.docker

RELAYS = ("relay1", "relay2", "relay3")
CONNECT_TIMEOUT = 2.0  # a dropped SYN is retried for longer than this: the attempt fails by timeout


@pytest.fixture(scope="module")
def lab(docker_client, node_image, tmp_path_factory):
    base = tmp_path_factory.mktemp("firewall")
    (base / "lab.yaml").write_text(topology_text(free_subnet(docker_client), name="firewalltest"))
    case = uuid.uuid4().hex[:12]
    backend = DockerBackend(base / "run", labels={TEST_LABEL: "1", SESSION_LABEL: SESSION,
                                                  "onionlab.test.case": case})
    try:
        backend.up(parse_topology((base / "lab.yaml").read_text(), str(base / "lab.yaml")), timeout=120)
        problem = backend.fault_problem("split")
        assert problem is None, f"partitions by rules cannot run on this host: {problem}"
        yield backend
    finally:
        try:
            backend.down()
        finally:
            _remove_labelled(docker_client, f"onionlab.test.case={case}")


def connects(backend: DockerBackend, source: str, target: str) -> bool:
    """Does a TCP connection from `source`'s network namespace to `target`'s OR port open?"""
    node = backend._state().node(target)
    pid = backend._netns_pid(source)
    code = (f"import socket; socket.create_connection(({node.address!r}, {node.ports['or_port']}), "
            f"timeout={CONNECT_TIMEOUT}).close()")
    result = subprocess.run(["nsenter", "-t", str(pid), "-n", sys.executable, "-c", code],
                            capture_output=True, text=True, timeout=CONNECT_TIMEOUT + 10)
    return result.returncode == 0


def reachability(backend: DockerBackend) -> dict[tuple[str, str], bool]:
    return {(a, b): connects(backend, a, b) for a in RELAYS for b in RELAYS if a != b}


def apply(backend: DockerBackend, fault: str, node: str, params: dict) -> dict:
    undo = prepare_fault(backend, fault, node, params)
    apply_fault(backend, undo, params)
    return undo


def test_a_one_way_partition_blocks_only_its_direction_and_only_from_the_named_nodes(lab) -> None:
    all_open = reachability(lab)
    assert all(all_open.values()), all_open
    before = lab_snapshot(lab, list(RELAYS))
    assert all(state["rules"] == [] for state in before.values())

    # in: connections relay2 opens to relay1 are cut; relay1's own to relay2 still open; relay3 untouched
    undo = apply(lab, "partition", "relay1", {"direction": "in", "from": ["relay2"], "peers": ["relay2"]})
    assert len(undo["rules"]) == 1 and undo["rules"][0][0] == "INPUT"
    assert reachability(lab) == {**all_open, ("relay2", "relay1"): False}
    during = lab_snapshot(lab, list(RELAYS))
    assert len(during["relay1"]["rules"]) == 1
    assert chaos.compare_snapshots(before, during) == [f"relay1: firewall rules {during['relay1']['rules']}, "
                                                       "were []"]
    assert undo_fault(lab, undo) == "1 firewall rules removed"
    assert all(reachability(lab).values())

    # out: connections relay1 opens to relay2 are cut, relay2's to relay1 open
    undo = apply(lab, "partition", "relay1", {"direction": "out", "from": ["relay2"], "peers": ["relay2"]})
    assert reachability(lab) == {**all_open, ("relay1", "relay2"): False}
    undo_fault(lab, undo)
    assert all(reachability(lab).values())
    assert chaos.compare_snapshots(before, lab_snapshot(lab, list(RELAYS))) == []


def test_a_split_cuts_every_group_from_every_other_and_heal_undoes_it(lab) -> None:
    params = {"groups": (("relay1",), ("relay2", "relay3"))}
    undos = [apply(lab, "split", node, params) for node in RELAYS]
    cut = reachability(lab)
    assert cut == {(a, b): (a == "relay1") == (b == "relay1") for a in RELAYS for b in RELAYS if a != b}
    # as after a SIGKILLed run: the journal lists what is in place, `onionlab chaos --heal` undoes it
    write_journal(lab, undos)
    healed = heal(lab)
    assert [how for _, how in healed] == ["2 firewall rules removed", "2 firewall rules removed",
                                          "4 firewall rules removed"]
    assert not (Path(lab.run_dir) / chaos.JOURNAL).exists()
    assert all(reachability(lab).values())
    assert all(lab.node_rules(node) == [] for node in RELAYS)


def test_reap_removes_the_rules_of_a_gone_maker_and_keeps_a_live_ones(lab) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    run_id = lab._state().run_id
    address = lab.container_addresses("relay3")["labnet"]
    leftover = partition_rules(rule_tag(run_id, gone.pid).rsplit(":", 1)[0] + ":1", "both", [address])
    lab.add_rules("relay2", leftover)
    ours = lab.firewall_rules("relay1", "out", ["relay3"])
    lab.add_rules("relay1", ours)
    assert not connects(lab, "relay2", "relay3") and not connects(lab, "relay1", "relay3")
    report = lab.reap()
    assert report.rules == 2
    assert lab.node_rules("relay2") == [] and connects(lab, "relay2", "relay3")
    assert lab.node_rules("relay1") == ours  # its maker (this process) runs: kept
    assert lab.remove_rules("relay1", ours) == 1
    assert connects(lab, "relay1", "relay3")
