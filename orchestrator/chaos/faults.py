"""Faults: applying and undoing them through the backend (FaultBackend, NetworkFaultBackend), the journal of
the faults in place (`onionlab chaos --heal`), and what the backend refuses before anything changes."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from ..backends.base import FaultBackend, refusal
from .scenario import FAULTS, SHAPING, ChaosRefused
from .schedule import Op

JOURNAL: Final = "chaos-faults.json"


def _qdisc(fault: str, params: dict[str, Any]) -> list[str]:
    if fault == "bandwidth":
        return ["tbf", "rate", params["rate"], "burst", params["burst"], "latency", params["latency"]]
    if fault == "delay":
        return ["netem", "delay", params["delay"], *([params["jitter"]] if params.get("jitter") else [])]
    return ["netem", "loss", f"{params['percent']:g}%"]


def prepare_fault(backend: FaultBackend, fault: str, node: str, params: dict[str, Any]) -> dict:
    """What `undo_fault` needs to undo the fault on this node (JSON-able), found out BEFORE the fault is
    applied, so that an interruption in the middle of applying it still leaves something to undo with.
    The network faults reach here only when the backend supports them (a NetworkFaultBackend: refusals).
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
    elif fault in SHAPING:
        undo["qdisc"] = " ".join(_qdisc(fault, params))
        undo["veths"] = list(backend.host_interfaces(node, network).values())
    elif fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}")
    return undo


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
    else:
        backend.shape(node, undo["qdisc"].split(), params.get("network"))


def undo_fault(backend: FaultBackend, undo: dict, *, wait: bool, timeout: float) -> str:
    """Undo what apply_fault did; returns a few words on how. `wait`: a restarted node must be ready."""
    fault, node = undo["fault"], undo["node"]
    if fault in ("kill", "stop"):
        started = time.monotonic()
        backend.start(node, timeout=timeout, wait=wait)
        return f"ready again after {time.monotonic() - started:.1f} s" if wait else "started again"
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


def heal(backend: FaultBackend, *, timeout: float = 60.0) -> list[tuple[dict, str]]:
    """Undo every fault a chaos run left in place (`<run dir>/chaos-faults.json`, e.g. after SIGKILL).
    Returns (fault, what was done or the error) for each."""
    path = journal_path(backend)
    if not path.exists():
        return []
    undos = json.loads(path.read_text())
    done, left = [], []
    for undo in reversed(undos):
        try:
            done.append((undo, undo_fault(backend, undo, wait=False, timeout=timeout)))
        except Exception as e:  # noqa: BLE001 - reported, kept in the journal, the others still undone
            done.append((undo, f"FAILED: {e}"))
            left.append(undo)
    write_journal(backend, list(reversed(left)))
    return done


def lab_snapshot(backend: FaultBackend, nodes: Sequence[str]) -> dict[str, dict]:
    """Each node's state (FaultBackend.node_state: status, networks, root qdisc kinds, firewall rules): what a
    run must leave as it found it."""
    return {name: backend.node_state(name) for name in nodes}


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
