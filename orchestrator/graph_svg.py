"""`onionlab graph --format svg`: the topology drawn by our own layout, no Graphviz.

One lane per network (titled with its name and subnet) holds the nodes on that network alone, a row per role
(authorities, relays, then onion services and clients); nodes on several networks get a lane of their own
that names each network they are on. Every box shows the node's name, role and address; with `live`
(`--live`), also what it is right now (orchestrator.live_roles), and under the lanes each live rendezvous
circuit as a chain: its owner, then its relays, the rendezvous point last. The static impairments
(`links:`) are listed last, a dashed line each with the two sides and what the link adds.
"""

from __future__ import annotations

from .graph import ROLE_COLOURS, label_lines
from .live_roles import LiveRoles
from .svg import attrs, document, tag, text
from .topology import Topology

BOX_W, LINE_H, GAP_X, GAP_Y, PAD, TITLE_H = 226, 14, 16, 26, 16, 30
ROW_ROLES = (("authority",), ("relay",), ("onion_service", "client"))
GREEN = "#1e9a4b"
LINK_COLOUR = "#c0392b"  # the dashed `links:` edges of the Mermaid and DOT drawings too
LIVE_COLOURS = {"intro point": "#8e44ad", "HSDir": "#b7950b", "guard": "#2c3e50", "rendezvous": "#117a65",
                "NOT READY": "#c0392b", "runs at": "#555555"}
CSS = ".name{font-weight:bold;font-size:12px}.small{font-size:10.5px}.lane{font-weight:bold;font-size:13px}"


def _box_height(lines: list[str], addresses: int) -> float:
    return 12 + LINE_H * (len(lines) + addresses)


