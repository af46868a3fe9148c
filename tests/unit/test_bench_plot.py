"""bench/plot.py writes a valid PNG of the right size with the series drawn in their colours."""

import struct
import zlib

from bench.plot import COLORS, Panel, Series, render
from bench.scale import composition


def _decode(png: bytes) -> tuple[int, int, bytes]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    at, chunks = 8, {}
    while at < len(png):
        (length,) = struct.unpack(">I", png[at:at + 4])
        kind, data = png[at + 4:at + 8], png[at + 8:at + 8 + length]
        assert struct.unpack(">I", png[at + 8 + length:at + 12 + length])[0] == zlib.crc32(kind + data)
        chunks[kind] = chunks.get(kind, b"") + data
        at += 12 + length
    width, height, depth, color_type = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, color_type) == (8, 2) and b"IEND" in chunks
    raw = zlib.decompress(chunks[b"IDAT"])
    assert len(raw) == height * (1 + 3 * width)
    return width, height, raw


def test_a_two_panel_chart_is_a_valid_png_with_both_series_drawn():
    png = render([Panel("ready (s)", "nodes", [Series("local", [(10, 15), (300, 201)]),
                                               Series("docker", [(10, 20), (100, 90)])]),
                  Panel("idle cpu", "nodes", [Series("local", [(10, 0.02), (300, 0.33)])])],
                 panel_width=300, height=200)
    width, height, raw = _decode(png)
    assert (width, height) == (600, 200)
    pixels = {raw[i:i + 3] for row in range(height) for i in range(row * (1 + 3 * width) + 1,
                                                                     (row + 1) * (1 + 3 * width), 3)}
    assert bytes(COLORS[0]) in pixels and bytes(COLORS[1]) in pixels


def test_bench_lab_shapes_add_up_and_grow_like_the_large_topology():
    assert composition(300) == {"authority": 5, "relay": 280, "onion_service": 10, "client": 5}
    for nodes in (10, 50, 100, 200, 300):
        assert sum(composition(nodes).values()) == nodes


def test_the_cgroup_charge_is_read_from_v1_and_v2(tmp_path):
    """bench.scale reports what each container's memory cgroup is charged (usage, anonymous, page cache)."""
    from bench.scale import _cgroup_memory

    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "7").mkdir(parents=True)
    (proc / "7" / "cgroup").write_text("5:devices:/docker/abc\n4:memory:/docker/abc\n0::/\n")
    v1 = root / "memory" / "docker" / "abc"
    v1.mkdir(parents=True)
    (v1 / "memory.usage_in_bytes").write_text(f"{56 << 20}\n")
    (v1 / "memory.stat").write_text(f"cache 1\nrss 2\ntotal_cache {30 << 20}\ntotal_rss {24 << 20}\n")
    assert _cgroup_memory(7, proc, root) == {"usage": 56 << 10, "anon": 24 << 10, "file": 30 << 10}
    (proc / "8").mkdir()
    (proc / "8" / "cgroup").write_text("0::/system.slice/docker-abc.scope\n")
    v2 = root / "system.slice" / "docker-abc.scope"
    v2.mkdir(parents=True)
    (v2 / "memory.current").write_text(f"{40 << 20}\n")
    (v2 / "memory.stat").write_text(f"anon {20 << 20}\nfile {18 << 20}\n")
    assert _cgroup_memory(8, proc, root) == {"usage": 40 << 10, "anon": 20 << 10, "file": 18 << 10}
    assert _cgroup_memory(9, proc, root) is None  # gone
