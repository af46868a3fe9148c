"""A run's plan: every node's NodeConfig, decided from the topology before anything runs.

Everything is filled in except the authorities' identity keys, which exist only once `python -m nodes init`
(nodes/init.py) has made them where the nodes keep their state; `Plan.configs(identities)` fills them in. The
plan is plain JSON, holds no secret and travels as it is (the docker backend copies it as a file into the
init container, since a 300-node plan is about 300 KB; the compose and stack exports embed it in the init
service's environment, which holds at most 128 KiB).

The consensus timing is the topology's, made longer for a large lab (orchestrator/scale.py).

Addresses and data dirs are parameters: Docker uses the topology's addresses and `/var/lib/onionlab/<node>`
(the image's state directory), the local backend 127.0.0.x and its run dir, Swarm the service names (and
with several networks each service's name on each network, `network_names`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from nodes.config import AuthorityRef, NodeConfig, ServicePort, Timing
from nodes.init import fill_identities, parse_plan, plan_data
from nodes.roles.relay import nickname_for
from orchestrator.impairments import link_rules
from orchestrator.scale import scaled_timing
from orchestrator.topology import Node, Topology

DATA_ROOT = "/var/lib/onionlab"  # the node image's state directory (images/node/Dockerfile)
INIT_MEMORY = 256 * 2**20  # the one-shot init container's limits (the nodes' come from the topology)
INIT_PIDS = 64
PETNAMES_FILE = "petnames.json"  # in each client's data dir: its petname table (nodes/net/petnames.py)


@dataclass(frozen=True, slots=True)
class Plan:
    lab: str
    nodes: tuple[NodeConfig, ...]  # topology order; every AuthorityRef.identity is "" (made by init)
    petnames: Mapping[str, str] = field(default_factory=dict)  # NAME -> onion service node or onion address

    @property
    def authorities(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes if n.role == "authority")

    def node(self, name: str) -> NodeConfig:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def to_dict(self) -> dict:
        return plan_data(self.lab, list(self.nodes), self.petnames)

    def to_json(self) -> str:
        """Deterministic JSON, one node a line (readable and diffable where it is embedded)."""
        data = self.to_dict()
        lines = ",\n".join(json.dumps(n, sort_keys=True) for n in data["nodes"])
        petnames = (f', "petnames": {json.dumps(data["petnames"], sort_keys=True)}' if "petnames" in data
                    else "")
        return (f'{{"format": {data["format"]}, "lab": {json.dumps(data["lab"])}{petnames}, '
                f'"nodes": [\n{lines}\n]}}\n')

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """The plan in `text`; nodes.init.PlanError says what is wrong with it."""
        lab, configs, petnames = parse_plan(text)
        return cls(lab, tuple(configs), petnames)

    def configs(self, identities: Mapping[str, str]) -> dict[str, NodeConfig]:
        """Every node's complete config by name, given each authority's identity (hex of the Ed25519 public
        key); KeyError when one is missing."""
        return fill_identities(list(self.nodes), identities)


def network_name(node: str, network: str) -> str:
    """A node's host name on one network (Swarm: its service's alias there; node names are DNS labels)."""
    return f"{node}.{network}"


def make_plan(
    topology: Topology,
    *,
    addresses: Mapping[str, str] | None = None,
    data_root: str | os.PathLike[str] = DATA_ROOT,
    socks_address: str | None = None,
    listen_address: str | None = None,
    network_names: bool = False,
) -> Plan:
    """The plan of `topology`. `addresses` maps every node name to the one address it binds, advertises and
    is dialled at (default: the topology's addresses: a node's primary-network address, and each node
    reaches an authority at its address on the first network they share). Data dirs are
    `<data_root>/<node>`. Clients' SOCKS listens on `socks_address` (default: the client's address;
    containers use 0.0.0.0 so that a published port reaches it). Every port listens on `listen_address`
    (default: 0.0.0.0 with the topology's addresses, each node's own address with `addresses`).

    `network_names` (Docker Swarm, several networks: Swarm assigns the addresses at deploy time) names every
    node on each of its networks `<node>.<network>` (its service's alias there) wherever an address would be:
    a node resolves its own at start (a relay advertises what its first network's name resolves to), and
    instead of an address map each node gets the names of the relays it reaches on another network than the
    one they advertise, by nickname (NodeConfig.dial_names)."""
    if network_names and addresses is not None:
        raise ValueError("network_names and addresses exclude each other")
    if addresses is not None and (missing := [n.name for n in topology.nodes if n.name not in addresses]):
        raise ValueError(f"no address for node(s) {', '.join(missing)}")
    t = topology.timing
    timing = Timing(voting_interval=t.voting_interval, vote_delay=t.vote_delay, dist_delay=t.dist_delay)
    authorities = topology.nodes_by_role("authority")
    relays = len(topology.nodes_by_role("relay"))

    def address(node: Node, seen_from: Node) -> str | None:
        """Where `seen_from` reaches `node`: its address on the first network they share (None: none)."""
        if addresses is not None:
            return addresses[node.name]
        shared = next((net for net in seen_from.networks if net in node.networks), None)
        if shared is None:
            return None
        return network_name(node.name, shared) if network_names else str(node.address(shared))

    # Relays and authorities advertise one address (their primary network's); a node that shares only
    # another network with one of them dials it there instead (NodeConfig.address_map). With network_names
    # the advertised address exists only once the relay runs, so the node gets the relay's name there
    # instead and finds the address in the consensus by the relay's nickname (NodeConfig.dial_names).
    servers = [n for n in topology.nodes if n.role in ("authority", "relay")]
    if network_names:
        nicknames = [nickname_for(s.name) for s in servers if s.role == "relay"]
        if clashes := sorted({n for n in nicknames if nicknames.count(n) > 1}):
            raise ValueError(f"relays with the same nickname ({', '.join(clashes)}) cannot be told apart in "
                             "the consensus, which a topology with several networks needs on Swarm")
    own_names = {n.name: network_name(n.name, n.networks[0]) for n in topology.nodes}
    configs = []
    for node in topology.nodes:
        own = address(node, node)
        elsewhere = [(s, advertised, reached) for s in servers
                     if (advertised := address(s, s)) != (reached := address(s, node)) and reached]
        address_map = {} if network_names else {advertised: reached for _, advertised, reached in elsewhere}
        dial_names = {nickname_for(s.name): reached for s, _, reached in elsewhere
                      if s.role == "relay"} if network_names else {}
        optional = {key: value for key in ("guards", "intro_points", "bandwidth", "adversary")
                    if (value := getattr(node, key)) is not None}
        node_timing = scaled_timing(timing if node.descriptor_refresh is None else replace(
            timing, descriptor_refresh=node.descriptor_refresh), relays)
        refs = tuple(AuthorityRef(a.name, address(a, node) or address(a, a), a.dir_port or 0, a.or_port or 0)
                     for a in authorities)
        configs.append(NodeConfig(
            name=node.name, role=node.role, address=own,
            data_dir=os.path.join(os.fspath(data_root), node.name), control_port=node.control_port,
            authorities=refs,
            or_port=node.or_port or 0, dir_port=node.dir_port or 0, timing=node_timing,
            services=tuple(ServicePort(s.port, s.target) for s in node.services),
            socks_port=node.socks_port or 0,
            socks_address=(socks_address or own) if node.role == "client" else "",
            # containers: a node on several networks is reached at each of its addresses
            listen_address=listen_address if listen_address is not None else "0.0.0.0" if addresses is None
            else "", address_map=address_map, dial_names=dial_names, impl=node.impl,
            shaping=link_rules(topology, node.name, own_names if network_names else addresses),
            petnames_file=os.path.join(os.fspath(data_root), node.name, PETNAMES_FILE)
            if node.role == "client" else "", **optional))
    return Plan(topology.name, tuple(configs), dict(topology.petnames))
