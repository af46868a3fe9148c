"""An application that closes its SOCKS connection ends the onion stream at once (END), instead of leaving
the far end waiting for its next request until a timeout; CircuitStream.send_eof semantics."""

import functools
import io
import json

import pytest
import trio

from nodes.net.events import EventLog
from nodes.net.metrics import Metrics
from nodes.net.socks import serve_socks
from nodes.net.streams import CircuitStream
from tests.net.helpers import start_client, start_relay
from tests.net.test_socks import ONION, socks_open

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"


class _Tap(io.StringIO):
    """EventLog output that sets a trio.Event per event name."""

    def __init__(self) -> None:
        super().__init__()
        self.events: dict[str, trio.Event] = {}

    def write(self, text: str) -> int:
        self.seen(json.loads(text)["event"]).set()
        return super().write(text)

    def seen(self, name: str) -> trio.Event:
        return self.events.setdefault(name, trio.Event())


async def test_closing_the_socks_connection_ends_the_onion_stream_at_once():
    far_end_saw_eof = trio.Event()

    async def keep_alive_server(stream):
        # like the HTTP target: answer, then wait (30 s there) for another request on the same stream
        request = b""
        while b"\r\n\r\n" not in request:
            request += await stream.receive_some(4096)
        await stream.send_all(RESPONSE)
        with trio.move_on_after(30):
            if await stream.receive_some(4096) == b"":
                far_end_saw_eof.set()

    async with trio.open_nursery() as nursery:
        relays = [await start_relay(nursery, f"relay{i}", dir_handler=keep_alive_server) for i in range(3)]
        client = await start_client(nursery)
        tap = _Tap()
        with trio.fail_after(20):
            circuit = await client.circuits.build([r.status for r in relays])

            async def connect(host, port, isolation):
                return await circuit.open_dir_stream()

            port = await nursery.start(functools.partial(serve_socks, "127.0.0.1", 0, connect, Metrics(),
                                                         EventLog("client", "client", tap)))
            app, code, _ = await socks_open(port, ONION, 80)
            assert code == 0
            await app.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            got = b""
            while len(got) < len(RESPONSE):
                got += await app.receive_some(4096)
            assert got == RESPONSE
            await app.aclose()  # as curl does when it is done
        with trio.fail_after(3):  # not the far end's 30 s
            await far_end_saw_eof.wait()
            await tap.seen("socks_closed").wait()
        closed = [json.loads(line) for line in tap.getvalue().splitlines()
                  if json.loads(line)["event"] == "socks_closed"]
        assert closed[0]["outcome"] == "closed" and closed[0]["bytes_down"] == len(RESPONSE)
        assert circuit.error is None  # the stream ended, the circuit stays for the next one
        nursery.cancel_scope.cancel()


async def test_send_eof_sends_end_keeps_what_arrived_readable_then_eof():
    seen = []

    async def far_end(stream):
        await stream.send_all(b"already on its way")
        seen.append(await stream.receive_some(100))  # b"": our END

    async with trio.open_nursery() as nursery:
        relays = [await start_relay(nursery, f"relay{i}", dir_handler=far_end) for i in range(3)]
        client = await start_client(nursery)
        with trio.fail_after(20):
            circuit = await client.circuits.build([r.status for r in relays])
            stream = await circuit.open_dir_stream()
            assert isinstance(stream, trio.abc.HalfCloseableStream)
            while not stream._buffer:
                await trio.sleep(0.01)
            await stream.send_eof()
            await stream.send_eof()  # idempotent
            with pytest.raises(trio.ClosedResourceError):
                await stream.send_all(b"more")
            assert await stream.receive_some(100) == b"already on its way"
            assert await stream.receive_some(100) == b""
            await stream.aclose()  # no second END (the core would refuse one)
            while not seen:
                await trio.sleep(0.01)
            assert seen == [b""]
            again = await circuit.open_dir_stream()  # the circuit is fine
            assert isinstance(again, CircuitStream)
            await again.aclose()
        nursery.cancel_scope.cancel()
