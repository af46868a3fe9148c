"""Topology model: loading, inheritance, expansion, addresses, every kind of error, schema agreement."""

import json
from dataclasses import fields
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.topology import (
    APPLIES,
    BUILTIN_DEFAULTS,
    BUILTIN_ROLE_DEFAULTS,
    ENTRY_KEYS,
    ROLES,
    SETTINGS,
    TOP_KEYS,
    Service,
    Timing,
    TopologyError,
    load_topology,
    parse_topology,
    size_text,
)

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGIES = ROOT / "topologies"
SCHEMA = json.loads((ROOT / "orchestrator" / "topology.schema.json").read_text())

# Line numbers in the expected messages below refer to this text.
LAB = """\
name: lab
networks:
  net: {subnet: 10.0.0.0/24}
roles:
  client: {socks_port: 9050}
nodes:
  - name: auth
    role: authority
    count: 3
  - name: relay
    role: relay
    count: 6
  - name: hs
    role: onion_service
    services:
      - {port: 80, target: http}
  - name: client
    role: client
"""


def problems(text: str) -> list[str]:
    with pytest.raises(TopologyError) as info:
        parse_topology(text, "lab.yaml")
    return [str(p) for p in info.value.problems]


def edit(old: str, new: str, text: str = LAB) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


# ------------------------------------------------------------------------------------------ valid files


def test_default_topology_loads_and_expands():
    topo = load_topology(TOPOLOGIES / "default.yaml")
    assert [n.name for n in topo.nodes] == [
        "auth1",
        "auth2",
        "auth3",
        *(f"relay{i}" for i in range(1, 7)),
        "hs",
        "client",
    ]
    assert [len(topo.nodes_by_role(r)) for r in ROLES] == [3, 6, 1, 1]
    assert [n.index for n in topo.nodes] == list(range(11))
    assert [net.name for net in topo.networks] == ["onionnet"]
    assert [str(n.address()) for n in topo.nodes] == [f"10.77.0.{i}" for i in range(2, 13)]
    hs = topo.node("hs")
    assert hs.services == (Service(80, "http"), Service(7, "echo"))
    assert (hs.intro_points, hs.guards, hs.or_port, hs.socks_port) == (3, 1, None, None)
    assert topo.node("client").socks_port == 9050
    assert topo.node("auth2").dir_port == 9030
    assert topo.node("relay1").bandwidth == 1_000_000
    assert topo.node("relay1").descriptor_refresh == 30 and topo.node("hs").descriptor_refresh is None
    assert topo.timing == Timing()
    assert topo.source.endswith("default.yaml")


def test_multi_network_topology_bridges_through_relays():
    topo = load_topology(TOPOLOGIES / "multi-network.yaml")
    assert [net.name for net in topo.networks] == ["north", "south"]
    for node in topo.nodes_by_role("relay") + topo.nodes_by_role("authority"):
        assert node.networks == ("north", "south")
        assert node.address("north") in topo.network("north").subnet
        assert node.address("south") in topo.network("south").subnet
    client, hs = topo.node("client"), topo.node("hs")
    assert client.networks == ("north",) and hs.networks == ("south",)
    assert str(client.address()) == "10.78.1.11" and str(hs.address()) == "10.78.2.11"


def test_inheritance_order_builtin_defaults_roles_node():
    topo = parse_topology(
        edit("  client: {socks_port: 9050}\n", "  relay: {control_port: 2000, bandwidth: 5}\n")
        .replace("roles:", "defaults: {control_port: 1000, or_port: 7000, socks_port: 9999}\nroles:")
        .replace("    count: 6\n", "    count: 6\n    control_port: 3000\n")
    )
    assert topo.node("relay1").control_port == 3000  # node entry over role
    assert topo.node("relay1").bandwidth == 5  # role over built-in
    assert topo.node("auth1").control_port == 1000  # defaults over built-in
    assert topo.node("auth1").or_port == 7000
    assert topo.node("auth1").dir_port == BUILTIN_DEFAULTS["dir_port"]
    assert topo.node("client").socks_port == 9999
    assert topo.node("client").or_port is None  # defaults never give a role a setting it lacks
    assert parse_topology(LAB).node("hs").control_port == BUILTIN_DEFAULTS["control_port"]


def test_lists_are_replaced_not_merged():
    text = edit(
        "  net: {subnet: 10.0.0.0/24}\n", "  net: {subnet: 10.0.0.0/24}\n  b: {subnet: 10.1.0.0/24}\n"
    )
    text = edit("  client: {socks_port: 9050}\n", "  client: {networks: [net, b]}\n", text)
    text = edit("    role: client\n", "    role: client\n    networks: [b, net]\n", text)
    topo = parse_topology(text)
    assert topo.node("client").networks == ("b", "net")
    assert topo.node("hs").networks == ("net",)  # the first network is the default


