"""SOCKS5 server state machine (RFC 1928, RFC 1929 username/password): byte-exact handshakes, round trips,
typed errors on junk."""

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodes.core.errors import AddressError, DecodeError, LocalProtocolError, RemoteProtocolError
from nodes.core.onion_address import decode_onion_address
from nodes.core.relay import Begin
from nodes.core.socks5 import (
    MAX_BUFFERED,
    NEED_DATA,
    Atyp,
    Command,
    ConnectRequest,
    Greeting,
    Reply,
    ReplyCode,
    Socks5Server,
    State,
    UnsupportedRequest,
    UsernamePassword,
    decode_auth_status,
    decode_method_choice,
    decode_reply,
    encode_greeting,
    encode_request,
    encode_username_password,
)

ONION = "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd.onion"


def _greeted() -> Socks5Server:
    server = Socks5Server()
    server.receive_data(b"\x05\x01\x00")
    assert server.next_event() == Greeting((0,))
    assert server.accept_method() == b"\x05\x00"
    return server


def test_curl_style_handshake_byte_exact():
    server = Socks5Server()
    assert server.next_event() is NEED_DATA
    server.receive_data(b"\x05\x01\x00")  # curl without -U: NO AUTH only
    greeting = server.next_event()
    assert greeting == Greeting((0,)) and greeting.no_auth_offered and greeting.method == 0
    assert server.accept_method() == b"\x05\x00"
    request = b"\x05\x01\x00\x03" + bytes([len(ONION)]) + ONION.encode() + b"\x00\x50"
    server.receive_data(request)
    assert server.next_event() == ConnectRequest(ONION, 80, Atyp.DOMAINNAME)
    assert server.state is State.REPLYING
    assert server.reply(ReplyCode.SUCCEEDED) == b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    assert server.state is State.ESTABLISHED
    assert server.trailing_data == b""
    assert server.isolation_key == b""


def test_curl_username_password_handshake_byte_exact():
    server = Socks5Server()
    server.receive_data(b"\x05\x02\x00\x02")  # curl -U alice:s3cret: NO AUTH and USERNAME/PASSWORD
    greeting = server.next_event()
    assert greeting == Greeting((0, 2)) and greeting.method == 2
    assert server.accept_method() == b"\x05\x02"  # USERNAME/PASSWORD is preferred when offered
    assert server.state is State.AUTH and server.next_event() is NEED_DATA
    server.receive_data(b"\x01\x05alice\x06s3cret")
    assert server.next_event() == UsernamePassword(b"alice", b"s3cret")
    assert server.state is State.AUTH_REPLYING
    with pytest.raises(LocalProtocolError):
        server.next_event()  # we owe the status first
    assert server.accept_credentials() == b"\x01\x00"
    server.receive_data(encode_request(ONION, 80))
    assert server.next_event() == ConnectRequest(ONION, 80, Atyp.DOMAINNAME)
    assert server.reply(ReplyCode.SUCCEEDED)[:2] == b"\x05\x00"
    assert server.isolation_key == b"\x05alice\x06s3cret"


def test_empty_username_and_password_are_accepted():
    server = Socks5Server()
    server.receive_data(b"\x05\x01\x02\x01\x00\x00")
    assert server.next_event() == Greeting((2,))
    server.accept_method()
    assert server.next_event() == UsernamePassword(b"", b"")
    server.accept_credentials()
    assert server.isolation_key == b"\x00\x00" != b""  # still isolated from clients without credentials


def test_ipv4_and_ipv6_requests():
    server = _greeted()
    server.receive_data(b"\x05\x01\x00\x01\x7f\x00\x00\x01\x1f\x90")
    assert server.next_event() == ConnectRequest("127.0.0.1", 8080, Atyp.IPV4)
    server = _greeted()
    server.receive_data(b"\x05\x01\x00\x04" + bytes(15) + b"\x01" + b"\x01\xbb")
    assert server.next_event() == ConnectRequest("::1", 443, Atyp.IPV6)
    assert server.reply(ReplyCode.SUCCEEDED, "2001:db8::1", 9050) == (
        b"\x05\x00\x00\x04" + bytes.fromhex("20010db8000000000000000000000001") + b"\x23\x5a")


