"""Give the malloc heap's free pages back to the kernel (glibc's malloc_trim).

An authority's voting round is a peak: parsing the votes of every authority about every relay, computing,
encoding and signing the consensus. What the round frees stays in glibc's heap as free chunks, resident,
and the round after dirties them again only in part: at 200 nodes (local backend, docs/scale.md) about
1 MB of an authority's anonymous memory, given back by malloc_trim(0) after each round and regrown by
0.2 MB over the next. glibc's free gives back only the top of the heap by itself; malloc_trim(0) also
releases the whole free pages inside it (MADV_DONTNEED). Python's own object arenas are not in that heap.
"""

from __future__ import annotations

import ctypes

_trim = None


def release_free_heap() -> bool:
    """Return the heap's free pages to the kernel: True if glibc released any, False if none or without
    glibc (another libc: nothing to do)."""
    global _trim
    if _trim is None:
        try:
            _trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            _trim = False
        else:
            _trim.argtypes, _trim.restype = [ctypes.c_size_t], ctypes.c_int
    return bool(_trim and _trim(0))
