"""FdStream: a stream's contract (EOF, half-close, close, busy), and when it passes through the scheduler:
receive_some always, send_all only when it waited. (trio.testing.check_half_closeable_stream insists that
send_all always yields, which is what FdStream exists to avoid.)"""

import socket

import pytest
import trio
import trio.testing

from nodes.net.fdstream import FdStream


def _pair() -> tuple[FdStream, FdStream]:
    a, b = socket.socketpair()
    return (FdStream(trio.SocketStream(trio.socket.from_stdlib_socket(a))),
            FdStream(trio.SocketStream(trio.socket.from_stdlib_socket(b))))


async def test_receive_is_a_checkpoint_even_when_bytes_are_waiting():
    left, right = _pair()
    async with left, right:
        await left.send_all(b"ping")
        with trio.testing.assert_checkpoints():
            assert await right.receive_some(100) == b"ping"


async def test_a_send_the_socket_takes_at_once_does_not_yield():
    left, right = _pair()
    async with left, right:
        with trio.testing.assert_no_checkpoints():
            await left.send_all(b"x" * 1000)
        assert await right.receive_some() == b"x" * 1000


async def test_a_send_larger_than_the_socket_buffers_waits_for_the_reader():
    left, right = _pair()
    data = bytes(range(256)) * 40_000  # 10 MB
    got = bytearray()
    async with left, right:

        async def read_all() -> None:
            while len(got) < len(data):
                got.extend(await right.receive_some())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            await left.send_all(data)
    assert got == data


async def test_a_peer_that_is_gone_breaks_the_send():
    left, right = _pair()
    await right.aclose()
    with pytest.raises(trio.BrokenResourceError):
        await left.send_all(b"x" * 1000)
    await left.aclose()


async def test_half_close_then_eof_both_ways():
    left, right = _pair()
    async with left, right:
        await left.send_all(b"request")
        await left.send_eof()
        assert await right.receive_some() == b"request"
        assert await right.receive_some() == b""  # EOF, and again
        assert await right.receive_some() == b""
        await right.send_all(b"answer")  # the other direction still works
        assert await left.receive_some() == b"answer"


async def test_closed_and_busy():
    left, right = _pair()
    async with right:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(left.receive_some)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await left.receive_some()
            await right.send_all(b"x")
        await left.aclose()
        for call in (left.receive_some(), left.send_all(b"x"), left.send_eof()):
            with pytest.raises(trio.ClosedResourceError):
                await call
        with pytest.raises(ValueError):
            await right.receive_some(0)


async def test_a_cancelled_receive_loses_nothing():
    left, right = _pair()
    async with left, right:
        await left.send_all(b"kept")
        with trio.CancelScope() as scope:
            scope.cancel()
            await right.receive_some()
        assert scope.cancelled_caught
        assert await right.receive_some() == b"kept"