def test_byte_at_a_time_and_pipelined_with_optimistic_data():
    wire = encode_greeting((0,)) + encode_request(ONION, 80) + b"GET / HTTP/1.0\r\n\r\n"
    server = Socks5Server()
    events = []
    for i in range(len(wire)):
        server.receive_data(wire[i:i + 1])
        if server.state in (State.GREETING, State.REQUEST):
            event = server.next_event()
            if event is not NEED_DATA:
                events.append(event)
                if isinstance(event, Greeting):
                    server.accept_method()
    assert events == [Greeting((0,)), ConnectRequest(ONION, 80, Atyp.DOMAINNAME)]
    assert server.trailing_data == b"GET / HTTP/1.0\r\n\r\n"
    server.reply(ReplyCode.SUCCEEDED)
    assert server.trailing_data == b"GET / HTTP/1.0\r\n\r\n"


def test_no_acceptable_method():
    server = Socks5Server()
    server.receive_data(b"\x05\x02\x01\x03")  # GSSAPI and CHAP only
    assert server.next_event().method is None
    with pytest.raises(LocalProtocolError):
        server.accept_method()
    assert server.reject_methods() == b"\x05\xff"
    assert server.state is State.CLOSED


@pytest.mark.parametrize("command", [Command.BIND, Command.UDP_ASSOCIATE, 9])
def test_only_connect(command):
    server = _greeted()
    server.receive_data(encode_request("127.0.0.1", 80, command=command))
    with pytest.raises(UnsupportedRequest) as info:
        server.next_event()
    assert info.value.reply is ReplyCode.COMMAND_NOT_SUPPORTED and info.value.kind == "unsupported"
    assert server.failure_reply(info.value) == b"\x05\x07\x00\x01" + bytes(6)
    assert server.state is State.CLOSED
    assert server.failure_reply(info.value) == b""  # one reply only


@pytest.mark.parametrize("host", [ONION, "127.0.0.1", "::1"])
def test_port_zero_gets_general_failure(host):
    # as tor does (it refuses port 0 with TORPROTOCOL, which it replies as general failure); a BEGIN cannot
    # carry port 0, so the request must stop here
    server = _greeted()
    server.receive_data(encode_request(host, 0))
    with pytest.raises(UnsupportedRequest) as info:
        server.next_event()
    assert info.value.kind == "bad_port" and info.value.reply is ReplyCode.GENERAL_FAILURE
    assert server.failure_reply(info.value) == b"\x05\x01\x00\x01" + bytes(6)
    assert server.state is State.CLOSED


def test_unknown_address_type():
    server = _greeted()
    server.receive_data(b"\x05\x01\x00\x02abcdef")
    with pytest.raises(UnsupportedRequest) as info:
        server.next_event()
    assert server.failure_reply(info.value)[:2] == b"\x05\x08"


