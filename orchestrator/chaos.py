"""`onionlab chaos`: break a running lab on purpose, on a seeded schedule, and judge what happened.

The Jepsen model. A scenario file (topologies/chaos/*.yaml, docs/chaos.md) names faults (kill, stop, pause,
partition, bandwidth, delay, loss), their targets (a node, a random node of a role, the service's intro
points, the service's or the client's guard) and when they start and how long they last. `make_schedule`
turns it and a seed into a list of operations: the same seed and lab give the same schedule. While the
schedule runs, a workload fetches /bytes/N from the onion through a client's SOCKS port again and again, each
time with fresh SOCKS credentials (a new rendezvous), and verifies every byte. Everything that happens goes
into a history (JSONL: every fault's start and end, every fetch with its result, latency and SOCKS reply),
and checkers judge the history afterwards: no wrong bytes ever, every fault applied and undone and nothing
left behind, availability overall and after the last fault healed, recovery within N seconds of each heal.
The lab's state is sampled too (every intro point the service lists held at its relay? the NACKs the client
got from each), so that a degraded lab fails a run even while clients get through by falling back.

Every fault is undone at the end whatever happens: the schedule ends, Ctrl-C or SIGTERM arrives, the workload
or the backend raises. Faults in place are also written to `<run dir>/chaos-faults.json`, so that even after
the orchestrator was SIGKILLed `onionlab chaos --heal` undoes them.

The faults are methods of the backend (backends/docker.py: the only module that speaks to the engine); this
module decides what to do when and judges it.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import random
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from .backends.base import SHAPING_FAULTS, FaultBackend, refusal
from .flow import (
    REPLY_NAMES,
    SocksRefused,
    fresh_credentials,
    read_pattern,
    socks_connect,
)
from .signals import signal_of, signals_deferred, sigterm_interrupts
from .topology import ROLES, Problem, TopologyError, _Checker, _describe, _did_you_mean, _syntax_problem

# -- what a scenario can say ---------------------------------------------------------------------------------

_TC_RATE = re.compile(r"\d+(\.\d+)?(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)")
_TC_SIZE = re.compile(r"\d+(\.\d+)?(b|kb|mb|k|m|kbit|mbit)?")
_TC_TIME = re.compile(r"\d+(\.\d+)?(us|ms|s)")
SIGNALS: Final = ("SIGKILL", "SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP")

# fault -> {parameter: (what it is, default; None: optional, ...: required)}
FAULTS: Final[dict[str, dict[str, tuple[str, Any]]]] = {
    "kill": {"signal": ("signal", "SIGKILL")},
    "stop": {"grace": ("seconds", 10)},
    "pause": {},
    "partition": {"network": ("network", None)},
    "bandwidth": {"rate": ("rate", ...), "burst": ("size", "32kbit"), "latency": ("time", "400ms"),
                  "network": ("network", None)},
    "delay": {"delay": ("time", ...), "jitter": ("time", None), "network": ("network", None)},
    "loss": {"percent": ("percent", ...), "network": ("network", None)},
}
SHAPING: Final = SHAPING_FAULTS
# targets chosen from the lab's live state when the fault starts (the rest are chosen by make_schedule)
LIVE_TARGETS: Final = ("intro point", "service guard", "client guard")
TOP_KEYS: Final = ("name", "description", "seed", "duration", "ready_timeout", "workload", "faults",
                   "checkers")
WORKLOAD_KEYS: Final = ("client", "service", "port", "bytes", "interval", "timeout")
FAULT_KEYS: Final = ("fault", "target", "count", "at", "for", "repeat", "every")
CHECKERS: Final = {"availability": ("min", "after_heal", "grace"), "recovers": ("within",),
                   "lab_state": ("grace", "max_nacks"), "no_wrong_bytes": (), "faults": ()}
ALWAYS: Final = ("no_wrong_bytes", "faults", "lab_state")  # every run is judged by these, listed or not
LAB_STATE_EVERY: Final = 2.0  # seconds between two samples of the lab's state
# A client leaves an intro point that NACKed it alone this long (Tor's HS_CACHE_CLIENT_INTRO_STATE_MAX_AGE, as
# nodes/net/hs_client.py): more NACKs from one intro point within it are a storm.
NACK_WINDOW: Final = 120.0
JOURNAL: Final = "chaos-faults.json"
HISTORIES: Final = Path(".onionlab", "chaos")  # below the current directory; `down` never removes it
OLD_HISTORIES: Final = "chaos"  # in the run dir, where histories went by default before
BASELINE_RETRY: Final = 0.5  # seconds between two tries of the onion before the run
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_NODE = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")


class ScenarioError(TopologyError):
    """Every problem of a scenario file (or of the scenario against the running lab), as file:line:column."""


class ChaosRefused(Exception):
    """The scenario cannot run against this lab or on this host (e.g. no netem); nothing was changed."""


@dataclass(frozen=True, slots=True)
class Where:
    filename: str
    line: int | None = None
    column: int | None = None

    def problem(self, path: str, message: str) -> Problem:
        return Problem(self.filename, self.line, self.column, path, message)


@dataclass(frozen=True, slots=True)
class Workload:
    client: str | None = None  # None: the lab's first client
    service: str | None = None  # None: the lab's first onion service
    port: int = 80
    bytes: int = 10_000
    interval: float = 1.0  # seconds from one fetch's start to the next one's (or back to back when slower)
    timeout: float = 15.0  # seconds one fetch may take
    where: Where = field(default=Where("<string>"), compare=False)


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One entry of `faults:`; times are seconds since the run's start, a range (lo, hi) drawn by the RNG."""

    fault: str
    target: str
    count: int | None = 1  # None: all of the candidates
    at: tuple[float, float] = (0.0, 0.0)
    length: tuple[float, float] = (10.0, 10.0)  # `for`
    repeat: int = 1
    every: float = 0.0
    params: tuple[tuple[str, Any], ...] = ()
    where: Where = field(default=Where("<string>"), compare=False)
    path: str = ""

    def latest_end(self) -> float:
        return self.at[1] + (self.repeat - 1) * self.every + self.length[1]


@dataclass(frozen=True, slots=True)
class Checkers:
    availability_min: float | None = None
    availability_after_heal: float | None = None
    availability_grace: float = 10.0
    recovers_within: float | None = None
    lab_state_grace: float = 10.0
    lab_state_max_nacks: int = 1


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    duration: float
    description: str = ""
    seed: int = 0
    ready_timeout: float = 60.0  # a restarted node, and the onion before the run, get this long
    workload: Workload = Workload()
    faults: tuple[FaultSpec, ...] = ()
    checkers: Checkers = Checkers()
    source: str = field(default="<string>", compare=False)


