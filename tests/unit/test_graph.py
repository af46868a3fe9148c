"""orchestrator/graph.py and `onionlab graph`: networks as subgraphs, nodes labelled with their role, an edge
per network membership, in Mermaid and DOT. The outputs are read back here with small parsers of the subset
we emit, so the tests check the graph, not the spelling."""

import re
from pathlib import Path
from xml.etree import ElementTree

import pytest

from orchestrator import cli
from orchestrator.graph import _dot_string, _mermaid_text, render_dot, render_graph, render_mermaid
from orchestrator.graph_svg import render_svg
from orchestrator.live_roles import LiveRoles, RendezvousCircuit, live_roles
from orchestrator.topology import Topology, load_topology, parse_topology

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "topologies" / "default.yaml"
MULTI = ROOT / "topologies" / "multi-network.yaml"
HYPHENS = """\
name: hyphens
networks:
  a-b: {subnet: 10.1.0.0/24}
  a_b: {subnet: 10.2.0.0/24}
roles:
  relay: {networks: [a-b, a_b]}
  authority: {networks: [a-b, a_b]}
nodes:
  - {name: auth-x, role: authority}
  - {name: relay-a, role: relay, count: 3}
  - {name: hs, role: onion_service, networks: [a_b], services: [{port: 80, target: http}]}
  - {name: end, role: client, networks: [a-b]}
"""
ROLE_WORDS = {"authority": "authority", "relay": "relay", "onion_service": "onion service",
              "client": "client"}


def parse_mermaid(text: str) -> tuple[dict[str, str], dict[str, str | None], dict[str, str], set]:
    """(node id -> label, node id -> subgraph title or None, hub id -> label, {(node id, hub id, label)})."""
    labels: dict[str, str] = {}
    where: dict[str, str | None] = {}
    hubs: dict[str, str] = {}
    edges = set()
    current = None
    lines = text.splitlines()
    assert lines[1] == "flowchart LR"
    for line in lines[2:]:
        line = line.strip()
        if m := re.fullmatch(r'subgraph (sg\d+)\["(.*)"\]', line):
            assert current is None, "nested subgraph"
            current = m[2]
        elif line == "end":
            current = None
        elif m := re.fullmatch(r'(net\d+)\(\("(.*)"\)\)', line):
            hubs[m[1]] = m[2]
            assert current is not None and current.startswith(m[2] + " ")
        elif m := re.fullmatch(r'(n\d+)\["(.*)"\]', line):
            assert m[1] not in labels, f"{m[1]} declared twice"
            labels[m[1]], where[m[1]] = m[2], current
        elif m := re.fullmatch(r'(n\d+) ---\|"(.*)"\| (net\d+)', line):
            edges.add((m[1], m[3], m[2]))
        else:
            assert re.fullmatch(r"(classDef \w+ .*|class [\w,]+ \w+)", line), line
    return labels, where, hubs, edges


def parse_dot(text: str) -> tuple[dict[str, str], dict[str, str | None], dict[str, str], set]:
    """The same for DOT."""
    labels: dict[str, str] = {}
    where: dict[str, str | None] = {}
    hubs: dict[str, str] = {}
    edges = set()
    current = None
    title = None
    depth = 0
    for line in text.splitlines()[1:]:
        line = line.strip()
        if re.fullmatch(r'graph ".*" \{', line) or (m := re.fullmatch(r'subgraph "(cluster_\d+)" \{', line)):
            depth += 1
            current, title = (None, None) if depth == 1 else (m[1], None)
        elif line == "}":
            depth -= 1
            current = None
        elif m := re.fullmatch(r'label="(.*)";', line):
            title = m[1]
        elif m := re.fullmatch(r'"(net\d+)" \[label="(.*?)", shape=ellipse.*\];', line):
            hubs[m[1]] = m[2]
            assert title is not None and title.startswith(m[2] + "\\n")
        elif m := re.fullmatch(r'"(n\d+)" \[label="(.*?)", fillcolor="#[0-9a-f]{6}"\];', line):
            assert m[1] not in labels
            labels[m[1]], where[m[1]] = m[2], title if current else None
        elif m := re.fullmatch(r'"(n\d+)" -- "(net\d+)" \[label="(.*)"\];', line):
            edges.add((m[1], m[2], m[3]))
        else:
            assert re.fullmatch(r'(graph|node|edge) \[.*\];|style=.*;', line), line
    assert depth == 0, "unbalanced braces"
    return labels, where, hubs, edges