def render_svg(topology: Topology, live: LiveRoles | None = None) -> str:
    lanes: list[tuple[str, list[int]]] = [
        (f"{net.name}  {net.subnet}", [i for i, n in enumerate(topology.nodes)
                                       if len(n.interfaces) == 1 and n.networks[0] == net.name])
        for net in topology.networks]
    several = [i for i, n in enumerate(topology.nodes) if len(n.interfaces) > 1]
    if several:
        lanes.append(("on several networks", several))
    labels = {i: label_lines(n, live) for i, n in enumerate(topology.nodes)}
    heights = {i: _box_height(labels[i], len(n.interfaces)) for i, n in enumerate(topology.nodes)}
    per_row = max(1, min(6, max((sum(1 for i in members if topology.nodes[i].role in roles)
                                 for _, members in lanes for roles in ROW_ROLES), default=1)))
    width = 2 * PAD + per_row * BOX_W + (per_row - 1) * GAP_X + 2 * PAD
    where: dict[int, tuple[float, float, float]] = {}  # node -> (centre x, top y, height)
    body: list[str] = []
    y = 58.0
    for title, members in lanes:
        lane_top = y
        y += TITLE_H
        rows = []
        for roles in ROW_ROLES:
            row = [i for i in members if topology.nodes[i].role in roles]
            rows += [row[k:k + per_row] for k in range(0, len(row), per_row)]
        for row in rows:
            tallest = max(heights[i] for i in row)
            for k, i in enumerate(row):
                where[i] = (2 * PAD + BOX_W / 2 + k * (BOX_W + GAP_X), y, heights[i])
            y += tallest + GAP_Y
        body.append(tag("rect", x=float(PAD), y=lane_top, width=width - 2 * PAD, height=y - lane_top, rx=10,
                        fill="#f7f8fb", stroke="#9aa0ab", class_="lane"))
        body.append(text(PAD + 12, lane_top + 20, title, class_="lane", fill="#34495e"))
        y += GAP_Y
    for i, node in enumerate(topology.nodes):
        if i not in where:
            continue
        x, top, h = where[i]
        lines = labels[i]
        extra = lines[2:]
        parts = [line for line in extra if not line.startswith("runs at")]  # what it is, not where
        stroke = next((c for word, c in LIVE_COLOURS.items() if any(word in line for line in parts)), "#333")
        body.append(f'<g {attrs(class_=f"node {node.role}", data_node=node.name)}>')
        body.append(tag("rect", x=x - BOX_W / 2, y=top, width=float(BOX_W), height=h, rx=7,
                        fill=ROLE_COLOURS[node.role], stroke=stroke, stroke_width=2.5 if parts else 1.2))
        body.append(text(x, top + 15, lines[0], class_="name", text_anchor="middle"))
        body.append(text(x, top + 15 + LINE_H, lines[1], class_="small", text_anchor="middle"))
        addresses = [str(itf.address) if len(node.interfaces) == 1 else f"{itf.network}: {itf.address}"
                     for itf in node.interfaces]
        for j, line in enumerate(addresses):
            body.append(text(x, top + 15 + LINE_H * (2 + j), line, class_="small", text_anchor="middle",
                             fill="#444"))
        for j, line in enumerate(extra):
            colour = next((c for word, c in LIVE_COLOURS.items() if line.startswith(word)), "#333")
            body.append(text(x, top + 15 + LINE_H * (2 + len(addresses) + j), line, class_="small live",
                             text_anchor="middle", fill=colour, font_weight="bold"))
        body.append("</g>")
    if live is not None and live.rendezvous:  # each circuit as a chain of its nodes, under the lanes
        body.append(text(PAD, y + 4, "live rendezvous circuits (owner first, rendezvous point last)",
                         class_="lane", fill=GREEN))
        y += 16
        role_of = {n.name: n.role for n in topology.nodes}
        for k, circuit in enumerate(live.rendezvous, 1):
            chain = [circuit.owner, *circuit.path]
            body.append(f'<g {attrs(class_="rendezvous", data_circuit=k, data_path=" ".join(chain))}>')
            x = float(PAD)
            for j, name in enumerate(chain):
                w = 7.2 * len(name) + 18
                last = j == len(chain) - 1
                body.append(tag("rect", x=x, y=y, width=w, height=20.0, rx=10,
                                fill=ROLE_COLOURS.get(role_of.get(name, "relay"), "#eee"),
                                stroke=GREEN if last else "#333", stroke_width=2.5 if last else 1.0))
                body.append(text(x + w / 2, y + 14, name, class_="name", text_anchor="middle"))
                x += w
                if not last:
                    body.append(tag("line", x1=x + 2, y1=y + 10, x2=x + 24, y2=y + 10, stroke=GREEN,
                                    stroke_width=3.0, marker_end="url(#hop)"))
                    x += 28
            if circuit.onion:
                body.append(text(x + 10, y + 14, f"to {circuit.onion}", class_="small", fill="#555"))
            body.append("</g>")
            y += 28
        y += 8
    if topology.links:
        body.append(text(PAD, y + 4, "static links (links:), both directions", class_="lane",
                         fill=LINK_COLOUR))
        y += 16
        for link in topology.links:
            a, b = (", ".join(side) for side in link.sides)
            body.append(f'<g {attrs(class_="link", data_between=f"{a} | {b}")}>')
            body.append(tag("line", x1=float(PAD), y1=y + 10, x2=PAD + 40.0, y2=y + 10, stroke=LINK_COLOUR,
                            stroke_width=2.5, stroke_dasharray="6 4"))
            body.append(text(PAD + 50, y + 14, f"{a}  \u21c4  {b}: {link.text}", class_="small", fill="#333"))
            body.append("</g>")
            y += 22
        y += 8
    title = (f"onionlab topology {topology.name}: {len(topology.nodes)} nodes, "
             f"{len(topology.networks)} network(s)")
    subtitle = ("live roles from every node's /status (HSDir of S: the time periods it holds S's descriptor "
                "for), and the live rendezvous circuits"
                if live is not None else "every node with its role and address")
    arrow = (f'<defs><marker id="hop" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" markerHeight="9" '
             f'markerUnits="userSpaceOnUse" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{GREEN}"/>'
             "</marker></defs>")
    head = [arrow, text(PAD, 26, title, font_size=16, font_weight="bold"),
            text(PAD, 44, subtitle, fill="#555")]
    return document(width, y, head + body, title=title, css=CSS)