@dataclass(frozen=True, slots=True)
class Op:
    """One scheduled fault: at `at` it is applied to its targets, at `until` undone."""

    index: int
    fault: str
    target: str  # as the scenario writes it
    nodes: tuple[str, ...]  # chosen by make_schedule; () when chosen at `at` from the lab (LIVE_TARGETS)
    count: int | None
    at: float
    until: float
    params: tuple[tuple[str, Any], ...]
    choice_seed: int  # the seed of the choice among live candidates
    entry: int  # which entry of `faults:` it comes from

    def describe(self) -> str:
        who = ", ".join(self.nodes) if self.nodes else f"{'all' if self.count is None else self.count} x " \
                                                        f"{self.target} (chosen when applied)"
        extra = "".join(f" {k}={v}" for k, v in self.params if v is not None)
        return f"{self.fault}{extra} {who}"

    def to_dict(self) -> dict:
        return {"op": self.index, "fault": self.fault, "target": self.target, "nodes": list(self.nodes),
                "count": self.count, "at": self.at, "until": self.until,
                "params": {k: v for k, v in self.params if v is not None}, "entry": self.entry}


# -- reading a scenario: PyYAML nodes, so that every problem has a line and a column ------------------------


def load_scenario(path: str | os.PathLike[str], *, lab: Sequence[tuple[str, str]] | None = None,
                  seed: int | None = None) -> Scenario:
    """The scenario in `path`; ScenarioError with every problem of the file and, when `lab` ((name, role) of
    the running lab's nodes) is given, every problem of the scenario against that lab, all at once."""
    filename = os.fspath(path)
    try:
        text = Path(filename).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ScenarioError([Problem(filename, None, None, "", f"cannot read: {e}")]) from None
    return parse_scenario(text, filename, lab=lab, seed=seed)