PARSERS = {"mermaid": (render_mermaid, parse_mermaid, "<br/>", " "),
           "dot": (render_dot, parse_dot, "\\n", "\\n")}


def check_graph(topology: Topology, fmt: str) -> None:
    render, parse, line_break, title_break = PARSERS[fmt]
    labels, where, hubs, edges = parse(render(topology))
    hub_of = {label: hub for hub, label in hubs.items()}
    assert sorted(hub_of) == sorted(n.name for n in topology.networks)
    assert len(labels) == len(topology.nodes)
    by_label = {label: node_id for node_id, label in labels.items()}
    expected_edges = set()
    for node in topology.nodes:
        node_id = by_label[f"{node.name}{line_break}{ROLE_WORDS[node.role]}"]  # name and role
        if len(node.interfaces) == 1:  # drawn inside its only network's subgraph
            network = topology.network(node.networks[0])
            assert where[node_id] == f"{network.name}{title_break}{network.subnet}"
        else:  # on several networks: outside all, joined by edges
            assert where[node_id] is None
        expected_edges |= {(node_id, hub_of[i.network], str(i.address)) for i in node.interfaces}
    assert edges == expected_edges


@pytest.mark.parametrize("fmt", sorted(PARSERS))
@pytest.mark.parametrize("source", [DEFAULT, MULTI, HYPHENS], ids=["default", "multi-network", "hyphens"])
def test_graph_has_networks_nodes_roles_and_membership_edges(fmt, source):
    topology = parse_topology(source) if isinstance(source, str) else load_topology(source)
    check_graph(topology, fmt)


def test_multi_network_layout():
    labels, where, _, edges = parse_mermaid(render_mermaid(load_topology(MULTI)))
    inside = {labels[n].split("<br/>")[0]: w for n, w in where.items()}
    assert inside["client"] == "north 10.78.1.0/24" and inside["hs"] == "south 10.78.2.0/24"
    assert inside["relay1"] is None and inside["auth1"] is None
    assert len(edges) == 9 * 2 + 2


def test_roles_are_styled():
    text = render_mermaid(load_topology(DEFAULT))
    assert "class n0,n1,n2 authority" in text and "class n3,n4,n5,n6,n7,n8 relay" in text
    assert "class n9 onion_service" in text and "class n10 client" in text


def test_escaping():
    assert _dot_string('a"b\\c', "d") == '"a\\"b\\\\c\\nd"'
    assert _mermaid_text('<a|"b">&') == "#lt;a#124;#quot;b#quot;#gt;#amp;"


def test_deterministic_and_unknown_format():
    topology = load_topology(DEFAULT)
    assert render_graph(topology) == render_mermaid(topology) == render_mermaid(load_topology(DEFAULT))
    assert render_graph(topology, "dot") == render_dot(topology)
    assert render_graph(topology, "svg") == render_svg(topology)
    with pytest.raises(ValueError, match="unknown graph format 'png'"):
        render_graph(topology, "png")


def test_cli_graph(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert cli.main(["graph"]) == 0
    assert capsys.readouterr().out == render_mermaid(load_topology(DEFAULT))
    assert cli.main(["graph", str(MULTI), "--format", "dot"]) == 0
    assert capsys.readouterr().out == render_dot(load_topology(MULTI))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["graph", "--format", "png"])
    assert exit_.value.code == 2


# -- svg and --live ------------------------------------------------------------------------------------

LIVE = LiveRoles(
    ready={"relay5": False},
    intro_point_of={"relay1": ["hs"]}, hsdir_of={"relay2": [("hs", "7"), ("hs", "8")]},
    guard_of={"relay3": ["client", "hs"]},
    rendezvous=[RendezvousCircuit("client", ["relay3", "relay4", "relay6"], "x.onion"),
                RendezvousCircuit("hs", ["relay3", "relay2", "relay6"])])


