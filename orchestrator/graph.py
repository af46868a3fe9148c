"""Topology -> a picture: Mermaid (GitHub and most Markdown viewers draw it) or Graphviz DOT.

Both formats draw the same graph. Every network is a subgraph (a DOT cluster) titled with its name and subnet
that holds one hub node standing for the network itself, and every node that is on that network alone. A
node on several networks (a relay that bridges two of them) sits outside all of them. Each node is joined to
the hub of every network it is on by an edge labelled with its address there, so membership is always an
edge, whether or not the node is drawn inside the subgraph. Nodes are labelled with their name and role, and
coloured by role. Static impairments (`links:`) are dashed edges labelled with what they add, between the
two sides' hubs (a side that is one network), nodes (one node), or a group box joined to its members by
dotted edges (anything else: a role, a `nodes:` entry, several names).

With `live` (orchestrator.live_roles, `onionlab graph --live`), each node's label also says what it is right
now (intro point of, HSDir of which service and period, guard of, rendezvous point of, not ready), and each
live rendezvous circuit is drawn as a chain of thick edges from its owner through its relays. `--format svg`
is drawn by orchestrator/graph_svg.py.

Ids are positional (`n0`.. for nodes, `net0`.. for hubs, `sg0`/`cluster_0`.. for subgraphs), never derived
from names, so no name can collide with another or with the syntax; labels are escaped for each format.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from orchestrator.live_roles import LiveRoles
from orchestrator.topology import ROLES, Node, Topology

FORMATS: Final = ("mermaid", "dot", "svg")
ROLE_COLOURS: Final = {"authority": "#f6d365", "relay": "#a8d8f0", "onion_service": "#d7b8f3",
                       "client": "#b8e6b8"}
ROLE_LABELS: Final = {"authority": "authority", "relay": "relay", "onion_service": "onion service",
                      "client": "client"}


def _placement(topology: Topology) -> tuple[dict[str, list[int]], list[int]]:
    """Which nodes (by index) are drawn inside each network's subgraph, and which outside all of them."""
    inside: dict[str, list[int]] = {n.name: [] for n in topology.networks}
    outside: list[int] = []
    for i, node in enumerate(topology.nodes):
        if len(node.interfaces) == 1:
            inside[node.networks[0]].append(i)
        else:
            outside.append(i)
    return inside, outside


def _edges(topology: Topology) -> list[tuple[int, int, str]]:
    """(node index, network index, address) for every interface, in node order."""
    net_index = {n.name: i for i, n in enumerate(topology.networks)}
    return [(i, net_index[itf.network], str(itf.address))
            for i, node in enumerate(topology.nodes) for itf in node.interfaces]


def _links(topology: Topology) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, list[int]]]]:
    """The `links:` edges (end id, end id, label) and the group boxes they need (id, label, member
    indexes)."""
    net_index = {n.name: i for i, n in enumerate(topology.networks)}
    node_index = {n.name: i for i, n in enumerate(topology.nodes)}
    edges = []
    groups: dict[tuple[str, ...], tuple[str, str, list[int]]] = {}  # one box per side, however often named
    for link in topology.links:
        ends = []
        for names, members in zip(link.sides, link.between, strict=True):
            if len(names) == 1 and names[0] in net_index and names[0] not in node_index:
                ends.append(f"net{net_index[names[0]]}")
            elif len(members) == 1:
                ends.append(f"n{node_index[members[0]]}")
            else:
                gid = groups.setdefault(names, (f"g{len(groups)}", ", ".join(names),
                                                [node_index[m] for m in members]))[0]
                ends.append(gid)
        edges.append((ends[0], ends[1], link.text))
    return edges, list(groups.values())


# ------------------------------------------------------------------------------------------- Mermaid


def _mermaid_text(text: str) -> str:
    """Text for a quoted Mermaid label: quotes and the characters Mermaid reads as markup become entities."""
    return (text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
            .replace("|", "#124;"))


def rendezvous_hops(topology: Topology, live: LiveRoles | None) -> list[tuple[int, int, int]]:
    """(circuit number from 1, node index, next node index) for every hop of every live rendezvous circuit,
    its owner first; hops through nodes the topology does not have are left out."""
    index = {n.name: i for i, n in enumerate(topology.nodes)}
    hops = []
    for k, circuit in enumerate(live.rendezvous if live else [], 1):
        chain = [index[n] for n in [circuit.owner, *circuit.path] if n in index]
        hops += [(k, a, b) for a, b in zip(chain, chain[1:], strict=False)]
    return hops


