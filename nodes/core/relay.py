"""Relay cell bodies (tor-spec 6.1) and the relay messages they carry.

A relay body is cmd(1) recognized(2) stream(2) digest(4) length(2) data(length) padding, 509 bytes in all.
`encode_relay_body` / `decode_relay_body` are the hot path (struct, no Reader); relay crypto fills in and
checks `recognized` and `digest`. Each message is a frozen dataclass whose `encode()` gives the relay data and
whose `decode(data)` parses it; `decode_msg` dispatches on the command and lets a state accept only the
commands that are legal there. Trailing bytes after a complete message are a DecodeError unless the spec tells
receivers to ignore them (END, SENDME, ESTABLISH_RENDEZVOUS and the empty messages).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from .errors import DecodeError, LocalProtocolError, UnexpectedMessage
from .wire import Reader, u8, u16, u32

RELAY_BODY_LEN = 509
RELAY_HEADER_LEN = 11
RELAY_DATA_MAX = 498


class RelayCommand(IntEnum):
    BEGIN = 1
    DATA = 2
    END = 3
    CONNECTED = 4
    SENDME = 5
    EXTEND = 6
    EXTENDED = 7
    TRUNCATE = 8
    TRUNCATED = 9
    DROP = 10
    RESOLVE = 11
    RESOLVED = 12
    BEGIN_DIR = 13
    EXTEND2 = 14
    EXTENDED2 = 15
    ESTABLISH_INTRO = 32
    ESTABLISH_RENDEZVOUS = 33
    INTRODUCE1 = 34
    INTRODUCE2 = 35
    RENDEZVOUS1 = 36
    RENDEZVOUS2 = 37
    INTRO_ESTABLISHED = 38
    RENDEZVOUS_ESTABLISHED = 39
    INTRODUCE_ACK = 40


# --- relay body

_HEADER = struct.Struct(">BHHIH")
_ZERO_PAD = bytes(RELAY_DATA_MAX)


@dataclass(frozen=True, slots=True)
class RelayCell:
    command: int
    stream_id: int
    data: bytes


def encode_relay_body(command: int, stream_id: int, data: bytes,
                      rng: Callable[[int], bytes] | None = None) -> bytes:
    """The 509-byte plaintext body with recognized and digest zero (relay crypto sets the digest).

    Padding is zeros; with `rng` it is four zeros then random bytes, as tor-spec 6.1 recommends so that the
    body (and the digest an authenticated SENDME echoes) is unpredictable.
    """
    n = len(data)
    if n > RELAY_DATA_MAX:
        raise LocalProtocolError(f"relay data of {n} bytes exceeds {RELAY_DATA_MAX}")
    try:
        header = _HEADER.pack(command, 0, stream_id, 0, n)
    except struct.error as e:
        raise LocalProtocolError(f"relay command {command} or stream {stream_id} out of range") from e
    pad = RELAY_DATA_MAX - n
    if rng is None or pad <= 4:
        return header + data + _ZERO_PAD[:pad]
    return header + data + b"\0\0\0\0" + rng(pad - 4)


def decode_relay_body(body: bytes) -> RelayCell:
    """Header and data of a recognized (decrypted, digest-checked) body."""
    if len(body) != RELAY_BODY_LEN:
        raise DecodeError(f"relay body must be {RELAY_BODY_LEN} bytes, not {len(body)}")
    command, _recognized, stream_id, _digest, length = _HEADER.unpack_from(body)
    if length > RELAY_DATA_MAX:
        raise DecodeError(f"relay length {length} exceeds {RELAY_DATA_MAX}")
    return RelayCell(command, stream_id, bytes(body[RELAY_HEADER_LEN:RELAY_HEADER_LEN + length]))


def decode_data_body(body: bytes) -> tuple[int, bytes]:
    """(stream_id, data) of a recognized body whose command byte is DATA: decode_relay_body and Data.decode
    with the same checks, without their objects (the bulk path pays per cell)."""
    if len(body) != RELAY_BODY_LEN:
        raise DecodeError(f"relay body must be {RELAY_BODY_LEN} bytes, not {len(body)}")
    _command, _recognized, stream_id, _digest, length = _HEADER.unpack_from(body)
    if length > RELAY_DATA_MAX:
        raise DecodeError(f"relay length {length} exceeds {RELAY_DATA_MAX}")
    return stream_id, bytes(body[RELAY_HEADER_LEN:RELAY_HEADER_LEN + length])


# --- helpers


def _construct(cls, *args):
    """Build a message from decoded fields; a value its validation refuses is the peer's fault here."""
    try:
        return cls(*args)
    except LocalProtocolError as e:
        raise DecodeError(f"{cls.__name__}: {e}") from None


