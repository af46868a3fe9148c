"""Fuzz targets: the SOCKS5 server handshake driven to its end, and the client-side decoders.

Mutating the command byte reaches BIND/UDP ASSOCIATE (UnsupportedRequest); seeds must parse, so none is one.
Seeds that offer USERNAME/PASSWORD carry RFC 1929 credentials (empty, short, 255-byte fields), so mutations
reach the sub-negotiation's length fields and its version byte.
"""

from __future__ import annotations

from nodes.core.errors import RemoteProtocolError
from nodes.core.socks5 import (
    NEED_DATA,
    Atyp,
    Greeting,
    ReplyCode,
    Socks5Server,
    State,
    UsernamePassword,
    decode_auth_status,
    decode_method_choice,
    decode_reply,
    encode_greeting,
    encode_request,
    encode_username_password,
)
from tests.fuzz.driver import Target

ONION = "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd.onion"


def _serve(data: bytes) -> object:
    """What serve_socks does with a client's bytes, fed in two chunks then EOF. A RemoteProtocolError must
    leave the machine able to say what to send (failure_reply)."""
    server = Socks5Server()
    events = []
    try:
        for chunk in (data[:7], data[7:], b""):
            server.receive_data(chunk)
            while server.state in (State.GREETING, State.AUTH, State.REQUEST):
                event = server.next_event()
                if event is NEED_DATA:
                    break
                events.append(event)
                if isinstance(event, Greeting):
                    if event.method is None:
                        return events, server.reject_methods()
                    server.accept_method()
                elif isinstance(event, UsernamePassword):
                    server.accept_credentials()
            if server.state is State.REPLYING:
                return events, server.reply(ReplyCode.SUCCEEDED), server.trailing_data
    except RemoteProtocolError as e:
        server.failure_reply(e)
        raise
    return events


def _reply(data: bytes) -> object:
    return decode_reply(data)


_HANDSHAKES = (
    encode_greeting((0, 2)) + encode_username_password(b"alice", b"s3cret") + encode_request(ONION, 80)
    + b"GET / HTTP/1.0\r\n\r\n",
    encode_greeting((0,)) + encode_request("127.0.0.1", 8080),
    encode_greeting((0,)) + encode_request("2001:db8::1", 443),
    encode_greeting((0, 1, 2)) + encode_username_password(b"", b"") + encode_request(
        "www.example.com", 443, atyp=Atyp.DOMAINNAME),
    encode_greeting((2,)) + encode_username_password(bytes(range(255)), b"\xff" * 255) + encode_request(
        "10.0.0.1", 7),
    encode_greeting((1,)),
)

TARGETS = [
    Target("socks5_server", _serve, _HANDSHAKES),
    Target("socks5_method_choice", decode_method_choice, (b"\x05\x00", b"\x05\xff")),
    Target("socks5_auth_status", decode_auth_status, (b"\x01\x00", b"\x01\x01")),
    Target("socks5_reply", _reply, (b"\x05\x00\x00\x01" + bytes(6), b"\x05\xf0\x00\x04" + bytes(18),
                                    b"\x05\x04\x00" + encode_request(ONION, 9050, atyp=Atyp.DOMAINNAME)[3:])),
]
