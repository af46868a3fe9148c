"""Channel cells (tor-spec 3) and the bodies of the link and circuit-handshake cells.

A fixed cell is CircID Command Payload(509); a variable-length cell (VERSIONS, or command >= 128) is
CircID Command Length(2) Payload. CircID is 2 bytes before link protocol 4 is negotiated (the VERSIONS cell
always uses 2) and 4 bytes after. `encode_cell` and `CellFramer` are the hot path and use struct, not
`Reader`; the bodies are parsed through `Reader`. Fixed-cell bodies ignore their trailing padding; so do
CERTS, AUTH_CHALLENGE and AUTHENTICATE, which the spec says may carry extra bytes. VERSIONS must not.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, NamedTuple

from .errors import DecodeError, LocalProtocolError
from .wire import Reader, u8, u16, u32

CELL_LEN = 514
PAYLOAD_LEN = 509
# The format allows var cells up to 65535 bytes; real CERTS cells are ~2 KB. The cap bounds what one peer can
# make us buffer.
VAR_PAYLOAD_MAX = 16384


class Command(IntEnum):
    PADDING = 0
    CREATE = 1
    CREATED = 2
    RELAY = 3
    DESTROY = 4
    CREATE_FAST = 5
    CREATED_FAST = 6
    VERSIONS = 7
    NETINFO = 8
    RELAY_EARLY = 9
    CREATE2 = 10
    CREATED2 = 11
    PADDING_NEGOTIATE = 12  # link protocol 5 (padding-spec): a tor peer sends it; we take no padding orders
    VPADDING = 128
    CERTS = 129
    AUTH_CHALLENGE = 130
    AUTHENTICATE = 131


_KNOWN = frozenset(int(c) for c in Command)


def is_var(command: int) -> bool:
    """True for variable-length cells (link protocol 3+)."""
    return command == 7 or command >= 128


class Cell(NamedTuple):
    """Immutable, as a frozen dataclass would be; a NamedTuple because every cell a node frames, relays or
    seals is one, and a tuple is made at a fraction of a frozen dataclass's cost (its __init__ sets each
    field through object.__setattr__)."""

    circ_id: int
    command: int
    payload: bytes  # fixed cells: as received, 509 bytes with padding; var cells: exactly Length bytes


# (fixed header, var header) per CircID length
_HEADERS = {
    2: (struct.Struct(">HB"), struct.Struct(">HBH")),
    4: (struct.Struct(">IB"), struct.Struct(">IBH")),
}
_ZEROS = bytes(PAYLOAD_LEN)
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


def encode_cell(cell: Cell, circ_id_len: int = 4) -> bytes:
    """Cell -> wire bytes; fixed payloads are zero-padded to 509."""
    headers = _HEADERS.get(circ_id_len)
    if headers is None:
        raise LocalProtocolError(f"CircID length must be 2 or 4, not {circ_id_len}")
    command = cell.command
    if command not in _KNOWN:
        raise LocalProtocolError(f"unknown cell command {command}")
    payload = cell.payload
    n = len(payload)
    try:
        if command == 7 or command >= 128:
            if n > VAR_PAYLOAD_MAX:
                raise LocalProtocolError(f"variable-length payload of {n} bytes exceeds {VAR_PAYLOAD_MAX}")
            return headers[1].pack(cell.circ_id, command, n) + payload
        if n > PAYLOAD_LEN:
            raise LocalProtocolError(f"fixed cell payload of {n} bytes exceeds {PAYLOAD_LEN}")
        return headers[0].pack(cell.circ_id, command) + payload + _ZEROS[n:]
    except struct.error as e:
        raise LocalProtocolError(f"circ_id {cell.circ_id} does not fit in {circ_id_len} bytes") from e


_FIXED4 = _HEADERS[4][0]


def encode_cells(cells: Iterable[Cell]) -> bytes:
    """encode_cell (CircID length 4) over many cells, joined: what a link writes per batch. Full-size fixed
    cells (every relay cell) skip the per-cell call and copy; anything else goes through encode_cell."""
    parts: list[bytes] = []
    append = parts.append
    pack = _FIXED4.pack
    for cell in cells:
        command = cell.command
        payload = cell.payload
        if len(payload) == PAYLOAD_LEN and command < 128 and command != 7 and command in _KNOWN:
            try:
                append(pack(cell.circ_id, command))
            except struct.error as e:
                raise LocalProtocolError(f"circ_id {cell.circ_id} does not fit in 4 bytes") from e
            append(payload)
        else:
            append(encode_cell(cell))
    return b"".join(parts)


_FIXED_CELL4 = struct.Struct(">IB509s")  # a whole fixed cell with a 4-byte CircID
_make_cell = Cell._make
# command byte -> 0 for known fixed-length commands, 1 for anything else (a var cell, an unknown command)
_NOT_FIXED = bytes(0 if c in _KNOWN and not is_var(c) else 1 for c in range(256))


class CellFramer:
    """Turns a byte stream into cells, buffering partial ones.

    While `circ_id_len` is 2, `feed` stops after a VERSIONS cell and holds every later byte: they use the
    CircID length the link negotiates. Set `circ_id_len` (4 for link protocol 4+; setting it releases the
    hold), then call `feed(b"")` to frame what was held back.
    """

    __slots__ = ("_buf", "_circ_id_len", "_held", "max_var_payload")

    def __init__(self, circ_id_len: int = 4, max_var_payload: int = VAR_PAYLOAD_MAX) -> None:
        self._buf = bytearray()
        self._circ_id_len = 4
        self._held = False
        self.circ_id_len = circ_id_len
        self.max_var_payload = max_var_payload

    @property
    def circ_id_len(self) -> int:
        return self._circ_id_len

    @circ_id_len.setter
    def circ_id_len(self, value: int) -> None:
        if value not in _HEADERS:
            raise LocalProtocolError(f"CircID length must be 2 or 4, not {value}")
        self._circ_id_len = value
        self._held = False

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as cells."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Cell]:
        buf = self._buf
        buf += data
        if self._held:
            return []
        cid_len = self._circ_id_len
        cid = _U16 if cid_len == 2 else _U32
        have = len(buf)
        cells: list[Cell] = []
        pos = 0
        view = memoryview(buf)
        try:
            if cid_len == 4 and have >= CELL_LEN:
                # The bulk path: the leading run of whole fixed cells (checked by their command bytes, every
                # CELL_LEN bytes) is unpacked in C; whatever follows goes through the loop below.
                whole = have // CELL_LEN
                run = bytes(buf[4:whole * CELL_LEN:CELL_LEN]).translate(_NOT_FIXED).find(1)
                run = whole if run < 0 else run
                if run:
                    pos = run * CELL_LEN
                    cells.extend(map(_make_cell, _FIXED_CELL4.iter_unpack(view[:pos])))
            while have - pos > cid_len:
                command = buf[pos + cid_len]
                if command not in _KNOWN:
                    raise DecodeError(f"unknown cell command {command}")
                if command == 7 or command >= 128:
                    if have - pos < cid_len + 3:
                        break
                    length = _U16.unpack_from(buf, pos + cid_len + 1)[0]
                    if length > self.max_var_payload:
                        raise DecodeError(f"variable-length cell of {length} bytes exceeds "
                                          f"{self.max_var_payload}")
                    start = pos + cid_len + 3
                else:
                    length = PAYLOAD_LEN
                    start = pos + cid_len + 1
                end = start + length
                if end > have:
                    break
                cells.append(Cell(cid.unpack_from(buf, pos)[0], command, bytes(view[start:end])))
                pos = end
                if command == 7 and cid_len == 2:
                    self._held = True  # until the caller sets the negotiated circ_id_len
                    break
        finally:
            view.release()
        del buf[:pos]
        return cells


def _construct(cls, *args):
    """Build a body from decoded fields; a value its validation refuses is the peer's fault here."""
    try:
        return cls(*args)
    except LocalProtocolError as e:
        raise DecodeError(f"{cls.__name__}: {e}") from None