def parse_scenario(text: str, filename: str = "<string>", *, lab: Sequence[tuple[str, str]] | None = None,
                   seed: int | None = None) -> Scenario:
    """As load_scenario; `seed` (default: the scenario's) decides the random choices checked against `lab`."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        return _ScenarioChecker(filename, loader, lab, seed).scenario(root)
    except yaml.MarkedYAMLError as e:
        raise ScenarioError([_syntax_problem(filename, e)]) from None
    except yaml.YAMLError as e:
        raise ScenarioError([Problem(filename, None, None, "", f"invalid YAML: {e}")]) from None
    finally:
        loader.dispose()


class _ScenarioChecker(_Checker):
    """topology.py's checker (positions, duplicate keys, unknown keys with a suggestion) for scenarios; with
    a lab, it also checks the workload's nodes and the faults' targets against it (lab_problems)."""

    def __init__(self, filename: str, loader: yaml.SafeLoader, lab: Sequence[tuple[str, str]] | None = None,
                 seed: int | None = None) -> None:
        super().__init__(filename, loader)
        self.lab = lab
        self.seed = seed

    def raise_if_any(self) -> None:
        try:
            super().raise_if_any()
        except TopologyError as e:
            raise ScenarioError(e.problems) from None

    def where(self, node: yaml.Node) -> Where:
        return Where(self.filename, node.start_mark.line + 1, node.start_mark.column + 1)

    def number(self, node: yaml.Node, path: str, lo: float = 0.0, hi: float = 1e6, *,
               above: bool = False) -> float | None:
        value = self.value(node, path)
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            return self.error(node, path, f"expected a number, got {_describe(value)}")
        if value < lo or (above and value == lo) or value > hi:
            bound = f"more than {lo:g}" if above else f"at least {lo:g}"
            return self.error(node, path, f"expected a number {bound} and at most {hi:g}, got {value}")
        return float(value)

    def span(self, node: yaml.Node, path: str, *, above: bool) -> tuple[float, float] | None:
        """A number, or [lo, hi]: a time the seeded RNG draws from that range."""
        if isinstance(node, yaml.SequenceNode):
            if len(node.value) != 2:
                return self.error(node, path,
                                  f"expected a number or [lo, hi], got a list of {len(node.value)}")
            lo = self.number(node.value[0], f"{path}[0]", above=above)
            hi = self.number(node.value[1], f"{path}[1]", above=above)
            if lo is None or hi is None:
                return None
            if hi < lo:
                return self.error(node, path, f"[lo, hi] with hi < lo: [{lo:g}, {hi:g}]")
            return lo, hi
        value = self.number(node, path, above=above)
        return None if value is None else (value, value)

    def text(self, node: yaml.Node, path: str) -> str | None:
        value = self.value(node, path)
        if not isinstance(value, str):
            return self.error(node, path, f"expected a string, got {_describe(value)}")
        return value

    def scenario(self, root: yaml.Node | None) -> Scenario:
        if root is None:
            self.problems.append(Problem(self.filename, 1, 1, "", "empty file: a scenario needs 'name' and "
                                                                   "'duration'"))
            self.raise_if_any()
        top = self.mapping(root, "", TOP_KEYS, required=("name", "duration"))
        if top is None:
            self.raise_if_any()
        v = {key: pair[1] for key, pair in top.items()}
        name = self.string(v["name"], "name", _NAME, "a scenario name (lowercase letters, digits, - and _)") \
            if "name" in v else None
        duration = self.number(v["duration"], "duration", above=True) if "duration" in v else None
        description = (self.text(v["description"], "description") or "") if "description" in v else ""
        seed = self.integer(v["seed"], "seed", "a seed (an integer, 0 or more)", lo=0) if "seed" in v else 0
        ready = self.number(v["ready_timeout"], "ready_timeout", above=True) if "ready_timeout" in v else 60.0
        workload = self.workload(v["workload"]) if "workload" in v else Workload(where=self.where(root))
        faults: list[FaultSpec] = []
        if "faults" in v:
            if not isinstance(v["faults"], yaml.SequenceNode):
                self.error(v["faults"], "faults", f"expected a list of faults, got "
                                                  f"{_describe(self.value(v['faults'], 'faults'))}")
            else:
                for i, entry in enumerate(v["faults"].value):
                    spec = self.fault(entry, f"faults[{i}]", duration)
                    if spec is not None:
                        faults.append(spec)
        checkers = self.checkers(v["checkers"]) if "checkers" in v else Checkers()
        if self.lab is not None:  # what parsed, against the lab: reported with the file's own problems
            partial = Scenario(name=name or "", duration=duration or math.inf, workload=workload,
                               faults=tuple(faults))
            self.problems += lab_problems(partial, seed if self.seed is None else self.seed, self.lab)
        self.raise_if_any()
        return Scenario(name=name, duration=duration, description=description, seed=seed,
                        ready_timeout=ready, workload=workload, faults=tuple(faults), checkers=checkers,
                        source=self.filename)

    def workload(self, node: yaml.Node) -> Workload:
        pairs = self.mapping(node, "workload", WORKLOAD_KEYS) or {}
        v = {key: pair[1] for key, pair in pairs.items()}
        found: dict[str, Any] = {}
        for key in ("client", "service"):
            if key in v:
                found[key] = self.string(v[key], f"workload.{key}", _NODE, "a node name")
        if "port" in v:
            found["port"] = self.integer(v["port"], "workload.port", "a port number", hi=65535)
        if "bytes" in v:
            found["bytes"] = self.integer(v["bytes"], "workload.bytes", "a byte count (1 or more)",
                                          hi=100_000_000)
        if "interval" in v:
            found["interval"] = self.number(v["interval"], "workload.interval", lo=0.05, hi=3600)
        if "timeout" in v:
            found["timeout"] = self.number(v["timeout"], "workload.timeout", lo=1, hi=3600)
        return Workload(**{k: x for k, x in found.items() if x is not None}, where=self.where(node))

    def fault(self, node: yaml.Node, path: str, duration: float | None) -> FaultSpec | None:
        pairs = self.mapping(node, path, FAULT_KEYS + tuple(p for ps in FAULTS.values() for p in ps),
                             required=("fault", "target"))
        if pairs is None:
            return None
        v = {key: pair[1] for key, pair in pairs.items()}
        kind = self.value(v["fault"], f"{path}.fault") if "fault" in v else None
        if "fault" in v and kind not in FAULTS:
            self.error(v["fault"], f"{path}.fault", f"unknown fault {_describe(kind)} "
                                                    f"({_did_you_mean(str(kind), FAULTS)})")
            kind = None
        target = self.target(v["target"], f"{path}.target") if "target" in v else None
        count: int | None = 1
        count_ok = True
        if "count" in v:
            if self.value(v["count"], f"{path}.count") == "all":
                count = None
            else:
                count = self.integer(v["count"], f"{path}.count", "a count (1 or more) or 'all'")
                count_ok = count is not None
            if target is not None and target not in LIVE_TARGETS and not target.startswith("random "):
                self.error(v["count"], f"{path}.count", f"a count needs a target that has candidates "
                                                        f"('random ROLE' or {', '.join(LIVE_TARGETS)}), "
                                                        f"not the node {target!r}")
        at = self.span(v["at"], f"{path}.at", above=False) if "at" in v else (0.0, 0.0)
        length = self.span(v["for"], f"{path}.for", above=True) if "for" in v else (10.0, 10.0)
        repeat = self.integer(v["repeat"], f"{path}.repeat", "a repeat count (1 or more)", hi=1000) \
            if "repeat" in v else 1
        every = self.number(v["every"], f"{path}.every", above=True) if "every" in v else 0.0
        if (repeat or 1) > 1 and "every" not in v:
            self.error(v["repeat"], f"{path}.repeat",
                       "a repeated fault needs 'every' (seconds between starts)")
        if "every" in v and every is not None and length is not None and every < length[1]:
            self.error(v["every"], f"{path}.every", f"every {every:g} s is shorter than the fault lasts "
                                                    f"({length[1]:g} s): repeats would overlap")
        params: dict[str, Any] = {}
        if kind is not None:
            allowed = FAULTS[kind]
            for key, (knode, vnode) in pairs.items():
                if key in FAULT_KEYS:
                    continue
                if key not in allowed:
                    takes = ", ".join(allowed) or "no parameters"
                    self.error(knode, f"{path}.{key}", f"fault {kind} takes {takes}, not '{key}'")
                    continue
                params[key] = self.param(vnode, f"{path}.{key}", allowed[key][0])
            for key, (_, default) in allowed.items():
                if key not in params:
                    if default is ...:
                        self.error(node, path, f"fault {kind} needs '{key}'")
                    params[key] = None if default is ... else default
        if None in (kind, target, at, length, repeat, every) or not count_ok:
            return None
        spec = FaultSpec(fault=kind, target=target, count=count, at=at, length=length, repeat=repeat,
                         every=every, params=tuple(sorted(params.items())), where=self.where(node), path=path)
        if duration is not None and spec.latest_end() > duration:
            key = "for" if "for" in v else "at" if "at" in v else "fault"
            self.error(v.get(key, node), f"{path}.{key}",
                       f"this fault ends at {spec.latest_end():g} s (at the latest), after the scenario's "
                       f"duration ({duration:g} s)")
        return spec

    def target(self, node: yaml.Node, path: str) -> str | None:
        value = self.value(node, path)
        if not isinstance(value, str):
            return self.error(node, path, f"expected a node name, 'random ROLE', or one of "
                                          f"{', '.join(LIVE_TARGETS)}; got {_describe(value)}")
        words = value.split()
        normal = " ".join(words)
        if normal in LIVE_TARGETS:
            return normal
        if len(words) == 2 and words[0] == "random":
            if words[1] not in ROLES:
                return self.error(node, path, f"no role {words[1]!r} ({_did_you_mean(words[1], ROLES)})")
            return normal
        if _NODE.fullmatch(value):
            return value
        close = difflib.get_close_matches(normal, LIVE_TARGETS, n=1)
        return self.error(node, path, f"expected a node name, 'random ROLE' (ROLE: {', '.join(ROLES)}), or "
                                      f"one of: {', '.join(LIVE_TARGETS)}; got {value!r}"
                                      + (f" (did you mean '{close[0]}'?)" if close else ""))

    def param(self, node: yaml.Node, path: str, kind: str) -> Any:
        value = self.value(node, path)
        if kind == "signal":
            if value not in SIGNALS:
                return self.error(node, path,
                                  f"expected a signal ({', '.join(SIGNALS)}), got {_describe(value)}")
            return value
        if kind == "seconds":
            return self.number(node, path, hi=3600)
        if kind == "percent":
            return self.number(node, path, lo=0.0, hi=100.0, above=True)
        if kind == "network":
            return self.string(node, path, re.compile(r"[a-z][a-z0-9_-]{0,62}"), "a network name")
        pattern, example = {"rate": (_TC_RATE, "256kbit"), "size": (_TC_SIZE, "32kbit"),
                            "time": (_TC_TIME, "100ms")}[kind]
        if not isinstance(value, str) or not pattern.fullmatch(value):
            return self.error(node, path, f"expected a tc {kind} such as {example!r}, got {_describe(value)}")
        return value

    def checkers(self, node: yaml.Node) -> Checkers:
        pairs = self.mapping(node, "checkers", CHECKERS) or {}
        found: dict[str, Any] = {}
        for name, (_, vnode) in pairs.items():
            path = f"checkers.{name}"
            if not CHECKERS[name]:
                if not (isinstance(vnode, yaml.MappingNode) and not vnode.value) and \
                        self.value(vnode, path) not in (None, True):
                    self.error(vnode, path,
                               f"{name} takes no settings (write `{name}: {{}}`); it always runs")
                continue
            settings = {k: p[1] for k, p in (self.mapping(vnode, path, CHECKERS[name]) or {}).items()}
            if name == "availability":
                if not settings:
                    self.error(vnode, path, "availability needs 'min' and/or 'after_heal' (fractions 0..1)")
                for key in ("min", "after_heal"):
                    if key in settings:
                        found[f"availability_{key}"] = self.number(settings[key], f"{path}.{key}", hi=1.0)
                if "grace" in settings:
                    found["availability_grace"] = self.number(settings["grace"], f"{path}.grace", hi=3600)
            elif name == "lab_state":
                if "grace" in settings:
                    found["lab_state_grace"] = self.number(settings["grace"], f"{path}.grace", hi=3600)
                if "max_nacks" in settings:
                    n = self.number(settings["max_nacks"], f"{path}.max_nacks", hi=1e6)
                    found["lab_state_max_nacks"] = None if n is None else int(n)
            elif name == "recovers":
                if "within" not in settings:
                    self.error(vnode, path, "recovers needs 'within' (seconds)")
                else:
                    found["recovers_within"] = self.number(settings["within"], f"{path}.within", above=True,
                                                           hi=3600)
        return Checkers(**{k: x for k, x in found.items() if x is not None})


# -- the schedule --------------------------------------------------------------------------------------------


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
        for r in range(spec.repeat):
            at = round(rng.uniform(*spec.at) + r * spec.every, 1)
            until = round(at + rng.uniform(*spec.length), 1)
            nodes: tuple[str, ...] = ()
            if spec.target.startswith("random "):
                role = spec.target.split()[1]
                candidates = sorted(n for n, ro in roles.items() if ro == role and not any(
                    b == n and s < until and at < e for b, s, e in busy))
                want = len(candidates) if spec.count is None else spec.count
                if len(candidates) < max(want, 1):
                    problems.append(spec.where.problem(f"{spec.path}.target", (
                        f"the lab has {len(candidates)} {role} node(s) free from {at:g} to {until:g} s, "
                        f"this fault needs {max(want, 1)}")))
                    continue
                nodes = tuple(sorted(rng.sample(candidates, want)))
            elif spec.target not in LIVE_TARGETS:
                if spec.target not in roles:
                    problems.append(spec.where.problem(f"{spec.path}.target", (
                        f"the lab has no node {spec.target!r} ({_did_you_mean(spec.target, roles)})")))
                    continue
                nodes = (spec.target,)
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


# -- the history ---------------------------------------------------------------------------------------------


class History:
    """What happened, one JSON object a line: every record has t (seconds since the run's start, a monotonic
    clock), ts (wall clock) and type (run, baseline, fault, fetch, cleanup, verdict, end)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.records: list[dict] = []
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._file = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("w", encoding="utf-8")

    def now(self) -> float:
        return round(time.monotonic() - self._t0, 3)

    def restart_clock(self) -> None:
        self._t0 = time.monotonic()

    def record(self, type_: str, **fields: Any) -> dict:
        with self._lock:
            record = {"t": self.now(), "ts": round(time.time(), 3), "type": type_, **fields}
            self.records.append(record)
            if self._file is not None:
                self._file.write(json.dumps(record, sort_keys=False) + "\n")
                self._file.flush()
            return record

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_history(path: str | os.PathLike[str]) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# -- faults: applying and undoing them through the backend ---------------------------------------------------