@pytest.mark.parametrize("source", [DEFAULT, MULTI, HYPHENS], ids=["default", "multi-network", "hyphens"])
def test_svg_draws_every_node_with_role_and_addresses_in_its_network_lane(source):
    topology = parse_topology(source) if isinstance(source, str) else load_topology(source)
    root = ElementTree.fromstring(render_svg(topology))
    ns = "{http://www.w3.org/2000/svg}"
    nodes = {g.get("data-node"): [t.text for t in g.iter(f"{ns}text")] for g in root.iter(f"{ns}g")
             if g.get("data-node")}
    assert sorted(nodes) == sorted(n.name for n in topology.nodes)
    for node in topology.nodes:
        words = nodes[node.name]
        assert words[:2] == [node.name, ROLE_WORDS[node.role]]
        for itf in node.interfaces:
            assert any(str(itf.address) in w for w in words), (node.name, words)
    lanes = [t.text for t in root.iter(f"{ns}text") if t.get("class") == "lane"]
    assert lanes[:len(topology.networks)] == [f"{n.name}  {n.subnet}" for n in topology.networks]


def test_live_roles_are_read_from_the_statuses():
    statuses = {
        "hs": {"ready": True, "intro_points": ["relay1"],
               "descriptor_hsdirs": {"8": ["relay2"], "7": ["relay2"]},
               "guards": {"primary": ["relay3"]}, "rendezvous": [["relay3", "relay2", "relay6"]]},
        "client": {"ready": True, "guards": {"primary": ["relay3"]},
                   "rendezvous": [{"onion": "x.onion", "path": ["relay3", "relay4", "relay6"]}]},
        "relay5": None}
    roles = live_roles(["hs", "client", "relay5"], statuses.get)
    assert roles.intro_point_of == {"relay1": ["hs"]} and roles.guard_of == {"relay3": ["hs", "client"]}
    assert roles.hsdir_of == {"relay2": [("hs", "7"), ("hs", "8")]}
    assert [(c.owner, c.path) for c in roles.rendezvous] == [("hs", ["relay3", "relay2", "relay6"]),
                                                            ("client", ["relay3", "relay4", "relay6"])]
    assert roles.lines("relay5") == ["NOT READY"]
    assert roles.lines("relay2") == ["HSDir of hs: 7, 8"]
    assert roles.lines("relay6") == ["rendezvous point of client, hs"]


def test_live_graph_labels_roles_and_draws_rendezvous_circuits():
    topology = load_topology(DEFAULT)
    index = {n.name: i for i, n in enumerate(topology.nodes)}
    mermaid = render_mermaid(topology, LIVE)
    assert f'n{index["relay2"]}["relay2<br/>relay<br/>HSDir of hs: 7, 8"]' in mermaid
    assert f'n{index["relay3"]}["relay3<br/>relay<br/>guard of client, hs"]' in mermaid
    hops = [("client", "relay3"), ("relay3", "relay4"), ("relay4", "relay6"), ("hs", "relay3"),
            ("relay3", "relay2"), ("relay2", "relay6")]
    for k, (a, b) in enumerate(hops):
        assert f'n{index[a]} ==>|"rend {1 + k // 3}"| n{index[b]}' in mermaid
    dot = render_dot(topology, LIVE)
    assert "NOT READY" in dot and dot.count('color="#1e9a4b", penwidth=3') == 6
    relay2_address = str(topology.nodes[index["relay2"]].interfaces[0].address)
    moved = render_mermaid(topology, LiveRoles(addresses={"relay1": "127.0.0.5", "relay2": relay2_address}))
    assert moved.count("runs at") == 1 and "relay1<br/>relay<br/>runs at 127.0.0.5" in moved
    svg = render_svg(topology, LIVE)
    assert svg.count('class="rendezvous"') == 2 and "intro point of hs" in svg and "<script" not in svg
    assert 'data-path="client relay3 relay4 relay6"' in svg and 'data-path="hs relay3 relay2 relay6"' in svg


def test_svg_lists_every_static_link_with_its_sides_and_what_it_adds():
    topology = load_topology(ROOT / "topologies" / "geo.yaml")
    assert topology.links  # the file declares some
    root = ElementTree.fromstring(render_svg(topology))
    ns = "{http://www.w3.org/2000/svg}"
    drawn = [g for g in root.iter(f"{ns}g") if g.get("class") == "link"]
    assert len(drawn) == len(topology.links)
    for g, link in zip(drawn, topology.links, strict=True):
        words = "".join(t.text or "" for t in g.iter(f"{ns}text"))
        assert link.text in words and all(name in words for side in link.sides for name in side)
        assert g.find(f"{ns}line").get("stroke-dasharray")
    plain = ElementTree.fromstring(render_svg(load_topology(ROOT / "topologies" / "default.yaml")))
    assert not [g for g in plain.iter(f"{ns}g") if g.get("class") == "link"]
