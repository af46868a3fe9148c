"""Topology model: one YAML file per lab -> a validated, frozen `Topology`.

Settings inherit in four layers, the later one winning: built-in defaults -> `defaults` -> `roles.<role>` ->
the node entry. An entry with `count: N > 1` expands into N nodes named `<name>1` .. `<name>N`. Parsing walks
PyYAML's node graph rather than plain data so that every problem carries a position, and reports all
problems of a file at once, one `file:line:column: field.path: message` per line. Field reference:
topologies/README.md; editor schema: orchestrator/topology.schema.json.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import yaml

from nodes.config import IMPL_ROLES, IMPLS
from orchestrator.topology_petnames import check_petnames

ROLES: Final = ("authority", "relay", "onion_service", "client")
BUILTIN_TARGETS: Final = ("http", "echo")

# A circuit never uses the same relay twice and every circuit of the rendezvous flow (to an HSDir, to an
# intro point, to the rendezvous point) has at least three hops, so three relays is the smallest network in
# which every path can be built. Intro and rendezvous points are last hops of such circuits and may be shared.
MIN_RELAYS: Final = 3
MAX_COUNT: Final = 1000
MAX_INTRO_POINTS: Final = 20  # Tor's upper bound for HiddenServiceNumIntroductionPoints (v3)

#: Every node setting and the roles it applies to; `defaults` may set any of them.
APPLIES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "image": ROLES,
        "impl": ROLES,  # which roles each implementation can play: nodes.config.IMPL_ROLES
        "networks": ROLES,
        "control_port": ROLES,
        "or_port": ("authority", "relay"),
        "dir_port": ("authority",),
        "socks_port": ("client",),
        "bandwidth": ("relay",),
        "descriptor_refresh": ("relay",),
        "adversary": ("relay",),  # one of the attacker's relays (docs/attack.md)
        "guards": ("onion_service", "client"),
        "intro_points": ("onion_service",),
        "services": ("onion_service",),
        "memory": ROLES,
        "pids": ROLES,
        "placement": ROLES,
    }
)
SETTINGS: Final = tuple(APPLIES)
#: The layer below `defaults`. `networks` defaults to the first declared network; `services` has no default.
BUILTIN_DEFAULTS: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "image": "onionlab/node:latest",
        "impl": "onionlab",
        "control_port": 9052,
        "or_port": 9001,
        "dir_port": 9030,
        "socks_port": 9050,
        "bandwidth": 1_000_000,
        "descriptor_refresh": 30,
        "adversary": False,
        "guards": 1,
        "intro_points": 3,
    }
)
MIB: Final = 2**20
#: Built-in defaults that differ by role: each node's container limits (docker backend, compose and stack
#: exports). A node's Python process uses about 25 MiB of its own and 55 MiB with page cache when idle.
BUILTIN_ROLE_DEFAULTS: Final[Mapping[str, Mapping[str, Any]]] = MappingProxyType(
    {
        "memory": MappingProxyType(
            {"authority": 192 * MIB, "relay": 256 * MIB, "onion_service": 256 * MIB, "client": 256 * MIB}
        ),
        "pids": MappingProxyType(dict.fromkeys(ROLES, 128)),
    }
)
MIN_MEMORY: Final = 32 * MIB
MAX_PIDS: Final = 1_000_000
TOP_KEYS: Final = ("name", "networks", "timing", "defaults", "roles", "nodes", "links", "petnames")
LINK_KEYS: Final = ("between", "latency", "jitter", "loss", "bandwidth")
ENTRY_KEYS: Final = ("name", "role", "count", "addresses")
DEFAULT_NETWORK: Final = "onionnet"
DEFAULT_SUBNET: Final = "10.77.0.0/24"

_PORTS = ("control_port", "or_port", "dir_port", "socks_port")
_INT_MAX = 2**31 - 1
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_LAB_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_NODE_NAME = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")  # a DNS label: it becomes a hostname
_NET_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_IMAGE = re.compile(r"\S{1,255}")  # Docker checks the reference itself; we only catch blanks
# a Swarm placement constraint: an attribute, == or !=, a value (Swarm checks the attribute names itself)
_CONSTRAINT = re.compile(r"(node|engine)\.[A-Za-z0-9_.-]+ *(==|!=) *[^\s=!][^\s]*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")
_SIZE = re.compile(r"(\d+)\s*([kmg]?)b?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}


def size_text(size: int) -> str:
    """Bytes as Docker writes memory sizes: 256m, 1g, 512k, or plain bytes."""
    for unit in ("g", "m", "k"):
        if size % _SIZE_UNITS[unit] == 0:
            return f"{size // _SIZE_UNITS[unit]}{unit}"
    return str(size)


# ---------------------------------------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a topology file; line and column are 1-based (None: the file as a whole)."""

    filename: str
    line: int | None
    column: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.filename if self.line is None else f"{self.filename}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class TopologyError(ValueError):
    """Every problem found in a topology, sorted by position; str() is one problem per line."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(map(str, self.problems)))


# ----------------------------------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True)
class Network:
    name: str
    subnet: IPv4Network

    @property
    def gateway(self) -> IPv4Address:
        """Docker takes the first host address of a subnet for the bridge; nodes never get it."""
        return self.subnet.network_address + 1


_DERIVED_HS = ("is no longer set: the onion-service time period is 24 voting intervals and starts 12 voting "
               "intervals after the epoch, as in C tor with TestingTorNetwork (docs/tor-interop.md); change "
               "voting_interval instead")
DERIVED_TIMING = {"hs_period_minutes": _DERIVED_HS, "hs_rotation_offset_minutes": _DERIVED_HS}


@dataclass(frozen=True, slots=True)
class Timing:
    """Seconds-scale intervals so that a lab has a consensus within seconds (Tor's are hours), at C tor's
    TestingTorNetwork floors so that a stock tor accepts the lab's consensus. The HS time period is not set
    here: as in C tor under TestingTorNetwork it is 24 voting intervals, starting 12 after the epoch."""

    voting_interval: int = 10  # seconds between consensuses; divides a day, like V3AuthVotingInterval
    vote_delay: int = 2  # seconds to exchange votes (V3AuthVoteDelay)
    dist_delay: int = 2  # seconds to exchange signatures (V3AuthDistDelay)


@dataclass(frozen=True, slots=True)
class Service:
    """A virtual port of an onion service and where its streams go: a built-in server or host:port."""

    port: int
    target: str

    @property
    def builtin(self) -> bool:
        return self.target in BUILTIN_TARGETS

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) of a host:port target (IPv6 without brackets); None for a built-in server."""
        if self.builtin:
            return None
        host, _, port = self.target.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True)