def test_count_expansion_and_stable_indexes():
    topo = parse_topology(edit("    count: 6\n", "    count: 12\n"))
    relays = topo.nodes_by_role("relay")
    assert [n.name for n in relays] == [f"relay{i}" for i in range(1, 13)]
    assert [n.index for n in relays] == list(range(3, 15))
    assert topo.node("hs").index == 15
    explicit = parse_topology(edit("    count: 3\n", "    count: 1\n"))
    assert explicit.nodes[0].name == "auth"
    assert parse_topology(LAB) == parse_topology(LAB)


def test_addresses_skip_the_gateway_and_honour_static_ones():
    topo = parse_topology(edit("    role: client\n", "    role: client\n    addresses: {net: 10.0.0.2}\n"))
    assert str(topo.node("client").address("net")) == "10.0.0.2"
    assert str(topo.node("auth1").address()) == "10.0.0.3"
    assert topo.network("net").gateway == IPv4Address("10.0.0.1")
    assert len({n.address() for n in topo.nodes}) == len(topo.nodes)
    with pytest.raises(KeyError):
        topo.node("client").address("elsewhere")


def test_several_networks_number_their_addresses_independently():
    text = edit(
        "  net: {subnet: 10.0.0.0/24}\n", "  net: {subnet: 10.0.0.0/24}\n  b: {subnet: 10.1.0.0/28}\n"
    )
    text = edit("    role: relay\n", "    role: relay\n    networks: [b, net]\n", text)
    text = edit("    role: authority\n", "    role: authority\n    networks: [net, b]\n", text)
    topo = parse_topology(text)
    assert [str(n.address("b")) for n in topo.nodes_by_role("relay")] == [f"10.1.0.{i}" for i in range(5, 11)]
    assert str(topo.node("relay1").address()) == "10.1.0.5"  # primary = first listed
    assert str(topo.node("relay1").address("net")) == "10.0.0.5"
    assert str(topo.node("hs").address()) == "10.0.0.11"


def test_yaml_anchors_and_merge_keys():
    text = edit("roles:\n", "x-common: &common {image: 'lab:1', control_port: 8000}\nroles:\n")
    with pytest.raises(TopologyError, match="unknown key 'x-common'"):
        parse_topology(text)
    text = edit(
        "  client: {socks_port: 9050}\n", "  client: {socks_port: 9050}\n  relay: &relay {bandwidth: 7}\n"
    )
    text = edit(
        "    count: 6\n",
        "    count: 6\n    <<: [*relay, {bandwidth: 8, image: 'x:1'}]\n    image: 'y:2'\n",
        text,
    )
    relay = parse_topology(text).node("relay1")
    assert (relay.bandwidth, relay.image) == (7, "y:2")  # explicit keys win, earlier merge sources win


def test_to_dict_is_plain_data_and_parses_back():
    topo = load_topology(TOPOLOGIES / "default.yaml")
    data = topo.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data) <= set(TOP_KEYS)
    assert data["nodes"][9] == {
        "name": "hs",
        "role": "onion_service",
        "image": "onionlab/node:latest",
        "impl": "onionlab",
        "networks": ["onionnet"],
        "addresses": {"onionnet": "10.77.0.11"},
        "control_port": 9052,
        "guards": 1,
        "intro_points": 3,
        "services": [{"port": 80, "target": "http"}, {"port": 7, "target": "echo"}],
        "memory": "256m",
        "pids": 128,
    }
    assert parse_topology(yaml.safe_dump(data, sort_keys=False)) == topo


def test_impl_inherits_like_every_setting():
    topo = parse_topology(edit("  client: {socks_port: 9050}", "  client: {socks_port: 9050, impl: tor}")
                          + "  - {name: ours, role: client, impl: onionlab}\n")
    assert {n.name: n.impl for n in topo.nodes if n.role == "client"} == {"client": "tor", "ours": "onionlab"}
    assert {n.impl for n in topo.nodes if n.role != "client"} == {"onionlab"}
    assert topo.node("client").to_dict()["impl"] == "tor"
    assert parse_topology(yaml.safe_dump(topo.to_dict(), sort_keys=False)) == topo


def test_lookups():
    topo = parse_topology(LAB)
    with pytest.raises(ValueError, match="unknown role 'relays'"):
        topo.nodes_by_role("relays")
    with pytest.raises(KeyError):
        topo.node("nobody")
    with pytest.raises(KeyError):
        topo.network("nowhere")