def _check_u16(name: str, value: int) -> None:
    if not 0 <= value <= 0xFFFF:
        raise LocalProtocolError(f"{name} {value} does not fit in 2 bytes")


def _check_len(name: str, data: bytes, n: int) -> None:
    if len(data) != n:
        raise LocalProtocolError(f"{name} must be {n} bytes, not {len(data)}")


@dataclass(frozen=True, slots=True)
class Create2:
    COMMAND: ClassVar[int] = Command.CREATE2
    htype: int
    hdata: bytes

    def __post_init__(self) -> None:
        _check_u16("htype", self.htype)
        if len(self.hdata) > PAYLOAD_LEN - 4:
            raise LocalProtocolError(f"CREATE2 handshake of {len(self.hdata)} bytes does not fit")

    def encode(self) -> bytes:
        return u16(self.htype) + u16(len(self.hdata)) + self.hdata

    @classmethod
    def decode(cls, payload: bytes) -> Create2:
        r = Reader(payload, "CREATE2")
        htype = r.u16()
        return _construct(cls, htype, r.bytes(r.u16()))


@dataclass(frozen=True, slots=True)
class Created2:
    COMMAND: ClassVar[int] = Command.CREATED2
    hdata: bytes

    def __post_init__(self) -> None:
        if len(self.hdata) > PAYLOAD_LEN - 2:
            raise LocalProtocolError(f"CREATED2 handshake of {len(self.hdata)} bytes does not fit")

    def encode(self) -> bytes:
        return u16(len(self.hdata)) + self.hdata

    @classmethod
    def decode(cls, payload: bytes) -> Created2:
        r = Reader(payload, "CREATED2")
        return _construct(cls, r.bytes(r.u16()))


