"""What a scenario can say, and reading one: PyYAML nodes, so that every problem has a file, a line
and a column (the topology's checker, shared)."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from ..backends.base import SHAPING_FAULTS
from ..topology import Problem, TopologyError, _Checker, _describe, _did_you_mean, _syntax_problem
from .targets import FORMS, NAME, TargetError, parse_target

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
    "partition": {"network": ("network", None), "direction": ("direction", None), "from": ("peers", None)},
    "bandwidth": {"rate": ("rate", ...), "burst": ("size", "32kbit"), "latency": ("time", "400ms"),
                  "network": ("network", None), "peer": ("node", None), "direction": ("direction", "both")},
    "delay": {"delay": ("time", ...), "jitter": ("time", None), "loss": ("percent", None),
              "network": ("network", None), "peer": ("node", None), "direction": ("direction", "both")},
    "loss": {"percent": ("percent", ...), "network": ("network", None), "peer": ("node", None),
             "direction": ("direction", "both")},
    "skew": {"offset": ("offset", ...)},
    "split": {"groups": ("groups", ...)},
}
# shaping faults: `peer` limits one to the link between the target and that node; `direction` to what the
# target sends (out), receives (in) or both. A partition by firewall rules: which connections are cut
DIRECTIONS: Final = ("both", "in", "out")
MAX_SKEW: Final = 86400.0 * 365  # seconds either way
SHAPING: Final = SHAPING_FAULTS
UNTARGETED: Final = ("split",)  # faults whose nodes come from their parameters, not `target`
TOP_KEYS: Final = ("name", "description", "seed", "duration", "ready_timeout", "workload", "faults",
                   "checkers")
WORKLOAD_KEYS: Final = ("client", "service", "port", "bytes", "interval", "timeout", "concurrency", "fetches",
                        "credentials")
# SOCKS credentials of the workload's fetches: fresh (new ones every fetch: a new rendezvous each time),
# shared (one pair for every fetch of every fetcher: one circuit carries them all), per_fetcher (each
# fetcher its own pair for all its fetches), mixed (even fetchers share one pair, odd ones their own)
CREDENTIALS: Final = ("fresh", "shared", "per_fetcher", "mixed")
FAULT_KEYS: Final = ("fault", "target", "count", "at", "for", "repeat", "every")
CHECKERS: Final = {"availability": ("min", "after_heal", "grace"), "recovers": ("within",),
                   "lab_state": ("grace", "max_nacks"), "no_wrong_bytes": (), "faults": (), "anonymity": (),
                   "consensus_health": ("fresh_within", "stalled_after"), "next_guard": (), "next_fetch": ()}
# every run is judged by these, listed or not
ALWAYS: Final = ("no_wrong_bytes", "faults", "lab_state", "anonymity", "consensus_health")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_NODE = NAME


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
    concurrency: int = 1  # fetchers running side by side, each its own SOCKS connection
    fetches: int | None = None  # fetches per fetcher; None: until the run ends
    credentials: str = "fresh"  # CREDENTIALS
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
    consensus_fresh_within: float | None = None
    consensus_stalled_after: float | None = None
    next_guard: bool = False
    next_fetch: bool = False


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
            from .schedule import lab_problems  # the schedule needs this module's classes

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
        if "concurrency" in v:
            found["concurrency"] = self.integer(v["concurrency"], "workload.concurrency",
                                                "a number of fetchers (1 or more)", hi=1000)
        if "fetches" in v:
            found["fetches"] = self.integer(v["fetches"], "workload.fetches",
                                            "a number of fetches per fetcher (1 or more)", hi=1_000_000)
        if "credentials" in v:
            value = self.value(v["credentials"], "workload.credentials")
            if value not in CREDENTIALS:
                self.error(v["credentials"], "workload.credentials",
                           f"expected one of {', '.join(CREDENTIALS)}, got {_describe(value)}")
            else:
                found["credentials"] = value
        return Workload(**{k: x for k, x in found.items() if x is not None}, where=self.where(node))

    def fault(self, node: yaml.Node, path: str, duration: float | None) -> FaultSpec | None:
        pairs = self.mapping(node, path, FAULT_KEYS + tuple(p for ps in FAULTS.values() for p in ps),
                             required=("fault",))
        if pairs is None:
            return None
        v = {key: pair[1] for key, pair in pairs.items()}
        kind = self.value(v["fault"], f"{path}.fault") if "fault" in v else None
        if "fault" in v and kind not in FAULTS:
            self.error(v["fault"], f"{path}.fault", f"unknown fault {_describe(kind)} "
                                                    f"({_did_you_mean(str(kind), FAULTS)})")
            kind = None
        target = self.target(v["target"], f"{path}.target") if "target" in v else None
        if kind in UNTARGETED:
            if "target" in v:
                self.error(v["target"], f"{path}.target", f"fault {kind} takes its nodes from 'groups', "
                                                          "not a target")
            target = kind if target is not None or "target" not in v else None
        elif "target" not in v and kind is not None:
            self.error(node, path, "missing required key 'target'")
        count: int | None = 1
        count_ok = True
        if "count" in v:
            if self.value(v["count"], f"{path}.count") == "all":
                count = None
            else:
                count = self.integer(v["count"], f"{path}.count", "a count (1 or more) or 'all'")
                count_ok = count is not None
            if target is not None and kind not in UNTARGETED and not parse_target(target).counted:
                self.error(v["count"], f"{path}.count", f"a count needs a target that has candidates "
                                                        f"('random ROLE' or a protocol target such as "
                                                        f"'intro points of HS'), not {target!r}")
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
        """A target in the grammar of targets.py, normalised (single spaces)."""
        value = self.value(node, path)
        if not isinstance(value, str):
            return self.error(node, path, f"expected a target ({', '.join(FORMS)}); got {_describe(value)}")
        try:
            parse_target(value)
        except TargetError as e:
            return self.error(node, path, str(e))
        return " ".join(value.split())

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
        if kind == "direction":
            if value not in DIRECTIONS:
                return self.error(node, path, f"expected a direction ({', '.join(DIRECTIONS)}), got "
                                              f"{_describe(value)} ({_did_you_mean(str(value), DIRECTIONS)})")
            return value
        if kind == "peers":  # a target, or a list of node names
            if isinstance(node, yaml.SequenceNode):
                return self.names(node, path)
            target = self.target(node, path)
            if target is not None and parse_target(target).kind == "random":
                return self.error(node, path, "'from' takes node names or a target that names nodes, not a "
                                              "random pick")
            return target
        if kind == "groups":
            return self.groups(node, path)
        if kind == "network":
            return self.string(node, path, re.compile(r"[a-z][a-z0-9_-]{0,62}"), "a network name")
        if kind == "node":
            return self.string(node, path, _NODE, "a node name")
        if kind == "offset":
            return self.number(node, path, lo=-MAX_SKEW, hi=MAX_SKEW)
        pattern, example = {"rate": (_TC_RATE, "256kbit"), "size": (_TC_SIZE, "32kbit"),
                            "time": (_TC_TIME, "100ms")}[kind]
        if not isinstance(value, str) or not pattern.fullmatch(value):
            return self.error(node, path, f"expected a tc {kind} such as {example!r}, got {_describe(value)}")
        return value

    def names(self, node: yaml.Node, path: str) -> tuple[str, ...] | None:
        """A non-empty list of distinct node names."""
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            return self.error(node, path, f"expected a list of node names, got "
                                          f"{_describe(self.value(node, path))}")
        names = [self.string(item, f"{path}[{i}]", _NODE, "a node name") for i, item in enumerate(node.value)]
        if None in names:
            return None
        if len(set(names)) < len(names):
            return self.error(node, path, f"a node is listed twice: {', '.join(names)}")
        return tuple(names)

    def groups(self, node: yaml.Node, path: str) -> tuple[tuple[str, ...], ...] | None:
        """Two or more disjoint lists of node names: a split cuts every group from every other."""
        if not isinstance(node, yaml.SequenceNode) or len(node.value) < 2:
            return self.error(node, path, "expected two or more groups of node names, e.g. "
                                          "[[relay1, relay2], [relay3, hs]]")
        groups = [self.names(g, f"{path}[{i}]") for i, g in enumerate(node.value)]
        if None in groups:
            return None
        seen: dict[str, int] = {}
        for i, group in enumerate(groups):
            for name in group:
                if name in seen:
                    return self.error(node, path, f"{name} is in group {seen[name]} and group {i}: the "
                                                  "groups must not overlap")
                seen[name] = i
        return tuple(groups)

    def checkers(self, node: yaml.Node) -> Checkers:
        pairs = self.mapping(node, "checkers", CHECKERS) or {}
        found: dict[str, Any] = {}
        for name, (_, vnode) in pairs.items():
            path = f"checkers.{name}"
            if not CHECKERS[name]:
                if not (isinstance(vnode, yaml.MappingNode) and not vnode.value) and \
                        self.value(vnode, path) not in (None, True):
                    self.error(vnode, path, f"{name} takes no settings (write `{name}: {{}}`)"
                                            + ("; it always runs" if name in ALWAYS else ""))
                elif name not in ALWAYS:
                    found[name] = True
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
            elif name == "consensus_health":
                for key in ("fresh_within", "stalled_after"):
                    if key in settings:
                        found[f"consensus_{key}"] = self.number(settings[key], f"{path}.{key}", above=True,
                                                                hi=3600)
            elif name == "recovers":
                if "within" not in settings:
                    self.error(vnode, path, "recovers needs 'within' (seconds)")
                else:
                    found["recovers_within"] = self.number(settings["within"], f"{path}.within", above=True,
                                                           hi=3600)
        return Checkers(**{k: x for k, x in found.items() if x is not None})