def test_service_targets():
    assert Service(80, "http").address is None and Service(80, "http").builtin
    assert Service(80, "web.lab:8080").address == ("web.lab", 8080)
    assert Service(22, "[::1]:22").address == ("::1", 22)
    services = (
        parse_topology(
            edit(
                "{port: 80, target: http}",
                "{port: 80, target: '10.0.0.9:80'}\n      - {port: 22, target: '[::1]:22'}",
            )
        )
        .node("hs")
        .services
    )
    assert [s.address for s in services] == [("10.0.0.9", 80), ("::1", 22)]


# ------------------------------------------------------------------------------------------------ errors

ERRORS = {
    "syntax": (
        edit("    role: relay\n", "   role: relay\n"),
        "lab.yaml:11:4: invalid YAML: expected <block end>, but found '<block mapping start>' "
        "(while parsing a block collection on line 7)",
    ),
    "unclosed flow": (
        edit("{port: 80, target: http}", "{port: 80, target: http"),
        "lab.yaml:17:9: invalid YAML: expected ',' or '}', but got ':' (while parsing a flow mapping on "
        "line 16)",
    ),
    "unknown key with suggestion": (
        edit("    count: 6", "    cuont: 6"),
        "lab.yaml:12:5: nodes.relay.cuont: unknown key 'cuont' (did you mean 'count'?)",
    ),
    "unknown top-level key": (
        edit("roles:", "role:"),
        "lab.yaml:4:1: role: unknown key 'role' (did you mean 'roles'?)",
    ),
    "unknown key without a close match": (
        edit("    count: 6", "    zzz: 6"),
        "lab.yaml:12:5: nodes.relay.zzz: unknown key 'zzz' (expected one of: name, role, count, addresses, "
        + ", ".join(SETTINGS)
        + ")",
    ),
    "wrong type": (
        edit("count: 6", "count: six"),
        "lab.yaml:12:12: nodes.relay.count: expected a positive integer, got 'six'",
    ),
    "mapping expected": (
        edit("  net: {subnet: 10.0.0.0/24}", "  net: [10.0.0.0/24]"),
        "lab.yaml:3:8: networks.net: expected a mapping, got a list",
    ),
    "quoted port": (
        edit("socks_port: 9050", "socks_port: '9050'"),
        "lab.yaml:5:24: roles.client.socks_port: expected a port number from 1 to 65535, got '9050'",
    ),
    "boolean port": (
        edit("socks_port: 9050", "socks_port: yes"),
        "lab.yaml:5:24: roles.client.socks_port: expected a port number from 1 to 65535, got true",
    ),
    "port out of range": (
        edit("socks_port: 9050", "socks_port: 65536"),
        "lab.yaml:5:24: roles.client.socks_port: expected at most 65535, got 65536",
    ),
    "duplicate key": (
        edit("    count: 6\n", "    count: 6\n    count: 7\n"),
        "lab.yaml:13:5: nodes.relay.count: duplicate key 'count' (first defined on line 12)",
    ),
    "bad count": (
        edit("count: 6", "count: -1"),
        "lab.yaml:12:12: nodes.relay.count: expected a positive integer, got -1",
    ),
    "zero count": (
        edit("count: 6", "count: 0"),
        "lab.yaml:12:12: nodes.relay.count: expected a positive integer, got 0",
    ),
    "huge count": (
        edit("count: 6", "count: 100000"),
        "lab.yaml:12:12: nodes.relay.count: expected at most 1000, got 100000",
    ),
    "unknown network": (
        edit("    role: client\n", "    role: client\n    networks: [nett]\n"),
        "lab.yaml:19:16: nodes.client.networks[0]: unknown network 'nett' (did you mean 'net'?)",
    ),
    "duplicate name": (
        edit("  - name: client\n    role: client\n", "  - name: relay3\n    role: relay\n"),
        "lab.yaml:17:11: nodes.relay3.name: duplicate node name 'relay3' (already used by the node on "
        "line 10)",
    ),
    "bad name": (
        edit("name: hs", "name: Web_1"),
        "lab.yaml:13:11: nodes[2].name: expected a node name (lowercase letters, digits and -, starting "
        "with a letter), got 'Web_1'",
    ),
    "unknown role": (
        edit("role: relay\n", "role: relya\n"),
        "lab.yaml:11:11: nodes.relay.role: unknown role 'relya' (did you mean 'relay'?)",
    ),
    "unknown role under roles": (
        edit("  client:", "  clinet:"),
        "lab.yaml:5:3: roles.clinet: unknown role 'clinet' (did you mean 'client'?)",
    ),
    "missing role": (
        edit("    role: client\n", ""),
        "lab.yaml:17:5: nodes.client: missing required key 'role'",
    ),
    "no authority": (
        edit("role: authority", "role: relay"),
        "lab.yaml:7:3: nodes: no authority: a topology needs at least one node with role authority",
    ),
    "too few relays": (
        edit("count: 6", "count: 2"),
        "lab.yaml:7:3: nodes: 2 relay(s): a topology needs at least 3 (role relay) so that a circuit "
        "can use 3 different relays",
    ),
    "setting of another role": (
        edit("{socks_port: 9050}", "{socks_port: 9050, or_port: 9001}"),
        "lab.yaml:5:30: roles.client.or_port: 'or_port' does not apply to role client (only to "
        "authority, relay)",
    ),
    "port clash": (
        edit("    role: client\n", "    role: client\n    control_port: 9050\n"),
        "lab.yaml:19:19: nodes.client.control_port: port 9050 is also the socks_port of client; ports "
        "must differ",
    ),
    "port clash with a built-in default": (
        edit("  client: {socks_port: 9050}", "  authority: {dir_port: 9001}"),
        "lab.yaml:5:25: roles.authority.dir_port: port 9001 is also the or_port of auth1; ports must differ",
    ),
    "no services": (
        edit("    services:\n      - {port: 80, target: http}\n", ""),
        "lab.yaml:13:5: nodes.hs.services: an onion service needs at least one service, "
        "e.g. services: [{port: 80, target: http}]",
    ),
    "empty services": (
        edit("    services:\n      - {port: 80, target: http}\n", "    services: []\n"),
        "lab.yaml:15:15: nodes.hs.services: expected at least one service, e.g. {port: 80, target: http}",
    ),
    "bad target": (
        edit("target: http", "target: htp"),
        "lab.yaml:16:28: nodes.hs.services[0].target: expected http, echo or host:port, got 'htp' "
        "(did you mean 'http'?)",
    ),
    "bad target port": (
        edit("target: http", "target: 'web:0'"),
        "lab.yaml:16:28: nodes.hs.services[0].target: target 'web:0': expected a port number from 1 to 65535 "
        "after ':'",
    ),
    "duplicate service port": (
        edit("{port: 80, target: http}", "{port: 80, target: http}\n      - {port: 80, target: echo}"),
        "lab.yaml:17:16: nodes.hs.services[1].port: service port 80 is already used (line 16)",
    ),
    "host bits": (
        edit("10.0.0.0/24", "10.0.0.1/24"),
        "lab.yaml:3:17: networks.net.subnet: expected an IPv4 subnet such as 10.77.0.0/24, got '10.0.0.1/24' "
        "(10.0.0.1/24 has host bits set)",
    ),
    "ipv6": (
        edit("10.0.0.0/24", "'fd00::/64'"),
        "lab.yaml:3:17: networks.net.subnet: only IPv4 subnets are supported, got 'fd00::/64'",
    ),
    "overlap": (
        edit(
            "  net: {subnet: 10.0.0.0/24}\n", "  net: {subnet: 10.0.0.0/24}\n  b: {subnet: 10.0.0.128/25}\n"
        ),
        "lab.yaml:4:15: networks.b.subnet: 10.0.0.128/25 overlaps network net (10.0.0.0/24)",
    ),
    "subnet full": (
        edit("10.0.0.0/24", "10.0.0.0/29"),
        "lab.yaml:3:17: networks.net.subnet: subnet 10.0.0.0/29 of network net has room for 5 nodes but "
        "11 are on it",
    ),
    "voting interval": (
        edit("roles:", "timing: {voting_interval: 11}\nroles:"),
        "lab.yaml:4:27: timing.voting_interval: must divide a day (86400 s) evenly, got 11",
    ),
    "voting interval under tor's floor": (
        edit("roles:", "timing: {voting_interval: 4}\nroles:"),
        "lab.yaml:4:27: timing.voting_interval: expected a number of seconds >= 10 (tor's floor), got 4",
    ),
    "vote and dist delays": (
        edit("roles:", "timing:\n  vote_delay: 5\n  dist_delay: 4\nroles:"),
        "lab.yaml:6:15: timing.dist_delay: vote_delay + dist_delay must fit in four fifths of "
        "voting_interval "
        "(5 + 4 > 0.8 * 10)",
    ),
    "HS period is derived": (
        edit("roles:", "timing: {hs_period_minutes: 10}\nroles:"),
        "lab.yaml:4:10: timing.hs_period_minutes: is no longer set: the onion-service time period is 24 "
        "voting intervals and starts 12 voting intervals after the epoch, as in C tor with TestingTorNetwork "
        "(docs/tor-interop.md); change voting_interval instead",
    ),
    "guards beyond reach": (
        edit("{socks_port: 9050}", "{socks_port: 9050, guards: 7}"),
        "lab.yaml:5:38: roles.client.guards: client wants 7 guard(s) but only 6 relay(s) share a "
        "network with it",
    ),
    "intro points beyond relays": (
        edit("    role: onion_service\n", "    role: onion_service\n    intro_points: 7\n"),
        "lab.yaml:15:19: nodes.hs.intro_points: 7 intro points need as many relays, the topology has 6",
    ),
    "cut off from authorities": (
        edit("  net: {subnet: 10.0.0.0/24}\n", "  net: {subnet: 10.0.0.0/24}\n  b: {subnet: 10.1.0.0/24}\n")
        .replace("    role: client\n", "    role: client\n    networks: [b]\n")
        .replace("    role: relay\n", "    role: relay\n    networks: [net, b]\n"),
        "lab.yaml:21:15: nodes.client.networks: client shares no network with any authority, so it cannot "
        "bootstrap",
    ),
    "authorities apart": (
        edit(
            "  net: {subnet: 10.0.0.0/24}\n", "  net: {subnet: 10.0.0.0/24}\n  b: {subnet: 10.1.0.0/24}\n"
        ).replace("    count: 3\n", "    count: 3\n  - {name: far, role: authority, networks: [b]}\n"),
        "lab.yaml:11:44: nodes.far.networks: authority far shares no network with authority auth1; "
        "authorities must reach each other to vote",
    ),
    "addresses with count": (
        edit("    count: 6\n", "    count: 6\n    addresses: {net: 10.0.0.9}\n"),
        "lab.yaml:13:5: nodes.relay.addresses: 'addresses' needs count: 1 (each node needs its own address)",
    ),
    "gateway address": (
        edit("    role: client\n", "    role: client\n    addresses: {net: 10.0.0.1}\n"),
        "lab.yaml:19:22: nodes.client.addresses.net: 10.0.0.1 is the gateway of 10.0.0.0/24 (the first "
        "address is Docker's)",
    ),
    "address outside": (
        edit("    role: client\n", "    role: client\n    addresses: {net: 10.9.0.1}\n"),
        "lab.yaml:19:22: nodes.client.addresses.net: 10.9.0.1 is outside network net (10.0.0.0/24)",
    ),
    "address taken": (
        edit("    role: client\n", "    role: client\n    addresses: {net: 10.0.0.9}\n").replace(
            "    role: onion_service\n", "    role: onion_service\n    addresses: {net: 10.0.0.9}\n"
        ),
        "lab.yaml:20:22: nodes.client.addresses.net: address 10.0.0.9 is already taken by hs",
    ),
    "not an address": (
        edit("    role: client\n", "    role: client\n    addresses: {net: 10.0.0}\n"),
        "lab.yaml:19:22: nodes.client.addresses.net: expected an IPv4 address, got '10.0.0'",
    ),
    "unknown tag": (
        edit("count: 6", "count: !big 6"),
        "lab.yaml:12:12: nodes.relay.count: cannot read this value: could not determine a constructor "
        "for the tag '!big'",
    ),
    "merge loop": (
        edit("  - name: client\n", "  - &loop\n    <<: *loop\n    name: client\n"),
        "lab.yaml:17:5: nodes.client: a merge key (<<) refers to the mapping that contains it",
    ),
    "unknown impl": (
        edit("    role: client\n", "    role: client\n    impl: torr\n"),
        "lab.yaml:19:11: nodes.client.impl: unknown impl 'torr' (did you mean 'tor'?)",
    ),
    "impl not a string": (
        edit("    role: client\n", "    role: client\n    impl: [tor]\n"),
        "lab.yaml:19:11: nodes.client.impl: expected one of onionlab, tor, got a list",
    ),
    "tor authorities": (  # `defaults` is blamed, once, for the first node it cannot be
        edit("roles:\n", "defaults: {impl: tor}\nroles:\n"),
        "lab.yaml:4:18: defaults.impl: impl 'tor' cannot run role authority (only relay, onion_service, "
        "client): a lab's authorities exchange votes in onionlab's own format, which tor does not speak",
    ),
    "empty file": ("", "lab.yaml:1:1: empty file: a topology needs 'name' and 'nodes'"),
    "not a mapping": ("- a\n", "lab.yaml:1:1: expected a mapping, got a list"),
    "two documents": (
        LAB + "---\nname: other\n",
        "lab.yaml:19:1: invalid YAML: expected a single document in the stream, but found another document",
    ),
    "control character": ("name: a\x07\n", "lab.yaml:1:8: invalid YAML: special characters are not allowed"),
}


