"""Tiny helpers for the SVG pictures we write ourselves (flow_svg, graph): escaped text, attributes, the
document wrapper and an offset polyline. Output is plain SVG 1.1: no scripts, no external resources."""

from __future__ import annotations

import math
from html import escape

FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"


def attrs(**values: object) -> str:
    """Attributes from keywords: `class_` is `class`, `data_x` is `data-x`; None values are left out."""
    out = []
    for key, value in values.items():
        if value is None:
            continue
        name = key.rstrip("_").replace("_", "-")
        if isinstance(value, float):
            value = f"{value:.1f}"
        out.append(f'{name}="{escape(str(value))}"')
    return " ".join(out)


def tag(name: str, **values: object) -> str:
    """An empty element: tag("rect", x=1.0, fill="#fff")."""
    return f"<{name} {attrs(**values)}/>"


def text(x: float, y: float, content: str, **values: object) -> str:
    return f"<text {attrs(x=float(x), y=float(y), **values)}>{escape(content)}</text>"


def document(width: float, height: float, body: list[str], *, title: str, css: str = "") -> str:
    """A standalone SVG document (also valid inline in HTML) with a <title> and optional CSS."""
    style = f"<style>{css}</style>" if css else ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="{FONT}" font-size="12">'
            f"<title>{escape(title)}</title>{style}"
            f'<rect width="100%" height="100%" fill="#ffffff"/>' + "".join(body) + "</svg>\n")


def points(coords: list[tuple[float, float]]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)


def offset_polyline(coords: list[tuple[float, float]], d: float) -> list[tuple[float, float]]:
    """The polyline moved sideways by d (mitred at each bend, the mitre capped): parallel circuits that share
    a hop stay apart instead of drawing over each other."""
    if d == 0 or len(coords) < 2:
        return coords
    normals = []
    for (x1, y1), (x2, y2) in zip(coords, coords[1:], strict=False):
        length = math.hypot(x2 - x1, y2 - y1) or 1.0
        normals.append((-(y2 - y1) / length, (x2 - x1) / length))
    out = []
    for i, (x, y) in enumerate(coords):
        a = normals[max(0, i - 1)]
        b = normals[min(i, len(normals) - 1)]
        mx, my = a[0] + b[0], a[1] + b[1]
        norm = math.hypot(mx, my)
        if norm < 1e-6:  # a hairpin: go straight sideways
            mx, my, scale = b[0], b[1], 1.0
        else:
            mx, my = mx / norm, my / norm
            scale = min(2.0, 1.0 / max(0.5, mx * b[0] + my * b[1]))
        out.append((x + mx * d * scale, y + my * d * scale))
    return out
