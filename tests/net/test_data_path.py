"""The batched data path: CellInbox bounds and ends, TLSStream against trio's own TLS both ways, and a reader
that stops reading stalls the sender through three hops (bounded buffering) and then gets every byte."""

import functools
import os

import pytest
import trio

from nodes.core.cells import Cell, Command
from nodes.net import tls
from nodes.net.channels import CellInbox
from nodes.net.streams import RECEIVE_BUFFER_LIMIT
from nodes.net.targets import pattern_bytes
from tests.net.helpers import HOST, echo, start_client, start_relay


def _cells(n: int, start: int = 0) -> list[Cell]:
    return [Cell(1, Command.RELAY, (start + i).to_bytes(4, "big")) for i in range(n)]


async def test_inbox_hands_over_batches_in_order_and_bounds_the_reader():
    inbox = CellInbox(limit=10)
    assert await inbox.put(_cells(4))
    assert await inbox.put(_cells(6, 4))  # 10 queued: at the limit, no wait
    assert len(inbox) == 10
    put_done = trio.Event()

    async def reader_side():
        await inbox.put(_cells(5, 10))  # 15 > 10: waits for the circuit
        put_done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader_side)
        await trio.testing.wait_all_tasks_blocked()
        assert not put_done.is_set() and len(inbox) == 15
        batch = await inbox.receive_batch()
        await put_done.wait()
    assert [int.from_bytes(c.payload, "big") for c in batch] == list(range(15))
    assert len(inbox) == 0


async def test_inbox_ends_after_the_queued_cells_and_drops_cells_once_abandoned():
    inbox = CellInbox()
    await inbox.put(_cells(3))
    inbox.close()
    assert not await inbox.put(_cells(1))  # after close: dropped
    assert [int.from_bytes(c.payload, "big") async for c in inbox] == [0, 1, 2]
    with pytest.raises(trio.EndOfChannel):
        await inbox.receive_batch()

    inbox = CellInbox(limit=1)
    blocked = []

    async def reader_side():
        blocked.append(await inbox.put(_cells(5)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader_side)
        await trio.testing.wait_all_tasks_blocked()
        assert blocked == []
        async with inbox:
            pass  # the circuit's task ends: the waiting reader goes on, later cells are dropped
    assert blocked == [True]
    assert not await inbox.put(_cells(1)) and len(inbox) == 0


async def test_inbox_hands_a_batch_to_fast_only_while_its_task_waits_on_it_empty():
    """The reader's shortcut (channels.py): `fast` takes the leading cells while the circuit's task is
    parked on its empty inbox; the rest is queued for the task, in order; a busy task gets everything."""
    inbox = CellInbox()
    taken: list[int] = []

    def fast(cells):
        n = min(2, len(cells))
        taken.extend(int.from_bytes(c.payload, "big") for c in cells[:n])
        return n

    inbox.fast = fast
    assert await inbox.put(_cells(1))  # no task parked yet: queued
    assert taken == [] and len(inbox) == 1
    got = []

    async def task():
        got.extend(await inbox.receive_batch())  # takes the queued cell at once, without parking
        got.extend(await inbox.receive_batch())  # parks: the next put goes to fast first

    async with trio.open_nursery() as nursery:
        nursery.start_soon(task)
        await trio.testing.wait_all_tasks_blocked()
        assert await inbox.put(_cells(5, 1))  # cells 1, 2 to fast; 3, 4, 5 to the task
        assert taken == [1, 2]
    assert [int.from_bytes(c.payload, "big") for c in got] == [0, 3, 4, 5]
    assert await inbox.put(_cells(2, 6))  # the task is gone, not parked: queued
    assert taken == [1, 2] and len(inbox) == 2


async def _tls_echo_server(stream: trio.abc.Stream) -> None:
    while data := await stream.receive_some(100_000):
        await stream.send_all(data)
    await stream.aclose()


async def _exchange(stream: trio.abc.Stream, payload: bytes) -> bytes:
    received = bytearray()

    async def sender():
        # uneven pieces: records and socket reads never line up with them
        for i, n in enumerate(range(0, len(payload), 70_001)):
            await stream.send_all(payload[n:n + 70_001])
            if i % 7 == 0:
                await stream.send_all(b"")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        while len(received) < len(payload):
            data = await stream.receive_some()
            assert data
            received += data
    return bytes(received)


async def _start_tls_echo_server(nursery: trio.Nursery) -> int:
    """trio's own TLS server, echoing, on a free port of HOST: its port."""
    listeners = await nursery.start(functools.partial(trio.serve_ssl_over_tcp, _tls_echo_server, 0,
                                                      tls.server_context()[0], host=HOST))
    return listeners[0].transport_listener.socket.getsockname()[1]


async def test_tls_stream_client_against_trio_server():
    payload = os.urandom(3_000_000)
    async with trio.open_nursery() as nursery:
        port = await _start_tls_echo_server(nursery)
        with trio.fail_after(20):
            stream = await tls.open_tls_stream(HOST, port, tls.client_context())
            assert await _exchange(stream, payload) == payload
            await stream.aclose()
            await stream.aclose()  # idempotent
            with pytest.raises(trio.ClosedResourceError):
                await stream.send_all(b"x")
        nursery.cancel_scope.cancel()


async def test_tls_stream_server_against_trio_client_sees_eof():
    payload = os.urandom(2_000_000)
    ended = trio.Event()

    async def handler(transport):
        stream = tls.TLSStream(transport, tls.server_context()[0], server_side=True)
        await stream.do_handshake()
        while data := await stream.receive_some(50_000):
            await stream.send_all(data)
        ended.set()  # the client's close_notify (or its TCP FIN) reads as b""
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host=HOST))
        port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(20):
            client = await trio.open_ssl_over_tcp_stream(HOST, port, ssl_context=tls.client_context())
            assert await _exchange(client, payload) == payload
            await client.aclose()
            await ended.wait()
        nursery.cancel_scope.cancel()