def _check_range(name: str, value: int, bits: int) -> None:
    if not 0 <= value < 1 << bits:
        raise LocalProtocolError(f"{name} {value} does not fit in {bits // 8} byte(s)")


def _check_len(name: str, data: bytes, n: int) -> None:
    if len(data) != n:
        raise LocalProtocolError(f"{name} must be {n} bytes, not {len(data)}")


def _fit(name: str, encoded: bytes) -> bytes:
    if len(encoded) > RELAY_DATA_MAX:
        raise LocalProtocolError(f"{name} of {len(encoded)} bytes exceeds {RELAY_DATA_MAX}")
    return encoded


def _ipv4(packed: bytes) -> str:
    return str(ipaddress.IPv4Address(packed))


def _ipv6(packed: bytes) -> str:
    return str(ipaddress.IPv6Address(packed))


def _canonical(kind: type, text: str) -> str:
    try:
        return str(kind(text))
    except ValueError as e:
        raise LocalProtocolError(f"not an {kind.__name__}: {text!r}") from e


# --- extensions


@dataclass(frozen=True, slots=True)
class Extension:
    """One EXT_FIELD_TYPE EXT_FIELD_LEN EXT_FIELD entry (rend-spec-v3 3.1.1); unknown types are kept."""

    type: int
    data: bytes

    def __post_init__(self) -> None:
        _check_range("extension type", self.type, 8)
        _check_range("extension length", len(self.data), 8)


def encode_extensions(exts: Iterable[Extension]) -> bytes:
    exts = tuple(exts)
    _check_range("number of extensions", len(exts), 8)
    return u8(len(exts)) + b"".join(u8(e.type) + u8(len(e.data)) + e.data for e in exts)


def read_extensions(r: Reader) -> tuple[Extension, ...]:
    exts = []
    for _ in range(r.u8()):
        etype = r.u8()
        exts.append(Extension(etype, r.bytes(r.u8())))
    return tuple(exts)


# --- link specifiers


@dataclass(frozen=True, slots=True)
class LinkSpecIPv4:
    TYPE: ClassVar[int] = 0
    address: str
    port: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", _canonical(ipaddress.IPv4Address, self.address))
        _check_range("port", self.port, 16)

    def encode(self) -> bytes:
        return b"\x00\x06" + ipaddress.IPv4Address(self.address).packed + u16(self.port)


@dataclass(frozen=True, slots=True)
class LinkSpecIPv6:
    TYPE: ClassVar[int] = 1
    address: str
    port: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", _canonical(ipaddress.IPv6Address, self.address))
        _check_range("port", self.port, 16)

    def encode(self) -> bytes:
        return b"\x01\x12" + ipaddress.IPv6Address(self.address).packed + u16(self.port)


@dataclass(frozen=True, slots=True)
class LinkSpecRsaId:
    TYPE: ClassVar[int] = 2
    identity: bytes

    def __post_init__(self) -> None:
        _check_len("RSA identity digest", self.identity, 20)

    def encode(self) -> bytes:
        return b"\x02\x14" + self.identity


@dataclass(frozen=True, slots=True)
class LinkSpecEd25519:
    TYPE: ClassVar[int] = 3
    identity: bytes

    def __post_init__(self) -> None:
        _check_len("Ed25519 identity", self.identity, 32)

    def encode(self) -> bytes:
        return b"\x03\x20" + self.identity


