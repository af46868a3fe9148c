"""bench.network's measuring tools on loopback, without a lab: its blocking SOCKS5 client (with credentials)
against our SOCKS server, its HTTP fetch with the pattern check, and its summaries. No timing is asserted."""

import functools
import io
import socket

import pytest
import trio

from bench import network
from nodes.core.socks5 import UsernamePassword
from nodes.net.events import EventLog
from nodes.net.metrics import Metrics
from nodes.net.socks import serve_socks
from nodes.net.targets import pattern_bytes

ONION = "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd.onion"


def test_summary_is_nearest_rank_in_ms():
    assert network.summary_ms([i / 1000 for i in range(1, 21)]) == {"p50": 10.5, "p95": 19.0, "n": 20,
                                                                    "max": 20.0}


def test_tcp_baseline_checks_every_byte():
    assert network.tcp_MBps(300_000) > 0


def test_a_wrong_byte_is_caught():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        body = bytearray(pattern_bytes(0, 1000))
        body[777] ^= 1
        with socket.create_connection(("127.0.0.1", port)) as client:
            server, _ = listener.accept()
            with server:
                server.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + bytes(body))
                with pytest.raises(network.BenchError, match="differs from the pattern"):
                    network.http_get(client, "x", "/bytes/1000", pattern=True)


async def test_socks_client_sends_credentials_and_fetches():
    connects = []

    async def connect(host: str, port: int, isolation: bytes) -> trio.abc.Stream:
        connects.append((host, port, isolation))
        return await trio.open_tcp_stream("127.0.0.1", http_port)

    async def http(stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive_some(4096)
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + pattern_bytes(0, 5000))

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(functools.partial(trio.serve_tcp, http, 0, host="127.0.0.1"))
            http_port = listeners[0].socket.getsockname()[1]
            socks_port = await nursery.start(functools.partial(
                serve_socks, "127.0.0.1", 0, connect, Metrics(), EventLog("c", "client", io.StringIO())))

            def fetch(credentials):
                with network.socks_connect(("127.0.0.1", socks_port), ONION, 80, credentials) as sock:
                    return network.http_get(sock, ONION, "/bytes/5000", pattern=True)

            for credentials in ((b"bench-1", b"x"), None):
                fetched = await trio.to_thread.run_sync(fetch, credentials)
                assert (fetched.status, fetched.size) == (200, 5000)
                assert fetched.sent <= fetched.first_byte <= fetched.done
            key = UsernamePassword(b"bench-1", b"x").isolation_key
            assert connects == [(ONION, 80, key), (ONION, 80, b"")]
            nursery.cancel_scope.cancel()