@dataclass(frozen=True, slots=True)
class CreateFast:
    COMMAND: ClassVar[int] = Command.CREATE_FAST
    key_material: bytes

    def __post_init__(self) -> None:
        _check_len("CREATE_FAST key material", self.key_material, 20)

    def encode(self) -> bytes:
        return self.key_material

    @classmethod
    def decode(cls, payload: bytes) -> CreateFast:
        return cls(Reader(payload, "CREATE_FAST").bytes(20))


@dataclass(frozen=True, slots=True)
class CreatedFast:
    COMMAND: ClassVar[int] = Command.CREATED_FAST
    key_material: bytes
    derivative_key: bytes

    def __post_init__(self) -> None:
        _check_len("CREATED_FAST key material", self.key_material, 20)
        _check_len("CREATED_FAST derivative key", self.derivative_key, 20)

    def encode(self) -> bytes:
        return self.key_material + self.derivative_key

    @classmethod
    def decode(cls, payload: bytes) -> CreatedFast:
        r = Reader(payload, "CREATED_FAST")
        return cls(r.bytes(20), r.bytes(20))


class DestroyReason(IntEnum):
    NONE = 0
    PROTOCOL = 1
    INTERNAL = 2
    REQUESTED = 3
    HIBERNATING = 4
    RESOURCELIMIT = 5
    CONNECTFAILED = 6
    OR_IDENTITY = 7
    CHANNEL_CLOSED = 8
    FINISHED = 9
    TIMEOUT = 10
    DESTROYED = 11
    NOSUCHSERVICE = 12


@dataclass(frozen=True, slots=True)
class Destroy:
    COMMAND: ClassVar[int] = Command.DESTROY
    reason: int  # any byte: the spec asks receivers to accept reasons they do not know

    def __post_init__(self) -> None:
        if not 0 <= self.reason <= 0xFF:
            raise LocalProtocolError(f"DESTROY reason {self.reason} does not fit in a byte")

    def encode(self) -> bytes:
        return u8(self.reason)

    @classmethod
    def decode(cls, payload: bytes) -> Destroy:
        return cls(Reader(payload, "DESTROY").u8())