@dataclass(frozen=True, slots=True)
class LinkSpecUnknown:
    """A specifier type we do not know; kept verbatim so it can be passed on in order (rend-spec-v3 3.3)."""

    type: int
    data: bytes

    def __post_init__(self) -> None:
        _check_range("link specifier type", self.type, 8)
        if self.type in _LINK_SPEC_LENGTHS:
            raise LocalProtocolError(f"link specifier type {self.type} is known; use its class")
        _check_range("link specifier length", len(self.data), 8)

    def encode(self) -> bytes:
        return u8(self.type) + u8(len(self.data)) + self.data


LinkSpec = LinkSpecIPv4 | LinkSpecIPv6 | LinkSpecRsaId | LinkSpecEd25519 | LinkSpecUnknown
_LINK_SPEC_LENGTHS = {0: 6, 1: 18, 2: 20, 3: 32}


def _check_unique_ids(specs: tuple, error: type[Exception]) -> None:
    """tor-spec 5.1.2: at most one legacy and one Ed25519 identity."""
    for kind in (LinkSpecRsaId, LinkSpecEd25519):
        if sum(isinstance(s, kind) for s in specs) > 1:
            raise error(f"more than one {kind.__name__} link specifier")


def encode_link_specs(specs: Iterable[LinkSpec]) -> bytes:
    specs = tuple(specs)
    _check_range("number of link specifiers", len(specs), 8)
    _check_unique_ids(specs, LocalProtocolError)
    return u8(len(specs)) + b"".join(s.encode() for s in specs)


def _decode_link_spec(lstype: int, body: bytes) -> LinkSpec:
    want = _LINK_SPEC_LENGTHS.get(lstype)
    if want is None:
        return LinkSpecUnknown(lstype, body)
    if len(body) != want:
        raise DecodeError(f"link specifier type {lstype} must be {want} bytes, not {len(body)}")
    if lstype == 0:
        return LinkSpecIPv4(_ipv4(body[:4]), int.from_bytes(body[4:], "big"))
    if lstype == 1:
        return LinkSpecIPv6(_ipv6(body[:16]), int.from_bytes(body[16:], "big"))
    if lstype == 2:
        return LinkSpecRsaId(body)
    return LinkSpecEd25519(body)


def read_link_specs(r: Reader) -> tuple[LinkSpec, ...]:
    specs = []
    for _ in range(r.u8()):
        lstype = r.u8()
        specs.append(_decode_link_spec(lstype, r.bytes(r.u8())))
    specs = tuple(specs)
    _check_unique_ids(specs, DecodeError)
    return specs


# --- streams


_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")


def _check_host(address: str) -> None:
    """A BEGIN target: "" (onion services), an IPv6 literal, or a hostname/IPv4 of printable ASCII."""
    if ":" in address:
        if not set(address) <= _IPV6_CHARS:  # ipaddress would also take a "%scope" suffix
            raise LocalProtocolError(f"bad IPv6 address in BEGIN: {address!r}")
        _canonical(ipaddress.IPv6Address, address)
    elif not (address.isascii() and address.isprintable()) or any(c in address for c in " []"):
        raise LocalProtocolError(f"bad BEGIN address {address!r}")


@dataclass(frozen=True, slots=True)
class Begin:
    """ADDRPORT NUL [FLAGS]. IPv6 addresses are held without brackets; "" is the onion-service target."""

    COMMAND: ClassVar[int] = RelayCommand.BEGIN
    address: str
    port: int
    flags: int = 0

    def __post_init__(self) -> None:
        _check_host(self.address)
        if not 1 <= self.port <= 0xFFFF:
            raise LocalProtocolError(f"BEGIN port {self.port} outside 1..65535")
        _check_range("BEGIN flags", self.flags, 32)

    def encode(self) -> bytes:
        host = f"[{self.address}]" if ":" in self.address else self.address
        out = f"{host}:{self.port}".encode("ascii") + b"\0"
        return _fit("BEGIN", out + u32(self.flags) if self.flags else out)

    @classmethod
    def decode(cls, data: bytes) -> Begin:
        addrport, nul, tail = bytes(data).partition(b"\0")
        if not nul:
            raise DecodeError("BEGIN address is not NUL-terminated")
        if len(tail) not in (0, 4):
            raise DecodeError(f"BEGIN flags must be 4 bytes, not {len(tail)}")
        if not addrport.isascii():
            raise DecodeError("BEGIN address is not ASCII")
        host, colon, port = addrport.decode("ascii").rpartition(":")
        if not colon or not port.isdigit() or len(port) > 5:
            raise DecodeError(f"BEGIN target {addrport!r} has no valid port")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            if ":" not in host:
                raise DecodeError(f"BEGIN brackets hold no IPv6 address: {addrport!r}")
        elif ":" in host:
            raise DecodeError(f"BEGIN IPv6 address without brackets: {addrport!r}")
        return _construct(cls, host, int(port), int.from_bytes(tail, "big"))


