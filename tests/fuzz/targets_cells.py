"""Fuzz targets: the cell framer (both CircID lengths) and every channel-cell body parser."""

from __future__ import annotations

from nodes.core.cells import (
    BODY_TYPES,
    PAYLOAD_LEN,
    AuthChallenge,
    Authenticate,
    Cell,
    CellFramer,
    Certs,
    Command,
    Create2,
    Created2,
    CreatedFast,
    CreateFast,
    Destroy,
    Netinfo,
    Padding,
    Versions,
    VPadding,
    decode_body,
    encode_cell,
)
from tests.fuzz.driver import Target

_SAMPLES = (
    Create2(2, bytes(range(84))),
    Created2(bytes(range(64))),
    CreateFast(bytes(range(20))),
    CreatedFast(bytes(range(20)), bytes(range(20, 40))),
    Destroy(4),
    Versions((3, 4, 5)),
    Netinfo(0x5F6F859C, "::1", ("127.0.0.1", "2001:db8::2")),
    Certs(((4, bytes(range(140))), (5, bytes(104)), (7, b"x" * 165))),
    AuthChallenge(bytes(range(32)), (1, 3)),
    Authenticate(3, bytes(range(200))),
    Padding(),
    VPadding(10),
)


def _payload(body) -> bytes:
    raw = body.encode()
    fixed = body.COMMAND < 128 and body.COMMAND != Command.VERSIONS
    return raw.ljust(PAYLOAD_LEN, b"\0") if fixed else raw


def _frame(circ_id_len: int):
    def parse(data: bytes) -> object:
        framer = CellFramer(circ_id_len)
        cells = framer.feed(data)
        framer.circ_id_len = 4  # what a link does after VERSIONS
        return cells + framer.feed(b"")
    return parse


_BODY_COMMANDS = sorted(BODY_TYPES)


def _any_body(data: bytes) -> object:
    """First byte picks a body command; the rest is its payload. Reaches the parsers that accept any input."""
    if not data:
        return None
    return decode_body(Cell(0, _BODY_COMMANDS[data[0] % len(_BODY_COMMANDS)], data[1:]))


_STREAM4 = b"".join(encode_cell(Cell(0x80000001 + i, b.COMMAND, _payload(b))) for i, b in enumerate(_SAMPLES))
_STREAM2 = encode_cell(Cell(0, Command.VERSIONS, Versions((4, 5)).encode()), circ_id_len=2) + _STREAM4[:1100]

TARGETS = [
    Target("cell_framer_4", _frame(4), (_STREAM4, _STREAM4[:700])),
    Target("cell_framer_2", _frame(2), (_STREAM2,)),
    Target("cell_body_any", _any_body,
           tuple(bytes([_BODY_COMMANDS.index(b.COMMAND)]) + _payload(b) for b in _SAMPLES)),
    # PADDING and VPADDING accept any payload (up to the VPADDING cap): only cell_body_any reaches them.
    *(Target(f"cell_body_{type(b).__name__.lower()}", type(b).decode, (_payload(b), b.encode()))
      for b in _SAMPLES if not isinstance(b, Padding | VPadding)),
]