def _qdisc(fault: str, params: dict[str, Any]) -> list[str]:
    if fault == "bandwidth":
        return ["tbf", "rate", params["rate"], "burst", params["burst"], "latency", params["latency"]]
    if fault == "delay":
        return ["netem", "delay", params["delay"], *([params["jitter"]] if params.get("jitter") else [])]
    return ["netem", "loss", f"{params['percent']:g}%"]


def prepare_fault(backend, fault: str, node: str, params: dict[str, Any]) -> dict:
    """What `undo_fault` needs to undo the fault on this node (JSON-able), found out BEFORE the fault is
    applied, so that an interruption in the middle of applying it still leaves something to undo with."""
    undo: dict[str, Any] = {"fault": fault, "node": node}
    network = params.get("network")
    if fault == "partition":
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


def apply_fault(backend, undo: dict, params: dict[str, Any]) -> None:
    """Apply the fault `prepare_fault` prepared."""
    fault, node = undo["fault"], undo["node"]
    if fault == "kill":
        backend.kill(node, signal=params["signal"])
    elif fault == "stop":
        backend.stop(node, timeout=params["grace"])
    elif fault == "pause":
        backend.pause(node)
    elif fault == "partition":
        for network in undo["networks"]:
            backend.disconnect(node, network)
    else:
        backend.shape(node, undo["qdisc"].split(), params.get("network"))


def undo_fault(backend, undo: dict, *, wait: bool, timeout: float) -> str:
    """Undo what apply_fault did; returns a few words on how. `wait`: a restarted node must be ready."""
    fault, node = undo["fault"], undo["node"]
    if fault in ("kill", "stop"):
        started = time.monotonic()
        backend.start(node, timeout=timeout, wait=wait)
        return f"ready again after {time.monotonic() - started:.1f} s" if wait else "started again"
    if fault == "pause":
        backend.unpause(node)
        return "unpaused"
    if fault == "partition":
        for network, address in undo["networks"].items():
            backend.connect(node, network, address)
        return "reconnected to " + (", ".join(undo["networks"]) or "nothing")
    if fault in SHAPING:
        removed = backend.unshape(undo["veths"])
        return f"qdisc removed from {', '.join(removed) or 'nothing (its veths are gone)'}"
    raise ValueError(f"unknown fault {fault!r}")


