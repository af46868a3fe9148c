"""The SOCKS5 front end on loopback: a raw-socket client and curl reach a local backend through it; SOCKS
credentials reach `connect` as the isolation key; every failure `connect` can report reaches the client as
the right reply code; junk is counted and survived."""

import functools
import io
import json
import os
import shutil

import pytest
import trio

from nodes.core.errors import DecodeError
from nodes.core.relay import EndReason
from nodes.core.socks5 import (
    NEED_DATA,
    Command,
    ReplyCode,
    UsernamePassword,
    decode_auth_status,
    decode_method_choice,
    decode_reply,
    encode_greeting,
    encode_request,
    encode_username_password,
)
from nodes.net.events import EventLog
from nodes.net.link import LinkClosed
from nodes.net.metrics import Metrics
from nodes.net.socks import (
    DescriptorInvalid,
    DescriptorNotFound,
    IntroFailed,
    IntroTimedOut,
    OnionAddressInvalid,
    RendezvousFailed,
    serve_socks,
)
from nodes.net.streams import StreamRefused

ONION = "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd.onion"
PAGE = b"<html><body>hello from an onion</body></html>\n"


class EventTap(io.StringIO):
    """Where the EventLog writes: keeps the lines and sets a trio.Event per event name, so tests wait for
    what the server reports instead of sleeping."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[str, trio.Event] = {}

    def write(self, text: str) -> int:
        self.seen(json.loads(text)["event"]).set()
        return super().write(text)

    def seen(self, name: str) -> trio.Event:
        return self._seen.setdefault(name, trio.Event())


class Harness:
    """A SOCKS server whose connect() opens a stream to a local backend (or raises what a test asks)."""

    def __init__(self, backend_port: int) -> None:
        self.backend_port = backend_port
        self.metrics = Metrics()
        self.out = EventTap()
        self.events = EventLog("client1", "client", self.out)
        self.connects: list[tuple[str, int, bytes]] = []
        self.fail_with: BaseException | None = None
        self.port = 0

    async def connect(self, host: str, port: int, isolation: bytes) -> trio.abc.Stream:
        self.connects.append((host, port, isolation))
        if self.fail_with is not None:
            raise self.fail_with
        return await trio.open_tcp_stream("127.0.0.1", self.backend_port)

    async def start(self, nursery, **kwargs) -> "Harness":
        self.port = await nursery.start(functools.partial(
            serve_socks, "127.0.0.1", 0, self.connect, self.metrics, self.events, **kwargs))
        return self

    def emitted(self, event: str) -> list[dict]:
        records = [json.loads(line) for line in self.out.getvalue().splitlines()]
        return [r for r in records if r["event"] == event]


async def _echo(stream: trio.SocketStream) -> None:
    async with stream:
        while data := await stream.receive_some(65536):
            await stream.send_all(data)


async def _http(stream: trio.SocketStream) -> None:
    """Just enough HTTP/1.1 for curl: read the request head, answer with PAGE, close."""
    async with stream:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            head += chunk
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
                              b"Content-Length: %d\r\n\r\n" % len(PAGE) + PAGE)


async def _backend(nursery, handler) -> int:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1]


async def _harness(nursery, handler=_echo, **kwargs) -> Harness:
    return await Harness(await _backend(nursery, handler)).start(nursery, **kwargs)


async def _receive_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await stream.receive_some(n - len(data))
        if not chunk:
            raise EOFError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


async def _receive_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


async def socks_open(port: int, host: str, dport: int, *, command: int = Command.CONNECT,
                     early: bytes = b"", credentials: tuple[bytes, bytes] | None = None,
                     ) -> tuple[trio.SocketStream, int, bytes]:
    """A raw SOCKS5 client: greeting, credentials when given, request (plus optional early data, sent before
    any reply). Returns the stream, the reply code and any bytes that followed the reply."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    if credentials is None:
        await stream.send_all(encode_greeting((0,)) + encode_request(host, dport, command=command) + early)
        assert decode_method_choice(await _receive_exactly(stream, 2)) == 0
    else:  # as curl -U does: offer both, wait for each answer
        await stream.send_all(encode_greeting((0, 2)))
        assert decode_method_choice(await _receive_exactly(stream, 2)) == 2
        await stream.send_all(encode_username_password(*credentials))
        assert decode_auth_status(await _receive_exactly(stream, 2)) == 0
        await stream.send_all(encode_request(host, dport, command=command) + early)
    buf = b""
    while (parsed := decode_reply(buf)) is NEED_DATA:
        chunk = await stream.receive_some(512)
        if not chunk:
            raise EOFError("server closed before its reply")
        buf += chunk
    reply, used = parsed
    return stream, reply.code, buf[used:]


