"""A channel's write path: a task that queued cells and waits for room writes them itself when no one else
is writing (one task switch less per hop), and a task cancelled while it writes leaves the link working."""

import trio

from nodes.core.cells import Cell, Command
from tests.net.helpers import HOST, start_client, start_relay


def _padding(n: int) -> list[Cell]:
    return [Cell(0, Command.PADDING, bytes(509)) for _ in range(n)]


async def _received(relay, n: int) -> None:
    with trio.fail_after(10):
        while relay.metrics.value("cells_in_total") < n:
            await trio.sleep(0.01)


async def test_the_task_waiting_for_room_writes_what_it_queued():
    async with trio.open_nursery() as nursery:
        relay = await start_relay(nursery, "relay")
        client = await start_client(nursery)
        channel = await client.channels.get_channel(HOST, relay.channels.or_port)
        before = relay.metrics.value("cells_in_total")
        channel.send_nowait(_padding(3))
        await channel.wait_room()
        # written in this task, before any other task (the channel's writer among them) could run
        assert client.metrics.value("cells_out_total") == 3 and not channel._outbox
        await _received(relay, before + 3)
        nursery.cancel_scope.cancel()


async def test_a_writer_cancelled_midway_leaves_the_link_working():
    async with trio.open_nursery() as nursery:
        relay = await start_relay(nursery, "relay")
        client = await start_client(nursery)
        channel = await client.channels.get_channel(HOST, relay.channels.or_port)
        before = relay.metrics.value("cells_in_total")
        with trio.CancelScope() as scope:
            scope.cancel()  # cancelled before it starts: the write is shielded, the TLS stream stays whole
            channel.send_nowait(_padding(2000))
            await channel.wait_room()
        channel.send_nowait(_padding(5))
        await channel.wait_room()
        await _received(relay, before + 2005)
        assert not channel.closed
        nursery.cancel_scope.cancel()


async def test_a_batch_the_socket_does_not_take_at_once_is_flushed_and_counted_once():
    """The circuit task hands its batch over without waiting; what the socket did not take is flushed
    before wait_room returns, and every cell is counted once, whichever way it left."""
    async with trio.open_nursery() as nursery:
        relay = await start_relay(nursery, "relay")
        client = await start_client(nursery)
        channel = await client.channels.get_channel(HOST, relay.channels.or_port)
        out_before = client.metrics.value("cells_out_total")
        in_before = relay.metrics.value("cells_in_total")
        channel.send_nowait(_padding(3000))  # ~1.5 MB: more than loopback takes at once
        await channel.wait_room()
        channel.send_nowait(_padding(7))
        await channel.wait_room()
        assert channel._queued == 0 and channel._unflushed == 0 and not channel.link._unflushed
        assert client.metrics.value("cells_out_total") == out_before + 3007
        await _received(relay, in_before + 3007)
        nursery.cancel_scope.cancel()
