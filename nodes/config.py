"""A node's configuration: a JSON file the orchestrator writes, read by `python -m nodes ROLE --config F`.

The file holds no secret: every key lives in the node's data directory (`<data_dir>/keys/`); `nodes init`
makes the authorities' (the other nodes' configs name them), relays and onion services make theirs there
on first start.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

ROLES = ("authority", "relay", "onion_service", "client")
# What plays a node: our own node software, or a stock C tor (Debian's package; nodes/roles/tor_node.py).
IMPLS = ("onionlab", "tor")
# The roles each implementation can play: tor is never an authority (our authorities vote in our own format).
IMPL_ROLES = {"onionlab": ROLES, "tor": ("relay", "onion_service", "client")}


class ConfigError(ValueError):
    """A config file that is missing, unreadable or has a bad field; the message names the file and field."""


@dataclass(frozen=True, slots=True)
class AuthorityRef:
    """How a node reaches and recognises an authority: the fields of a torrc DirAuthority line."""

    name: str
    address: str
    dir_port: int
    or_port: int
    v3ident: str = ""  # hex SHA-1 of its v3 identity key: the key that certifies its consensus-signing key
    fingerprint: str = ""  # hex SHA-1 of its RSA relay identity: what its OR port proves in CERTS


@dataclass(frozen=True, slots=True)
class ServicePort:
    port: int  # the virtual port clients connect to on the onion
    target: str  # "http", "echo" or "host:port"


@dataclass(frozen=True, slots=True)
class Timing:
    voting_interval: int = 10  # seconds between consensus rounds (C tor's TestingTorNetwork floor)
    vote_delay: int = 2  # seconds the authorities give each other to exchange votes
    dist_delay: int = 2  # seconds to exchange consensus signatures
    descriptor_refresh: int = 30  # seconds between relay descriptor uploads


@dataclass(frozen=True, slots=True)
class NodeConfig:
    name: str
    role: str
    address: str  # the IP this node binds to and advertises
    data_dir: str
    control_port: int
    authorities: tuple[AuthorityRef, ...]
    or_port: int = 0  # authorities and relays
    dir_port: int = 0  # authorities
    timing: Timing = field(default_factory=Timing)
    guards: int = 3  # 0: no entry guards, a fresh first hop per circuit (nodes/net/guards.py NoGuards)
    bandwidth: int = 1_000_000  # relays: advertised bytes/s, their weight in path selection
    intro_points: int = 3  # onion services
    services: tuple[ServicePort, ...] = ()  # onion services
    socks_port: int = 0  # clients
    socks_address: str = ""  # clients: where SOCKS listens (default: address)
    listen_address: str = ""  # where every port listens (default: address); "0.0.0.0" in containers
    # Another node's advertised address -> the address of it this node can reach (a relay on several
    # networks advertises one address; nodes that share another network with it dial that one instead).
    address_map: dict[str, str] = field(default_factory=dict)
    # Swarm, several networks: the same where addresses are known only at run time. A relay's nickname ->
    # the host name that reaches it here (its service's alias on the network we share, e.g. relay1.south);
    # the consensus says which nickname an address is (nodes/net/dial_names.py).
    dial_names: dict[str, str] = field(default_factory=dict)
    impl: str = "onionlab"  # "tor": a stock tor plays the role (`python -m nodes tor --config F`)
    # Link shaping from the start (the topology's `links:`): nodes/net/shaper.py rules, as JSON objects
    shaping: tuple[dict, ...] = ()
    adversary: bool = False  # relays: one of the attacker's (nodes/net/adversary.py)
    petnames_file: str = ""  # clients: the petname table, NAME.pet -> onion (nodes/net/petnames.py)

    @property
    def bind_address(self) -> str:
        return self.listen_address or self.address

    @property
    def source_address(self) -> str | None:
        """Where this node's outgoing links come from: its own address when it listens on that alone (the
        local backend's 127.0.0.x, where the kernel would pick 127.0.0.1 for every node), so that every
        peer sees who connected; None in a container, where the kernel picks the node's address on the
        network it dials into."""
        return None if self.listen_address else self.address

    @property
    def command(self) -> str:
        """The word after `python -m nodes`: the role, or `tor` for a node that a stock tor runs."""
        return command_word(self.role, self.impl)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def command_word(role: str, impl: str) -> str:
    """`python -m nodes WORD --config F`: every backend and export starts a node with this word."""
    return "tor" if impl == "tor" else role


def _build(cls, data: object, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object")
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}")
    try:
        return cls(**data)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None


def parse_config(text: str, source: str = "<config>") -> NodeConfig:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{source}:{e.lineno}:{e.colno}: not JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a JSON object")
    data = dict(data)
    data["authorities"] = tuple(_build(AuthorityRef, a, f"{source}: authorities[{i}]")
                                for i, a in enumerate(data.get("authorities", [])))
    data["services"] = tuple(_build(ServicePort, s, f"{source}: services[{i}]")
                             for i, s in enumerate(data.get("services", [])))
    data["timing"] = _build(Timing, data.get("timing", {}), f"{source}: timing")
    for key, what in (("address_map", "address"), ("dial_names", "name")):
        mapping = data.get(key, {})
        if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in mapping.items()):
            raise ConfigError(f"{source}: {key}: expected an object of {what} strings")
    data["shaping"] = _shaping(data.get("shaping", []), source)
    config = _build(NodeConfig, data, source)
    if config.role not in ROLES:
        raise ConfigError(f"{source}: role: expected one of {ROLES}, got {config.role!r}")
    if config.impl not in IMPLS:
        raise ConfigError(f"{source}: impl: expected one of {IMPLS}, got {config.impl!r}")
    if config.role not in IMPL_ROLES[config.impl]:
        raise ConfigError(f"{source}: impl: {config.impl} cannot run role {config.role} (only "
                          f"{', '.join(IMPL_ROLES[config.impl])})")
    return config


def _shaping(rules: object, source: str) -> tuple[dict, ...]:
    from nodes.net.shaper import RuleError, parse_rule

    if not isinstance(rules, list):
        raise ConfigError(f"{source}: shaping: expected a list of rules")
    for i, rule in enumerate(rules):
        try:
            parse_rule(rule, static=True)
        except RuleError as e:
            raise ConfigError(f"{source}: shaping[{i}]: {e}") from None
    return tuple(rules)


def load_config(path: str | Path) -> NodeConfig:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    return parse_config(text, str(path))
