"""`onionlab flow --svg`: the six steps of one flow drawn as the seed's six figures, from a FlowResult only.

Each panel puts the client at the left and the onion service at the right of an ellipse, and every relay the
run's events name on the ellipse between them, so each circuit is drawn as a path of chords that never runs
through another node. Green paths are circuits (the client or service, then each relay on it, as the events'
`path` lists them); a grey dashed line is a direct connection (a one-hop circuit: no relay between); orange
dashed arrows are cells relayed over a circuit that already exists (INTRODUCE2 down the service's intro
circuit, the end-to-end streams through the rendezvous point); red dashed paths are tries that failed (an
intro point's NACK, the next one then tried). The relays that play a part in a step carry its role (intro
point, HSDir, rendezvous point), and a caption under each panel gives the ms of each event.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field

from .flow import FlowResult, StepRecord, render
from .graph import ROLE_COLOURS
from .svg import attrs, document, offset_polyline, points, tag, text

TITLES = {1: "The service picks introduction points", 2: "It uploads its descriptor to the HSDirs",
          3: "The client fetches it, sets up a rendezvous point", 4: "The client introduces itself",
          5: "The service builds a circuit to the RP", 6: "The RP joins the two circuits"}
PANEL_W, PANEL_H, GAP, HEADER, LEGEND = 480, 420, 16, 64, 58
CX, CY, RX, RY = PANEL_W / 2, 172, 182, 102  # the ellipse, in panel coordinates
CAPTION_TOP, CAPTION_LINE, CAPTION_LINES = 304, 15, 7
GREEN, GREY, ORANGE, RED = "#1e9a4b", "#666666", "#e67e22", "#c0392b"
PART_COLOURS = {"intro point": "#8e44ad", "HSDir": "#b7950b", "rendezvous point": "#117a65"}
CSS = (".panel-title{font-weight:bold;font-size:14px}.ms{fill:#555;font-size:12px}"
       ".caption{font-size:11.5px;fill:#222}.name{font-size:11px;font-weight:bold}.role{font-size:9.5px}"
       ".tag{font-size:9.5px;fill:#fff;font-weight:bold}.msg{font-size:10.5px;font-weight:bold}")


@dataclass(slots=True)
class Line:
    kind: str  # circuit, direct, message, failed
    nodes: list[str]  # from the first node to the last, as drawn
    label: str = ""


@dataclass(slots=True)
class Panel:
    step: int
    lines: list[Line] = field(default_factory=list)
    parts: dict[str, str] = field(default_factory=dict)  # relay -> its part in this step
    caption: list[str] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)


def _natural(name: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def _at(r: StepRecord, result: FlowResult) -> str:
    """When it happened: since the lab's first event for steps one and two (done when the service came up),
    since the fetch started for the rest."""
    if r.step <= 2:
        return f"{r.ms:,.0f} ms"
    return f"+{r.ms - result.flow_started_ms:,.1f} ms"


def _circuit(origin: str, r: StepRecord, label: str = "", *, failed: bool = False) -> Line:
    kind = "failed" if failed else ("direct" if len(r.path) <= 1 else "circuit")
    return Line(kind, [origin, *(r.path or ([r.peer] if r.peer else []))], label)


def _via(r: StepRecord) -> str:
    return f" via {' > '.join(r.path[:-1])}" if len(r.path) > 1 else (" (direct)" if r.path else "")


def panels(result: FlowResult) -> list[Panel]:
    """What each of the six panels shows, from the result's records."""
    by_step: dict[int, list[StepRecord]] = {n: [] for n in range(1, 7)}
    for r in result.steps:
        by_step[r.step].append(r)
    service = next((r.node for r in result.steps if r.role == "onion_service"), "onion service")
    client = result.client
    out = [Panel(n) for n in range(1, 7)]
    for panel in out:
        panel.ms = [r.ms for r in by_step[panel.step] if not r.cached]

    p = out[0]  # step 1: intro circuits, the relays that registered
    registered = {r.node: r for r in by_step[1] if r.event == "intro_point_registered"}
    for r in by_step[1]:
        if r.event == "intro_established":
            p.lines.append(_circuit(service, r))
            p.parts[r.peer or r.path[-1]] = "intro point"
            reg = registered.get(r.peer or "")
            p.caption.append(f"{r.peer}: set up at {_at(r, result)}{_via(r)}"
                             + (f", registered {_at(reg, result)}" if reg else ""))
    intro_circuits = {r.peer: r for r in by_step[1] if r.event == "intro_established"}

    p = out[1]  # step 2: uploads to each HSDir, the HSDirs that stored it
    stored = {r.node: r for r in by_step[2] if r.event == "descriptor_stored"}
    if any(r.event == "descriptor_published" for r in by_step[2]):
        p.caption.append("POSTed over a BEGIN_DIR stream at each circuit's end:")
    for r in by_step[2]:
        if r.event == "descriptor_published":
            p.lines.append(_circuit(service, r, "BEGIN_DIR"))
            p.parts[r.peer or r.path[-1]] = "HSDir"
            st = stored.get(r.peer or "")
            p.caption.append(f"{r.peer}: uploaded {_at(r, result)}{_via(r)}"
                             + (f"; stored {_at(st, result)}" if st else ""))
    for name, r in stored.items():
        if name not in p.parts:
            p.parts[name] = "HSDir"
            p.caption.append(f"{name}: stored {_at(r, result)}")

    p = out[2]  # step 3: descriptor fetch, rendezvous point
    for r in by_step[3]:
        if r.event == "descriptor_fetched":
            if r.cached:
                p.caption.append(f"descriptor from {client}'s cache (fetched from {r.peer} at "
                                 f"{r.ms:,.0f} ms)")
            else:
                p.lines.append(_circuit(client, r, "BEGIN_DIR"))
                p.parts[r.peer or r.path[-1]] = "HSDir"
                p.caption.append(f"descriptor fetched from {r.peer} {_at(r, result)}{_via(r)}")
        elif r.event == "rendezvous_established":
            p.lines.append(_circuit(client, r))
            p.parts[r.peer or r.path[-1]] = "rendezvous point"
            p.caption.append(f"rendezvous point {r.peer} set up {_at(r, result)}{_via(r)}")
        elif r.event == "rendezvous_point_registered":
            p.parts[r.node] = "rendezvous point"
            p.caption.append(f"{r.node} registered the one-time cookie {_at(r, result)}")

    p = out[3]  # step 4: INTRODUCE1 to each intro point tried, INTRODUCE2 down the service's intro circuit
    nacked = {r.peer: r for r in by_step[4] if r.event == "introduce_nack"}
    tries = sorted((r for r in by_step[4] if r.event == "introduce_sent"), key=lambda r: r.ms)
    for k, r in enumerate(tries, 1):
        nack = nacked.get(r.peer)
        p.lines.append(_circuit(client, r, "NACK" if nack else "INTRODUCE1", failed=nack is not None))
        p.parts[r.peer or r.path[-1]] = "intro point"
        tried = f"try {k}: " if len(tries) > 1 else ""
        p.caption.append(f"{tried}INTRODUCE1 to {r.peer} {_at(r, result)}{_via(r)}"
                         + (f"; NACK {_at(nack, result)}, next intro point" if nack else ""))
    for r in by_step[4]:
        if r.event == "introduce_forwarded":
            p.parts[r.node] = "intro point"
            own = intro_circuits.get(r.node)
            if own is not None:
                p.lines.append(Line("message", [*reversed(own.path), service], "INTRODUCE2"))
            p.caption.append(f"{r.node} forwarded INTRODUCE2 to {service} {_at(r, result)}")

    p = out[4]  # step 5: the service's circuit to the RP
    for r in by_step[5]:
        if r.event == "introduce_received":
            p.caption.append(f"{service} decrypted INTRODUCE2 {_at(r, result)}")
        elif r.event == "rendezvous_sent":
            p.lines.append(_circuit(service, r, "RENDEZVOUS1"))
            p.parts[r.peer or r.path[-1]] = "rendezvous point"
            p.caption.append(f"RENDEZVOUS1 to {r.peer} {_at(r, result)}{_via(r)}")
        elif r.event == "rendezvous_joined":
            p.parts[r.node] = "rendezvous point"
            p.caption.append(f"{r.node} joined the circuits {_at(r, result)}")
    service_rend = next((r for r in by_step[5] if r.event == "rendezvous_sent"), None)

    p = out[5]  # step 6: both circuits meet at the RP; the streams run end to end
    for r in by_step[6]:
        if r.event == "rendezvous_completed":
            p.lines.append(_circuit(client, r))
            rp = r.peer or r.path[-1]
            p.parts[rp] = "rendezvous point"
            if service_rend is not None:
                p.lines.append(_circuit(service, service_rend))
                p.lines.append(Line("message", [client, *r.path, *reversed(service_rend.path[:-1]), service],
                                    "end-to-end streams"))
            p.caption.append(f"{client} got RENDEZVOUS2 from {rp} {_at(r, result)}")
        elif r.event == "stream_opened":
            p.caption.append(f"stream opened at {r.node} {_at(r, result)}")
    return out