class Interface:
    network: str
    address: IPv4Address


@dataclass(frozen=True, slots=True)
class Node:
    """One expanded node with its effective settings; settings that do not apply to its role are None."""

    index: int  # position in Topology.nodes: file order, stable across loads
    name: str
    role: str
    image: str
    control_port: int
    interfaces: tuple[Interface, ...]  # the first one is the node's primary network
    impl: str = "onionlab"  # "tor": a stock tor plays the node (`python -m nodes tor`)
    or_port: int | None = None
    dir_port: int | None = None
    socks_port: int | None = None
    bandwidth: int | None = None
    descriptor_refresh: int | None = None
    adversary: bool | None = None  # relays: one of the attacker's
    guards: int | None = None  # 0: no entry guards
    intro_points: int | None = None
    services: tuple[Service, ...] = ()
    memory: int | None = None  # container memory limit in bytes (swap included: none beyond it)
    pids: int | None = None  # container limit on processes and threads
    placement: tuple[str, ...] = ()  # Swarm placement constraints (the swarm backend only)

    @property
    def networks(self) -> tuple[str, ...]:
        return tuple(i.network for i in self.interfaces)

    def address(self, network: str | None = None) -> IPv4Address:
        """The node's address on `network`, by default on its primary network."""
        for interface in self.interfaces:
            if network is None or interface.network == network:
                return interface.address
        raise KeyError(f"node {self.name} is not on network {network}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "role": self.role,
            "image": self.image,
            "impl": self.impl,
            "networks": list(self.networks),
            "addresses": {i.network: str(i.address) for i in self.interfaces},
            "control_port": self.control_port,
        }
        for key in ("or_port", "dir_port", "socks_port", "bandwidth", "descriptor_refresh", "adversary",
                    "guards", "intro_points"):
            if (value := getattr(self, key)) is not None:
                out[key] = value
        if self.services:
            out["services"] = [{"port": s.port, "target": s.target} for s in self.services]
        if self.memory is not None:
            out["memory"] = size_text(self.memory)
        if self.pids is not None:
            out["pids"] = self.pids
        if self.placement:
            out["placement"] = list(self.placement)
        return out


@dataclass(frozen=True, slots=True)
class Link:
    """A static impairment (`links:`) between two groups of nodes: every link from one to the other gets
    it, in both directions. Times in seconds, loss a fraction, bandwidth in bytes per second; `text` keeps
    what the file said (for `onionlab graph`)."""

    between: tuple[tuple[str, ...], tuple[str, ...]]  # node names on each side
    sides: tuple[tuple[str, ...], tuple[str, ...]] = field(compare=False)  # what the file named, each side
    latency: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    bandwidth: float = 0.0
    text: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"between": [list(side) for side in self.between]}  # expanded: node names
        for key, value, unit in (("latency", self.latency * 1000, "ms"), ("jitter", self.jitter * 1000, "ms"),
                                 ("loss", self.loss * 100, "%"), ("bandwidth", self.bandwidth * 8, "bit")):
            if value:
                out[key] = f"{round(value, 6):f}".rstrip("0").rstrip(".") + unit
        return out


@dataclass(frozen=True, slots=True)
class Topology:
    name: str
    networks: tuple[Network, ...]
    timing: Timing
    nodes: tuple[Node, ...]
    source: str = field(default="<string>", compare=False)
    links: tuple[Link, ...] = ()
    # NAME -> onion service node or onion address: the clients' petname tables (topology_petnames.py)
    petnames: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def nodes_by_role(self, role: str) -> tuple[Node, ...]:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
        return tuple(n for n in self.nodes if n.role == role)

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def network(self, name: str) -> Network:
        for network in self.networks:
            if network.name == name:
                return network
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """Plain data that is itself a valid topology (expanded, all settings explicit): parses back equal."""
        return {
            "name": self.name,
            "networks": {n.name: {"subnet": str(n.subnet)} for n in self.networks},
            "timing": {f.name: getattr(self.timing, f.name) for f in fields(Timing)},
            "nodes": [n.to_dict() for n in self.nodes],
            **({"links": [link.to_dict() for link in self.links]} if self.links else {}),
            **({"petnames": dict(self.petnames)} if self.petnames else {}),
        }


# ----------------------------------------------------------------------------------------- entry points


