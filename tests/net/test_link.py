"""Links over real TLS on loopback: handshake, cell exchange, typed errors on junk, timeouts."""

import functools

import pytest
import trio

from nodes.core.cells import Cell, Command, Create2
from nodes.core.errors import DecodeError, UnexpectedMessage
from nodes.net import tls
from nodes.net.link import Link, LinkClosed


async def _pair(nursery, server_fn):
    """Start a TLS server running server_fn(link) and return a connected client Link and the server port."""
    ctx = tls.server_context()

    async def handler(stream):
        await server_fn(Link(stream, initiator=False))

    listeners = await nursery.start(functools.partial(trio.serve_ssl_over_tcp, handler, 0, ctx,
                                                      host="127.0.0.1"))
    port = listeners[0].transport_listener.socket.getsockname()[1]
    stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", port, ssl_context=tls.client_context())
    return Link(stream, initiator=True), port


async def test_handshake_and_cells_both_ways():
    got = []

    async def server(link):
        await link.handshake(now=1000, peer_address="127.0.0.1", my_addresses=["127.0.0.1"])
        got.append(link.peer_netinfo)
        cells = []
        while len(cells) < 100:
            cells += await link.receive_cells()
        got.append(cells)
        await link.send_cells([Cell(c.circ_id, Command.CREATED2, b"\x00\x00") for c in cells])

    async with trio.open_nursery() as nursery:
        client, _ = await _pair(nursery, server)
        await client.handshake(now=2000, peer_address="127.0.0.1", my_addresses=["127.0.0.1"])
        assert client.protocol == 5
        assert client.peer_netinfo.timestamp == 1000
        sent = [Cell(0x80000000 + i, Command.CREATE2, Create2(2, bytes([i]) * 84).encode())
                for i in range(100)]
        await client.send_cells(sent)
        replies = []
        while len(replies) < 100:
            replies += await client.receive_cells()
        assert [r.circ_id for r in replies] == [c.circ_id for c in sent]
        nursery.cancel_scope.cancel()
    assert got[0].timestamp == 2000 and got[0].my_addresses == ("127.0.0.1",)
    assert [Create2.decode(c.payload).hdata for c in got[1]] == [bytes([i]) * 84 for i in range(100)]


async def test_junk_from_peer_is_a_typed_error():
    async def server(link):
        await link._stream.send_all(b"\x00\x00\xfe" + b"junk" * 200)  # unknown command 0xfe

    async with trio.open_nursery() as nursery:
        client, _ = await _pair(nursery, server)
        with pytest.raises(DecodeError):
            await client.handshake(now=0)
        await client.aclose()
        await client.aclose()  # idempotent
        nursery.cancel_scope.cancel()


async def test_wrong_first_cell_is_unexpected():
    async def server(link):
        await link.send_cells([Cell(1, Command.CREATE2, Create2(2, b"x" * 84).encode())])
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        client, _ = await _pair(nursery, server)
        client._framer.circ_id_len = 4
        with pytest.raises(UnexpectedMessage):
            await client._receive_handshake_cell(Command.VERSIONS)
        nursery.cancel_scope.cancel()


async def test_silent_peer_times_out():
    async def server(link):
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        client, _ = await _pair(nursery, server)
        with pytest.raises(trio.TooSlowError):
            await client.handshake(now=0, timeout=0.3)
        nursery.cancel_scope.cancel()


async def test_peer_closing_raises_link_closed():
    async def server(link):
        await link.aclose()

    async with trio.open_nursery() as nursery:
        client, _ = await _pair(nursery, server)
        with pytest.raises(LinkClosed):
            await client.handshake(now=0)
        nursery.cancel_scope.cancel()
