"""Giving freed heap memory back to the kernel: glibc's malloc_trim(0), at start and every TRIM_EVERY s.

A node's process allocates a lot that it frees again: the bytecode of ~400 modules is unmarshalled through
temporary buffers at start, and every voting interval a consensus (92 KB at 280 relays) and its parse come
and go. glibc returns freed memory only from the top of the heap by itself; the free pages in between stay
resident, and a lab of 300 containers pays for them 300 times. malloc_trim(0) releases every whole free
page (madvise), which cut a relay's anonymous memory by about 2 MB after its imports (docs/scale.md).
The node is single-threaded, so MALLOC_ARENA_MAX (one arena per thread) changes nothing for it.

Where there is no glibc (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import logging

import trio

log = logging.getLogger(__name__)

TRIM_EVERY = 30.0  # seconds; one call walks the heap in well under a millisecond


def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def trim() -> bool:
    """Release free heap pages to the kernel; True when glibc did (it had whole free pages to give)."""
    return bool(_TRIM(0)) if _TRIM is not None else False


async def trim_periodically(every: float = TRIM_EVERY) -> None:
    """trim() every `every` seconds, forever (a task of the node's root nursery)."""
    if _TRIM is None:
        return
    while True:
        await trio.sleep(every)
        trim()