@pytest.mark.parametrize("text, expected", ERRORS.values(), ids=ERRORS.keys())
def test_error_names_file_line_column_and_field(text, expected):
    assert problems(text) == [expected]


def test_every_problem_is_reported_at_once_in_file_order():
    text = edit("count: 6", "count: -1").replace("role: client\n", "role: clint\n").replace("net]", "x]")
    text = edit("  client: {socks_port: 9050}", "  client: {socks_port: 9050, bogus: 1}", text)
    assert [p.split(": ")[0] for p in problems(text)] == ["lab.yaml:5:30", "lab.yaml:12:12", "lab.yaml:18:11"]


def test_an_entry_with_count_reports_its_problem_once():
    text = edit("  client: {socks_port: 9050}", "  relay: {control_port: 9001}")
    assert problems(text) == [
        "lab.yaml:5:25: roles.relay.control_port: port 9001 is also the or_port of relay1; ports must differ"
    ]


def test_topology_error_is_a_value_error_with_structured_problems():
    with pytest.raises(ValueError) as info:
        parse_topology(edit("count: 6", "count: -1"), "x.yaml")
    (problem,) = info.value.problems
    assert (problem.filename, problem.line, problem.column, problem.path) == (
        "x.yaml",
        12,
        12,
        "nodes.relay.count",
    )