@dataclass(frozen=True, slots=True)
class Versions:
    COMMAND: ClassVar[int] = Command.VERSIONS
    versions: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "versions", tuple(self.versions))
        for v in self.versions:
            _check_u16("link protocol version", v)

    def encode(self) -> bytes:
        return struct.pack(f">{len(self.versions)}H", *self.versions)

    @classmethod
    def decode(cls, payload: bytes) -> Versions:
        if len(payload) % 2:
            raise DecodeError(f"VERSIONS payload has odd length {len(payload)}")
        return cls(struct.unpack(f">{len(payload) // 2}H", payload))


_ATYPE_IPV4 = 4
_ATYPE_IPV6 = 6


def _canonical_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError as e:
        raise LocalProtocolError(f"not an IPv4 or IPv6 address: {text!r}") from e


def _encode_netinfo_addr(text: str) -> bytes:
    if not text:
        return b"\x00\x00"  # an address of no known type: receivers skip it
    ip = ipaddress.ip_address(text)
    atype = _ATYPE_IPV4 if ip.version == 4 else _ATYPE_IPV6
    return u8(atype) + u8(len(ip.packed)) + ip.packed


def _read_netinfo_addr(r: Reader) -> str:
    """One ATYPE ALEN AVAL; "" for an unknown type or a wrong length, which the spec says to ignore."""
    atype = r.u8()
    value = r.bytes(r.u8())
    if atype == _ATYPE_IPV4 and len(value) == 4:
        return str(ipaddress.IPv4Address(value))
    if atype == _ATYPE_IPV6 and len(value) == 16:
        return str(ipaddress.IPv6Address(value))
    return ""


@dataclass(frozen=True, slots=True)
class Netinfo:
    """TIME, the address we see the peer at ("" if unknown), and our own addresses."""

    COMMAND: ClassVar[int] = Command.NETINFO
    timestamp: int
    other_address: str
    my_addresses: tuple[str, ...]

    def __post_init__(self) -> None:
        if not 0 <= self.timestamp <= 0xFFFFFFFF:
            raise LocalProtocolError(f"NETINFO timestamp {self.timestamp} does not fit in 4 bytes")
        if self.other_address:
            object.__setattr__(self, "other_address", _canonical_ip(self.other_address))
        mine = tuple(_canonical_ip(a) for a in self.my_addresses)
        if len(mine) > 0xFF:
            raise LocalProtocolError(f"NETINFO lists {len(mine)} addresses; at most 255")
        object.__setattr__(self, "my_addresses", mine)

    def encode(self) -> bytes:
        parts = [u32(self.timestamp), _encode_netinfo_addr(self.other_address), u8(len(self.my_addresses))]
        parts.extend(_encode_netinfo_addr(a) for a in self.my_addresses)
        out = b"".join(parts)
        if len(out) > PAYLOAD_LEN:
            raise LocalProtocolError("NETINFO does not fit in a cell")
        return out

    @classmethod
    def decode(cls, payload: bytes) -> Netinfo:
        r = Reader(payload, "NETINFO")
        timestamp = r.u32()
        other = _read_netinfo_addr(r)
        mine = (_read_netinfo_addr(r) for _ in range(r.u8()))
        return cls(timestamp, other, tuple(a for a in mine if a))


