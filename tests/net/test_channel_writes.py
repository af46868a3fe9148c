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