async def test_raw_client_splices_both_ways_with_half_close():
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            h = await _harness(nursery)
            stream, code, rest = await socks_open(h.port, ONION, 7, early=b"early bytes|")
            assert code == ReplyCode.SUCCEEDED and rest == b""
            assert h.connects == [(ONION, 7, b"")]
            payload = os.urandom(1 << 20)  # far more than any socket buffer: backpressure must hold

            async def send():
                await stream.send_all(payload)
                await stream.send_eof()  # the echo backend sees EOF only if we pass it on

            nursery.start_soon(send)
            assert await _receive_all(stream) == b"early bytes|" + payload
            await stream.aclose()
            await h.out.seen("socks_closed").wait()
            closed = h.emitted("socks_closed")[0]
            assert closed["outcome"] == "closed"
            assert closed["bytes_up"] == closed["bytes_down"] == len(payload) + 12
            assert h.metrics.value("socks_bytes_total", direction="up") == len(payload) + 12
            assert h.metrics.value("socks_replies_total", code="SUCCEEDED") == 1
            assert [e["host"] for e in h.emitted("socks_request")] == [ONION]
            assert h.emitted("socks_request")[0]["isolated"] is False
            nursery.cancel_scope.cancel()


def _key(username: bytes, password: bytes) -> bytes:
    return UsernamePassword(username, password).isolation_key


async def test_credentials_become_the_isolation_key():
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            h = await _harness(nursery)
            for credentials in ((b"a", b"b"), (b"c", b"d"), (b"a", b"b"), (b"ab", b""), (b"", b"")):
                stream, code, _ = await socks_open(h.port, ONION, 7, credentials=credentials,
                                                   early=b"ping")
                assert code == ReplyCode.SUCCEEDED
                assert await _receive_exactly(stream, 4) == b"ping"
                await stream.aclose()
            keys = [isolation for _, _, isolation in h.connects]
            assert keys == [_key(b"a", b"b"), _key(b"c", b"d"), _key(b"a", b"b"), _key(b"ab", b""),
                            _key(b"", b"")]
            assert len(set(keys)) == 4 and b"" not in keys
            assert all(e["isolated"] is True for e in h.emitted("socks_request"))
            requests = "".join(json.dumps(e) for e in h.emitted("socks_request"))
            assert '"a"' not in requests  # whether a stream is isolated is logged, never the credentials
            nursery.cancel_scope.cancel()


async def test_bad_credentials_message_gets_failure_status_and_is_counted():
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            h = await _harness(nursery)
            async with await trio.open_tcp_stream("127.0.0.1", h.port) as s:
                await s.send_all(encode_greeting((2,)))
                assert await _receive_exactly(s, 2) == b"\x05\x02"
                await s.send_all(encode_request(ONION, 80))  # a request where RFC 1929 wants credentials
                assert await _receive_all(s) == b"\x01\x01"
            assert h.metrics.value("errors_total", kind="decode") == 1
            assert h.metrics.value("socks_replies_total", code="GENERAL_FAILURE") == 0
            assert h.connects == []
            nursery.cancel_scope.cancel()