@dataclass(frozen=True, slots=True)
class Certs:
    """(CertType, certificate bytes) pairs; the certificates themselves are parsed elsewhere."""

    COMMAND: ClassVar[int] = Command.CERTS
    certs: tuple[tuple[int, bytes], ...]

    def __post_init__(self) -> None:
        certs = tuple((t, bytes(c)) for t, c in self.certs)
        if len(certs) > 0xFF:
            raise LocalProtocolError(f"CERTS holds {len(certs)} certificates; at most 255")
        for t, c in certs:
            if not 0 <= t <= 0xFF:
                raise LocalProtocolError(f"cert type {t} does not fit in a byte")
            _check_u16("certificate length", len(c))
        object.__setattr__(self, "certs", certs)

    def encode(self) -> bytes:
        return u8(len(self.certs)) + b"".join(u8(t) + u16(len(c)) + c for t, c in self.certs)

    @classmethod
    def decode(cls, payload: bytes) -> Certs:
        r = Reader(payload, "CERTS")
        certs = []
        for _ in range(r.u8()):
            ctype = r.u8()
            certs.append((ctype, r.bytes(r.u16())))
        return cls(tuple(certs))


@dataclass(frozen=True, slots=True)
class AuthChallenge:
    COMMAND: ClassVar[int] = Command.AUTH_CHALLENGE
    challenge: bytes
    methods: tuple[int, ...]

    def __post_init__(self) -> None:
        _check_len("AUTH_CHALLENGE challenge", self.challenge, 32)
        object.__setattr__(self, "methods", tuple(self.methods))
        _check_u16("number of methods", len(self.methods))
        for m in self.methods:
            _check_u16("auth method", m)

    def encode(self) -> bytes:
        return self.challenge + struct.pack(f">H{len(self.methods)}H", len(self.methods), *self.methods)

    @classmethod
    def decode(cls, payload: bytes) -> AuthChallenge:
        r = Reader(payload, "AUTH_CHALLENGE")
        challenge = r.bytes(32)
        n = r.u16()
        return cls(challenge, struct.unpack(f">{n}H", r.bytes(2 * n)))


@dataclass(frozen=True, slots=True)
class Authenticate:
    COMMAND: ClassVar[int] = Command.AUTHENTICATE
    auth_type: int
    auth: bytes

    def __post_init__(self) -> None:
        _check_u16("auth type", self.auth_type)
        _check_u16("authentication length", len(self.auth))

    def encode(self) -> bytes:
        return u16(self.auth_type) + u16(len(self.auth)) + self.auth

    @classmethod
    def decode(cls, payload: bytes) -> Authenticate:
        r = Reader(payload, "AUTHENTICATE")
        auth_type = r.u16()
        return cls(auth_type, r.bytes(r.u16()))


@dataclass(frozen=True, slots=True)
class Padding:
    """Link keepalive; the payload is ignored."""

    COMMAND: ClassVar[int] = Command.PADDING

    def encode(self) -> bytes:
        return b""

    @classmethod
    def decode(cls, payload: bytes) -> Padding:
        return cls()


@dataclass(frozen=True, slots=True)
class VPadding:
    """Variable-length padding: only its length means anything."""

    COMMAND: ClassVar[int] = Command.VPADDING
    length: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.length <= VAR_PAYLOAD_MAX:
            raise LocalProtocolError(f"VPADDING length {self.length} out of range")

    def encode(self) -> bytes:
        return bytes(self.length)

    @classmethod
    def decode(cls, payload: bytes) -> VPadding:
        return _construct(cls, len(payload))


BODY_TYPES: dict[int, type] = {
    cls.COMMAND: cls
    for cls in (Padding, Create2, Created2, CreateFast, CreatedFast, Destroy, Versions, Netinfo, VPadding,
                Certs, AuthChallenge, Authenticate)
}


def decode_body(cell: Cell):
    """The body object of a link or circuit-handshake cell."""
    if cell.command in (Command.RELAY, Command.RELAY_EARLY):
        raise LocalProtocolError("relay payloads go through relay crypto, then nodes.core.relay")
    cls = BODY_TYPES.get(cell.command)
    if cls is None:
        raise DecodeError(f"no body codec for cell command {cell.command} (TAP is unsupported)")
    return cls.decode(cell.payload)