@pytest.mark.parametrize("junk, where", [
    (b"GET / HTTP/1.1\r\n", "greeting"),  # an HTTP client at the SOCKS port
    (b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00", "greeting"),  # SOCKS4
    (b"\x05\x00", "greeting"),  # no methods
    (b"\x05\x01\x00\x03\x00\x00\x50", "request"),  # empty domain name
    (b"\x05\x01\x00\x03\x03a b\x00\x50", "request"),  # space in the name
    (b"\x05\x01\x00\x03\x02\xc3\xa9\x00\x50", "request"),  # non-ASCII name
    (b"\x05\x01\x01\x01\x7f\x00\x00\x01\x00\x50", "request"),  # reserved byte set
    (b"\x04\x01\x00\x01\x7f\x00\x00\x01\x00\x50", "request"),  # wrong version in the request
])
def test_junk_is_a_decode_error(junk, where):
    server = Socks5Server() if where == "greeting" else _greeted()
    server.receive_data(junk)
    with pytest.raises(DecodeError):
        server.next_event()
    assert server.state is State.FAILED
    # a bad greeting gets no answer; a bad request gets GENERAL_FAILURE
    expected = b"" if where == "greeting" else b"\x05\x01\x00\x01" + bytes(6)
    assert server.failure_reply(DecodeError("x")) == expected
    with pytest.raises(LocalProtocolError):
        server.next_event()


def _authenticating() -> Socks5Server:
    server = Socks5Server()
    server.receive_data(b"\x05\x01\x02")
    server.next_event()
    assert server.accept_method() == b"\x05\x02"
    return server


@pytest.mark.parametrize("junk", [
    b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50",  # a request where the credentials belong
    b"\x00\x01a\x01b",  # version 0
    b"\x02\x01a\x01b",  # version 2
])
def test_bad_credentials_message_is_a_decode_error_with_failure_status(junk):
    server = _authenticating()
    server.receive_data(junk)
    with pytest.raises(DecodeError, match="username/password"):
        server.next_event()
    assert server.state is State.FAILED
    assert server.failure_reply(DecodeError("x")) == b"\x01\x01"  # RFC 1929 failure: then close
    assert server.state is State.CLOSED
    assert server.failure_reply(DecodeError("x")) == b""
    with pytest.raises(LocalProtocolError):
        server.reply(ReplyCode.GENERAL_FAILURE)  # no SOCKS5 reply is owed: the client never sent a request


@pytest.mark.parametrize("cut", [b"\x01", b"\x01\x03ab", b"\x01\x03abc", b"\x01\x03abc\x02x"])
def test_credentials_truncated_then_closed(cut):
    server = _authenticating()
    server.receive_data(cut)
    assert server.next_event() is NEED_DATA
    server.receive_data(b"")
    with pytest.raises(DecodeError, match="closed"):
        server.next_event()
    assert server.failure_reply(DecodeError("x")) == b"\x01\x01"


def test_credentials_misuse_is_local_error():
    with pytest.raises(LocalProtocolError):
        _greeted().accept_credentials()
    with pytest.raises(LocalProtocolError):
        _authenticating().accept_credentials()  # nothing read yet
    with pytest.raises(LocalProtocolError):
        encode_username_password(b"u" * 256, b"")
    with pytest.raises(LocalProtocolError):
        UsernamePassword(b"", b"p" * 256)


def test_bad_request_after_credentials_gets_a_socks_reply():
    server = _authenticating()
    server.receive_data(encode_username_password(b"a", b"b") + b"\x05\x01\x01\x01\x7f\x00\x00\x01\x00\x50")
    server.next_event()
    server.accept_credentials()
    with pytest.raises(DecodeError):
        server.next_event()
    assert server.failure_reply(DecodeError("x")) == b"\x05\x01\x00\x01" + bytes(6)


def test_close_mid_handshake():
    server = Socks5Server()
    server.receive_data(b"\x05\x02\x00")
    assert server.next_event() is NEED_DATA
    server.receive_data(b"")
    with pytest.raises(DecodeError, match="closed"):
        server.next_event()
    server = Socks5Server()
    server.receive_data(b"")
    with pytest.raises(DecodeError):
        server.next_event()


def test_buffer_is_bounded():
    server = _greeted()
    server.receive_data(b"\x05\x01\x00\x03\xff")  # a 255-byte name is coming
    assert server.next_event() is NEED_DATA
    with pytest.raises(DecodeError, match="without waiting"):
        server.receive_data(b"a" * MAX_BUFFERED)
    assert server.state is State.FAILED


def test_misuse_is_local_error():
    server = Socks5Server()
    with pytest.raises(LocalProtocolError):
        server.accept_method()
    with pytest.raises(LocalProtocolError):
        server.reply(ReplyCode.SUCCEEDED)
    server = _greeted()
    with pytest.raises(LocalProtocolError):
        server.accept_method()
    server.receive_data(encode_request("10.0.0.1", 1))
    server.next_event()
    with pytest.raises(LocalProtocolError):
        server.next_event()  # we owe a reply first
    with pytest.raises(LocalProtocolError):
        server.reply(0x42)
    server.reply(ReplyCode.HS_BAD_ADDRESS)
    with pytest.raises(LocalProtocolError):
        server.receive_data(b"x")
    with pytest.raises(LocalProtocolError):
        encode_request("a" * 256, 80)
    with pytest.raises(LocalProtocolError):
        encode_request("example.org", 65536)


def test_client_side_decoders():
    assert decode_auth_status(b"\x01\x00") == 0
    assert decode_auth_status(b"\x01\x01") == 1
    for bad in (b"\x05\x00", b"\x01", b"\x01\x00\x00"):
        with pytest.raises(DecodeError):
            decode_auth_status(bad)
    assert decode_method_choice(b"\x05\x00") == 0
    assert decode_method_choice(b"\x05\xff") == 0xFF
    with pytest.raises(DecodeError):
        decode_method_choice(b"\x04\x00")
    assert decode_reply(b"\x05\xf6\x00\x01\x00\x00") is NEED_DATA
    wire = b"\x05\xf6\x00\x01" + bytes(6)
    assert decode_reply(wire + b"more") == (Reply(0xF6, "0.0.0.0", 0, Atyp.IPV4), 10)
    with pytest.raises(DecodeError):
        decode_reply(b"\x05\x00\x00\x09" + bytes(6))


_hosts = st.one_of(
    st.tuples(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=255),
              st.just(Atyp.DOMAINNAME)),
    st.tuples(st.ip_addresses(v=4).map(str), st.just(Atyp.IPV4)),
    st.tuples(st.ip_addresses(v=6).map(str), st.just(Atyp.IPV6)),
)