def test_load_topology_names_the_file(tmp_path):
    path = tmp_path / "lab.yaml"
    path.write_text(edit("count: 6", "count: -1"))
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    assert str(info.value) == f"{path}:12:12: nodes.relay.count: expected a positive integer, got -1"
    path.write_bytes(b"name: lab\nnodes: [\xff]\n")
    with pytest.raises(TopologyError, match=r"lab.yaml:2:9: not valid UTF-8$"):
        load_topology(path)
    with pytest.raises(TopologyError, match=r"missing.yaml: cannot read: No such file or directory$"):
        load_topology(tmp_path / "missing.yaml")


def test_deep_nesting_is_a_topology_error():
    with pytest.raises(TopologyError, match="nested too deeply"):
        parse_topology("name: lab\nnodes: " + "[" * 5000)


_JUNK = list(":-[]{}&*!|>'\"#,?<%@` \t\n0aZ")


@given(st.data())
def test_any_text_gives_a_model_or_a_topology_error(data):
    text = LAB
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        if data.draw(st.booleans()):
            text = text[:at] + text[at + 1 :]
        else:
            text = text[:at] + data.draw(st.sampled_from(_JUNK)) + text[at:]
    try:
        parse_topology(text, "lab.yaml")
    except TopologyError as exc:
        assert exc.problems
        assert all(p.line is None or 1 <= p.line <= text.count("\n") + 2 for p in exc.problems)