# -- drawing -----------------------------------------------------------------------------------------------


def _positions(relays: list[str], client: str, service: str) -> dict[str, tuple[float, float]]:
    """Client left, service right, relays on the ellipse between them: the top arc first, left to right."""
    top = relays[:math.ceil(len(relays) / 2)]
    bottom = relays[len(top):]
    where = {client: (CX - RX, CY), service: (CX + RX, CY)}
    for arc, sign in ((top, -1), (bottom, 1)):
        for i, name in enumerate(arc):
            angle = math.pi * (i + 1) / (len(arc) + 1)
            where[name] = (CX - RX * math.cos(angle), CY + sign * RY * math.sin(angle))
    return where


def _trim(coords: list[tuple[float, float]], by: float) -> list[tuple[float, float]]:
    """The last segment shortened by `by` so that an arrowhead stops at the node's edge, not its centre."""
    (x1, y1), (x2, y2) = coords[-2], coords[-1]
    length = math.hypot(x2 - x1, y2 - y1)
    if length <= by:
        return coords
    return [*coords[:-1], (x2 - (x2 - x1) * by / length, y2 - (y2 - y1) * by / length)]


STYLES = {"circuit": (GREEN, 3.5, None, "green"), "direct": (GREY, 2.5, "7 5", "grey"),
          "message": (ORANGE, 2.2, "6 4", "orange"), "failed": (RED, 3.0, "8 5", "red")}