async def test_tls_write_nowait_sends_at_once_or_leaves_the_rest_for_send_all():
    """A link's writer writes without waiting when the socket takes the bytes (True); when it does not, the
    rest goes out, in order and after anything written before, with the next send_all."""
    received = bytearray()
    reading = trio.Event()
    got_first = trio.Event()

    async def handler(transport):
        stream = tls.TLSStream(transport, tls.server_context()[0], server_side=True)
        await stream.do_handshake()
        while data := await stream.receive_some():
            received.extend(data)
            if len(received) >= 1000:
                got_first.set()
                await reading.wait()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host=HOST))
        port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(20):
            stream = await tls.open_tls_stream(HOST, port, tls.client_context())
            first = os.urandom(1000)
            assert stream.write_nowait(first)  # an idle socket takes 1000 bytes at once
            await got_first.wait()  # ... and the peer stops reading now
            big = os.urandom(20_000_000)  # more than loopback's socket buffers hold
            assert not stream.write_nowait(big)
            assert stream._unsent or stream._outgoing.pending
            reading.set()
            await stream.send_all(b"")  # sends the rest
            assert not stream._unsent and not stream._outgoing.pending
            tail = b"the end"
            assert stream.write_nowait(tail) or await stream.send_all(b"") is None
            while len(received) < len(first) + len(big) + len(tail):
                await trio.sleep(0.01)
        assert bytes(received) == first + big + tail
        nursery.cancel_scope.cancel()


async def test_tls_receive_reads_the_tls_engine_only_while_it_holds_bytes():
    """Each SSLObject.read past the buffered records raises SSLWantReadError, per batch on every hop:
    _decrypt stops once the incoming BIO and the engine are empty, and still gets every byte."""
    async with trio.open_nursery() as nursery:
        port = await _start_tls_echo_server(nursery)
        with trio.fail_after(20):
            stream = await tls.open_tls_stream(HOST, port, tls.client_context())
            reads = []
            real = stream._ssl

            class Counting:
                def __getattr__(self, name):
                    return getattr(real, name)

                def read(self, n):
                    reads.append(n)
                    return real.read(n)

            stream._ssl = Counting()
            assert stream._decrypt(1000) == b"" and reads == []  # nothing buffered: no read at all
            payload = os.urandom(50_000)
            assert await _exchange(stream, payload) == payload
            stream._ssl = real
            await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_tls_handshake_with_a_peer_that_is_not_tls_fails_cleanly():
    async def handler(transport):
        await transport.send_all(b"HTTP/1.0 400 no\r\n\r\n")
        await transport.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host=HOST))
        port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(10), pytest.raises(trio.BrokenResourceError):
            await tls.open_tls_stream(HOST, port, tls.client_context())
        nursery.cancel_scope.cancel()