def load_topology(path: str | os.PathLike[str]) -> Topology:
    filename = os.fspath(path)
    try:
        data = Path(filename).read_bytes()
    except OSError as exc:
        raise TopologyError(
            [Problem(filename, None, None, "", f"cannot read: {exc.strerror or exc}")]
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _position(data, exc.start, b"\n")
        raise TopologyError([Problem(filename, line, column, "", "not valid UTF-8")]) from None
    return parse_topology(text, filename)


def parse_topology(text: str, filename: str = "<string>") -> Topology:
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        root = loader.get_single_node()
        return _Checker(filename, loader).check(root)
    except yaml.MarkedYAMLError as exc:
        raise TopologyError([_syntax_problem(filename, exc)]) from None
    except yaml.reader.ReaderError as exc:
        line, column = _position(text, exc.position, "\n")
        raise TopologyError([Problem(filename, line, column, "", f"invalid YAML: {exc.reason}")]) from None
    except RecursionError:
        raise TopologyError([Problem(filename, None, None, "", "invalid YAML: nested too deeply")]) from None
    finally:
        if loader is not None:
            loader.dispose()


def _syntax_problem(filename: str, exc: yaml.MarkedYAMLError) -> Problem:
    problem, context = exc.problem or "", exc.context or ""
    if problem.startswith("but ") and context:  # PyYAML splits one sentence in two
        message = f"{context}, {problem}"
    elif context:
        line = f" on line {exc.context_mark.line + 1}" if exc.context_mark else ""
        message = f"{problem} ({context}{line})" if problem else context
    else:
        message = problem
    mark = exc.problem_mark or exc.context_mark
    if mark is None:
        return Problem(filename, None, None, "", f"invalid YAML: {message}")
    return Problem(filename, mark.line + 1, mark.column + 1, "", f"invalid YAML: {message}")


def _position(data: Any, offset: int, newline: Any) -> tuple[int, int]:
    start = data.rfind(newline, 0, offset) + 1
    return data.count(newline, 0, offset) + 1, offset - start + 1


# ------------------------------------------------------------------------------------------- internals


@dataclass(frozen=True, slots=True)
class _Collection:
    """Stands for a mapping or list found where a scalar was expected, so that type checks fail."""

    kind: str


_UNREADABLE: Final = object()  # a scalar the constructor refused (already reported)


@dataclass(frozen=True, slots=True)
class _Setting:
    value: Any
    node: yaml.Node | None  # None: a built-in default
    path: str
    layer: int  # 0 built-in, 1 defaults, 2 roles, 3 node entry: the higher layer is the one to blame


@dataclass(slots=True)
class _NetSpec:
    subnet: IPv4Network | None
    node: yaml.Node | None  # None: the implicit default network
    path: str


@dataclass(slots=True)
class _Entry:
    node: yaml.Node
    path: str
    name: str
    name_node: yaml.Node
    role: str
    count: int
    addresses: dict[str, tuple[IPv4Address, yaml.Node, str]]
    settings: dict[str, _Setting]


@dataclass(slots=True)
class _Expanded:
    name: str
    entry: _Entry
    settings: dict[str, _Setting]

    @property
    def networks(self) -> tuple[str, ...]:
        return self.settings["networks"].value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(value: Any) -> str:
    if isinstance(value, _Collection):
        return value.kind
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return repr(value)
    return f"{value!r} (a {type(value).__name__})"


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=1)
    return f"did you mean '{close[0]}'?" if close else f"expected one of: {', '.join(choices)}"


def _target_problem(target: str) -> str | None:
    if target in BUILTIN_TARGETS:
        return None
    host, colon, port = target.rpartition(":")
    if not colon:
        return f"expected http, echo or host:port, got {target!r} ({_did_you_mean(target, BUILTIN_TARGETS)})"
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        return f"target {target!r}: expected a port number from 1 to 65535 after ':'"
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"target {target!r}: {host} is not an IPv6 address"
    elif not _HOSTNAME.fullmatch(host):
        return f"target {target!r}: expected a host name or address before ':' (IPv6 in brackets)"
    return None