@dataclass(frozen=True, slots=True)
class Data:
    COMMAND: ClassVar[int] = RelayCommand.DATA
    data: bytes

    def __post_init__(self) -> None:
        if len(self.data) > RELAY_DATA_MAX:
            raise LocalProtocolError(f"DATA of {len(self.data)} bytes exceeds {RELAY_DATA_MAX}")

    def encode(self) -> bytes:
        return self.data

    @classmethod
    def decode(cls, data: bytes) -> Data:
        return _construct(cls, bytes(data))


class EndReason(IntEnum):
    MISC = 1
    RESOLVEFAILED = 2
    CONNECTREFUSED = 3
    EXITPOLICY = 4
    DESTROY = 5
    DONE = 6
    TIMEOUT = 7
    NOROUTE = 8
    HIBERNATING = 9
    INTERNAL = 10
    RESOURCELIMIT = 11
    CONNRESET = 12
    TORPROTOCOL = 13
    NOTDIRECTORY = 14


@dataclass(frozen=True, slots=True)
class End:
    """REASON. The address/TTL tail of EXITPOLICY is ignored; an empty END means MISC (tor-spec 6.3)."""

    COMMAND: ClassVar[int] = RelayCommand.END
    reason: int

    def __post_init__(self) -> None:
        _check_range("END reason", self.reason, 8)

    def encode(self) -> bytes:
        return u8(self.reason)

    @classmethod
    def decode(cls, data: bytes) -> End:
        return cls(data[0] if data else EndReason.MISC)


@dataclass(frozen=True, slots=True)
class Connected:
    """Empty, or the address the exit connected to and its TTL (tor-spec 6.2)."""

    COMMAND: ClassVar[int] = RelayCommand.CONNECTED
    address: str = ""
    ttl: int = 0

    def __post_init__(self) -> None:
        _check_range("CONNECTED ttl", self.ttl, 32)
        if not self.address:
            if self.ttl:
                raise LocalProtocolError("a CONNECTED without an address has no TTL")
            return
        try:
            ip = ipaddress.ip_address(self.address)
        except ValueError as e:
            raise LocalProtocolError(f"CONNECTED address {self.address!r} is not an IP address") from e
        if ip.version == 4 and not int(ip):
            raise LocalProtocolError("0.0.0.0 cannot be sent: four zero bytes introduce an IPv6 address")
        object.__setattr__(self, "address", str(ip))

    def encode(self) -> bytes:
        if not self.address:
            return b""
        ip = ipaddress.ip_address(self.address)
        prefix = ip.packed if ip.version == 4 else b"\0\0\0\0\x06" + ip.packed
        return prefix + u32(self.ttl)

    @classmethod
    def decode(cls, data: bytes) -> Connected:
        if not data:
            return cls()
        r = Reader(data, "CONNECTED")
        v4 = r.bytes(4)
        if v4 != b"\0\0\0\0":
            address = _ipv4(v4)
        elif (atype := r.u8()) == 6:
            address = _ipv6(r.bytes(16))
        else:
            raise DecodeError(f"CONNECTED address type {atype} is not IPv6")
        ttl = r.u32()
        r.expect_end()
        return cls(address, ttl)


