"""Static impairments in a topology (`links:`): parsing and its errors (file:line:column), the rules each node
starts with (its config's `shaping`), and how `onionlab graph` draws them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from nodes.config import ConfigError, parse_config
from orchestrator.graph import render_graph
from orchestrator.plan import make_plan
from orchestrator.topology import TopologyError, load_topology, parse_topology

GEO = Path(__file__).resolve().parents[2] / "topologies" / "geo.yaml"

BASE = textwrap.dedent("""\
    name: t
    networks:
      a: {subnet: 10.90.1.0/24}
      b: {subnet: 10.90.2.0/24}
    roles:
      authority: {networks: [a, b]}
      relay: {networks: [a, b]}
    nodes:
      - {name: auth, role: authority, count: 3}
      - {name: relay, role: relay, count: 3}
      - {name: hs, role: onion_service, networks: [b], services: [{port: 80, target: http}]}
      - {name: client, role: client, networks: [a]}
    """)


def test_geo_links_become_each_nodes_starting_rules() -> None:
    topology = load_topology(GEO)
    assert len(topology.links) == 3
    europe_asia = topology.links[1]
    assert europe_asia.between == (("eu1", "eu2", "dir1", "hs"), ("asia1", "asia2", "dir3", "client"))
    assert (europe_asia.latency, europe_asia.jitter, europe_asia.loss) == (0.12, 0.015, 0.005)
    assert topology.links[2].bandwidth == 20e6 / 8
    plan = make_plan(topology)
    address = {n.name: str(n.address()) for n in topology.nodes}
    hs = {r["id"]: r for r in plan.node("hs").shaping}
    assert set(hs) == {"link0", "link1"}
    assert hs["link1"]["peers"] == sorted(address[n] for n in ("asia1", "asia2", "dir3", "client"))
    assert hs["link1"]["delay"] == 0.12 and hs["link1"]["loss"] == 0.005
    client = {r["id"]: r for r in plan.node("client").shaping}
    assert client["link2"]["rate"] == 2.5e6 and client["link2"]["peers"] == sorted(
        address[n] for n in ("us1", "us2", "dir2"))
    # the local backend's addresses are the ones its rules name
    local = {n.name: f"127.0.0.{i + 2}" for i, n in enumerate(topology.nodes)}
    rules = make_plan(topology, addresses=local).node("hs").shaping
    assert rules[0]["peers"] == sorted(local[n] for n in ("us1", "us2", "dir2"))
    # every config carries its rules and a node reads them back
    config = plan.node("hs")
    assert parse_config(config.to_json()).shaping == config.shaping


def test_sides_are_networks_roles_entries_or_nodes() -> None:
    text = BASE + textwrap.dedent("""\
        links:
          - {between: [a, b], latency: 20ms}
          - {between: [client, [hs, relay1]], loss: 1%, bandwidth: 1mbit}
          - {between: [authority, relay], jitter: 0ms, latency: 1s}
        """)
    links = parse_topology(text).links
    assert set(links[0].between[0]) == {"auth1", "auth2", "auth3", "relay1", "relay2", "relay3", "client"}
    assert links[1].between == (("client",), ("hs", "relay1")) and links[1].bandwidth == 125000.0
    assert links[2].between[0] == ("auth1", "auth2", "auth3") and links[2].latency == 1.0
    # a node on both sides gets a rule for the others only
    rules = make_plan(parse_topology(text)).node("relay1").shaping
    assert all(str(parse_topology(text).node("relay1").address("a")) not in r["peers"] for r in rules)


@pytest.mark.parametrize(("links", "message"), [
    ("[{between: [client, hz], latency: 10ms}]",
     "lab.yaml:13:28: links[0].between[1]: no node, nodes: entry, network or role named 'hz' (expected one "
     "of: authority, relay, onion_service, client, a, b, auth, hs, auth1"),
    ("[{between: [client, hs]}]", "lab.yaml:13:9: links[0]: a link needs latency, jitter, loss or bandwidth"),
    ("[{between: [client, hs], latency: 10ms, jitter: 20ms}]",
     "lab.yaml:13:56: links[0].jitter: jitter must not exceed latency"),
    ("[{between: [client, hs], latency: 10}]", "links[0].latency: expected a latency such as '80ms', got 10"),
    ("[{between: [client, hs], loss: 100%}]", "links[0].loss: a loss below 100%"),
    ("[{between: [client], loss: 1%}]", "links[0].between: expected two sides"),
    ("[{between: [hs, hs], loss: 1%}]", "links[0].between: a link joins two different nodes (hs twice)"),
    ("[{between: [hs, client], delay: 1ms}]", "links[0].delay"),
    ("{a: b}", "links: expected a list of links"),
])
def test_link_errors_name_the_file_line_and_field(links: str, message: str) -> None:
    with pytest.raises(TopologyError) as e:
        parse_topology(BASE + f"links: {links}\n", "lab.yaml")
    assert message in str(e.value)


def test_graph_draws_the_links_with_their_impairments() -> None:
    topology = load_topology(GEO)
    mermaid = render_graph(topology, "mermaid")
    assert '-.-|"latency 120ms, jitter 15ms, loss 0.5%"|' in mermaid
    assert mermaid.count('{{"asia, dir3, client"}}') == 1  # one box per side, however often it is named
    dot = render_graph(topology, "dot")
    assert 'label="latency 90ms, jitter 10ms, bandwidth 20mbit", style=dashed' in dot
    plain = parse_topology(BASE)
    assert "-.-" not in render_graph(plain, "mermaid") and "dashed" not in render_graph(plain, "dot")
    two_networks = parse_topology(BASE + "links: [{between: [a, b], latency: 20ms}]\n")
    assert '  net0 -.-|"latency 20ms"| net1' in render_graph(two_networks, "mermaid")


def test_a_config_with_a_bad_rule_is_refused() -> None:
    config = make_plan(load_topology(GEO)).node("hs")
    text = config.to_json().replace('"delay": 0.04', '"delay": -1')
    with pytest.raises(ConfigError, match=r"shaping\[0\]: delay"):
        parse_config(text, "hs.json")