def _feed_in_chunks(server: Socks5Server, wire: bytes, cuts: list[int]) -> list[object]:
    """Feed `wire` cut at `cuts`, answering every event as serve_socks does; the events in order."""
    events = []
    for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        if a == b:
            continue  # b"" would mean the client closed
        server.receive_data(wire[a:b])
        while server.state in (State.GREETING, State.AUTH, State.REQUEST):
            event = server.next_event()
            if event is NEED_DATA:
                break
            events.append(event)
            if isinstance(event, Greeting):
                server.accept_method()
            elif isinstance(event, UsernamePassword):
                server.accept_credentials()
    return events


_other_methods = st.lists(st.integers(0, 255).filter(lambda m: m != 2), max_size=253)


@given(_other_methods, st.binary(max_size=255), st.binary(max_size=255), _hosts, st.integers(1, 65535),
       st.binary(max_size=512), st.data())
def test_username_password_round_trip_in_any_chunking(methods, username, password, host_atyp, port, early,
                                                      data):
    host, atyp = host_atyp
    offered = tuple(data.draw(st.permutations([*methods, 2])))
    wire = (encode_greeting(offered) + encode_username_password(username, password)
            + encode_request(host, port, atyp=atyp) + early)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    server = Socks5Server()
    events = _feed_in_chunks(server, wire, cuts)
    credentials = UsernamePassword(username, password)
    assert events == [Greeting(offered), credentials, ConnectRequest(host, port, atyp)]
    assert server.trailing_data == early
    assert server.isolation_key == credentials.isolation_key


_credentials = st.tuples(st.binary(max_size=255), st.binary(max_size=255))


@given(_credentials, _credentials)
def test_isolation_keys_tell_every_pair_apart(one, other):
    key_one, key_other = UsernamePassword(*one).isolation_key, UsernamePassword(*other).isolation_key
    assert (key_one == key_other) == (one == other)
    assert key_one != b""


