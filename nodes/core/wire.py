"""Bounds-checked reading of big-endian wire formats.

Every parser in core reads through `Reader`, so truncated or oversized input always becomes a DecodeError
(a RemoteProtocolError) and never an IndexError or struct.error.
"""

from __future__ import annotations

from .errors import DecodeError


class Reader:
    __slots__ = ("_buf", "_pos", "_what")

    def __init__(self, data: bytes, what: str = "message") -> None:
        self._buf = bytes(data)
        self._pos = 0
        self._what = what

    def _take(self, n: int) -> bytes:
        end = self._pos + n
        if n < 0 or end > len(self._buf):
            raise DecodeError(f"{self._what}: truncated (wanted {n} bytes at offset {self._pos}, "
                              f"have {len(self._buf) - self._pos})")
        out = self._buf[self._pos:end]
        self._pos = end
        return out

    def u8(self) -> int:
        return self._take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self._take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self._take(4), "big")

    def u64(self) -> int:
        return int.from_bytes(self._take(8), "big")

    def bytes(self, n: int) -> bytes:
        return self._take(n)

    def rest(self) -> bytes:
        return self._take(len(self._buf) - self._pos)

    @property
    def remaining(self) -> int:
        return len(self._buf) - self._pos

    def expect_end(self) -> None:
        if self._pos != len(self._buf):
            raise DecodeError(f"{self._what}: {len(self._buf) - self._pos} unexpected trailing bytes")


def u8(n: int) -> bytes:
    return n.to_bytes(1, "big")


def u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")
