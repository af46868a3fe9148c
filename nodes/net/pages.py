"""Give the kernel back the file pages (code, read-only data) that only starting the node touched.

Importing about 370 modules runs code the node never runs again: the compiler and unmarshaller of the
Python binary, the initialisation of two OpenSSLs (the system's, for `ssl`, and the static one inside
cryptography's `_rust`), and, with the kernel mapping file pages in large folios, neighbours of every page
touched: about 14 MB of clean file pages in a node container's Rss. In a container whose image is read
through a FUSE mount of its own (fuse-overlayfs) they are also page cache charged to that container alone.

MADV_PAGEOUT would drop them, but the kernel pages out only files the caller may write (the node's user
may not write its code), so: MADV_DONTNEED unmaps the pages of every file mapping without a page of its
own (nothing copied on write: such a page would be lost, the file's copy read back instead), then
POSIX_FADV_DONTNEED drops the file's pages that nobody maps any more from the page cache. What the node
runs afterwards faults back in once. Pages another process maps stay cached (the local backend's nodes
share them), so this is harmless there.

A node releases twice: once its modules are imported, and again when its /status first says ready, so that
what only starting touched (key generation, its TLS certificate, the first consensus, building circuits)
goes too: at 10 nodes a client or onion service then keeps about 7 MB of file pages, a relay or an
authority, which keep testing and making links, about 12 MB.
"""

from __future__ import annotations

import ctypes  # trio imports it anyway: no cost of its own
import os
from collections.abc import Callable

MADV_DONTNEED = 4


def clean_file_mappings(smaps_text: str) -> list[tuple[int, int, str]]:
    """(start, end, path) of every mapping of a file (/proc/PID/smaps text) that the process cannot write
    and that holds no anonymous page: every page of it is the file's own, so unmapping loses nothing."""
    found = []
    current: tuple[int, int, str] | None = None
    for line in smaps_text.splitlines():
        fields = line.split(maxsplit=5)
        if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:  # a mapping's header line
            readonly_file = len(fields) == 6 and fields[5].startswith("/") and "w" not in fields[1]
            start, end = fields[0].split("-")
            current = (int(start, 16), int(end, 16), fields[5]) if readonly_file else None
        elif current is not None and fields[0] == "Anonymous:":
            if fields[1] == "0":
                found.append(current)
            current = None
    return found


def release_file_pages() -> int:
    """Unmap this process's clean file pages and drop them from the page cache; the bytes unmapped (0 where
    procfs or libc's madvise is missing)."""
    try:
        with open("/proc/self/smaps") as f:
            mappings = clean_file_mappings(f.read())
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    released = 0
    for start, end, _ in mappings:
        if madvise(start, end - start, MADV_DONTNEED) == 0:
            released += end - start
    for path in {path for _, _, path in mappings}:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:  # gone or renamed since it was mapped: its pages go with the last user
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass
        finally:
            os.close(fd)
    return released


def release_once_ready(status: Callable[[], dict], release: Callable[[], object] = release_file_pages
                       ) -> Callable[[], dict]:
    """`status`, which calls `release` the first time its answer says ready."""
    released = False

    def answer() -> dict:
        nonlocal released
        current = status()
        if current.get("ready") and not released:
            released = True
            release()
        return current

    return answer
