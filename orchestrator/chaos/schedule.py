"""The schedule: a scenario and a seed over a lab's nodes -> the operations, in order; the same seed and
lab give the same schedule."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..topology import Problem, _did_you_mean
from .scenario import UNTARGETED, Scenario, ScenarioError
from .targets import choose_static, parse_target, target_problem


@dataclass(frozen=True, slots=True)
class Op:
    """One scheduled fault: at `at` it is applied to its targets, at `until` undone."""

    index: int
    fault: str
    target: str  # as the scenario writes it
    nodes: tuple[str, ...]  # chosen by make_schedule; () when chosen at `at` from the lab (a live target)
    count: int | None
    at: float
    until: float
    params: tuple[tuple[str, Any], ...]
    choice_seed: int  # the seed of the choice among live candidates
    entry: int  # which entry of `faults:` it comes from

    def describe(self) -> str:
        who = ", ".join(self.nodes) if self.nodes else f"{'all' if self.count is None else self.count} x " \
                                                        f"{self.target} (chosen when applied)"
        extra = "".join(f" {k}={_word(v)}" for k, v in self.params if v is not None)
        return f"{self.fault}{extra} {who}"

    def to_dict(self) -> dict:
        return {"op": self.index, "fault": self.fault, "target": self.target, "nodes": list(self.nodes),
                "count": self.count, "at": self.at, "until": self.until,
                "params": {k: v for k, v in self.params if v is not None}, "entry": self.entry}


def _word(value: Any) -> str:
    """A parameter as --dry-run shows it: lists of names comma-separated, groups in brackets."""
    if isinstance(value, tuple):
        return " ".join(f"[{_word(v)}]" for v in value) if value and isinstance(value[0], tuple) \
            else ",".join(value)
    return repr(value) if isinstance(value, str) and " " in value else str(value)


def make_schedule(scenario: Scenario, seed: int, lab: Sequence[tuple[str, str]]) -> list[Op]:
    """The operations, in order of their start: times drawn and static targets chosen by an RNG seeded with
    `seed`, over the lab's (name, role) pairs. The same scenario, seed and lab give the same schedule. A node
    chosen at random is not chosen for another fault that overlaps in time. ScenarioError (with the fault's
    position) when the lab cannot give a fault its target."""
    rng = random.Random(seed)
    roles = dict(lab)
    problems: list[Problem] = []
    busy: list[tuple[str, float, float]] = []
    drafted = []
    for entry, spec in enumerate(scenario.faults):
        params = dict(spec.params)
        for key, why in _param_problems(spec.fault, params, roles):
            problems.append(spec.where.problem(f"{spec.path}.{key}", why))
        for r in range(spec.repeat):
            at = round(rng.uniform(*spec.at) + r * spec.every, 1)
            until = round(at + rng.uniform(*spec.length), 1)

            def free(node: str, at: float = at, until: float = until, busy: list = busy) -> bool:
                return not any(b == node and s < until and at < e for b, s, e in busy)

            if spec.fault in UNTARGETED:
                nodes: tuple[str, ...] | str = tuple(sorted(n for g in params.get("groups") or () for n in g))
            else:
                target = parse_target(spec.target)
                nodes = target_problem(target, roles) or choose_static(target, spec.count, roles, rng, free,
                                                                       f"from {at:g} to {until:g} s")
            if isinstance(nodes, str):
                problems.append(spec.where.problem(f"{spec.path}.target", nodes))
                continue
            busy += [(n, at, until) for n in nodes]
            drafted.append((at, until, entry, spec, nodes, rng.getrandbits(32)))
    if problems:
        raise ScenarioError(problems)
    drafted.sort(key=lambda d: (d[0], d[2]))
    return [Op(index=i, fault=spec.fault, target=spec.target, nodes=nodes, count=spec.count, at=at,
               until=until, params=spec.params, choice_seed=choice, entry=entry)
            for i, (at, until, entry, spec, nodes, choice) in enumerate(drafted)]


def check_workload(scenario: Scenario, lab: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """(client, service) of the workload; ScenarioError, naming each missing one, when the lab has no such
    nodes."""
    found, problems = [], []
    for key, role in (("client", "client"), ("service", "onion_service")):
        name = getattr(scenario.workload, key)
        have = [n for n, r in lab if r == role]
        if name is None:
            if not have:
                problems.append(scenario.workload.where.problem("workload", f"the lab has no {role}"))
            name = have[0] if have else None
        elif name not in have:
            problems.append(scenario.workload.where.problem(f"workload.{key}", (
                f"the lab has no {role} named {name!r} ({', '.join(have) or 'none at all'})")))
        found.append(name)
    if problems:
        raise ScenarioError(problems)
    return found[0], found[1]


def lab_problems(scenario: Scenario, seed: int, lab: Sequence[tuple[str, str]]) -> list[Problem]:
    """Every problem of the scenario against the lab: the workload's nodes, the faults' targets."""
    problems: list[Problem] = []
    for check in (lambda: check_workload(scenario, lab), lambda: make_schedule(scenario, seed, lab)):
        try:
            check()
        except ScenarioError as e:
            problems += e.problems
    return problems


def _param_problems(fault: str, params: dict[str, Any], roles: dict[str, str]) -> list[tuple[str, str]]:
    """(parameter, why) for each node a fault's parameters name that the lab lacks: partition's `from`,
    split's `groups`, a shaping fault's `peer` (the other end of one link)."""
    problems = []
    peers = params.get("from")
    if isinstance(peers, str):
        why = target_problem(parse_target(peers), roles)
        if why:
            problems.append(("from", why))
    names = [*(peers if isinstance(peers, tuple) else ()),
             *(n for group in params.get("groups") or () for n in group)]
    peer = params.get("peer")
    if peer and peer not in roles:
        problems.append(("peer", f"the lab has no node {peer!r} ({_did_you_mean(peer, roles)})"))
    for name in names:
        if name not in roles:
            problems.append(("from" if fault == "partition" else "groups",
                             f"the lab has no node {name!r} ({_did_you_mean(name, roles)})"))
    return problems