async def test_a_reader_that_stops_stalls_the_sender_three_hops_away():
    """Nothing is buffered without bound: the exit's send_all stops once the client's stream buffer is full
    (its circuit task then stops taking cells, so no more SENDMEs go back) plus the windows in flight."""
    sent = [0]
    chunk = 64 * 1024

    async def endless(stream):
        while True:
            await stream.send_all(pattern_bytes(sent[0], chunk))
            sent[0] += chunk

    async with trio.open_nursery() as nursery:
        relays = [await start_relay(nursery, f"relay{i}", dir_handler=endless) for i in range(3)]
        client = await start_client(nursery)
        with trio.fail_after(30):
            circuit = await client.circuits.build([r.status for r in relays])
            stream = await circuit.open_dir_stream()
            last = -1
            while sent[0] != last:  # until the exit has been stuck for a while
                last = sent[0]
                await trio.sleep(0.5)
            bound = RECEIVE_BUFFER_LIMIT + 500 * 498 + 2 * chunk  # buffer + stream window + slack
            assert RECEIVE_BUFFER_LIMIT < sent[0] <= bound
            got = 0
            while got < 2 * bound:  # and it flows again, every byte in order
                data = await stream.receive_some(1 << 20)
                assert data == pattern_bytes(got, len(data))
                got += len(data)
            await stream.aclose()
        nursery.cancel_scope.cancel()


class _RecordingStream(trio.abc.HalfCloseableStream):
    """Hands over `request` and then EOF; records every send_all."""

    def __init__(self, request: bytes) -> None:
        self._incoming = [request]
        self.writes: list[bytes] = []

    async def send_all(self, data) -> None:
        self.writes.append(bytes(data))

    async def wait_send_all_might_not_block(self) -> None:
        pass

    async def send_eof(self) -> None:
        pass

    async def receive_some(self, max_bytes=None) -> bytes:
        return self._incoming.pop(0) if self._incoming else b""

    async def aclose(self) -> None:
        pass


async def test_http_target_sends_a_small_page_with_its_head_in_one_write():
    """One write is one cell through every hop (warm TTFB): the head and a small body go out together."""
    from nodes.net.targets import ServiceInfo, serve_http_target

    stream = _RecordingStream(b"GET / HTTP/1.1\r\nHost: x.onion\r\n\r\n")
    await serve_http_target(stream, ServiceInfo("hs", "x.onion"))
    data = [w for w in stream.writes if w]
    assert len(data) == 1
    assert data[0].startswith(b"HTTP/1.1 200 ") and b"This is x.onion" in data[0]


async def test_quiet_circuit_cells_pass_relays_without_waking_their_circuit_tasks(monkeypatch):
    """Once a circuit is built, requests and answers cross the first two relays in their links' readers
    (RelayEngine._forward_nowait, _backward_nowait): no circuit task there takes a cell."""

    async with trio.open_nursery() as nursery:
        relays = [await start_relay(nursery, f"relay{i}", dir_handler=echo) for i in range(3)]
        client = await start_client(nursery)
        with trio.fail_after(30):
            circuit = await client.circuits.build([r.status for r in relays])
            stream = await circuit.open_dir_stream()

            async def ping(i: int) -> None:
                await stream.send_all(b"ping %02d" % i)
                got = b""
                while len(got) < 7:
                    got += await stream.receive_some()
                assert got == b"ping %02d" % i

            for i in range(8):  # past the first cells, which ride RELAY_EARLY and take the full path
                await ping(i)
            await trio.testing.wait_all_tasks_blocked()
            middle = {id(inbox) for relay in relays[:2] for channel in relay.channels.channels
                      for inbox in channel._inboxes.values()}
            assert len(middle) == 4  # both directions at both relays
            woken = []
            receive_batch = CellInbox.receive_batch

            async def counted(self):
                cells = await receive_batch(self)
                if id(self) in middle:
                    woken.append(len(cells))
                return cells

            monkeypatch.setattr(CellInbox, "receive_batch", counted)
            for i in range(8, 16):
                await ping(i)
            assert woken == []
            await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_a_cancelled_tls_receive_loses_nothing():
    """A receive_some cancelled while the peer's records wait in the socket leaves them there: it used to read
    and decrypt them, then meet the cancel at its checkpoint, and the bytes were gone."""
    sent = trio.Event()

    async def handler(transport):
        stream = tls.TLSStream(transport, tls.server_context()[0], server_side=True)
        await stream.do_handshake()
        await stream.send_all(b"kept")
        await stream.aclose()
        sent.set()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host=HOST))
        port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(20):
            stream = await tls.open_tls_stream(HOST, port, tls.client_context())
            await sent.wait()  # on loopback the records are in our socket by now
            with trio.CancelScope() as scope:
                scope.cancel()
                await stream.receive_some()
            assert scope.cancelled_caught
            received = b""
            while data := await stream.receive_some():
                received += data
            assert received == b"kept"
            await stream.aclose()
        nursery.cancel_scope.cancel()