@dataclass(frozen=True, slots=True)
class Sendme:
    """v0: empty body. v1 (authenticated, prop 289): VERSION DATA_LEN DIGEST(20)."""

    COMMAND: ClassVar[int] = RelayCommand.SENDME
    version: int = 1
    digest: bytes = b""

    def __post_init__(self) -> None:
        if self.version == 0:
            if self.digest:
                raise LocalProtocolError("a v0 SENDME carries no digest")
        elif self.version == 1:
            _check_len("SENDME v1 digest", self.digest, 20)
        else:
            raise LocalProtocolError(f"unknown SENDME version {self.version}")

    def encode(self) -> bytes:
        if self.version == 0:
            return b""
        return b"\x01\x00\x14" + self.digest

    @classmethod
    def decode(cls, data: bytes) -> Sendme:
        if not data:
            return cls(0)
        r = Reader(data, "SENDME")
        version = r.u8()
        if version == 0:
            return cls(0)  # tor-spec 7.3.1: the rest of a v0 body is ignored
        if version != 1:
            raise DecodeError(f"unknown SENDME version {version}")
        body = r.bytes(r.u16())
        if len(body) < 20:
            raise DecodeError(f"SENDME v1 DATA_LEN {len(body)} is below 20")
        return cls(1, body[:20])  # longer DATA: the first 20 bytes are the digest


# --- circuits


@dataclass(frozen=True, slots=True)
class Extend2:
    COMMAND: ClassVar[int] = RelayCommand.EXTEND2
    link_specs: tuple[LinkSpec, ...]
    htype: int
    hdata: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "link_specs", tuple(self.link_specs))
        _check_range("EXTEND2 htype", self.htype, 16)
        _check_range("EXTEND2 handshake length", len(self.hdata), 16)

    def encode(self) -> bytes:
        out = encode_link_specs(self.link_specs) + u16(self.htype) + u16(len(self.hdata)) + self.hdata
        return _fit("EXTEND2", out)

    @classmethod
    def decode(cls, data: bytes) -> Extend2:
        r = Reader(data, "EXTEND2")
        specs = read_link_specs(r)
        htype = r.u16()
        hdata = r.bytes(r.u16())
        r.expect_end()
        return cls(specs, htype, hdata)


@dataclass(frozen=True, slots=True)
class Extended2:
    COMMAND: ClassVar[int] = RelayCommand.EXTENDED2
    hdata: bytes

    def __post_init__(self) -> None:
        _check_range("EXTENDED2 handshake length", len(self.hdata), 16)

    def encode(self) -> bytes:
        return _fit("EXTENDED2", u16(len(self.hdata)) + self.hdata)

    @classmethod
    def decode(cls, data: bytes) -> Extended2:
        r = Reader(data, "EXTENDED2")
        hdata = r.bytes(r.u16())
        r.expect_end()
        return cls(hdata)


@dataclass(frozen=True, slots=True)
class _Empty:
    """Messages with no body; receivers ignore whatever body they get."""

    def encode(self) -> bytes:
        return b""

    @classmethod
    def decode(cls, data: bytes):
        return cls()


@dataclass(frozen=True, slots=True)
class Truncate(_Empty):
    COMMAND: ClassVar[int] = RelayCommand.TRUNCATE


@dataclass(frozen=True, slots=True)
class Truncated:
    COMMAND: ClassVar[int] = RelayCommand.TRUNCATED
    reason: int  # a cells.DestroyReason value

    def __post_init__(self) -> None:
        _check_range("TRUNCATED reason", self.reason, 8)

    def encode(self) -> bytes:
        return u8(self.reason)

    @classmethod
    def decode(cls, data: bytes) -> Truncated:
        r = Reader(data, "TRUNCATED")
        reason = r.u8()
        r.expect_end()
        return cls(reason)


@dataclass(frozen=True, slots=True)
class Drop(_Empty):
    """Long-range dummy traffic."""

    COMMAND: ClassVar[int] = RelayCommand.DROP


@dataclass(frozen=True, slots=True)
class BeginDir(_Empty):
    COMMAND: ClassVar[int] = RelayCommand.BEGIN_DIR


# --- onion services

HS_MAC_LEN = 32  # HANDSHAKE_AUTH: SHA3-256 MAC
REND_COOKIE_LEN = 20


def _check_auth_key(name: str, key_type: int, key: bytes) -> None:
    _check_range(f"{name} AUTH_KEY_TYPE", key_type, 8)
    _check_range(f"{name} AUTH_KEY_LEN", len(key), 16)