class _Checker:
    """Walks the composed YAML, records every problem, and builds the model if there are none."""

    def __init__(self, filename: str, loader: yaml.SafeLoader) -> None:
        self.filename = filename
        self.loader = loader
        self.problems: list[Problem] = []

    # -- reporting

    def error(self, node: yaml.Node | None, path: str, message: str) -> None:
        """Record a problem and return None, so that checks can `return self.error(...)`."""
        mark = node.start_mark if node is not None else None
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        self.problems.append(Problem(self.filename, line, column, path, message))

    def error_setting(self, setting: _Setting, entry: _Entry, key: str, message: str) -> None:
        if setting.node is None:
            self.error(entry.node, f"{entry.path}.{key}", f"{message} (built-in default)")
        else:
            self.error(setting.node, setting.path, message)

    def raise_if_any(self) -> None:
        if not self.problems:
            return
        first: dict[tuple[int | None, int | None, str], Problem] = {}
        for problem in self.problems:  # one problem per place: an entry with count N repeats itself
            first.setdefault((problem.line, problem.column, problem.path), problem)
        raise TopologyError(sorted(first.values(), key=lambda p: (p.line or 0, p.column or 0)))

    # -- generic shapes

    def value(self, node: yaml.Node, path: str) -> Any:
        if isinstance(node, yaml.MappingNode):
            return _Collection("a mapping")
        if isinstance(node, yaml.SequenceNode):
            return _Collection("a list")
        try:
            return self.loader.construct_object(node)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            self.error(node, path, f"cannot read this value: {getattr(exc, 'problem', None) or exc}")
            return _UNREADABLE

    def integer(self, node: yaml.Node, path: str, what: str, lo: int = 1, hi: int = _INT_MAX) -> int | None:
        value = self.value(node, path)
        if value is _UNREADABLE:
            return None
        if type(value) is not int or value < lo:
            return self.error(node, path, f"expected {what}, got {_describe(value)}")
        if value > hi:
            return self.error(node, path, f"expected at most {hi}, got {value}")
        return value

    def string(self, node: yaml.Node, path: str, pattern: re.Pattern[str], what: str) -> str | None:
        value = self.value(node, path)
        if value is _UNREADABLE:
            return None
        if not isinstance(value, str) or not pattern.fullmatch(value):
            return self.error(node, path, f"expected {what}, got {_describe(value)}")
        return value

    def pairs(
        self, node: yaml.Node, path: str, merging: frozenset[int] = frozenset()
    ) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
        """String key -> (key node, value node), rejecting duplicates and resolving `<<` merge keys."""
        if not isinstance(node, yaml.MappingNode):
            return self.error(node, path, f"expected a mapping, got {_describe(self.value(node, path))}")
        own: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        merged: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for knode, vnode in node.value:
            if knode.tag == _MERGE_TAG:
                for key, pair in self.merge_sources(vnode, path, merging | {id(node)}).items():
                    merged.setdefault(key, pair)
                continue
            key = self.value(knode, path)
            if key is _UNREADABLE:
                continue
            if not isinstance(key, str):
                self.error(knode, path, f"expected a string key, got {_describe(key)}")
            elif key in own:
                line = own[key][0].start_mark.line + 1
                self.error(knode, _join(path, key), f"duplicate key '{key}' (first defined on line {line})")
            else:
                own[key] = (knode, vnode)
        for key, pair in merged.items():
            own.setdefault(key, pair)  # explicit keys win over merged ones, as YAML's merge key says
        return own

    def merge_sources(
        self, node: yaml.Node, path: str, merging: frozenset[int]
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for source in node.value if isinstance(node, yaml.SequenceNode) else [node]:
            if not isinstance(source, yaml.MappingNode):
                self.error(source, path, "a merge key (<<) takes a mapping or a list of mappings")
            elif id(source) in merging:
                self.error(source, path, "a merge key (<<) refers to the mapping that contains it")
            else:
                for key, pair in (self.pairs(source, path, merging) or {}).items():
                    out.setdefault(key, pair)  # earlier sources win
        return out

    def mapping(
        self, node: yaml.Node, path: str, known: Iterable[str], required: Iterable[str] = ()
    ) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
        known = tuple(known)
        pairs = self.pairs(node, path)
        if pairs is None:
            return None
        for key, (knode, _) in list(pairs.items()):
            if key not in known:
                self.error(knode, _join(path, key), f"unknown key '{key}' ({_did_you_mean(key, known)})")
                del pairs[key]
        for key in required:
            if key not in pairs:
                self.error(node, path, f"missing required key '{key}'")
        return pairs

    # -- the document

    def check(self, root: yaml.Node | None) -> Topology:
        if root is None:
            self.problems.append(
                Problem(self.filename, 1, 1, "", "empty file: a topology needs 'name' and 'nodes'")
            )
            self.raise_if_any()
        top = self.mapping(root, "", TOP_KEYS, required=("name", "nodes"))
        if top is None:
            self.raise_if_any()
        vnode = dict.fromkeys(TOP_KEYS) | {key: pair[1] for key, pair in top.items()}
        name = None
        if vnode["name"] is not None:
            name = self.string(
                vnode["name"], "name", _LAB_NAME, "a lab name (lowercase letters, digits, - and _)"
            )
        networks = self.networks(vnode["networks"])
        timing = self.timing(vnode["timing"], root)
        defaults = (
            {} if vnode["defaults"] is None else self.settings(vnode["defaults"], "defaults", 1, networks)
        )
        roles = self.roles(vnode["roles"], networks)
        entries = self.entries(vnode["nodes"], networks) if vnode["nodes"] is not None else []
        self.raise_if_any()
        expanded = self.expand(networks, defaults, roles, entries)
        self.check_roles(expanded, vnode["nodes"])
        for node in expanded:
            self.check_ports(node)
        addresses = self.assign_addresses(expanded, networks, root)
        self.raise_if_any()
        nodes = tuple(
            Node(
                index=i,
                name=n.name,
                role=n.entry.role,
                interfaces=tuple(Interface(net, addresses[n.name, net]) for net in n.networks),
                **{key: s.value for key, s in n.settings.items() if key != "networks"},
            )
            for i, n in enumerate(expanded)
        )
        petnames = check_petnames(self, vnode["petnames"], nodes)
        nets = tuple(Network(net, spec.subnet) for net, spec in networks.items())
        links = self.links(vnode["links"], expanded) if vnode["links"] is not None else ()
        self.raise_if_any()
        return Topology(name, nets, timing, nodes, self.filename, links=links,
                        petnames=MappingProxyType(petnames))

    # -- links: static impairments between groups of nodes ---------------------------------------------------

    def links(self, node: yaml.Node, expanded: list[_Expanded]) -> tuple[Link, ...]:
        """`links:`, a list of {between: [SIDE, SIDE], latency, jitter, loss, bandwidth}; a side is a node,
        a `nodes:` entry, a network or a role name, or a list of them."""
        from . import impairments

        if not isinstance(node, yaml.SequenceNode):
            self.error(node, "links", f"expected a list of links, got {_describe(self.value(node, 'links'))}")
            return ()
        groups: dict[str, tuple[str, ...]] = {}
        for names_of in (lambda n: [n.entry.role], lambda n: list(n.networks), lambda n: [n.entry.name],
                         lambda n: [n.name]):  # a role, a network, a nodes: entry, a node: later ones win
            found: dict[str, list[str]] = {}
            for n in expanded:
                for key in names_of(n):
                    found.setdefault(key, []).append(n.name)
            groups.update({key: tuple(members) for key, members in found.items()})
        links = []
        for i, item in enumerate(node.value):
            path = f"links[{i}]"
            pairs = self.mapping(item, path, LINK_KEYS, required=("between",))
            if pairs is None:
                continue
            v = {key: pair[1] for key, pair in pairs.items()}
            sides = self.link_sides(v["between"], f"{path}.between", groups) if "between" in v else None
            found: dict[str, float] = {}
            for key, parse, example in (("latency", impairments.seconds, "80ms"),
                                        ("jitter", impairments.seconds, "10ms"),
                                        ("loss", impairments.fraction, "1%"),
                                        ("bandwidth", impairments.bytes_per_second, "10mbit")):
                if key not in v:
                    continue
                value = self.value(v[key], f"{path}.{key}")
                try:
                    found[key] = parse(value if isinstance(value, str) else str(value))
                except ValueError:
                    self.error(v[key], f"{path}.{key}", f"expected a {key} such as {example!r}, got "
                                                        f"{_describe(value)}")
            if not set(v) - {"between"}:
                self.error(item, path, "a link needs latency, jitter, loss or bandwidth")
            if found.get("jitter", 0) > found.get("latency", 0):
                self.error(v["jitter"], f"{path}.jitter", "jitter must not exceed latency")
            if found.get("loss", 0) >= 1:
                self.error(v["loss"], f"{path}.loss", "a loss below 100% (TCP would never deliver a byte)")
            if sides is None or len(found) != len(set(v) - {"between"}):
                continue
            text = ", ".join(f"{k} {self.value(v[k], path)}" for k in LINK_KEYS[1:] if k in v)
            links.append(Link(between=(sides[0][1], sides[1][1]), sides=(sides[0][0], sides[1][0]),
                              latency=found.get("latency", 0.0), jitter=found.get("jitter", 0.0),
                              loss=found.get("loss", 0.0), bandwidth=found.get("bandwidth", 0.0),
                              text=text))
        return tuple(links)

    def link_sides(self, node: yaml.Node, path: str, groups: Mapping[str, tuple[str, ...]]
                   ) -> tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] | None:
        """The two sides of `between`: (names as written, node names) each."""
        if not isinstance(node, yaml.SequenceNode) or len(node.value) != 2:
            return self.error(node, path, "expected two sides: [SIDE, SIDE], each a node, a nodes: entry, a "
                                          "network or a role, or a list of them")
        sides = []
        for j, side in enumerate(node.value):
            items = side.value if isinstance(side, yaml.SequenceNode) else [side]
            names: list[str] = []
            members: list[str] = []
            for k, item in enumerate(items):
                where = f"{path}[{j}]" + (f"[{k}]" if isinstance(side, yaml.SequenceNode) else "")
                name = self.value(item, where)
                if not isinstance(name, str) or name not in groups:
                    self.error(item, where, f"no node, nodes: entry, network or role named {_describe(name)} "
                                            f"({_did_you_mean(str(name), groups)})")
                    continue
                names.append(name)
                members += [m for m in groups[name] if m not in members]
            if not members:
                return None
            sides.append((tuple(names), tuple(members)))
        if set(sides[0][1]) == set(sides[1][1]) and len(sides[0][1]) == 1:
            return self.error(node, path, f"a link joins two different nodes ({sides[0][1][0]} twice)")
        return tuple(sides)

    def networks(self, node: yaml.Node | None) -> dict[str, _NetSpec]:
        if node is None:
            return {DEFAULT_NETWORK: _NetSpec(IPv4Network(DEFAULT_SUBNET), None, "networks")}
        pairs = self.pairs(node, "networks")
        if pairs is None:
            return {}
        if not pairs:
            self.error(node, "networks", "expected at least one network")
        specs: dict[str, _NetSpec] = {}
        for name, (knode, vnode) in pairs.items():
            path = f"networks.{name}"
            if not _NET_NAME.fullmatch(name):
                self.error(
                    knode,
                    path,
                    "a network name is lowercase letters, digits, - and _, starting with a letter",
                )
            fields_ = self.mapping(vnode, path, ("subnet",), required=("subnet",)) or {}
            subnet = self.subnet(fields_["subnet"][1], f"{path}.subnet") if "subnet" in fields_ else None
            if subnet is not None:
                for other, spec in specs.items():
                    if spec.subnet is not None and subnet.overlaps(spec.subnet):
                        self.error(
                            fields_["subnet"][1],
                            f"{path}.subnet",
                            f"{subnet} overlaps network {other} ({spec.subnet})",
                        )
            specs[name] = _NetSpec(
                subnet, fields_["subnet"][1] if "subnet" in fields_ else vnode, f"{path}.subnet"
            )
        return specs

    def subnet(self, node: yaml.Node, path: str) -> IPv4Network | None:
        value = self.value(node, path)
        if value is _UNREADABLE:
            return None
        what = "an IPv4 subnet such as 10.77.0.0/24"
        if not isinstance(value, str):
            return self.error(node, path, f"expected {what}, got {_describe(value)}")
        try:
            subnet = ipaddress.ip_network(value)
        except ValueError as exc:
            return self.error(node, path, f"expected {what}, got {value!r} ({exc})")
        if subnet.version != 4:
            return self.error(node, path, f"only IPv4 subnets are supported, got {value!r}")
        if subnet.prefixlen > 30:
            return self.error(node, path, f"subnet {subnet} is too small: no address is left for nodes")
        return subnet

    def timing(self, node: yaml.Node | None, root: yaml.Node) -> Timing | None:
        bounds = {
            # C tor's floors (dirvote.h MIN_VOTE_INTERVAL_TESTING, MIN_VOTE_SECONDS, MIN_DIST_SECONDS)
            "voting_interval": ("a number of seconds >= 10 (tor's floor)", 10, 86400),
            "vote_delay": ("a number of seconds >= 2 (tor's floor)", 2, 86400),
            "dist_delay": ("a number of seconds >= 2 (tor's floor)", 2, 86400),
        }
        values: dict[str, int] = {f.name: f.default for f in fields(Timing)}
        where: dict[str, yaml.Node] = dict.fromkeys(values, node if node is not None else root)
        if node is not None:
            for key, (knode, _) in (self.pairs(node, "timing") or {}).items():
                if key in DERIVED_TIMING:
                    self.error(knode, f"timing.{key}", DERIVED_TIMING[key])
            pairs = self.mapping(node, "timing", [*bounds, *DERIVED_TIMING])
            if pairs is None:
                return None
            for key, (_, vnode) in pairs.items():
                if key in DERIVED_TIMING:
                    continue
                value = self.integer(vnode, f"timing.{key}", *bounds[key])
                if value is None:
                    return None
                values[key], where[key] = value, vnode

        def fail(key: str, message: str) -> None:
            self.error(where[key], f"timing.{key}", message)

        if 86400 % values["voting_interval"]:
            fail("voting_interval", f"must divide a day (86400 s) evenly, got {values['voting_interval']}")
        # an authority's round: reachability tests for a fifth of it, then the two delays (roles/authority.py)
        if 5 * (values["vote_delay"] + values["dist_delay"]) > 4 * values["voting_interval"]:
            fail(
                "dist_delay",
                "vote_delay + dist_delay must fit in four fifths of voting_interval "
                f"({values['vote_delay']} + {values['dist_delay']} > 0.8 * {values['voting_interval']})",
            )
        return Timing(**values)

    def settings(
        self,
        node: yaml.Node,
        path: str,
        layer: int,
        networks: Mapping[str, _NetSpec],
        role: str | None = None,
    ) -> dict[str, _Setting]:
        pairs = self.mapping(node, path, SETTINGS)
        return self.setting_values(pairs or {}, path, layer, networks, role)

    def setting_values(
        self,
        pairs: Mapping[str, tuple[yaml.Node, yaml.Node]],
        path: str,
        layer: int,
        networks: Mapping[str, _NetSpec],
        role: str | None,
    ) -> dict[str, _Setting]:
        out: dict[str, _Setting] = {}
        for key, (knode, vnode) in pairs.items():
            if key not in APPLIES:
                continue
            kpath = _join(path, key)
            if role is not None and role not in APPLIES[key]:
                self.error(
                    knode, kpath, f"'{key}' does not apply to role {role} (only to {', '.join(APPLIES[key])})"
                )
                continue
            value = self.setting(key, vnode, kpath, networks)
            why = _impl_problem(value, role) if key == "impl" and role and value else None
            if why:
                self.error(vnode, kpath, why)
                continue
            if value is not None:
                out[key] = _Setting(value, vnode, kpath, layer)
        return out

    def setting(self, key: str, node: yaml.Node, path: str, networks: Mapping[str, _NetSpec]) -> Any:
        if key in _PORTS:
            return self.integer(node, path, "a port number from 1 to 65535", 1, 65535)
        if key == "image":
            return self.string(node, path, _IMAGE, "an image reference like onionlab/node:latest")
        if key == "impl":
            return self.impl(node, path)
        if key == "bandwidth":
            return self.integer(node, path, "a positive integer (bytes per second)")
        if key == "descriptor_refresh":
            return self.integer(node, path, "seconds from 1 to 86400", 1, 86400)
        if key == "guards":  # 0: none, a fresh first hop per circuit (the attack's pre-guard setting)
            return self.integer(node, path, "a number of guards (0: none)", 0, MAX_COUNT)
        if key == "adversary":
            value = self.value(node, path)
            if value is _UNREADABLE:
                return None
            if not isinstance(value, bool):
                return self.error(node, path, f"expected true or false, got {_describe(value)}")
            return value
        if key == "intro_points":
            return self.integer(node, path, "a positive integer", 1, MAX_INTRO_POINTS)
        if key == "networks":
            return self.network_names(node, path, networks)
        if key == "memory":
            return self.memory(node, path)
        if key == "pids":
            return self.integer(node, path, f"a process limit from 16 to {MAX_PIDS}", 16, MAX_PIDS)
        if key == "placement":
            return self.placement(node, path)
        return self.services(node, path)

    def placement(self, node: yaml.Node, path: str) -> tuple[str, ...] | None:
        """A list of Swarm placement constraints such as `node.labels.onionlab==relays` (docs/swarm.md)."""
        if not isinstance(node, yaml.SequenceNode):
            return self.error(node, path, "expected a list of Swarm placement constraints, got "
                              f"{_describe(self.value(node, path))}")
        out = []
        for i, item in enumerate(node.value):
            value = self.value(item, f"{path}[{i}]")
            if value is _UNREADABLE:
                return None
            if not isinstance(value, str) or not _CONSTRAINT.fullmatch(value.strip()):
                return self.error(item, f"{path}[{i}]", "expected a Swarm placement constraint such as "
                                  "'node.labels.onionlab==relays' or 'node.role!=manager', got "
                                  f"{_describe(value)}")
            out.append(value.strip())
        return tuple(out)

    def memory(self, node: yaml.Node, path: str) -> int | None:
        value = self.value(node, path)
        if value is _UNREADABLE:
            return None
        match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
        if type(value) is int:
            size = value
        elif match:
            size = int(match[1]) * _SIZE_UNITS[match[2].lower()]
        else:
            return self.error(
                node,
                path,
                "expected a memory size such as 256m or 1g (a number of bytes, or one with k, m or g: "
                f"KiB, MiB, GiB), got {_describe(value)}",
            )
        if size < MIN_MEMORY:
            return self.error(
                node, path, f"{value} is too little: a node needs at least {size_text(MIN_MEMORY)}"
            )
        if size > _INT_MAX * MIB:
            return self.error(node, path, f"expected at most {_INT_MAX}m, got {value}")
        return size

    def impl(self, node: yaml.Node, path: str) -> str | None:
        value = self.value(node, path)
        if value is _UNREADABLE:
            return None
        if not isinstance(value, str):
            return self.error(node, path, f"expected one of {', '.join(IMPLS)}, got {_describe(value)}")
        if value not in IMPLS:
            return self.error(node, path, f"unknown impl '{value}' ({_did_you_mean(value, IMPLS)})")
        return value

    def network_names(
        self, node: yaml.Node, path: str, networks: Mapping[str, _NetSpec]
    ) -> tuple[str, ...] | None:
        if not isinstance(node, yaml.SequenceNode):
            return self.error(
                node, path, f"expected a list of network names, got {_describe(self.value(node, path))}"
            )
        if not node.value:
            return self.error(node, path, "expected at least one network")
        names: list[str] = []
        for i, item in enumerate(node.value):
            ipath = f"{path}[{i}]"
            name = self.value(item, ipath)
            if name is _UNREADABLE:
                continue
            if not isinstance(name, str):
                self.error(item, ipath, f"expected a network name, got {_describe(name)}")
            elif name not in networks:
                self.error(item, ipath, f"unknown network '{name}' ({_did_you_mean(name, networks)})")
            elif name in names:
                self.error(item, ipath, f"network '{name}' is listed twice")
            else:
                names.append(name)
        return tuple(names) if len(names) == len(node.value) else None

    def services(self, node: yaml.Node, path: str) -> tuple[Service, ...] | None:
        if not isinstance(node, yaml.SequenceNode):
            return self.error(
                node, path, f"expected a list of services, got {_describe(self.value(node, path))}"
            )
        if not node.value:
            return self.error(node, path, "expected at least one service, e.g. {port: 80, target: http}")
        services: list[Service] = []
        first_line: dict[int, int] = {}
        for i, item in enumerate(node.value):
            ipath = f"{path}[{i}]"
            pairs = self.mapping(item, ipath, ("port", "target"), required=("port", "target"))
            if not pairs or len(pairs) < 2:
                continue
            port_node, target_node = pairs["port"][1], pairs["target"][1]
            port = self.integer(port_node, f"{ipath}.port", "a port number from 1 to 65535", 1, 65535)
            target = self.value(target_node, f"{ipath}.target")
            if target is not _UNREADABLE and not isinstance(target, str):
                self.error(
                    target_node,
                    f"{ipath}.target",
                    f"expected http, echo or host:port, got {_describe(target)}",
                )
            elif isinstance(target, str) and (problem := _target_problem(target)):
                self.error(target_node, f"{ipath}.target", problem)
            elif port is not None and target is not _UNREADABLE:
                if port in first_line:
                    self.error(
                        port_node,
                        f"{ipath}.port",
                        f"service port {port} is already used (line {first_line[port]})",
                    )
                first_line.setdefault(port, port_node.start_mark.line + 1)
                services.append(Service(port, target))
        return tuple(services) if len(services) == len(node.value) else None

    def roles(
        self, node: yaml.Node | None, networks: Mapping[str, _NetSpec]
    ) -> dict[str, dict[str, _Setting]]:
        if node is None:
            return {}
        out: dict[str, dict[str, _Setting]] = {}
        for role, (knode, vnode) in (self.pairs(node, "roles") or {}).items():
            if role not in ROLES:
                self.error(knode, f"roles.{role}", f"unknown role '{role}' ({_did_you_mean(role, ROLES)})")
            else:
                out[role] = self.settings(vnode, f"roles.{role}", 2, networks, role)
        return out

    def entries(self, node: yaml.Node, networks: Mapping[str, _NetSpec]) -> list[_Entry]:
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, "nodes", f"expected a list of nodes, got {_describe(self.value(node, 'nodes'))}")
            return []
        if not node.value:
            self.error(node, "nodes", "expected at least one node")
        return [e for i, item in enumerate(node.value) if (e := self.entry(item, i, networks)) is not None]

    def entry(self, node: yaml.Node, index: int, networks: Mapping[str, _NetSpec]) -> _Entry | None:
        path = _entry_path(node, index)
        pairs = self.mapping(node, path, ENTRY_KEYS + SETTINGS, required=("name", "role"))
        if pairs is None:
            return None
        name = role = None
        if "name" in pairs:
            name = self.string(
                pairs["name"][1],
                f"{path}.name",
                _NODE_NAME,
                "a node name (lowercase letters, digits and -, starting with a letter)",
            )
        if "role" in pairs:
            rnode = pairs["role"][1]
            role = self.value(rnode, f"{path}.role")
            if role not in ROLES:
                if isinstance(role, str):
                    self.error(rnode, f"{path}.role", f"unknown role '{role}' ({_did_you_mean(role, ROLES)})")
                elif role is not _UNREADABLE:
                    self.error(
                        rnode, f"{path}.role", f"expected one of {', '.join(ROLES)}, got {_describe(role)}"
                    )
                role = None
        count = 1
        if "count" in pairs:
            count = self.integer(pairs["count"][1], f"{path}.count", "a positive integer", 1, MAX_COUNT)
        if name is not None and count is not None and count > 1 and len(name) + len(str(count)) > 63:
            self.error(
                pairs["name"][1], f"{path}.name", f"'{name}{count}' would be longer than 63 characters"
            )
        addresses = (
            self.addresses(pairs["addresses"], f"{path}.addresses", networks, count)
            if "addresses" in pairs
            else {}
        )
        settings = self.setting_values(pairs, path, 3, networks, role)
        if name is None or role is None or count is None or addresses is None:
            return None
        return _Entry(node, path, name, pairs["name"][1], role, count, addresses, settings)

    def addresses(
        self,
        pair: tuple[yaml.Node, yaml.Node],
        path: str,
        networks: Mapping[str, _NetSpec],
        count: int | None,
    ) -> dict[str, tuple[IPv4Address, yaml.Node, str]] | None:
        if count is not None and count > 1:
            return self.error(pair[0], path, "'addresses' needs count: 1 (each node needs its own address)")
        pairs = self.pairs(pair[1], path)
        if pairs is None:
            return None
        out: dict[str, tuple[IPv4Address, yaml.Node, str]] = {}
        for net, (knode, vnode) in pairs.items():
            npath = f"{path}.{net}"
            if net not in networks:
                self.error(knode, npath, f"unknown network '{net}' ({_did_you_mean(net, networks)})")
                continue
            value = self.value(vnode, npath)
            if (address := _ipv4(value)) is not None:
                out[net] = (address, vnode, npath)
            elif value is not _UNREADABLE:
                self.error(vnode, npath, f"expected an IPv4 address, got {_describe(value)}")
        return out if len(out) == len(pairs) else None

    # -- expansion and whole-topology checks

    def expand(
        self,
        networks: dict[str, _NetSpec],
        defaults: dict[str, _Setting],
        roles: dict[str, dict[str, _Setting]],
        entries: list[_Entry],
    ) -> list[_Expanded]:
        """Entries -> nodes; each setting comes from the most specific layer that sets it."""
        builtin = {key: _Setting(value, None, "", 0) for key, value in BUILTIN_DEFAULTS.items()}
        builtin["networks"] = _Setting((next(iter(networks)),), None, "", 0)
        expanded: list[_Expanded] = []
        owner: dict[str, _Entry] = {}
        for entry in entries:
            role_builtin = {key: _Setting(by_role[entry.role], None, "", 0)
                            for key, by_role in BUILTIN_ROLE_DEFAULTS.items() if entry.role in by_role}
            layers = (entry.settings, roles.get(entry.role, {}), defaults, builtin | role_builtin)
            effective = {
                key: layer[key]
                for key in SETTINGS
                if entry.role in APPLIES[key]
                for layer in reversed(layers)
                if key in layer
            }
            impl = effective["impl"]
            if impl.layer < 2 and (why := _impl_problem(impl.value, entry.role)):
                self.error_setting(impl, entry, "impl", why)  # set in `defaults`: blame that line
            if entry.role == "onion_service" and "services" not in effective:
                self.error(
                    entry.node,
                    f"{entry.path}.services",
                    "an onion service needs at least one service, e.g. services: [{port: 80, target: http}]",
                )
            for ordinal in range(1, entry.count + 1):
                name = entry.name if entry.count == 1 else f"{entry.name}{ordinal}"
                if name in owner:
                    line = owner[name].name_node.start_mark.line + 1
                    self.error(
                        entry.name_node,
                        f"{entry.path}.name",
                        f"duplicate node name '{name}' (already used by the node on line {line})",
                    )
                    continue
                owner[name] = entry
                expanded.append(_Expanded(name, entry, effective))
        return expanded

    def check_roles(self, expanded: list[_Expanded], nodes_node: yaml.Node) -> None:
        authorities = [n for n in expanded if n.entry.role == "authority"]
        relays = [n for n in expanded if n.entry.role == "relay"]
        if not authorities:
            self.error(
                nodes_node, "nodes", "no authority: a topology needs at least one node with role authority"
            )
        if len(relays) < MIN_RELAYS:
            self.error(
                nodes_node,
                "nodes",
                f"{len(relays)} relay(s): a topology needs at least {MIN_RELAYS} "
                f"(role relay) so that a circuit can use {MIN_RELAYS} different relays",
            )
        seen: dict[frozenset[str], _Expanded] = {}
        for auth in authorities:  # voting needs every pair of authorities to share a network
            nets = frozenset(auth.networks)
            for other_nets, other in seen.items():
                if not nets & other_nets:
                    self.error_setting(
                        auth.settings["networks"],
                        auth.entry,
                        "networks",
                        f"authority {auth.name} shares no network with authority {other.name}; "
                        "authorities must reach each other to vote",
                    )
            seen.setdefault(nets, auth)
        for node in expanded:
            nets = set(node.networks)
            if (
                node.entry.role != "authority"
                and authorities
                and not any(nets & set(a.networks) for a in seen.values())
            ):
                self.error_setting(
                    node.settings["networks"],
                    node.entry,
                    "networks",
                    f"{node.name} shares no network with any authority, so it cannot bootstrap",
                )
            impl = node.settings.get("impl")
            if impl is not None and impl.value == "tor":
                for key, bad in (("adversary", True), ("guards", 0)):
                    if (s := node.settings.get(key)) is not None and s.value == bad:
                        self.error_setting(s, node.entry, key, f"{key}: {str(bad).lower()} needs impl "
                                                               "onionlab (a stock tor has no such mode here)")
            if len(relays) < MIN_RELAYS:
                continue
            if (guards := node.settings.get("guards")) and guards.value > (
                near := sum(1 for r in relays if nets & set(r.networks))
            ):
                self.error_setting(
                    guards,
                    node.entry,
                    "guards",
                    f"{node.name} wants {guards.value} guard(s) but "
                    f"only {near} relay(s) share a network with it",
                )
            if (intro := node.settings.get("intro_points")) and intro.value > len(relays):
                self.error_setting(
                    intro,
                    node.entry,
                    "intro_points",
                    f"{intro.value} intro points need as many relays, the topology has {len(relays)}",
                )

    def check_ports(self, node: _Expanded) -> None:
        ports = [(key, node.settings[key]) for key in _PORTS if key in node.settings]
        for i, (key, setting) in enumerate(ports):
            for other_key, other in ports[:i]:
                if setting.value == other.value:
                    blame, blame_key, twin = (
                        (setting, key, other_key) if setting.layer >= other.layer else (other, other_key, key)
                    )
                    self.error_setting(
                        blame,
                        node.entry,
                        blame_key,
                        f"port {setting.value} is also the {twin} of {node.name}; ports must differ",
                    )

    def assign_addresses(
        self, expanded: list[_Expanded], networks: dict[str, _NetSpec], root: yaml.Node
    ) -> dict[tuple[str, str], IPv4Address]:
        """Explicit addresses first, then the lowest free host address per network in node order."""
        assigned: dict[tuple[str, str], IPv4Address] = {}
        taken: dict[str, dict[IPv4Address, str]] = {net: {} for net in networks}
        for node in expanded:
            for net, (address, anode, apath) in node.entry.addresses.items():
                subnet = networks[net].subnet
                if net not in node.networks:
                    self.error(
                        anode,
                        apath,
                        f"{node.name} is not on network {net} (it is on {', '.join(node.networks)})",
                    )
                elif subnet is not None and (problem := _address_problem(address, subnet, net)):
                    self.error(anode, apath, problem)
                elif address in taken[net]:
                    self.error(anode, apath, f"address {address} is already taken by {taken[net][address]}")
                else:
                    taken[net][address] = node.name
                    assigned[node.name, net] = address
        for net, spec in networks.items():
            if spec.subnet is None:
                continue
            gateway = spec.subnet.network_address + 1
            free = (a for a in spec.subnet.hosts() if a != gateway and a not in taken[net])
            members = [n for n in expanded if net in n.networks]
            for node in members:
                if (node.name, net) in assigned:
                    continue
                address = next(free, None)
                if address is None:
                    room = spec.subnet.num_addresses - 3
                    self.error(
                        spec.node or root,
                        spec.path,
                        f"subnet {spec.subnet} of network {net} has room for "
                        f"{room} nodes but {len(members)} are on it",
                    )
                    break
                assigned[node.name, net] = address
        return assigned