async def test_curl_fetches_the_page():
    curl = shutil.which("curl")
    if curl is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but curl is not installed: the SOCKS5 interop test needs it")
        pytest.skip("curl is not installed")
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            h = await _harness(nursery, _http)
            result = await trio.run_process(
                [curl, "--silent", "--show-error", "--max-time", "15",
                 "--socks5-hostname", f"127.0.0.1:{h.port}", f"http://{ONION}/"],
                capture_stdout=True, capture_stderr=True, check=False)
            assert result.returncode == 0, result.stderr.decode()
            assert result.stdout == PAGE
            assert h.connects == [(ONION, 80, b"")]

            result = await trio.run_process(
                [curl, "--silent", "--show-error", "--max-time", "15", "--proxy-user", "alice:s3cret",
                 "--socks5-hostname", f"127.0.0.1:{h.port}", f"http://{ONION}/"],
                capture_stdout=True, capture_stderr=True, check=False)
            assert result.returncode == 0, result.stderr.decode()
            assert result.stdout == PAGE
            assert h.connects[-1] == (ONION, 80, _key(b"alice", b"s3cret"))

            h.fail_with = DescriptorNotFound("no HSDir has it")
            result = await trio.run_process(
                [curl, "--silent", "--show-error", "--max-time", "15",
                 "--socks5-hostname", f"127.0.0.1:{h.port}", f"http://{ONION}/"],
                capture_stdout=True, capture_stderr=True, check=False)
            assert result.returncode != 0
            assert b"(240)" in result.stderr, result.stderr.decode()  # curl names the code it got: 0xF0
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("error, code", [
    (OnionAddressInvalid("bad checksum"), ReplyCode.HS_BAD_ADDRESS),
    (DescriptorNotFound("not on any HSDir"), ReplyCode.HS_DESCRIPTOR_NOT_FOUND),
    (DescriptorInvalid("bad signature"), ReplyCode.HS_DESCRIPTOR_INVALID),
    (IntroFailed("every intro point NACKed"), ReplyCode.HS_INTRO_FAILED),
    (IntroTimedOut("no INTRODUCE_ACK"), ReplyCode.HS_INTRO_TIMED_OUT),
    (RendezvousFailed("no RENDEZVOUS2"), ReplyCode.HS_RENDEZVOUS_FAILED),
    (trio.TooSlowError(), ReplyCode.TTL_EXPIRED),
    (ConnectionRefusedError(111, "refused"), ReplyCode.CONNECTION_REFUSED),
    (OSError(113, "no route to host"), ReplyCode.HOST_UNREACHABLE),
    # END before CONNECTED: what tor's client replies for each reason (never 0xF3: the rendezvous worked)
    (StreamRefused(EndReason.RESOURCELIMIT), ReplyCode.GENERAL_FAILURE),
    (StreamRefused(EndReason.MISC), ReplyCode.GENERAL_FAILURE),
    (StreamRefused(EndReason.DONE), ReplyCode.CONNECTION_REFUSED),
    (StreamRefused(EndReason.CONNECTREFUSED), ReplyCode.CONNECTION_REFUSED),
    (StreamRefused(EndReason.EXITPOLICY), ReplyCode.NOT_ALLOWED),
    (StreamRefused(EndReason.TIMEOUT), ReplyCode.TTL_EXPIRED),
    (StreamRefused(EndReason.NOROUTE), ReplyCode.HOST_UNREACHABLE),
    (StreamRefused(200), ReplyCode.GENERAL_FAILURE),  # a reason tor-spec does not define
    (DecodeError("a relay sent junk"), ReplyCode.GENERAL_FAILURE),
    (LinkClosed("guard went away"), ReplyCode.GENERAL_FAILURE),
], ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None)
async def test_connect_errors_become_reply_codes(error, code):
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            h = await _harness(nursery)
            h.fail_with = error
            stream, got, _ = await socks_open(h.port, ONION, 80)
            assert got == code
            assert await stream.receive_some(1) == b""  # and the server closes
            assert h.metrics.value("socks_replies_total", code=code.name) == 1
            assert h.emitted("socks_reply")[0]["code"] == code.name
            nursery.cancel_scope.cancel()


async def test_connect_timeout_is_ttl_expired():
    async def stuck(host, port, isolation):
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            h = Harness(backend_port=0)
            h.connect = stuck
            await h.start(nursery, connect_timeout=0.2)
            _, code, _ = await socks_open(h.port, ONION, 80)
            assert code == ReplyCode.TTL_EXPIRED
            nursery.cancel_scope.cancel()


