"""Faults: applying and undoing them through the backend (FaultBackend, NetworkFaultBackend), the journal of
the faults in place (`onionlab chaos --heal`), and what the backend refuses before anything changes.

Shaping faults take one of two paths (the backend's `shaping_path`): tc qdiscs on the node's links, or rules
in the link-layer shapers of the node and its peers (nodes/net/shaper.py) through their control call. A rule
shapes what a node sends, so a fault on node X is a rule on X for its peers (direction out) and a rule on
each peer for X (in); `peer` narrows that to the one link X <-> peer, `network` to X's links on it."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from .. import impairments
from ..backends.base import LINK_LAYER, FaultBackend, refusal
from ..control import ControlCallError
from .scenario import FAULTS, SHAPING, ChaosRefused
from .schedule import Op

JOURNAL: Final = "chaos-faults.json"


def _qdisc(fault: str, params: dict[str, Any]) -> list[str]:
    if fault == "bandwidth":
        return ["tbf", "rate", params["rate"], "burst", params["burst"], "latency", params["latency"]]
    if fault == "delay":  # one netem qdisc: a second root qdisc would replace the first
        return ["netem", "delay", params["delay"], *([params["jitter"]] if params.get("jitter") else []),
                *(["loss", f"{params['loss']:g}%"] if params.get("loss") else [])]
    return ["netem", "loss", f"{params['percent']:g}%"]


def _effect(fault: str, params: dict[str, Any]) -> dict[str, float]:
    """The shaper's terms for a shaping fault's parameters."""
    if fault == "bandwidth":
        return {"rate": impairments.bytes_per_second(params["rate"])}
    if fault == "delay":
        return {"delay": impairments.seconds(params["delay"]),
                "jitter": impairments.seconds(params["jitter"]) if params.get("jitter") else 0.0,
                "loss": impairments.fraction(params["loss"]) if params.get("loss") else 0.0}
    return {"loss": impairments.fraction(params["percent"])}


def _link_rules(backend: FaultBackend, fault: str, node: str, params: dict[str, Any],
                nodes: Sequence[str]) -> list[dict]:
    """[{"node", "rule"}]: the shaper rules that make the fault on `node` (module docstring)."""
    rule_id = f"chaos-{fault}-{node}-{secrets.token_hex(3)}"
    network, peer = params.get("network"), params.get("peer")
    direction = params.get("direction") or "both"

    def addresses(name: str) -> list[str]:
        found = backend.node_addresses(name)
        return [found[network]] if network in found else [] if network else sorted(set(found.values()))

    mine = addresses(node)
    if not mine:
        raise ChaosRefused(f"{node} is not on network {network}")
    others = [peer] if peer else [n for n in nodes if n != node]
    effect = _effect(fault, params)
    plan = []
    if direction in ("both", "out"):
        peers = None if not (peer or network) else sorted({a for o in others for a in addresses(o)})
        plan.append({"node": node, "rule": impairments.rule(rule_id, peers, **effect)})
    if direction in ("both", "in"):
        plan += [{"node": o, "rule": impairments.rule(rule_id, mine, **effect)}
                 for o in others if addresses(o)]
    return plan


def prepare_fault(backend: FaultBackend, fault: str, node: str, params: dict[str, Any],
                  nodes: Sequence[str] = ()) -> dict:
    """What `undo_fault` needs to undo the fault on this node (JSON-able), found out BEFORE the fault is
    applied, so that an interruption in the middle of applying it still leaves something to undo with.
    `nodes`: every node of the lab (a link-layer fault also changes the target's peers). The network
    faults reach here only when the backend supports them (a NetworkFaultBackend: refusals).
    A partition by rules gets its peers resolved in params["peers"] (node names; None: everyone)."""
    undo: dict[str, Any] = {"fault": fault, "node": node}
    network = params.get("network")
    if fault == "partition" and by_rules(params):
        undo["rules"] = backend.firewall_rules(node, params.get("direction") or "both", params.get("peers"),
                                               network)
    elif fault == "split":
        groups = params["groups"]
        undo["rules"] = backend.firewall_rules(node, "both", [n for g in groups if node not in g for n in g])
    elif fault == "partition":
        networks = backend.node_state(node)["networks"]
        if network is not None and network not in networks:
            raise ChaosRefused(f"{node} is not on network {network} "
                               f"(it is on: {', '.join(networks) or 'none'})")
        undo["networks"] = {n: a for n, a in networks.items() if network in (None, n)}
    elif fault in SHAPING and backend.shaping_path(fault, params)[0] == LINK_LAYER:
        undo["shaper_rules"] = _link_rules(backend, fault, node, params, nodes)
    elif fault in SHAPING:
        undo["qdisc"] = " ".join(_qdisc(fault, params))
        undo["veths"] = backend.interfaces(node, network, params.get("direction") or "both")
    elif fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}")
    return undo


def _undo_control(backend: FaultBackend, node: str, command: dict) -> dict | str:
    """Send a command that undoes something: the node's answer, or a few words when the node is not running
    (what the control call set went with its process); ControlCallError otherwise."""
    try:
        return backend.control(node, command)
    except ControlCallError:
        if backend.node_state(node).get("status") in ("running", "paused"):
            raise
        return f"{node} is not running (its rules went with it)"


def apply_fault(backend: FaultBackend, undo: dict, params: dict[str, Any]) -> None:
    """Apply the fault `prepare_fault` prepared."""
    fault, node = undo["fault"], undo["node"]
    if fault == "kill":
        backend.kill(node, signal=params["signal"])
    elif fault == "stop":
        backend.stop(node, timeout=params["grace"])
    elif fault == "pause":
        backend.pause(node)
    elif "rules" in undo:
        backend.add_rules(node, undo["rules"])
    elif fault == "partition":
        for network in undo["networks"]:
            backend.disconnect(node, network)
    elif fault == "skew":
        backend.control(node, {"command": "skew", "offset": params["offset"]})
    elif "shaper_rules" in undo:
        for entry in undo["shaper_rules"]:
            backend.control(entry["node"], {"command": "shape", "rules": [entry["rule"]]})
    else:
        backend.shape(node, undo["qdisc"].split(), params.get("network"), params.get("direction") or "both")


def undo_fault(backend: FaultBackend, undo: dict) -> str:
    """Undo what apply_fault did, without waiting for a restarted node to be ready; returns a few words on
    how."""
    fault, node = undo["fault"], undo["node"]
    if fault in ("kill", "stop"):
        backend.start(node, wait=False)
        return "started again"
    if fault == "pause":
        backend.unpause(node)
        return "unpaused"
    if "rules" in undo:
        removed = backend.remove_rules(node, undo["rules"])
        return f"{removed} of {len(undo['rules'])} firewall rules removed (the others were gone)" \
            if removed < len(undo["rules"]) else f"{removed} firewall rules removed"
    if fault == "partition":
        for network, address in undo["networks"].items():
            backend.connect(node, network, address)
        return "reconnected to " + (", ".join(undo["networks"]) or "nothing")
    if fault == "skew":
        answer = _undo_control(backend, node, {"command": "unskew"})
        return answer if isinstance(answer, str) else f"clock true again (was {answer.get('was', 0):+g} s)"
    if "shaper_rules" in undo:
        answers = [_undo_control(backend, e["node"], {"command": "unshape", "ids": [e["rule"]["id"]]})
                   for e in undo["shaper_rules"]]
        removed = sum(isinstance(a, dict) and bool(a.get("removed")) for a in answers)
        gone = [a for a in answers if isinstance(a, str)]
        return f"link-layer rules removed from {removed} node(s)" + (f"; {'; '.join(gone)}" if gone else "")
    if fault in SHAPING:
        removed = backend.unshape(undo["veths"])
        return f"qdisc removed from {', '.join(removed) or 'nothing (its veths are gone)'}"
    raise ValueError(f"unknown fault {fault!r}")


def journal_path(backend: FaultBackend) -> Path:
    return Path(backend.run_dir) / JOURNAL


def write_journal(backend: FaultBackend, undos: list[dict]) -> None:
    path = journal_path(backend)
    if not undos:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(undos, indent=2) + "\n")
    os.replace(tmp, path)


def heal(backend: FaultBackend) -> list[tuple[dict, str]]:
    """Undo every fault a chaos run left in place (`<run dir>/chaos-faults.json`, e.g. after SIGKILL).
    Returns (fault, what was done or the error) for each."""
    path = journal_path(backend)
    if not path.exists():
        return []
    undos = json.loads(path.read_text())
    done, left = [], []
    for undo in reversed(undos):
        try:
            done.append((undo, undo_fault(backend, undo)))
        except Exception as e:  # noqa: BLE001 - reported, kept in the journal, the others still undone
            done.append((undo, f"FAILED: {e}"))
            left.append(undo)
    write_journal(backend, list(reversed(left)))
    return done


def lab_snapshot(backend: FaultBackend, nodes: Sequence[str]) -> dict[str, dict]:
    """Each node's state (FaultBackend.node_state: status, networks, root qdisc kinds, firewall rules) and
    what its /status says of its control (the ids of its link-layer rules, its clock offset): what a run
    must leave as it found it."""
    return {name: {**backend.node_state(name), **_control_state(backend.node_status(name))} for name in nodes}


def _control_state(status: dict | None) -> dict:
    if status is None or "shaping" not in status:
        return {}
    return {"shaping": sorted(r["id"] for r in status["shaping"]), "clock_offset": status.get("clock_offset")}


def shaping_paths(backend: FaultBackend, schedule: Sequence[Op]) -> list[str]:
    """How the schedule's shaping and clock faults run on this backend, one line each (said before a run)."""
    kinds: dict[tuple[str, bool], dict] = {}
    for op in schedule:
        params = dict(op.params)
        kinds.setdefault((op.fault, bool(params.get("peer"))), params)
    lines = []
    for (fault, peer), params in sorted(kinds.items()):
        if fault == "skew":
            lines.append("skew via the nodes' control call (their clock offset)")
        elif fault in SHAPING:
            path, why = backend.shaping_path(fault, params)
            how = "link-layer shaper" if path == LINK_LAYER else "tc qdiscs"
            lines.append(f"{fault}{' on one link' if peer else ''} via {how} ({why})")
    return lines


def clear_node_control(backend: FaultBackend, nodes: Sequence[str]) -> list[str]:
    """Remove every link-layer rule a chaos run set (static ones stay) and the clock offset of each node
    that answers; the nodes that had something to clear (`onionlab reap`)."""
    cleared = []
    for name in nodes:
        state = _control_state(backend.node_status(name))
        try:
            if state.get("clock_offset"):
                backend.control(name, {"command": "unskew"})
            if backend.control(name, {"command": "unshape"}).get("removed") or state.get("clock_offset"):
                cleared.append(name)
        except ControlCallError:
            continue
    return cleared


def compare_snapshots(before: dict[str, dict], after: dict[str, dict]) -> list[str]:
    """What differs (a fault left in place), as sentences."""
    left = []
    for name, was in before.items():
        now = after.get(name, {})
        if now.get("status") != was.get("status"):
            left.append(f"{name}: container {now.get('status')}, was {was.get('status')}")
        if now.get("networks") != was.get("networks"):
            left.append(f"{name}: on networks {now.get('networks')}, was on {was.get('networks')}")
        if now.get("qdiscs") != was.get("qdiscs"):
            left.append(f"{name}: qdiscs {now.get('qdiscs')}, were {was.get('qdiscs')}")
        if now.get("rules", []) != was.get("rules", []):
            extra = [r for r in now.get("rules", []) if r not in was.get("rules", [])]
            left.append(f"{name}: firewall rules {extra or now.get('rules')}, were {was.get('rules')}")
        if "shaping" not in now or "shaping" not in was:
            continue  # it did not answer /status (e.g. started again without waiting): nothing to compare
        if now["shaping"] != was["shaping"]:
            left.append(f"{name}: link-layer rules {now['shaping']}, were {was['shaping']}")
        if now["clock_offset"] != was["clock_offset"]:
            left.append(f"{name}: clock offset {now['clock_offset']}, was {was['clock_offset']}")
    return left


def refusals(backend: FaultBackend, schedule: Sequence[Op]) -> list[str]:
    """Why the backend cannot apply the schedule's faults (it does not support one, or this host lacks what
    one needs), one sentence per fault kind naming it and the backend; [] when it can apply them all."""
    found = []
    for fault, ruled in sorted({(op.fault, op.fault == "partition" and by_rules(dict(op.params)))
                                for op in schedule}):
        why = refusal(backend, fault)
        if why is None and ruled and (problem := backend.fault_problem("split")):
            why = f"fault {fault} with direction or from (firewall rules) cannot run here: {problem}"
        if why and why not in found:
            found.append(why)
    return found


def by_rules(params: dict[str, Any]) -> bool:
    """A partition by firewall rules (direction or from given), not off the networks."""
    return params.get("direction") is not None or params.get("from") is not None
