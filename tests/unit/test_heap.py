"""nodes/net/heap.py: freed malloc memory inside the heap goes back to the kernel."""

import ctypes
from pathlib import Path

import pytest

from nodes.net.heap import release_free_heap

CHUNK = 64 * 1024  # under glibc's mmap threshold: from the heap
CHUNKS = 256


def _rss_kib() -> int:
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            return int(line.split()[1])
    raise AssertionError("no Rss line")


def test_free_pages_inside_the_heap_are_given_back():
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        pytest.skip("not glibc")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    chunks = [libc.malloc(CHUNK) for _ in range(CHUNKS)]
    for c in chunks:
        ctypes.memset(c, 1, CHUNK)  # resident
    keep = libc.malloc(CHUNK)  # above them: free() cannot shrink the heap's top past it
    for c in chunks:
        libc.free(c)
    before = _rss_kib()
    release_free_heap()
    after = _rss_kib()
    libc.free(keep)
    assert before - after > CHUNKS * CHUNK // 1024 // 2  # most of the 16 MB freed
