"""nodes/memory.py: freed heap pages go back to the kernel (glibc's malloc_trim), at start and then
periodically."""

from __future__ import annotations

import platform

import pytest
import trio
import trio.testing

from nodes import memory


def _anon_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_trim_gives_freed_pages_in_the_middle_of_the_heap_back():
    """glibc by itself returns only the heap's free top; a live block above the freed ones keeps them."""
    blocks = [bytes(4000) + bytes([i % 256]) for i in range(20_000)]  # ~80 MB from the heap, not mmap
    keep = bytes(4000) + b"top"  # allocated last: above the others
    del blocks
    before = _anon_kib()
    assert memory.trim() is True
    assert before - _anon_kib() > 40_000  # KiB
    assert keep


def test_trim_periodically_calls_it_every_interval(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "_TRIM", lambda pad: calls.append(pad) or 1)

    async def main():
        with trio.move_on_after(95):
            await memory.trim_periodically(30)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert calls == [0, 0, 0]


def test_without_glibc_it_does_nothing(monkeypatch):
    monkeypatch.setattr(memory, "_TRIM", None)
    assert memory.trim() is False
    trio.run(memory.trim_periodically)  # returns at once instead of sleeping forever