def _line(line: Line, where: dict[str, tuple[float, float]], offset: float) -> list[str]:
    coords = [where[n] for n in line.nodes if n in where]
    if len(coords) < 2:
        return []
    colour, width, dash, marker = STYLES[line.kind]
    coords = _trim(offset_polyline(coords, offset), 26)
    shape = attrs(class_=line.kind, data_path=" ".join(line.nodes), points=points(coords), fill="none",
                  stroke=colour, stroke_width=width, stroke_dasharray=dash, stroke_linejoin="round",
                  stroke_linecap="round", marker_end=f"url(#arrow-{marker})", opacity=0.9)
    out = [f"<polyline {shape}>"
           f"<title>{line.kind}: {' > '.join(line.nodes)}</title></polyline>"]
    if line.kind in ("message", "failed") and line.label:
        # the label sits on the middle of the line's longest segment
        (x1, y1), (x2, y2) = max(zip(coords, coords[1:], strict=False),
                                 key=lambda seg: math.dist(seg[0], seg[1]))
        x, y = (x1 + x2) / 2, (y1 + y2) / 2 + 4
        out.append(tag("rect", x=x - 3.4 * len(line.label) - 4, y=y - 11, width=6.8 * len(line.label) + 8,
                       height=15.0, rx=3, fill="#fff", opacity=0.85))
        out.append(text(x, y, line.label, class_="msg", fill=colour, text_anchor="middle"))
    return out