# ------------------------------------------------------------------------------- round trip (hypothesis)

# Disjoint, and apart from the built-in ports (9001 .. 9052), so that no node gets two equal ports.
PORT_RANGES = {"control_port": 8000, "or_port": 10000, "dir_port": 7000, "socks_port": 6000}


@st.composite
def setting_values(draw, key, network_names, role=None):
    if key == "impl":  # `defaults` applies to every role, and only clients may be tor
        return draw(st.sampled_from(["onionlab", "tor"])) if role == "client" else "onionlab"
    if key in PORT_RANGES:
        return draw(st.integers(PORT_RANGES[key], PORT_RANGES[key] + 99))
    if key == "image":
        return draw(
            st.sampled_from(["onionlab/node:latest", "registry:5000/lab/node:v2", "node@sha256:" + "a" * 64])
        )
    if key == "bandwidth":
        return draw(st.integers(1, 2**31 - 1))
    if key == "descriptor_refresh":
        return draw(st.integers(1, 86400))
    if key == "guards":
        return draw(st.integers(1, 3))  # at most the 3 relays that every node can reach (0: test_attack_*)
    if key == "intro_points":
        return draw(st.integers(1, 3))
    if key == "adversary":
        return draw(st.booleans())
    if key == "memory":
        return draw(st.sampled_from(["32m", "200m", "1g", "33554433"]))  # as to_dict writes them
    if key == "pids":
        return draw(st.integers(16, 4096))
    if key == "placement":
        return draw(st.lists(st.sampled_from(["node.labels.onionlab==relays", "node.role!=manager",
                                               "node.hostname==host-2", "engine.labels.zone==b"]),
                             max_size=2, unique=True))
    if key == "networks":
        return draw(st.permutations(network_names).map(lambda p: p[: draw(st.integers(1, len(p)))]))
    ports = draw(st.lists(st.integers(1, 65535), min_size=1, max_size=3, unique=True))
    targets = st.sampled_from(["http", "echo", "web:8080", "10.9.0.1:80", "[fd00::1]:22"])
    return [{"port": port, "target": draw(targets)} for port in ports]