def default_history(name: str, seed: int) -> Path:
    """Where a run's history goes without --history: `.onionlab/chaos/NAME-seedN-TIME.jsonl` below the
    current directory, outside the run dir, so that `onionlab down` leaves it."""
    return Path.cwd() / HISTORIES / f"{name}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"


def keep_histories(run_dir: str | os.PathLike[str]) -> tuple[int, Path]:
    """Move the files of `<run dir>/chaos/` (histories and reports that runs wrote there) to the histories
    directory before the run dir goes; a name that is taken there gets a numbered suffix. Returns (how many
    files were moved, where to)."""
    source, target = Path(run_dir, OLD_HISTORIES), Path.cwd() / HISTORIES
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else []
    for path in files:
        dest = target / path.relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        n = 1
        while dest.exists():
            dest = dest.with_name(f"{path.stem}.{n}{path.suffix}")
            n += 1
        shutil.move(path, dest)
    return len(files), target


def _journal(backend) -> Path:
    return Path(backend.run_dir) / JOURNAL


def _write_journal(backend, undos: list[dict]) -> None:
    path = _journal(backend)
    if not undos:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(undos, indent=2) + "\n")
    os.replace(tmp, path)


def heal(backend, *, timeout: float = 60.0) -> list[tuple[dict, str]]:
    """Undo every fault a chaos run left in place (`<run dir>/chaos-faults.json`, e.g. after SIGKILL).
    Returns (fault, what was done or the error) for each."""
    path = _journal(backend)
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
    _write_journal(backend, list(reversed(left)))
    return done


def lab_snapshot(backend, nodes: Sequence[str]) -> dict[str, dict]:
    """Each node's state (FaultBackend.node_state: status, networks, root qdisc kinds): what a run must leave
    as it found it."""
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
    return left


# -- the workload -------------------------------------------------------------------------------------------


def fetch_once(socks: str | None, onion: str, *, port: int, n_bytes: int, timeout: float) -> dict:
    """One verified fetch of /bytes/n_bytes with fresh SOCKS credentials (a new rendezvous): {ok, result,
    socks_reply, bytes, error}; result: ok, wrong_bytes, short, socks_refused, timeout, error or no_socks."""
    if socks is None:
        return {"ok": False, "result": "no_socks", "socks_reply": None, "bytes": 0,
                "error": "the client publishes no SOCKS port (is it running?)"}
    deadline = time.monotonic() + timeout
    reply, good = None, 0
    try:
        credentials = fresh_credentials("chaos")
        with socks_connect(socks, onion, port, credentials=credentials, timeout=timeout) as sock:
            reply = 0
            good, wrong = read_pattern(sock, onion, n_bytes, deadline=deadline)
    except SocksRefused as e:
        return {"ok": False, "result": "socks_refused", "socks_reply": e.code, "bytes": 0, "error": str(e)}
    except TimeoutError:
        return {"ok": False, "result": "timeout", "socks_reply": reply, "bytes": good,
                "error": f"no answer within {timeout:g} s"}
    except OSError as e:
        return {"ok": False, "result": "error", "socks_reply": reply, "bytes": good,
                "error": f"{type(e).__name__}: {e}"}
    if wrong is not None:
        return {"ok": False, "result": "wrong_bytes", "socks_reply": 0, "bytes": good,
                "error": f"byte {wrong} does not match the pattern"}
    if good != n_bytes:
        return {"ok": False, "result": "short", "socks_reply": 0, "bytes": good,
                "error": f"the stream ended after {good} of {n_bytes} bytes"}
    return {"ok": True, "result": "ok", "socks_reply": 0, "bytes": good, "error": None}


class _Workload(threading.Thread):
    def __init__(self, history: History, fetch: Callable[[], dict], interval: float,
                 say: Callable[[str], None]) -> None:
        super().__init__(name="onionlab-chaos-workload", daemon=True)
        self.history, self.fetch, self.interval, self.say = history, fetch, interval, say
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            n, next_start = 0, self.history.now()
            while not self.stopping.is_set():
                if next_start > self.history.now() and self.stopping.wait(next_start - self.history.now()):
                    break
                start = self.history.now()
                result = self.fetch()
                end = self.history.now()
                self.history.record("fetch", n=n, start=start, end=end,
                                    latency_ms=round(1000 * (end - start), 1), **result)
                self.say(f"fetch {n}: " + ("ok" if result["ok"] else f"FAILED ({result['result']}: "
                                           f"{result['error']})") + f", {1000 * (end - start):.0f} ms")
                n += 1
                next_start = max(start + self.interval, self.history.now())
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which stops the run
            self.error = e


def lab_state(backend, service: str, client: str, relays: Sequence[str]) -> dict:
    """The fields of a `lab_state` record: `intro_points`, for each intro point the service's /status lists,
    whether a relay holds the service's circuit under its auth key (does it answer clients? None: the service
    does not answer); `nacks`, the NACKs the client's /metrics count per intro point (None: no answer)."""
    status = backend.node_status(service)
    intro = None
    if status is not None:
        held = {key for relay in relays
                for key in (backend.node_status(relay) or {}).get("intro_auth_keys", ())}
        intro = {name: key in held for name, key in (status.get("intro_auth_keys") or {}).items()}
    metrics = backend.node_metrics(client)
    nacks = None if metrics is None else {
        labels.get("intro", "?"): value for name, labels, value in metrics
        if name == "onionlab_introductions_total" and labels.get("result") == "nack"}
    return {"intro_points": intro, "nacks": nacks}


class _Sampler(threading.Thread):
    """Records `sample()` as a `lab_state` record every LAB_STATE_EVERY seconds until stopped."""

    def __init__(self, history: History, sample: Callable[[], dict]) -> None:
        super().__init__(name="onionlab-chaos-sampler", daemon=True)
        self.history, self.sample = history, sample
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while True:
                self.history.record("lab_state", **self.sample())
                if self.stopping.wait(LAB_STATE_EVERY):
                    break
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which stops the run
            self.error = e


# -- running a scenario -------------------------------------------------------------------------------------


@dataclass
class Verdict:
    name: str
    ok: bool
    summary: str
    details: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunResult:
    scenario: Scenario
    seed: int
    schedule: list[Op]
    history: list[dict]
    verdicts: list[Verdict]
    history_path: Path | None
    interrupted: bool = False
    interrupted_by: str | None = None  # SIGINT or SIGTERM, when interrupted

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(v.ok for v in self.verdicts)

    def to_dict(self) -> dict:
        return {"scenario": self.scenario.name, "source": self.scenario.source, "seed": self.seed,
                "ok": self.ok, "interrupted": self.interrupted,
                "history": str(self.history_path) if self.history_path else None,
                "schedule": [op.to_dict() for op in self.schedule],
                "verdicts": [v.to_dict() for v in self.verdicts], "stats": fetch_stats(self.history)}