@dataclass(frozen=True, slots=True)
class EstablishIntro:
    """rend-spec-v3 3.1.1. HANDSHAKE_AUTH is a MAC of `mac_input()`; SIG signs a prefix + `sig_input()`."""

    COMMAND: ClassVar[int] = RelayCommand.ESTABLISH_INTRO
    auth_key_type: int
    auth_key: bytes
    extensions: tuple[Extension, ...]
    handshake_auth: bytes
    sig: bytes

    def __post_init__(self) -> None:
        _check_auth_key("ESTABLISH_INTRO", self.auth_key_type, self.auth_key)
        if self.auth_key_type in (0, 1):
            raise LocalProtocolError("AUTH_KEY_TYPE 0 and 1 mean the legacy ESTABLISH_INTRO layout")
        object.__setattr__(self, "extensions", tuple(self.extensions))
        _check_len("HANDSHAKE_AUTH", self.handshake_auth, HS_MAC_LEN)
        _check_range("SIG_LEN", len(self.sig), 16)

    def mac_input(self) -> bytes:
        """The encoded fields before HANDSHAKE_AUTH."""
        return (u8(self.auth_key_type) + u16(len(self.auth_key)) + self.auth_key
                + encode_extensions(self.extensions))

    def sig_input(self) -> bytes:
        """The encoded fields before SIG_LEN (without the "Tor establish-intro cell v1" prefix)."""
        return self.mac_input() + self.handshake_auth

    def encode(self) -> bytes:
        return _fit("ESTABLISH_INTRO", self.sig_input() + u16(len(self.sig)) + self.sig)

    @classmethod
    def decode(cls, data: bytes) -> EstablishIntro:
        r = Reader(data, "ESTABLISH_INTRO")
        key_type = r.u8()
        key = r.bytes(r.u16())
        exts = read_extensions(r)
        handshake_auth = r.bytes(HS_MAC_LEN)
        sig = r.bytes(r.u16())
        r.expect_end()  # the MAC and signature inputs are re-encoded from the fields: nothing may be dropped
        return _construct(cls, key_type, key, exts, handshake_auth, sig)


@dataclass(frozen=True, slots=True)
class IntroEstablished:
    COMMAND: ClassVar[int] = RelayCommand.INTRO_ESTABLISHED
    extensions: tuple[Extension, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "extensions", tuple(self.extensions))

    def encode(self) -> bytes:
        return _fit("INTRO_ESTABLISHED", encode_extensions(self.extensions))

    @classmethod
    def decode(cls, data: bytes) -> IntroEstablished:
        r = Reader(data, "INTRO_ESTABLISHED")
        exts = read_extensions(r)
        r.expect_end()
        return cls(exts)


@dataclass(frozen=True, slots=True)
class Introduce1:
    """rend-spec-v3 3.2.1. The legacy (non-zero LEGACY_KEY_ID) format is not supported."""

    COMMAND: ClassVar[int] = RelayCommand.INTRODUCE1
    legacy_key_id: bytes
    auth_key_type: int
    auth_key: bytes
    extensions: tuple[Extension, ...]
    encrypted: bytes  # CLIENT_PK ENCRYPTED_DATA MAC, opened by hs_intro

    def __post_init__(self) -> None:
        if self.legacy_key_id != bytes(20):
            raise LocalProtocolError("LEGACY_KEY_ID must be 20 zero bytes (legacy INTRODUCE1 is unsupported)")
        _check_auth_key(type(self).__name__, self.auth_key_type, self.auth_key)
        object.__setattr__(self, "extensions", tuple(self.extensions))

    def header_bytes(self) -> bytes:
        """LEGACY_KEY_ID through the extensions: the start of what the INTRODUCE MAC covers."""
        return (self.legacy_key_id + u8(self.auth_key_type) + u16(len(self.auth_key)) + self.auth_key
                + encode_extensions(self.extensions))

    def encode(self) -> bytes:
        return _fit(type(self).__name__.upper(), self.header_bytes() + self.encrypted)

    @classmethod
    def decode(cls, data: bytes):
        r = Reader(data, cls.__name__.upper())
        legacy_key_id = r.bytes(20)
        key_type = r.u8()
        key = r.bytes(r.u16())
        exts = read_extensions(r)
        return _construct(cls, legacy_key_id, key_type, key, exts, r.rest())