@given(st.binary(max_size=600))
def test_random_credentials_only_typed_errors(junk):
    server = _authenticating()
    try:
        server.receive_data(junk)
        event = server.next_event()
    except RemoteProtocolError as e:
        assert server.failure_reply(e) == b"\x01\x01"
    else:
        assert event is NEED_DATA or isinstance(event, UsernamePassword)


@given(_other_methods, st.data(), _hosts, st.integers(1, 65535), st.binary(max_size=512))
def test_round_trip_in_any_chunking(extra_methods, data, host_atyp, port, early):
    host, atyp = host_atyp
    wire = encode_greeting((*extra_methods, 0)) + encode_request(host, port, atyp=atyp) + early
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    server = Socks5Server()
    events = _feed_in_chunks(server, wire, cuts)
    assert events == [Greeting((*extra_methods, 0)), ConnectRequest(host, port, atyp)]
    assert server.trailing_data == early
    assert server.isolation_key == b""


@given(st.sampled_from(ReplyCode), _hosts, st.integers(0, 65535))
def test_reply_round_trip(code, host_atyp, port):
    host, atyp = host_atyp
    server = _greeted()
    server.receive_data(encode_request("x.onion", 80))
    server.next_event()
    wire = server.reply(code, host, port)
    reply, used = decode_reply(wire)
    assert used == len(wire)
    assert (reply.code, reply.port) == (code, port)
    try:  # reply() sends anything that parses as an IP address as one, in canonical form ("0:0::1" -> "::1")
        expected = str(ipaddress.ip_address(host))
    except ValueError:
        expected = host
    assert reply.host == expected
    assert decode_reply(wire[:-1]) is NEED_DATA


_names = st.one_of(st.just(ONION.encode()), st.just(ONION.upper().encode()),
                   st.binary(min_size=1, max_size=255), _hosts.map(lambda host_atyp: host_atyp[0].encode()))
_addresses = st.one_of(st.binary(min_size=4, max_size=4), st.binary(min_size=16, max_size=16),
                       _names.map(lambda name: bytes((len(name),)) + name))


@given(st.one_of(st.sampled_from(Atyp), st.integers(0, 255)), _addresses, st.integers(0, 65535))
def test_a_parsed_request_never_makes_the_client_misuse_the_protocol(atyp, address, port):
    """What the client does with a ConnectRequest (decode the onion name, send BEGIN to its port) raises no
    LocalProtocolError: whatever the address type, address and port, the parser refused it or it is usable."""
    server = _greeted()
    server.receive_data(bytes((5, 1, 0, atyp)) + address + port.to_bytes(2, "big"))
    try:
        event = server.next_event()
    except RemoteProtocolError as e:
        assert server.failure_reply(e)[:2] in (b"\x05\x01", b"\x05\x08")
        return
    if event is NEED_DATA:  # the address type wants more bytes than we sent
        return
    Begin("", event.port)
    try:
        decode_onion_address(event.host)
    except AddressError:
        pass


@given(st.binary(max_size=600))
def test_random_bytes_only_typed_errors(junk):
    for server in (Socks5Server(), _greeted(), _authenticating()):
        try:
            server.receive_data(junk)
            server.next_event()
        except RemoteProtocolError:
            pass


def test_the_bound_address_of_replies_is_parsed_once():
    """A SOCKS reply names the same bound address every time: ipaddress parses it once (it was ~4% of the
    client's CPU per warm request); hosts that are no IP literal still go as domain names."""
    from nodes.core import socks5

    socks5._parse_ip.cache_clear()
    for _ in range(3):
        assert socks5._encode_address("0.0.0.0", 0, None) == b"\x01" + bytes(6)
    assert socks5._parse_ip.cache_info().misses == 1
    assert socks5._encode_address("::1", 80, None) == b"\x04" + bytes(15) + b"\x01\x00\x50"
    assert socks5._encode_address("example.onion", 80, None) == b"\x03\x0dexample.onion\x00\x50"
    with pytest.raises(LocalProtocolError):
        socks5._encode_address("::1", 80, socks5.Atyp.IPV4)