class WorkloadCrashed(RuntimeError):
    """The workload raised something that is not a failed fetch (a bug): the run stops, faults are undone."""


def _choose_live(backend, op: Op, service: str, client: str, busy: set[str]) -> tuple[list[str], str]:
    """The nodes a live target names now (sorted, busy ones left out), chosen by the op's own seed."""
    if op.target == "intro point":
        candidates = (backend.node_status(service) or {}).get("intro_points") or []
        what = f"{service}'s intro points"
    else:
        owner = service if op.target == "service guard" else client
        candidates = ((backend.node_status(owner) or {}).get("guards") or {}).get("primary") or []
        what = f"{owner}'s guards"
    candidates = sorted(set(candidates) - busy)
    want = len(candidates) if op.count is None else min(op.count, len(candidates))
    chosen = sorted(random.Random(op.choice_seed).sample(candidates, want))
    return chosen, f"{what}: {', '.join(candidates) or 'none'}"


def refusals(backend: FaultBackend, schedule: Sequence[Op]) -> list[str]:
    """Why the backend cannot apply the schedule's faults (it does not support one, or this host lacks what
    one needs), one sentence per fault kind naming it and the backend; [] when it can apply them all."""
    return [why for fault in sorted({op.fault for op in schedule}) if (why := refusal(backend, fault))]


def run_scenario(scenario: Scenario, backend, *, seed: int | None = None, history_path: Path | None = None,
                 say: Callable[[str], None] = lambda line: None,
                 fetch: Callable[..., dict] = fetch_once) -> RunResult:
    """Run the scenario against the lab the backend runs; every fault is undone before this returns or
    raises. ChaosRefused (nothing changed) when the lab or this host cannot run it."""
    seed = scenario.seed if seed is None else seed
    status = backend.status()
    lab = [(n["name"], n["role"]) for n in status["nodes"]]
    problems = lab_problems(scenario, seed, lab)
    if problems:
        raise ScenarioError(problems)
    client, service = check_workload(scenario, lab)
    schedule = make_schedule(scenario, seed, lab)
    refused = refusals(backend, schedule)
    if refused:
        raise ChaosRefused("; ".join(refused))
    if _journal(backend).exists():
        raise ChaosRefused(f"faults of an earlier chaos run are still in place ({_journal(backend)}): undo "
                           "them with `onionlab chaos --heal`")
    onion = next(s["onion"] for s in status["onion_services"] if s["name"] == service)

    def socks() -> str | None:
        return next((c["socks"] for c in backend.status()["clients"] if c["name"] == client), None)

    address = socks()
    if not onion or not address:
        raise ChaosRefused(f"{service} has no onion address or {client} no SOCKS port: is the lab ready?")
    deadline = time.monotonic() + scenario.ready_timeout
    while True:  # the baseline: the onion must be reachable before any fault
        started = time.monotonic()
        first = fetch(address, onion, port=scenario.workload.port, n_bytes=1000,
                      timeout=scenario.workload.timeout)
        seconds = time.monotonic() - started
        if first["ok"]:
            break
        if time.monotonic() + BASELINE_RETRY >= deadline:
            raise ChaosRefused(f"{onion} is not reachable through {client} before any fault "
                               f"({scenario.ready_timeout:g} s of tries): {first['error']}")
        time.sleep(BASELINE_RETRY)
    before = lab_snapshot(backend, [name for name, _ in lab])
    history = History(history_path)
    try:
        current = {"socks": address}
        w = scenario.workload

        def one_fetch() -> dict:
            return fetch(current["socks"], onion, port=w.port, n_bytes=w.bytes, timeout=w.timeout)

        def stamp(line: str) -> None:
            say(f"[{history.now():6.1f}s] {line}")

        history.record("run", scenario=scenario.name, source=scenario.source, seed=seed,
                       duration=scenario.duration, lab=[{"name": n, "role": r} for n, r in lab],
                       client=client, service=service, onion=onion,
                       workload={k: getattr(w, k) for k in WORKLOAD_KEYS},
                       schedule=[op.to_dict() for op in schedule])
        history.record("baseline", ok=True, latency_ms=round(1000 * seconds, 1))
        workload = _Workload(history, one_fetch, w.interval, stamp)
        relays = [name for name, role in lab if role == "relay"]
        sampler = _Sampler(history, lambda: lab_state(backend, service, client, relays))
        active: dict[int, tuple[Op, list[dict]]] = {}
        in_place: list[dict] = []
        interrupted = False
        interrupted_by: str | None = None
        arrived: list[int] = []

        def apply(op: Op) -> None:
            busy = {u["node"] for _, undos in active.values() for u in undos}
            if op.nodes:
                nodes, why = list(op.nodes), ""
            else:
                nodes, why = _choose_live(backend, op, service, client, busy)
            if not nodes:
                history.record("fault", event="start", op=op.index, fault=op.fault, target=op.target,
                               node=None, ok=False, error=f"no target: {why}")
                stamp(f"op {op.index}: {op.fault} {op.target}: FAILED, no target ({why})")
                return
            undos: list[dict] = []
            active[op.index] = (op, undos)
            for node in nodes:
                began = history.now()
                try:
                    undo = prepare_fault(backend, op.fault, node, dict(op.params))
                    undos.append(undo)
                    in_place.append(undo)
                    _write_journal(backend, in_place)
                    apply_fault(backend, undo, dict(op.params))
                except Exception as e:  # noqa: BLE001 - the backend's refusal is part of the history
                    history.record("fault", event="start", op=op.index, fault=op.fault, target=op.target,
                                   node=node, began=began, ok=False, error=str(e).splitlines()[0])
                    stamp(f"op {op.index}: {op.fault} {node}: FAILED: {e}")
                    continue  # its undo stays: whatever part of it happened is undone with the others
                history.record("fault", event="start", op=op.index, fault=op.fault, target=op.target,
                               node=node, began=began, ok=True, chosen_from=why or None, undo=undo)
                stamp(f"op {op.index}: {op.fault} {node}" + (f" (from {why})" if why else "") +
                      f" until {op.until:g} s")

        def undo(op: Op, undos: list[dict], why: str, wait: bool) -> None:
            while undos:  # each leaves the list once undone: an interruption leaves the rest to the cleanup
                u = undos[-1]
                began = history.now()
                try:
                    how = undo_fault(backend, u, wait=wait, timeout=scenario.ready_timeout)
                    ok, error = True, None
                except Exception as e:  # noqa: BLE001 - recorded; the verification after the run sees what is left
                    how, ok, error = None, False, str(e).splitlines()[0]
                undos.pop()
                if ok:  # a failed undo stays in the journal, for `onionlab chaos --heal`
                    in_place.remove(u)
                    _write_journal(backend, in_place)
                if u["fault"] in ("kill", "stop") and ok:
                    current["socks"] = socks()  # a restarted client publishes its SOCKS port anew
                history.record("fault", event="end", op=op.index, fault=op.fault, node=u["node"], began=began,
                               ok=ok, why=why, detail=how, error=error)
                stamp(f"op {op.index}: undo {op.fault} {u['node']} ({why}): "
                      + (how if ok else f"FAILED: {error}"))

        pending = list(schedule)
        history.restart_clock()
        history.record("start", t0_wall=round(time.time(), 3))
        stamp(f"scenario {scenario.name} (seed {seed}): {len(schedule)} ops over {scenario.duration:g} s; "
              f"workload: /bytes/{w.bytes} from {service} via {client} every {w.interval:g} s")
        try:
            with sigterm_interrupts():
                workload.start()
                sampler.start()
                while True:
                    for what, thread in (("workload", workload), ("lab state sampler", sampler)):
                        if thread.error is not None:
                            raise WorkloadCrashed(f"the {what} raised {thread.error!r}") from thread.error
                    now = history.now()
                    next_end = min((op.until for op, _ in active.values()), default=math.inf)
                    next_start = pending[0].at if pending else math.inf
                    following = min(next_end, next_start, scenario.duration)
                    if following > now:
                        workload.stopping.wait(min(following - now, 0.25))
                        continue
                    if next_end <= following:
                        index = min(active, key=lambda i: active[i][0].until)
                        undo(*active[index], "scheduled", wait=True)
                        del active[index]
                    elif next_start <= following:
                        apply(pending.pop(0))
                    else:
                        break
        except KeyboardInterrupt as e:
            interrupted, interrupted_by = True, signal_of(e).name
            history.record("interrupted", detail="Ctrl-C or SIGTERM", signal=interrupted_by)
            stamp("interrupted: undoing every fault")
        finally:
            with signals_deferred(arrived):
                workload.stopping.set()
                sampler.stopping.set()
                for index in sorted(active, reverse=True):
                    undo(*active.pop(index), "cleanup", wait=False)
                workload.join(timeout=w.timeout + 5)
                sampler.join(timeout=LAB_STATE_EVERY + 5)
                after = lab_snapshot(backend, [name for name, _ in lab])
                left = compare_snapshots(before, after)
                history.record("cleanup", ok=not left, left=left, unapplied=[op.index for op in pending])
                stamp("cleanup: every fault undone, the lab is as it was" if not left
                      else "cleanup: LEFT BEHIND: " + "; ".join(left))
        if arrived:
            interrupted = True
            interrupted_by = interrupted_by or signal.Signals(arrived[0]).name
        verdicts = judge(history.records, scenario.checkers)
        for v in verdicts:
            history.record("verdict", **v.to_dict())
        history.record("end", ok=not interrupted and all(v.ok for v in verdicts), interrupted=interrupted)
        history.close()
        return RunResult(scenario, seed, schedule, history.records, verdicts, history_path, interrupted,
                         interrupted_by)
    finally:
        history.close()  # at once, even when something raises