def _node(name: str, kind: str, x: float, y: float, part: str | None, above: bool) -> list[str]:
    if kind == "relay":
        w, h, fill = 70, 26, ROLE_COLOURS["relay"]
    else:
        w, h, fill = 96, 42, ROLE_COLOURS[kind]
    stroke = PART_COLOURS.get(part or "", "#333")
    out = [f'<g {attrs(class_=f"node {kind}", data_node=name, data_part=part)}>',
           tag("rect", x=x - w / 2, y=y - h / 2, width=float(w), height=float(h), rx=7, fill=fill,
               stroke=stroke, stroke_width=3.0 if part else 1.2)]
    if kind == "relay":
        out.append(text(x, y + 4, name, class_="name", text_anchor="middle"))
    else:
        out.append(text(x, y - 2, name, class_="name", text_anchor="middle"))
        out.append(text(x, y + 12, kind.replace("_", " "), class_="role", text_anchor="middle"))
    if part:
        ty = y - h / 2 - 15 if above else y + h / 2 + 3
        tw = 6.2 * len(part) + 10
        out.append(f'<rect {attrs(x=x - tw / 2, y=ty, width=tw, height=13.0, rx=6.5, fill=stroke)}/>')
        out.append(text(x, ty + 10, part, class_="tag", text_anchor="middle"))
    out.append("</g>")
    return out


def _panel(panel: Panel, result: FlowResult, relays: list[str], service: str, ox: float, oy: float,
           failed: bool) -> list[str]:
    where = _positions(relays, result.client, service)
    group = attrs(class_="panel", id=f"step{panel.step}", data_step=panel.step,
                  transform=f"translate({ox:.0f},{oy:.0f})")
    out = [f"<g {group}>",
           tag("rect", width=float(PANEL_W), height=float(PANEL_H), rx=10, fill="#fbfbfd",
               stroke=RED if failed else "#c8c8d0", stroke_width=2.0 if failed else 1.0),
           f'<circle {attrs(cx=28.0, cy=22.0, r=13, fill="#34495e")}/>',
           text(28, 27, str(panel.step), fill="#fff", font_weight="bold", font_size=14, text_anchor="middle"),
           text(50, 27, TITLES[panel.step], class_="panel-title")]
    if panel.ms:
        first, last = min(panel.ms), max(panel.ms)
        base = 0.0 if panel.step <= 2 else result.flow_started_ms
        sign = "" if panel.step <= 2 else "+"
        span = f"{sign}{first - base:,.0f} ms" if last - first < 0.5 else \
            f"{sign}{first - base:,.0f} .. {sign}{last - base:,.0f} ms"
        out.append(text(PANEL_W - 12, 46, span, class_="ms", text_anchor="end"))
    out.append(tag("ellipse", cx=CX, cy=CY, rx=float(RX), ry=float(RY), fill="none", stroke="#e3e3ea",
                   stroke_dasharray="3 4"))
    counts: dict[str, int] = {}
    for line in panel.lines:
        counts[line.kind] = counts.get(line.kind, 0) + 1
    seen: dict[str, int] = {}
    for line in panel.lines:  # parallel lines of a kind fan out 6 px apart
        k = seen[line.kind] = seen.get(line.kind, -1) + 1
        shift = {"message": 7.0, "failed": -5.0}.get(line.kind, 0.0)
        out += _line(line, where, shift + 6.0 * (k - (counts[line.kind] - 1) / 2))
    for name in relays:
        x, y = where[name]
        out += _node(name, "relay", x, y, panel.parts.get(name), above=y < CY)
    out += _node(result.client, "client", *where[result.client], None, False)
    out += _node(service, "onion_service", *where[service], None, False)
    caption = panel.caption or (["no event for this step: the flow failed here" if failed else "no event"])
    caption = [part for line_text in caption for part in _wrap(line_text)]
    if len(caption) > CAPTION_LINES:
        caption = [*caption[:CAPTION_LINES - 1], f"... {len(caption) - CAPTION_LINES + 1} more lines"]
    for i, line_text in enumerate(caption):
        out.append(text(16, CAPTION_TOP + 14 + i * CAPTION_LINE, line_text, class_="caption",
                        fill=RED if failed and not panel.caption else None))
    out.append("</g>")
    return out


def _wrap(line: str, width: int = 70) -> list[str]:
    """A caption line cut at spaces into pieces that fit the panel; the pieces after the first indented."""
    out: list[str] = []
    while len(line) > width:
        cut = line.rfind(" ", 0, width)
        cut = cut if cut > 0 else width
        out.append(line[:cut])
        line = "\u2003\u2003" + line[cut:].lstrip()  # SVG collapses plain spaces
    return [*out, line]


