"""CircuitStream (nodes/net/streams.py) against a stand-in circuit: its passes through the scheduler, and a
cancelled receive that loses nothing."""

import trio
import trio.testing

from nodes.net.streams import CircuitStream


class Host:
    """A StreamHost with room for everything: it records what is sent."""

    error = None

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_capacity(self, stream_id: int) -> int:
        return 1 << 20

    def send_data(self, stream_id: int, data: bytes) -> None:
        self.sent.append(data)

    def end_stream(self, stream_id: int, reason: int) -> None:
        pass

    def forget_stream(self, stream_id: int) -> None:
        pass

    async def wait_changed(self) -> None:
        await trio.sleep_forever()

    async def wait_writable(self) -> None:
        await trio.lowlevel.checkpoint()  # as Channel.wait_writable


async def test_receive_of_waiting_data_is_a_checkpoint_and_a_cancel_loses_nothing():
    stream = CircuitStream(Host(), 1, connected=True)
    await stream._deliver(b"data")
    with trio.CancelScope() as scope:
        scope.cancel()
        await stream.receive_some()
    assert scope.cancelled_caught
    with trio.testing.assert_checkpoints():
        assert await stream.receive_some() == b"data"


async def test_a_receive_that_waits_is_woken_by_the_data():
    stream = CircuitStream(Host(), 1, connected=True)
    async with trio.open_nursery() as nursery:
        got = []

        async def receive() -> None:
            got.append(await stream.receive_some())

        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        await stream._deliver(b"late")
    assert got == [b"late"]


async def test_send_all_yields_through_the_circuit_and_an_empty_one_still_yields():
    host = Host()
    stream = CircuitStream(host, 1, connected=True)
    with trio.testing.assert_checkpoints():
        await stream.send_all(b"request")
    with trio.testing.assert_checkpoints():
        await stream.send_all(b"")
    assert host.sent == [b"request"]