# -- checkers: pure functions of a history -------------------------------------------------------------------


def _fetches(history: Sequence[dict]) -> list[dict]:
    return [r for r in history if r.get("type") == "fetch"]


def _fault_windows(history: Sequence[dict]) -> list[tuple[float, float | None, str]]:
    """(start, end or None while in place, description) of every fault that was applied."""
    starts = {}
    windows = []
    for r in history:
        if r.get("type") != "fault" or not r.get("ok") and r.get("event") == "start":
            continue
        key = (r.get("op"), r.get("node"))
        if r["event"] == "start":
            starts[key] = r
        elif key in starts:
            s = starts.pop(key)
            windows.append((s["t"], r["t"], f"op {s['op']} {s['fault']} {s['node']}"))
    windows += [(s["t"], None, f"op {s['op']} {s['fault']} {s['node']}") for s in starts.values()]
    return sorted(windows, key=lambda w: w[0])


def heal_points(history: Sequence[dict]) -> list[tuple[float, float, str]]:
    """(fault-free from, faulty since, description): each moment a fault ended and no other was in place."""
    windows = _fault_windows(history)
    points = []
    for start, end, what in windows:
        if end is None:
            continue
        if any(s < end and (e is None or e > end) for s, e, _ in windows):
            continue
        since = min(s for s, e, _ in windows if s <= end and (e is None or e >= start))
        points.append((end, since, what))
    return points


def check_no_wrong_bytes(history: Sequence[dict]) -> Verdict:
    wrong = [f for f in _fetches(history) if f.get("result") == "wrong_bytes"]
    if wrong:
        return Verdict("no_wrong_bytes", False,
                       f"{len(wrong)} fetch(es) returned bytes that are not the pattern",
                       [f"fetch {f['n']} at {f['start']:g} s: {f.get('error')}" for f in wrong])
    return Verdict("no_wrong_bytes", True, f"every byte of {len(_fetches(history))} fetches matched or the "
                                           "fetch failed cleanly")


def check_faults(history: Sequence[dict]) -> Verdict:
    """Every scheduled fault was applied and undone, and the lab was left as it was found."""
    problems = []
    for r in history:
        if r.get("type") == "fault" and not r.get("ok"):
            problems.append(f"op {r.get('op')} {r.get('event')} {r.get('fault')} {r.get('node') or ''}: "
                            f"{r.get('error')}".replace("  ", " "))
    for start, end, what in _fault_windows(history):
        if end is None:
            problems.append(f"{what} (from {start:g} s) was never undone")
    cleanup = [r for r in history if r.get("type") == "cleanup"]
    if not cleanup:
        problems.append("the history has no cleanup record (the run did not finish)")
    else:
        problems += [f"left behind: {x}" for x in cleanup[-1].get("left") or []]
        if cleanup[-1].get("unapplied"):
            problems.append(f"ops never applied (the run stopped early): {cleanup[-1]['unapplied']}")
    applied = sum(1 for r in history
                  if r.get("type") == "fault" and r.get("event") == "start" and r.get("ok"))
    if problems:
        return Verdict("faults", False, f"{len(problems)} problem(s) with the faults", problems)
    return Verdict("faults", True, f"{applied} fault(s) applied and undone; the lab was left as it was found")