def _legend(y: float, width: float) -> list[str]:
    out = []
    x = 16.0
    for kind, label in (("circuit", "circuit through the relays on it"),
                        ("direct", "direct connection (one hop)"),
                        ("message", "cells relayed over an existing circuit"),
                        ("failed", "a try that failed (NACK)")):
        colour, w, dash, marker = STYLES[kind]
        out.append(tag("line", x1=x, y1=y, x2=x + 44, y2=y, stroke=colour, stroke_width=w,
                       stroke_dasharray=dash, marker_end=f"url(#arrow-{marker})"))
        out.append(text(x + 56, y + 4, label))
        x += 56 + 7.0 * len(label) + 22
    x = 16.0
    for part, colour in PART_COLOURS.items():
        tw = 6.2 * len(part) + 10
        out.append(f'<rect {attrs(x=x, y=y + 16, width=tw, height=13.0, rx=6.5, fill=colour)}/>')
        out.append(text(x + tw / 2, y + 26, part, class_="tag", text_anchor="middle"))
        x += tw + 10
    out.append(text(x + 6, y + 26, "the relay's part in that step; ms: steps 1-2 since the lab's first "
                                   "event, steps 3-6 since the fetch started", fill="#444"))
    return out


def _markers() -> str:
    defs = []
    for name, colour in (("green", GREEN), ("grey", GREY), ("orange", ORANGE), ("red", RED)):
        defs.append(f'<marker id="arrow-{name}" viewBox="0 0 10 10" refX="8" refY="5" markerWidth="13" '
                    f'markerHeight="13" markerUnits="userSpaceOnUse" orient="auto-start-reverse">'
                    f'<path d="M0,0 L10,5 L0,10 z" '
                    f'fill="{colour}"/></marker>')
    return "<defs>" + "".join(defs) + "</defs>"


def render_svg(result: FlowResult) -> str:
    """The six panels of `result` as a standalone SVG document."""
    service = next((r.node for r in result.steps if r.role == "onion_service"), "onion service")
    drawn = panels(result)
    relays = {n for p in drawn for line in p.lines for n in line.nodes} | {n for p in drawn for n in p.parts}
    relays = sorted(relays - {result.client, service}, key=_natural)
    width = GAP + 3 * (PANEL_W + GAP)
    height = HEADER + 2 * (PANEL_H + GAP) + LEGEND
    verdict = "flow OK: all six steps happened" if result.ok else \
        f"flow FAILED at step {result.failed_step}: {result.error}"
    body = [_markers(),
            text(GAP, 28, f"onionlab flow: {result.client} to {service} ({result.onion})", font_size=17,
                 font_weight="bold"),
            text(GAP, 50, f"{verdict}. {result.bytes_verified:,} of {result.bytes_requested:,} bytes "
                          f"verified; the fetch started {result.flow_started_ms:,.0f} ms after the lab's "
                          f"first event and took {result.flow_ms:,.1f} ms.", fill=GREEN if result.ok else RED,
                 font_size=13)]
    for i, panel in enumerate(drawn):
        ox = GAP + (i % 3) * (PANEL_W + GAP)
        oy = HEADER + (i // 3) * (PANEL_H + GAP)
        body += _panel(panel, result, relays, service, ox, oy, failed=result.failed_step == panel.step)
    body += _legend(HEADER + 2 * (PANEL_H + GAP) + 14, width)
    return document(width, height, body, title=f"onionlab flow: {result.client} to {result.onion}", css=CSS)


def render_html(result: FlowResult) -> str:
    """A self-contained page: the six panels (the SVG inline), then the text timeline. No scripts."""
    title = html.escape(f"onionlab flow: {result.client} to {result.onion}")
    return (f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{title}</title><style>'
            "body{font-family:DejaVu Sans,Helvetica,Arial,sans-serif;margin:1.5em}"
            "svg{max-width:100%;height:auto}"
            f"</style></head><body>{render_svg(result)}<h2>Timeline</h2>"
            f"<pre>{html.escape(render(result))}</pre></body></html>\n")
