"""Several networks on Swarm, without an engine: the plan names every node on each network
(`<node>.<network>`, an alias of its service there), a relay advertises what its first network's name
resolves to, and a node that shares only another network with a relay gets the relay's name there by
nickname (NodeConfig.dial_names) where the docker backend's plan gives it an address map."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from nodes.config import ConfigError
from nodes.net.dial_names import DialNames, dial_names_for
from nodes.roles.relay import nickname_for, resolve_address
from orchestrator.backends.swarm.material import make_material
from orchestrator.backends.swarm.stackfile import render_stack
from orchestrator.compose import stack_plan
from orchestrator.plan import make_plan
from orchestrator.topology import load_topology, parse_topology

REPO = Path(__file__).resolve().parents[2]
MULTI = REPO / "topologies" / "multi-network.yaml"


def test_the_stack_plan_names_nodes_on_each_network_and_maps_relays_by_nickname():
    topology = load_topology(MULTI)
    plan = stack_plan(topology)
    relays = [n.name for n in topology.nodes_by_role("relay")]
    assert plan.node("relay1").address == "relay1.north"  # what it resolves at start and advertises
    assert (plan.node("hs").address, plan.node("client").address) == ("hs.south", "client.north")
    # each node reaches an authority by its name on the first network they share
    assert [a.address for a in plan.node("hs").authorities] == ["auth1.south", "auth2.south", "auth3.south"]
    assert [a.address for a in plan.node("client").authorities] == [f"auth{i}.north" for i in (1, 2, 3)]
    # the onion service shares only `south` with the relays, which advertise their `north` address
    assert plan.node("hs").dial_names == {nickname_for(r): f"{r}.south" for r in relays}
    for name in ("client", "relay1", "auth1"):  # they reach every relay where it advertises itself
        assert plan.node(name).dial_names == {}, name
    assert all(n.address_map == {} for n in plan.nodes)  # no address is known before deploy time
    assert {n.listen_address for n in plan.nodes} == {"0.0.0.0"}


def test_the_named_plan_mirrors_the_docker_backends_address_map():
    """Who dials a relay elsewhere than where it advertises itself is the same in both plans."""
    topology = load_topology(MULTI)
    docker, swarm = make_plan(topology), stack_plan(topology)
    relay_at = {str(n.address(n.networks[0])): nickname_for(n.name) for n in topology.nodes_by_role("relay")}
    for node in topology.nodes:
        mapped = {relay_at[a] for a in docker.node(node.name).address_map if a in relay_at}
        assert set(swarm.node(node.name).dial_names) == mapped, node.name
    assert docker.node("hs").address_map  # the docker plan does map them: the comparison says something


def test_a_single_network_stack_plan_keeps_plain_service_names():
    plan = stack_plan(load_topology(REPO / "topologies" / "default.yaml"))
    assert plan.node("relay1").address == "relay1"
    assert all(n.dial_names == {} for n in plan.nodes)


def test_relays_the_consensus_cannot_tell_apart_are_refused():
    text = MULTI.read_text().replace("  - {name: relay, role: relay, count: 6}",
                                     "  - {name: relay, role: relay, count: 6}\n"
                                     "  - {name: relay-1, role: relay}")
    topology = parse_topology(text, "clash.yaml")
    with pytest.raises(ValueError, match=r"relays with the same nickname \(relay1\)"):
        stack_plan(topology)
    make_plan(topology)  # the docker backend maps addresses, not nicknames


def test_every_service_has_its_alias_on_each_of_its_networks(tmp_path):
    topology = load_topology(MULTI)
    material = make_material(stack_plan(topology), tmp_path, "the-secret")
    ports = {n.name: {"control_port": 20000 + n.index} for n in topology.nodes}
    stack = json.loads(render_stack(topology, material, ports, {"onionlab.run": "r1"}))
    assert set(stack["networks"]) == {"north", "south"}
    assert all(net["driver"] == "overlay" for net in stack["networks"].values())
    assert stack["services"]["relay1"]["networks"] == {"north": {"aliases": ["relay1.north"]},
                                                       "south": {"aliases": ["relay1.south"]}}
    assert stack["services"]["hs"]["networks"] == {"south": {"aliases": ["hs.south"]}}
    # Swarm adds a task to its DNS once its health check passes, which the image's check (/status at the
    # node's address, a name) never would before the relay has resolved its own name
    assert all(service["healthcheck"] == {"disable": True} for service in stack["services"].values())
    config = json.loads((tmp_path / "material" / "hs" / "config.json").read_text())
    assert config["dial_names"]["relay1"] == "relay1.south"  # reaches the node in its Swarm config


class Entry:
    def __init__(self, nickname: str, address: str, or_port: int) -> None:
        self.nickname, self.address, self.or_port = nickname, address, or_port


class Recorder:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict]] = []

    def emit(self, event: str, **fields: object) -> dict:
        self.records.append((event, fields))
        return fields


async def _resolve(name: str) -> str:
    await trio.lowlevel.checkpoint()
    if name == "relay1.south":
        return "10.0.2.7"
    raise OSError(f"{name!r} does not resolve")


async def test_an_address_is_dialled_at_the_name_of_the_relay_the_consensus_lists_there():
    listed = [Entry("relay1", "10.0.1.7", 9001), Entry("relay2", "10.0.1.8", 9001),
              Entry("gone", "10.0.1.9", 1)]
    events = Recorder()
    names = DialNames({"relay1": "relay1.south", "gone": "gone.south"}, lambda: listed, events, _resolve)
    assert await names.dial_address("10.0.1.7", 9001) == "10.0.2.7"
    assert await names.dial_address("10.0.1.7", 9002) == "10.0.1.7"  # another port: not relay1
    assert await names.dial_address("10.0.1.8", 9001) == "10.0.1.8"  # relay2 is reached where listed
    assert await names.dial_address("192.0.2.1", 9001) == "192.0.2.1"  # listed nowhere
    assert await names.dial_address("10.0.1.9", 1) == "10.0.1.9"  # its name no longer resolves
    assert events.records == [("dial_name_unresolved", {"address": "10.0.1.9", "name": "gone.south",
                                                        "error": "'gone.south' does not resolve"})]
    listed[0] = Entry("relay1", "10.0.1.20", 9001)  # a new consensus: relay1 restarted elsewhere
    assert await names.dial_address("10.0.1.20", 9001) == "10.0.2.7"
    assert await names.dial_address("10.0.1.7", 9001) == "10.0.1.7"


def test_dial_names_follow_the_consensus_held_now_and_exist_only_when_the_plan_names_relays():
    assert dial_names_for({}, lambda: None, Recorder()) is None

    class View:
        routers = (Entry("relay1", "10.0.1.7", 9001),)

    held: list = [None]
    names = dial_names_for({"relay1": "relay1.south"}, lambda: held[0], Recorder())
    assert names is not None and names.name_for("10.0.1.7", 9001) is None  # no consensus yet
    held[0] = View()
    assert names.name_for("10.0.1.7", 9001) == "relay1.south"


async def test_a_relay_learns_its_address_from_its_name_once_swarm_has_it_in_dns(monkeypatch):
    """Swarm adds a task to its DNS once it runs: the first lookups may fail, and the relay tries again."""
    import socket

    config = stack_plan(load_topology(MULTI)).node("relay1")
    assert config.address == "relay1.north"
    asked: list[str] = []

    async def swarm_dns(host, port, **kwargs):
        asked.append(host)
        if len(asked) < 3:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.1.7", port))]

    monkeypatch.setattr(trio.socket, "getaddrinfo", swarm_dns)
    with trio.fail_after(5):
        assert (await resolve_address(config)).address == "10.0.1.7"
    assert asked == ["relay1.north"] * 3

    async def never(host, port, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(trio.socket, "getaddrinfo", never)
    with pytest.raises(ConfigError, match=r"cannot resolve address 'relay1.north' \(for 0.2 s\)"):
        await resolve_address(config, wait=0.2)