@st.composite
def lab_documents(draw):
    """Valid topologies: settings scattered over every layer, entries expanded by count."""
    nets = {
        f"net{i}": {"subnet": f"10.{i}.0.0/{draw(st.integers(24, 26))}"}
        for i in range(draw(st.integers(1, 3)))
    }
    everywhere = list(nets)
    # The first authority and relay entries sit on every network: authorities always share one, every node
    # reaches an authority and at least 3 relays, so guards and intro_points up to 3 are always valid.
    entries = [
        {"role": "authority", "networks": everywhere},
        {"role": "relay", "count": draw(st.integers(3, 4)), "networks": everywhere},
    ]
    for role in draw(st.lists(st.sampled_from(ROLES), max_size=5)):
        entry = {"role": role, "networks": everywhere} if role == "authority" else {"role": role}
        if draw(st.booleans()):
            entry["count"] = draw(st.integers(1, 3))
        entries.append(entry)
    names = draw(
        st.lists(
            st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=6),
            min_size=len(entries),
            max_size=len(entries),
            unique=True,
        )
    )  # letters only: expansions end in digits
    doc = {"name": "prop", "networks": nets, "defaults": {}, "roles": {}, "nodes": []}
    for key in SETTINGS:
        if key not in ("services", "networks") and draw(st.booleans()):
            doc["defaults"][key] = draw(setting_values(key, everywhere))
    for role in ROLES:
        layer = {
            k: draw(setting_values(k, everywhere, role))
            for k in SETTINGS
            if role in APPLIES[k] and draw(st.booleans())
        }
        if role == "authority":
            layer.pop("networks", None)
        if layer:
            doc["roles"][role] = layer
    has_services = "services" in doc["roles"].get("onion_service", {})
    for name, entry in zip(names, entries, strict=True):
        node = {"name": name, **entry}
        for key in SETTINGS:
            if entry["role"] in APPLIES[key] and key not in node and draw(st.booleans()):
                node[key] = draw(setting_values(key, everywhere, entry["role"]))
        if entry["role"] == "onion_service" and not has_services and "services" not in node:
            node["services"] = draw(setting_values("services", everywhere))
        doc["nodes"].append(node)
    if draw(st.booleans()):
        interval = draw(st.sampled_from([10, 12, 15, 20, 60]))
        vote = draw(st.integers(2, interval * 4 // 5 - 2))
        doc["timing"] = {
            "voting_interval": interval,
            "vote_delay": vote,
            "dist_delay": draw(st.integers(2, interval * 4 // 5 - vote)),
        }
    return doc


def _expected(doc, entry, key):
    """The effective value of `key` by the inheritance rule, computed independently of the parser."""
    for layer in (entry, doc["roles"].get(entry["role"], {}), doc["defaults"]):
        if key in layer:
            return layer[key]
    if key in BUILTIN_ROLE_DEFAULTS:
        value = BUILTIN_ROLE_DEFAULTS[key][entry["role"]]
        return size_text(value) if key == "memory" else value
    if key == "placement":
        return []  # none: Swarm places each task where the fewest run
    return [next(iter(doc["networks"]))] if key == "networks" else BUILTIN_DEFAULTS[key]


@given(lab_documents())
def test_valid_topologies_expand_by_the_rules_and_round_trip(doc):
    topo = parse_topology(yaml.safe_dump(doc, sort_keys=False))
    expected_names = [
        entry["name"] if entry.get("count", 1) == 1 else f"{entry['name']}{i}"
        for entry in doc["nodes"]
        for i in range(1, entry.get("count", 1) + 1)
    ]
    assert [n.name for n in topo.nodes] == expected_names
    nodes = iter(topo.nodes)
    for entry in doc["nodes"]:
        for _ in range(entry.get("count", 1)):
            data = next(nodes).to_dict()
            for key in SETTINGS:
                if entry["role"] in APPLIES[key]:
                    found = data.get(key, []) if key == "placement" else data[key]  # written when set
                    assert found == _expected(doc, entry, key), key
    again = parse_topology(yaml.safe_dump(topo.to_dict(), sort_keys=False))
    assert again == topo
    assert again.to_dict() == topo.to_dict()


# ---------------------------------------------------------------------------------------------- schema


def test_schema_and_default_topology_agree_on_top_level_keys():
    default = yaml.safe_load((TOPOLOGIES / "default.yaml").read_text())
    assert set(SCHEMA["properties"]) == set(TOP_KEYS) == set(default)
    assert SCHEMA["required"] == ["name", "nodes"]
    assert SCHEMA["additionalProperties"] is False


def test_schema_and_model_agree_on_roles_and_settings():
    defs = SCHEMA["$defs"]
    default = yaml.safe_load((TOPOLOGIES / "default.yaml").read_text())
    assert list(SCHEMA["properties"]["roles"]["properties"]) == list(ROLES)
    assert defs["node"]["properties"]["role"]["enum"] == list(ROLES)
    assert {node["role"] for node in default["nodes"]} == set(ROLES) == set(default["roles"])
    assert list(defs["settings"]["properties"]) == list(SETTINGS)
    for role in ROLES:
        assert set(defs[f"{role}_properties"]["properties"]) == {k for k in SETTINGS if role in APPLIES[k]}, (
            role
        )
    assert list(defs["node"]["properties"]) == list(ENTRY_KEYS)
    assert list(defs["timing"]["properties"]) == [f.name for f in fields(Timing)]


# ------------------------------------------------------------------------------------ container limits


MIB = 2**20


def test_every_node_has_memory_and_pids_limits_by_role():
    topo = parse_topology(LAB)
    limits = {n.role: (n.memory, n.pids) for n in topo.nodes}
    assert limits == {"authority": (192 * MIB, 128), "relay": (256 * MIB, 128),
                      "onion_service": (256 * MIB, 128), "client": (256 * MIB, 128)}
    assert topo.node("auth1").to_dict()["memory"] == "192m" and topo.node("auth1").to_dict()["pids"] == 128


def test_limits_are_settings_that_layers_override():
    text = edit("roles:\n  client: {socks_port: 9050}\n",
                "defaults: {pids: 64}\nroles:\n  client: {socks_port: 9050, memory: 1g}\n"
                "  relay: {memory: 300m}\n")
    text = text.replace("  - name: hs\n", "  - name: hs\n    memory: 402653184\n    pids: 256\n")
    topo = parse_topology(text)
    assert (topo.node("client").memory, topo.node("client").pids) == (2**30, 64)
    assert (topo.node("relay3").memory, topo.node("relay3").pids) == (300 * MIB, 64)
    assert (topo.node("hs").memory, topo.node("hs").pids) == (384 * MIB, 256)
    assert topo.node("auth1").memory == 192 * MIB  # the built-in default of its role
    assert parse_topology(yaml.safe_dump(topo.to_dict(), sort_keys=False)) == topo


def test_bad_limits_name_line_and_field():
    text = LAB.replace(
        "  client: {socks_port: 9050}\n",
        "  client: {socks_port: 9050, memory: lots, pids: 2}\n  relay: {memory: 16m}\n",
    )
    assert problems(text) == [
        "lab.yaml:5:38: roles.client.memory: expected a memory size such as 256m or 1g (a number of bytes, "
        "or one with k, m or g: KiB, MiB, GiB), got 'lots'",
        "lab.yaml:5:50: roles.client.pids: expected a process limit from 16 to 1000000, got 2",
        "lab.yaml:6:19: roles.relay.memory: 16m is too little: a node needs at least 32m",
    ]


def test_placement_is_a_list_of_swarm_constraints_inherited_like_any_setting():
    text = ("name: pl\nroles:\n  relay: {placement: [node.labels.onionlab==relays]}\nnodes:\n"
            "  - {name: auth, role: authority, count: 3}\n  - {name: relay, role: relay, count: 3}\n"
            "  - {name: hs, role: onion_service, services: [{port: 80, target: http}],"
            " placement: ['node.role != manager']}\n  - {name: client, role: client}\n")
    topo = parse_topology(text, "lab.yaml")
    assert topo.node("relay2").placement == ("node.labels.onionlab==relays",)
    assert topo.node("hs").placement == ("node.role != manager",) and topo.node("auth1").placement == ()
    with pytest.raises(TopologyError, match=r"lab.yaml:7:\d+: nodes.hs.placement\[0\]: expected a Swarm "
                                            r"placement constraint .* got 'role is manager'"):
        parse_topology(text.replace("node.role != manager", "role is manager"), "lab.yaml")