@dataclass(frozen=True, slots=True)
class Introduce2(Introduce1):
    """INTRODUCE1 as the intro point relays it to the service: the same bytes."""

    COMMAND: ClassVar[int] = RelayCommand.INTRODUCE2


class IntroduceAckStatus(IntEnum):
    SUCCESS = 0
    UNKNOWN_ID = 1
    BAD_FORMAT = 2
    CANT_RELAY = 3


@dataclass(frozen=True, slots=True)
class IntroduceAck:
    COMMAND: ClassVar[int] = RelayCommand.INTRODUCE_ACK
    status: int
    extensions: tuple[Extension, ...] = ()

    def __post_init__(self) -> None:
        _check_range("INTRODUCE_ACK status", self.status, 16)
        object.__setattr__(self, "extensions", tuple(self.extensions))

    def encode(self) -> bytes:
        return _fit("INTRODUCE_ACK", u16(self.status) + encode_extensions(self.extensions))

    @classmethod
    def decode(cls, data: bytes) -> IntroduceAck:
        r = Reader(data, "INTRODUCE_ACK")
        status = r.u16()
        exts = read_extensions(r)
        r.expect_end()
        return cls(status, exts)


@dataclass(frozen=True, slots=True)
class EstablishRendezvous:
    COMMAND: ClassVar[int] = RelayCommand.ESTABLISH_RENDEZVOUS
    cookie: bytes

    def __post_init__(self) -> None:
        _check_len("rendezvous cookie", self.cookie, REND_COOKIE_LEN)

    def encode(self) -> bytes:
        return self.cookie

    @classmethod
    def decode(cls, data: bytes) -> EstablishRendezvous:
        # rend-spec-v3 4.1: rendezvous points MUST ignore extra bytes.
        return cls(Reader(data, "ESTABLISH_RENDEZVOUS").bytes(REND_COOKIE_LEN))


@dataclass(frozen=True, slots=True)
class RendezvousEstablished(_Empty):
    COMMAND: ClassVar[int] = RelayCommand.RENDEZVOUS_ESTABLISHED


@dataclass(frozen=True, slots=True)
class Rendezvous1:
    COMMAND: ClassVar[int] = RelayCommand.RENDEZVOUS1
    cookie: bytes
    handshake_info: bytes  # hs-ntor: SERVER_PK(32) AUTH(32)

    def __post_init__(self) -> None:
        _check_len("rendezvous cookie", self.cookie, REND_COOKIE_LEN)

    def encode(self) -> bytes:
        return _fit("RENDEZVOUS1", self.cookie + self.handshake_info)

    @classmethod
    def decode(cls, data: bytes) -> Rendezvous1:
        r = Reader(data, "RENDEZVOUS1")
        return cls(r.bytes(REND_COOKIE_LEN), r.rest())


@dataclass(frozen=True, slots=True)
class Rendezvous2:
    COMMAND: ClassVar[int] = RelayCommand.RENDEZVOUS2
    handshake_info: bytes

    def encode(self) -> bytes:
        return _fit("RENDEZVOUS2", self.handshake_info)

    @classmethod
    def decode(cls, data: bytes) -> Rendezvous2:
        return cls(bytes(data))


# --- dispatch

_COMMANDS = frozenset(int(c) for c in RelayCommand)
MESSAGE_TYPES: dict[int, type] = {
    cls.COMMAND: cls
    for cls in (Begin, Data, End, Connected, Sendme, Extend2, Extended2, Truncate, Truncated, Drop, BeginDir,
                EstablishIntro, IntroEstablished, Introduce1, Introduce2, IntroduceAck, EstablishRendezvous,
                RendezvousEstablished, Rendezvous1, Rendezvous2)
}


def decode_msg(command: int, data: bytes, allowed: Collection[int] | None = None):
    """Parse relay data as `command`'s message; with `allowed`, any other command is UnexpectedMessage."""
    if allowed is not None and command not in allowed:
        name = RelayCommand(command).name if command in _COMMANDS else command
        raise UnexpectedMessage(f"relay command {name} is not allowed here")
    cls = MESSAGE_TYPES.get(command)
    if cls is None:
        raise DecodeError(f"unsupported relay command {command}")
    return cls.decode(data)

