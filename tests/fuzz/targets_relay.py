"""Fuzz targets: the relay body codec, link specifiers, extensions, and every relay message parser."""

from __future__ import annotations

from nodes.core.relay import (
    Begin,
    BeginDir,
    Connected,
    Data,
    Drop,
    End,
    EstablishIntro,
    EstablishRendezvous,
    Extend2,
    Extended2,
    Extension,
    Introduce1,
    Introduce2,
    IntroduceAck,
    IntroEstablished,
    LinkSpecEd25519,
    LinkSpecIPv4,
    LinkSpecIPv6,
    LinkSpecRsaId,
    LinkSpecUnknown,
    Rendezvous1,
    Rendezvous2,
    RendezvousEstablished,
    Sendme,
    Truncate,
    Truncated,
    decode_msg,
    decode_relay_body,
    encode_extensions,
    encode_link_specs,
    encode_relay_body,
    read_extensions,
    read_link_specs,
)
from nodes.core.wire import Reader
from tests.fuzz.driver import Target

_SPECS = (LinkSpecIPv4("127.0.0.1", 5000), LinkSpecRsaId(bytes(range(20))), LinkSpecEd25519(bytes(range(32))),
          LinkSpecIPv6("2001:db8::1", 9001), LinkSpecUnknown(9, b"xyz"))
_EXTS = (Extension(1, bytes.fromhex("020100000000000000010200000000000000 02")), Extension(7, b""))

_SAMPLES = (
    (Begin("www.example.com", 443, 3), Begin("2001:db8::1", 22), Begin("", 80)),
    (Data(b"GET / HTTP/1.1\r\n\r\n"),),
    (End(4), End(6)),
    (Connected(), Connected("127.0.0.1", 3600), Connected("2001:db8::1122", 3600)),
    (Sendme(0), Sendme(1, bytes(range(20)))),
    (Extend2(_SPECS, 2, bytes(range(84))),),
    (Extended2(bytes(range(64))),),
    (Truncate(),),
    (Truncated(8),),
    (Drop(),),
    (BeginDir(),),
    (EstablishIntro(2, bytes(range(32)), _EXTS, bytes(32), bytes(range(64))),),
    (Introduce1(bytes(20), 2, bytes(range(32)), _EXTS, bytes(range(200))),),
    (Introduce2(bytes(20), 2, bytes(range(32)), (), bytes(range(150))),),
    (IntroduceAck(0, _EXTS),),
    (IntroEstablished(_EXTS), IntroEstablished()),
    (EstablishRendezvous(bytes(range(20))),),
    (RendezvousEstablished(),),
    (Rendezvous1(bytes(range(20)), bytes(range(64))),),
    (Rendezvous2(bytes(range(64))),),
)


def _message_target(samples) -> Target:
    command = samples[0].COMMAND
    return Target(f"relaymsg_{type(samples[0]).__name__.lower()}", lambda data: decode_msg(command, data),
                  tuple(m.encode() for m in samples))


def _any_message(data: bytes) -> object:
    """First byte: the relay command; the rest: its data. Reaches the parsers that accept any input."""
    return decode_msg(data[0], data[1:]) if data else None


def _read_all(read):
    def parse(data: bytes) -> object:
        r = Reader(data)
        out = read(r)
        r.expect_end()
        return out
    return parse


# Parsers that accept every input (empty messages, END, RENDEZVOUS2) are reached through relaymsg_any only:
# a per-parser target could never see the typed error the fuzz test asks for.
_TOTAL = (BeginDir, Drop, End, RendezvousEstablished, Rendezvous2, Truncate)

TARGETS = [
    Target("relaymsg_body", decode_relay_body,
           (encode_relay_body(2, 7, b"hello"), encode_relay_body(34, 0, bytes(range(256))))),
    Target("relaymsg_link_specs", _read_all(read_link_specs), (encode_link_specs(_SPECS),)),
    Target("relaymsg_extensions", _read_all(read_extensions), (encode_extensions(_EXTS),)),
    Target("relaymsg_any", _any_message, tuple(bytes([m.COMMAND]) + m.encode() for s in _SAMPLES for m in s)),
    *(_message_target(s) for s in _SAMPLES if not isinstance(s[0], _TOTAL)),
]
