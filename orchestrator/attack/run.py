"""Runs the guard-discovery attack on a running lab: trials with entry guards and without, over seeds.

A trial: the service forgets its guards and starts over with one guard or none (its control call
`reset_guards`, seeded with the trial's seed, so a trial can be repeated on the same consensus); then the
attacking client makes it build marked rendezvous circuits one after another (its control call `attack`, a
rendezvous point of the adversary's each time, chosen by the seed) until an adversary relay reports
`attack_located`, or `circuits` circuits have gone by. Only the adversary's relays are asked what they saw
(their /status `adversary`), as the colluding operator would; the service's true address is used afterwards
to judge whether what they concluded is right, never by them.

One lab serves every trial: the service's circuits before a reset do not carry over (a fresh guard draw, new
rendezvous circuits each attempt).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol

from nodes.core.attack_signature import BURST_CELLS
from orchestrator.topology import Topology

from .curves import adversary_share

MODES = {"guards": 1, "no guards": 0}  # the service's `guards` setting in each mode
ATTEMPT_TIMEOUT = 60.0  # seconds one marked circuit may take, setup included
POLL = 0.02


class AttackBackend(Protocol):
    def control(self, name: str, command: dict) -> dict: ...

    def node_status(self, name: str) -> dict | None: ...


class AttackFailed(Exception):
    """The lab cannot run the attack (no adversary relay, no service, a node that does not answer)."""


@dataclass(slots=True)
class Trial:
    mode: str  # "guards" or "no guards"
    seed: int
    budget: int  # circuits at most
    circuits: int = 0  # marked circuits the service built (attempts that completed)
    failed: int = 0  # attempts that did not complete (not counted as circuits)
    located_at: int | None = None  # the circuit after which an adversary relay said "located"
    seconds: float | None = None  # from the trial's start to that report
    located_by: str | None = None  # which adversary relay
    located_address: str | None = None  # the address it concluded is the service's
    correct: bool | None = None  # that address is the service's (judged here, with the truth)
    guards: list[str] = field(default_factory=list)  # the service's primary guards (nicknames)
    guard_adversarial: bool | None = None
    first_hops: list[str] = field(default_factory=list)  # not known to the adversary: for the report


@dataclass(slots=True)
class Lab:
    service: str  # node names
    client: str
    onion: str
    port: int
    service_address: str
    adversary: dict[str, str]  # adversary relay node name -> nickname


def describe_lab(status: dict, adversary_names: list[str], backend: AttackBackend) -> Lab:
    """The service, client and adversary relays of a running lab (from `backend.status()`)."""
    if not adversary_names:
        raise AttackFailed("the topology marks no relay `adversary: true`")
    if not status["onion_services"] or not status["clients"]:
        raise AttackFailed("the lab needs an onion service and a client")
    service, client = status["onion_services"][0], status["clients"][0]
    service_status = backend.node_status(service["name"]) or {}
    ports = service_status.get("ports") or []
    if not service.get("onion") or not ports or not service_status.get("address"):
        raise AttackFailed(f"{service['name']} has no onion address or port yet: is the lab ready?")
    nicknames = {}
    for name in adversary_names:
        relay = backend.node_status(name)
        if relay is None or "adversary" not in relay:
            raise AttackFailed(f"{name} does not answer as an adversary's relay")
        nicknames[name] = relay["nickname"]
    return Lab(service["name"], client["name"], service["onion"], ports[0], service_status["address"],
               nicknames)


def run_trial(backend: AttackBackend, lab: Lab, mode: str, seed: int, budget: int, *,
              cells: int = BURST_CELLS, say: Callable[[str], None] = print) -> Trial:
    trial = Trial(mode, seed, budget)
    answer = backend.control(lab.service, {"command": "reset_guards", "guards": MODES[mode], "seed": seed})
    trial.guards = list(answer.get("guards", {}).get("primary", []))
    if mode == "guards":
        trial.guard_adversarial = any(g in lab.adversary.values() for g in trial.guards)
    choose = random.Random(f"rendezvous {seed}")
    started = time.time()
    for _ in range(budget):
        rendezvous = choose.choice(sorted(lab.adversary.values()))
        record = _attempt(backend, lab, rendezvous, cells)
        if not record.get("ok"):
            trial.failed += 1
            say(f"  attempt failed: {record.get('error')}")
            continue
        trial.circuits += 1
        trial.first_hops.append(_service_first_hop(backend, lab))
        report = _located_since(backend, lab, started)
        if report is not None:
            name, located = report
            trial.located_at = trial.circuits
            trial.seconds = round(located["ts"] - started, 3)
            trial.located_by = name
            trial.located_address = located["address"]
            trial.correct = located["address"] == lab.service_address
            break
    return trial


def _attempt(backend: AttackBackend, lab: Lab, rendezvous: str, cells: int) -> dict:
    """One marked circuit: start it at the client and wait for its record."""
    n = backend.control(lab.client, {"command": "attack", "onion": lab.onion, "rendezvous": rendezvous,
                                     "port": lab.port, "cells": cells})["attempt"]
    deadline = time.monotonic() + ATTEMPT_TIMEOUT
    while time.monotonic() < deadline:
        status = backend.node_status(lab.client) or {}
        for record in status.get("attack", {}).get("finished", []):
            if record["attempt"] == n:
                return record
        time.sleep(POLL)
    return {"attempt": n, "ok": False, "error": f"not finished after {ATTEMPT_TIMEOUT:g} s"}


def _service_first_hop(backend: AttackBackend, lab: Lab) -> str:
    """The first hop of the service's latest rendezvous circuit (its /status), "" if unknown. The adversary
    never sees this: the report uses it to check that "located" came exactly when a first hop was theirs."""
    recent = ((backend.node_status(lab.service) or {}).get("rendezvous_sent") or {}).get("recent") or []
    return recent[-1][0] if recent else ""


def _located_since(backend: AttackBackend, lab: Lab, since: float) -> tuple[str, dict] | None:
    """The first `attack_located` an adversary relay has reported since `since` (wall time), if any."""
    for name in sorted(lab.adversary):
        status = backend.node_status(name) or {}
        for located in status.get("adversary", {}).get("located", []):
            if located["ts"] >= since:
                return name, located
    return None


def run_attack(backend: AttackBackend, lab: Lab, *, seeds: int, circuits: int, cells: int = BURST_CELLS,
               say: Callable[[str], None] = print) -> list[Trial]:
    """Every seed in both modes, guards first."""
    trials = []
    for mode in MODES:
        for seed in range(1, seeds + 1):
            trial = run_trial(backend, lab, mode, seed, circuits, cells=cells, say=say)
            where = (f"located after {trial.located_at} circuit(s), {trial.seconds} s, by {trial.located_by}"
                     f" ({'right' if trial.correct else 'WRONG'} address)" if trial.located_at
                     else f"not located after {trial.circuits}")
            guard = f" guard {','.join(trial.guards)}{' (adversary)' if trial.guard_adversarial else ''}" \
                if mode == "guards" else ""
            say(f"{mode:9} seed {seed}:{guard} {where}")
            trials.append(trial)
    return trials


def result_data(trials: list[Trial], lab: Lab, topology: Topology, *, circuits: int, cells: int,
                seconds: float) -> dict:
    """Everything the report shows, as JSON-able data."""
    relays = topology.nodes_by_role("relay")
    return {"lab": topology.name, "relays": len(relays), "adversary_relays": len(lab.adversary),
            "adversary_nicknames": sorted(lab.adversary.values()),
            "adversary_share": adversary_share(topology), "circuits_budget": circuits, "mark_cells": cells,
            "service": lab.service, "client": lab.client, "seconds": round(seconds, 1),
            "trials": [asdict(t) for t in trials]}