def render_mermaid(topology: Topology, live: LiveRoles | None = None) -> str:
    inside, outside = _placement(topology)
    lines = [f"%% onionlab topology {topology.name}: {len(topology.nodes)} nodes, "
             f"{len(topology.networks)} network(s)", "flowchart LR"]

    def node_line(i: int, indent: str) -> str:
        node = topology.nodes[i]
        label = "<br/>".join(_mermaid_text(line) for line in label_lines(node, live))
        return f'{indent}n{i}["{label}"]'

    for k, network in enumerate(topology.networks):
        lines.append(f'  subgraph sg{k}["{_mermaid_text(f"{network.name} {network.subnet}")}"]')
        lines.append(f'    net{k}(("{_mermaid_text(network.name)}"))')
        lines.extend(node_line(i, "    ") for i in inside[network.name])
        lines.append("  end")
    lines.extend(node_line(i, "  ") for i in outside)
    lines.extend(f'  n{i} ---|"{address}"| net{k}' for i, k, address in _edges(topology))
    first = len(_edges(topology))
    hops = rendezvous_hops(topology, live)
    lines.extend(f'  n{a} ==>|"rend {k}"| n{b}' for k, a, b in hops)
    if hops:
        lines.append(f"  linkStyle {','.join(str(first + j) for j in range(len(hops)))} "
                     "stroke:#1e9a4b,stroke-width:3px")
    link_edges, groups = _links(topology)
    for gid, label, members in groups:
        lines.append(f'  {gid}{{{{"{_mermaid_text(label)}"}}}}')
        lines.extend(f"  {gid} -.- n{m}" for m in members)
    lines.extend(f'  {a} -.-|"{_mermaid_text(label)}"| {b}' for a, b, label in link_edges)
    for role in ROLES:
        members = [f"n{i}" for i, n in enumerate(topology.nodes) if n.role == role]
        if members:
            lines.append(f"  classDef {role} fill:{ROLE_COLOURS[role]},stroke:#333,color:#000")
            lines.append(f"  class {','.join(members)} {role}")
    lines.append("  classDef network fill:#eee,stroke:#666,color:#000")
    lines.append(f"  class {','.join(f'net{k}' for k in range(len(topology.networks)))} network")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- DOT


def _dot_string(*lines: str) -> str:
    """A DOT quoted string of `lines`, joined by DOT's centred line break."""
    return '"' + "\\n".join(line.replace("\\", "\\\\").replace('"', '\\"') for line in lines) + '"'


def _dot_node(node: Node, i: int, live: LiveRoles | None) -> str:
    label = _dot_string(*label_lines(node, live))
    return f'"n{i}" [label={label}, fillcolor="{ROLE_COLOURS[node.role]}"];'


def render_dot(topology: Topology, live: LiveRoles | None = None) -> str:
    inside, outside = _placement(topology)
    lines = [f"// onionlab topology {topology.name}: {len(topology.nodes)} nodes, "
             f"{len(topology.networks)} network(s)",
             f"graph {_dot_string(topology.name)} {{",
             '  graph [rankdir=LR, fontname="Helvetica"];',
             '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
             '  edge [fontname="Helvetica", fontsize=10];']
    for k, network in enumerate(topology.networks):
        lines.append(f'  subgraph "cluster_{k}" {{')
        lines.append(f"    label={_dot_string(network.name, str(network.subnet))};")
        lines.append('    style="rounded"; color="#666666";')
        lines.append(f'    "net{k}" [label={_dot_string(network.name)}, shape=ellipse, fillcolor="#eeeeee"];')
        lines.extend(f"    {_dot_node(topology.nodes[i], i, live)}" for i in inside[network.name])
        lines.append("  }")
    lines.extend(f"  {_dot_node(topology.nodes[i], i, live)}" for i in outside)
    lines.extend(f'  "n{i}" -- "net{k}" [label={_dot_string(address)}];'
                 for i, k, address in _edges(topology))
    lines.extend(f'  "n{a}" -- "n{b}" [label={_dot_string(f"rend {k}")}, color="#1e9a4b", penwidth=3, '
                 'dir=forward];' for k, a, b in rendezvous_hops(topology, live))
    link_edges, groups = _links(topology)
    for gid, label, members in groups:
        lines.append(f'  "{gid}" [label={_dot_string(label)}, shape=hexagon, fillcolor="#ffffff"];')
        lines.extend(f'  "{gid}" -- "n{m}" [style=dotted];' for m in members)
    lines.extend(f'  "{a}" -- "{b}" [label={_dot_string(label)}, style=dashed, color="#c0392b", '
                 'fontcolor="#c0392b"];' for a, b, label in link_edges)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _render_svg(topology: Topology, live: LiveRoles | None = None) -> str:
    from orchestrator.graph_svg import render_svg

    return render_svg(topology, live)


RENDERERS: Final[dict[str, Callable[[Topology, LiveRoles | None], str]]] = {
    "mermaid": render_mermaid, "dot": render_dot, "svg": _render_svg}


def render_graph(topology: Topology, fmt: str = "mermaid", live: LiveRoles | None = None) -> str:
    try:
        render = RENDERERS[fmt]
    except KeyError:
        raise ValueError(f"unknown graph format {fmt!r}; expected one of {', '.join(FORMATS)}") from None
    return render(topology, live)


def label_lines(node: Node, live: LiveRoles | None) -> list[str]:
    """A node's label: its name, its role, and with `live` what it is right now (and where it runs when that
    is not the topology's address, as on the local backend)."""
    if live is None:
        return [node.name, _role_label(node)]
    runs_at = live.addresses.get(node.name)
    moved = runs_at and runs_at not in {str(itf.address) for itf in node.interfaces}
    return [node.name, _role_label(node), *([f"runs at {runs_at}"] if moved else []), *live.lines(node.name)]




def _role_label(node: Node) -> str:
    """The role, and who plays it when that is not onionlab: `client (tor)`."""
    return ROLE_LABELS[node.role] + ("" if node.impl == "onionlab" else f" ({node.impl})")