def check_availability(history: Sequence[dict], *, min_ok: float | None, after_heal: float | None,
                       grace: float) -> Verdict:
    fetches = _fetches(history)
    details, ok = [], True
    if not fetches:
        return Verdict("availability", False, "no fetch in the history")
    overall = sum(f["ok"] for f in fetches) / len(fetches)
    summary = f"{overall:.0%} of {len(fetches)} fetches ok"
    if min_ok is not None and overall < min_ok:
        ok = False
        details.append(f"overall {overall:.1%} < min {min_ok:.0%}")
    if after_heal is not None:
        heals = heal_points(history)
        since = (heals[-1][0] if heals else 0.0) + grace
        late = [f for f in fetches if f["start"] >= since]
        if not late:
            ok = False
            details.append(f"no fetch started after {since:.1f} s (the last heal + {grace:g} s grace)")
        else:
            share = sum(f["ok"] for f in late) / len(late)
            summary += f"; {share:.0%} of {len(late)} after {since:.1f} s"
            if share < after_heal:
                ok = False
                details.append(f"after the last heal + {grace:g} s: {share:.1%} "
                               f"< after_heal {after_heal:.0%}")
    return Verdict("availability", ok, summary, details)


def check_recovers(history: Sequence[dict], *, within: float) -> Verdict:
    """After each heal (a fault ended, none other in place) a fetch that started after the fault began must
    succeed, ending within `within` seconds."""
    fetches = _fetches(history)
    details, worst, ok = [], 0.0, True
    heals = heal_points(history)
    end_of_history = max((r["t"] for r in history), default=0.0)
    for healed, since, what in heals:
        good = [f for f in fetches if f["ok"] and f["end"] >= healed and f["start"] >= since]
        if not good:
            ok = False
            details.append(f"{what}: healed at {healed:g} s, no successful fetch before the run ended "
                           f"({end_of_history - healed:.1f} s later)")
            continue
        delay = min(f["end"] for f in good) - healed
        worst = max(worst, delay)
        if delay > within:
            ok = False
            details.append(f"{what}: healed at {healed:g} s, reachable again only after {delay:.1f} s")
        else:
            details.append(f"{what}: healed at {healed:g} s, reachable again after {max(delay, 0):.1f} s")
    if not heals:
        return Verdict("recovers", True, "no fault healed in this run: nothing to recover from")
    return Verdict("recovers", ok,
                   f"{len(heals)} heal(s); slowest recovery {worst:.1f} s (limit {within:g} s)", details)


def check_lab_state(history: Sequence[dict], *, grace: float, max_nacks: int) -> Verdict:
    """From the `lab_state` samples: once no fault has been in place for `grace` seconds, every intro point
    the service lists must be held at its relay (an intro point that is not, in two samples running, is
    advertised but NACKs every client); and no intro point may NACK the client more than `max_nacks` times
    within NACK_WINDOW seconds (the client leaves it alone that long after a NACK)."""
    samples = [r for r in history if r.get("type") == "lab_state"]
    if not samples:
        return Verdict("lab_state", False, "the history has no lab_state sample")
    windows = _fault_windows(history)
    details: list[str] = []
    lost: dict[str, list[float]] = {}  # intro point -> [first, last] time it was listed but not held
    failing: set[str] = set()
    calm = 0
    for r in samples:
        t, intro = r["t"], r.get("intro_points")
        if intro is None or any(s <= t and (e is None or e > t - grace) for s, e, _ in windows):
            failing = set()
            continue
        calm += 1
        now = {name for name, held in intro.items() if not held}
        for name in now & failing:  # two samples running: not the moment between a loss and its notice
            lost.setdefault(name, [t, t])[1] = t
        failing = now
    details += [f"{name}: listed by the service as an intro point but held by no relay "
                f"(from {a:g} to {b:g} s)" for name, (a, b) in lost.items()]
    counted = [(r["t"], r["nacks"]) for r in samples if r.get("nacks") is not None]
    storms: dict[str, int] = {}
    for i, (t0, before) in enumerate(counted):
        for t1, after in counted[i + 1:]:
            if t1 - t0 > NACK_WINDOW:
                break
            for name, n in after.items():
                if n - before.get(name, 0) > max_nacks:  # a restarted client counts from 0: never above
                    storms[name] = max(storms.get(name, 0), int(n - before.get(name, 0)))
    details += [f"{name}: {n} NACKs to the client within {NACK_WINDOW:g} s (at most {max_nacks})"
                for name, n in storms.items()]
    if details:
        return Verdict("lab_state", False, f"{len(lost)} intro point(s) advertised but not held, "
                                           f"{len(storms)} NACK storm(s)", details)
    return Verdict("lab_state", True, f"{len(samples)} samples ({calm} with no fault for {grace:g} s): every "
                                      f"intro point listed was held; no NACK storm")


def judge(history: Sequence[dict], checkers: Checkers) -> list[Verdict]:
    verdicts = [check_no_wrong_bytes(history), check_faults(history),
                check_lab_state(history, grace=checkers.lab_state_grace,
                                max_nacks=checkers.lab_state_max_nacks)]
    if checkers.availability_min is not None or checkers.availability_after_heal is not None:
        verdicts.append(check_availability(history, min_ok=checkers.availability_min,
                                           after_heal=checkers.availability_after_heal,
                                           grace=checkers.availability_grace))
    if checkers.recovers_within is not None:
        verdicts.append(check_recovers(history, within=checkers.recovers_within))
    return verdicts


def fetch_stats(history: Sequence[dict]) -> dict:
    fetches = _fetches(history)
    latencies = sorted(f["latency_ms"] for f in fetches if f["ok"])
    reasons: dict[str, int] = {}
    for f in fetches:
        if not f["ok"]:
            key = f["result"] + (f" {f['socks_reply']:#04x} {REPLY_NAMES.get(f['socks_reply'], '')}".rstrip()
                                 if f["result"] == "socks_refused" else "")
            reasons[key] = reasons.get(key, 0) + 1

    def pct(p: float) -> float | None:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else None

    return {"fetches": len(fetches), "ok": sum(f["ok"] for f in fetches), "failed": reasons,
            "latency_ms": {"p50": pct(0.5), "p95": pct(0.95), "max": latencies[-1] if latencies else None}}
