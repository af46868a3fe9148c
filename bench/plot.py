"""A small PNG line chart without a plotting library: zlib and struct write the file, a 3x5 bitmap font the
labels. Enough for the bench's figures (bench/scale.py): a few panels side by side, each with a few series of
(x, y) points, axes with ticks, a title and a legend.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

# 3x5 glyphs, a row a string; lower case is drawn as upper case
_GLYPHS = {
    "0": "111 101 101 101 111", "1": "010 110 010 010 111", "2": "111 001 111 100 111",
    "3": "111 001 111 001 111", "4": "101 101 111 001 001", "5": "111 100 111 001 111",
    "6": "111 100 111 101 111", "7": "111 001 010 010 010", "8": "111 101 111 101 111",
    "9": "111 101 111 001 111", "A": "010 101 111 101 101", "B": "110 101 110 101 110",
    "C": "011 100 100 100 011", "D": "110 101 101 101 110", "E": "111 100 110 100 111",
    "F": "111 100 110 100 100", "G": "011 100 101 101 011", "H": "101 101 111 101 101",
    "I": "111 010 010 010 111", "J": "001 001 001 101 010", "K": "101 101 110 101 101",
    "L": "100 100 100 100 111", "M": "101 111 111 101 101", "N": "110 101 101 101 101",
    "O": "010 101 101 101 010", "P": "110 101 110 100 100", "Q": "010 101 101 110 011",
    "R": "110 101 110 101 101", "S": "011 100 010 001 110", "T": "111 010 010 010 010",
    "U": "101 101 101 101 111", "V": "101 101 101 101 010", "W": "101 101 111 111 101",
    "X": "101 101 010 101 101", "Y": "101 101 010 010 010", "Z": "111 001 010 100 111",
    ".": "000 000 000 000 010", "-": "000 000 111 000 000", "(": "010 100 100 100 010",
    ")": "010 001 001 001 010", "/": "001 001 010 100 100", ":": "000 010 000 010 000",
    " ": "000 000 000 000 000", "%": "101 001 010 100 101", ",": "000 000 000 010 100",
    "^": "010 101 000 000 000", "=": "000 111 000 111 000",
}
COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189)]
SCALE = 2  # pixels per font dot


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    points: Sequence[tuple[float, float]]


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    x_label: str
    series: Sequence[Series]


class Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(b"\xff" * (width * height * 3))

    def dot(self, x: int, y: int, color: tuple[int, int, int]) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = 3 * (y * self.width + x)
            self.pixels[i:i + 3] = bytes(color)

    def rect(self, x: int, y: int, w: int, h: int, color: tuple[int, int, int]) -> None:
        for yy in range(y, y + h):
            for xx in range(x, x + w):
                self.dot(xx, yy, color)

    def line(self, x0: int, y0: int, x1: int, y1: int, color: tuple[int, int, int], width: int = 1) -> None:
        steps = max(abs(x1 - x0), abs(y1 - y0), 1)
        for i in range(steps + 1):
            x = round(x0 + (x1 - x0) * i / steps)
            y = round(y0 + (y1 - y0) * i / steps)
            self.rect(x - width // 2, y - width // 2, width, width, color)

    def text(self, x: int, y: int, text: str, color: tuple[int, int, int] = (0, 0, 0)) -> None:
        for ch in text.upper():
            rows = _GLYPHS.get(ch, _GLYPHS[" "]).split()
            for r, row in enumerate(rows):
                for c, bit in enumerate(row):
                    if bit == "1":
                        self.rect(x + c * SCALE, y + r * SCALE, SCALE, SCALE, color)
            x += 4 * SCALE

    def png(self) -> bytes:
        raw = b"".join(b"\x00" + bytes(self.pixels[3 * y * self.width:3 * (y + 1) * self.width])
                       for y in range(self.height))

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)  # 8-bit RGB
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
                + chunk(b"IEND", b""))


def text_width(text: str) -> int:
    return 4 * SCALE * len(text)


def _nice_max(value: float) -> float:
    """The first of 1, 2, 5 x 10^k at or above `value` (an axis' top)."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= value * (1 - 1e-9))


def _label(value: float) -> str:
    return f"{value:.3g}"


def render(panels: Sequence[Panel], *, panel_width: int = 420, height: int = 340) -> bytes:
    """The PNG of `panels` side by side; each panel's y axis starts at 0, its x axis spans the points."""
    canvas = Canvas(panel_width * len(panels), height)
    left, right, top, bottom = 60, 20, 40, 80
    for p, panel in enumerate(panels):
        ox = p * panel_width
        points = [pt for s in panel.series for pt in s.points]
        if not points:
            continue
        x_min, x_max = min(x for x, _ in points), max(x for x, _ in points)
        x_max = x_max if x_max > x_min else x_min + 1
        y_max = _nice_max(max(y for _, y in points))
        w, h = panel_width - left - right, height - top - bottom

        def at(x: float, y: float, ox: int = ox, x_min: float = x_min, x_max: float = x_max,
               y_max: float = y_max, w: int = w, h: int = h) -> tuple[int, int]:
            return ox + left + round((x - x_min) / (x_max - x_min) * w), top + h - round(y / y_max * h)

        canvas.text(ox + left, 12, panel.title)
        canvas.line(ox + left, top, ox + left, top + h, (0, 0, 0))
        canvas.line(ox + left, top + h, ox + left + w, top + h, (0, 0, 0))
        for i in range(5):  # y ticks and grid
            y_value = y_max * i / 4
            _, y = at(x_min, y_value)
            canvas.line(ox + left + 1, y, ox + left + w, y, (225, 225, 225))
            label = _label(y_value)
            canvas.text(ox + left - 6 - text_width(label), y - 5, label)
        for x_value in sorted({x for x, _ in points}):  # x ticks at the measured sizes
            x, _ = at(x_value, 0)
            canvas.line(x, top + h, x, top + h + 4, (0, 0, 0))
            label = _label(x_value)
            canvas.text(x - text_width(label) // 2, top + h + 8, label)
        canvas.text(ox + left + (w - text_width(panel.x_label)) // 2, top + h + 24, panel.x_label)
        legend_x, legend_y = ox + left, top + h + 42
        for s, series in enumerate(panel.series):
            color = COLORS[s % len(COLORS)]
            pts = [at(x, y) for x, y in sorted(series.points)]
            for a, b in zip(pts, pts[1:], strict=False):
                canvas.line(*a, *b, color, width=2)
            for x, y in pts:
                canvas.rect(x - 3, y - 3, 7, 7, color)
            entry = 24 + text_width(series.label)
            if legend_x + entry > ox + panel_width - right:  # wrap onto the next legend row
                legend_x, legend_y = ox + left, legend_y + 16
            canvas.rect(legend_x, legend_y, 10, 10, color)
            canvas.text(legend_x + 14, legend_y, series.label)
            legend_x += entry
    return canvas.png()