async def test_clearnet_not_allowed_unless_enabled():
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            h = await _harness(nursery)
            for host in ("example.com", "127.0.0.1", "::1", "onion", "x.onion.example.com"):
                _, code, _ = await socks_open(h.port, host, 80)
                assert code == ReplyCode.NOT_ALLOWED, host
            assert h.connects == []
            _, code, _ = await socks_open(h.port, "UPPER.ONION", 80)
            assert code == ReplyCode.SUCCEEDED

            open_ = await _harness(nursery, allow_clearnet=True)
            stream, code, _ = await socks_open(open_.port, "127.0.0.1", 80)
            assert code == ReplyCode.SUCCEEDED
            await stream.send_all(b"ping")
            assert await _receive_exactly(stream, 4) == b"ping"
            nursery.cancel_scope.cancel()


async def test_bind_and_udp_are_not_supported():
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            h = await _harness(nursery)
            for command in (Command.BIND, Command.UDP_ASSOCIATE):
                _, code, _ = await socks_open(h.port, ONION, 80, command=command)
                assert code == ReplyCode.COMMAND_NOT_SUPPORTED
            assert h.metrics.value("errors_total", kind="unsupported") == 2
            assert h.connects == []
            nursery.cancel_scope.cancel()


async def test_port_zero_gets_general_failure_and_is_counted():
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            h = await _harness(nursery)
            stream, code, _ = await socks_open(h.port, ONION, 0)
            assert code == ReplyCode.GENERAL_FAILURE
            assert await stream.receive_some(1) == b""
            assert h.connects == []  # connect() never sees it
            assert h.metrics.value("errors_total", kind="bad_port") == 1
            assert h.metrics.value("socks_replies_total", code="GENERAL_FAILURE") == 1
            _, code, _ = await socks_open(h.port, ONION, 80)
            assert code == ReplyCode.SUCCEEDED
            nursery.cancel_scope.cancel()


async def test_junk_is_counted_and_the_server_keeps_serving():
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            h = await _harness(nursery, handshake_timeout=0.3)

            async def junk(data: bytes) -> bytes:
                async with await trio.open_tcp_stream("127.0.0.1", h.port) as s:
                    await s.send_all(data)
                    return await _receive_all(s)

            # an HTTP client, a SOCKS4 client, random bytes, a request with a bad reserved byte
            replies = {}

            async def run(data: bytes) -> None:
                replies[data] = await junk(data)

            async with trio.open_nursery() as clients:
                for data in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00",
                             os.urandom(300).replace(b"\x05", b"\x06"),
                             encode_greeting((0,)) + b"\x05\x01\x07\x01\x7f\x00\x00\x01\x00\x50"):
                    clients.start_soon(run, data)
            assert sorted(replies.values()) == [b"", b"", b"", b"\x05\x00\x05\x01\x00\x01" + bytes(6)]
            assert h.metrics.value("errors_total", kind="decode") == 4

            # a client that offers only GSSAPI is told no
            assert await junk(b"\x05\x01\x01") == b"\x05\xff"
            # a client that says nothing is cut off after the handshake timeout
            async with await trio.open_tcp_stream("127.0.0.1", h.port) as silent:
                assert await _receive_all(silent) == b""
            assert h.metrics.value("errors_total", kind="socks_handshake_timeout") == 1

            stream, code, _ = await socks_open(h.port, ONION, 80)
            assert code == ReplyCode.SUCCEEDED
            await stream.send_all(b"still here")
            assert await _receive_exactly(stream, 10) == b"still here"
            assert h.metrics.value("socks_connections_total") == 7
            nursery.cancel_scope.cancel()


async def test_idle_connection_is_closed():
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            h = await _harness(nursery, idle_timeout=0.3)
            stream, code, _ = await socks_open(h.port, ONION, 80)
            assert code == ReplyCode.SUCCEEDED
            assert await _receive_all(stream) == b""
            await h.out.seen("socks_closed").wait()
            assert h.emitted("socks_closed")[0]["outcome"] == "idle_timeout"
            assert h.metrics.value("socks_active_connections") == 0
            nursery.cancel_scope.cancel()


async def test_a_bug_in_connect_propagates():
    async def buggy(host, port, isolation):
        raise ValueError("a bug in the client role")

    with trio.fail_after(10), pytest.RaisesGroup(ValueError, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(functools.partial(
                serve_socks, "127.0.0.1", 0, buggy, Metrics(), EventLog("c", "client", io.StringIO())))
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(encode_greeting((0,)) + encode_request(ONION, 80))
            await trio.sleep_forever()