def _impl_problem(impl: str, role: str) -> str | None:
    """Why `impl` cannot play `role` (None: it can)."""
    if role in IMPL_ROLES.get(impl, ROLES):
        return None
    return (f"impl '{impl}' cannot run role {role} (only {', '.join(IMPL_ROLES[impl])}): a lab's authorities "
            "exchange votes in onionlab's own format, which tor does not speak")


def _ipv4(value: Any) -> IPv4Address | None:
    try:
        return IPv4Address(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _address_problem(address: IPv4Address, subnet: IPv4Network, net: str) -> str | None:
    if address not in subnet:
        return f"{address} is outside network {net} ({subnet})"
    if address in (subnet.network_address, subnet.broadcast_address):
        return f"{address} is the network or broadcast address of {subnet}"
    if address == subnet.network_address + 1:
        return f"{address} is the gateway of {subnet} (the first address is Docker's)"
    return None


def _entry_path(node: yaml.Node, index: int) -> str:
    """`nodes.<name>` when the entry has a valid name (what people read), else `nodes[<index>]`."""
    if isinstance(node, yaml.MappingNode):
        for knode, vnode in node.value:
            if (
                isinstance(knode, yaml.ScalarNode)
                and knode.value == "name"
                and isinstance(vnode, yaml.ScalarNode)
                and vnode.tag == _STR_TAG
                and _NODE_NAME.fullmatch(vnode.value)
            ):
                return f"nodes.{vnode.value}"
    return f"nodes[{index}]"
