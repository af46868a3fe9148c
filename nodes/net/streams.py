"""A trio Stream over one stream of a circuit, for either end (origin handle or relay circuit).

The circuit's task feeds what arrives (`_deliver`, `_finish`, `_fail`); `send_all` asks the core how much
the package windows allow, has it make the DATA cells and waits for SENDMEs when the windows are empty.

Onion streams have no half-close: END closes both directions (tor-spec 6.3). `send_eof` therefore sends
END, as tor does when its application closes its side, so the other end learns at once that nobody is
left (a SOCKS application that closed no longer keeps the service waiting for its next request); what has
already arrived stays readable, then receive_some returns b"".
"""

from __future__ import annotations

from typing import Protocol

import trio

from nodes.core.relay import EndReason

# The core sends SENDMEs as cells arrive (it has no read-side signal), so the windows do not bound what
# waits here for the application. Past this much, the circuit's task waits for the reader (backpressure on
# the whole circuit).
RECEIVE_BUFFER_LIMIT = 2 * 1024 * 1024
STALL_TIMEOUT = 60.0  # longest wait for a SENDME to reopen the package windows


class StreamHost(Protocol):
    """What a circuit end offers its streams. Each sending method makes cells and queues them at once."""

    error: BaseException | None  # set once the circuit is gone

    def send_capacity(self, stream_id: int) -> int: ...

    def send_data(self, stream_id: int, data: bytes) -> None: ...

    def end_stream(self, stream_id: int, reason: int) -> None: ...

    def forget_stream(self, stream_id: int) -> None: ...

    async def wait_changed(self) -> None:
        """Until the next cell is processed (windows may have moved) or the circuit fails."""

    async def wait_writable(self) -> None: ...


class StreamRefused(Exception):
    """The peer answered BEGIN / BEGIN_DIR with END."""

    def __init__(self, reason: int) -> None:
        try:
            name = EndReason(reason).name
        except ValueError:
            name = str(reason)
        super().__init__(f"stream refused: END reason {name}")
        self.reason = reason


class CircuitStream(trio.abc.HalfCloseableStream):
    """A byte stream carried by a circuit. receive_some returns b"" once the peer sent END; after the circuit
    dies both directions raise the circuit's error (a trio.BrokenResourceError)."""

    def __init__(self, host: StreamHost, stream_id: int, *, connected: bool = False,
                 buffer_limit: int = RECEIVE_BUFFER_LIMIT) -> None:
        self._host = host
        self.stream_id = stream_id
        self.end_reason: int | None = None  # the peer's END reason, once it came
        self._buffer = bytearray()
        self._limit = buffer_limit
        self._connected = connected
        self._closed = False
        self._eof_sent = False  # send_eof: our END went out; nothing more is sent or delivered
        self._error: BaseException | None = None
        self._sending = False
        self._receiving = False
        self._readable = trio.lowlevel.ParkingLot()
        self._room = trio.lowlevel.ParkingLot()

    # -- trio.abc.Stream -----------------------------------------------------------------------------------
    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            view = memoryview(data).cast("B")
            sent = False
            while True:
                self._check_sendable()
                if not view:
                    break
                capacity = self._host.send_capacity(self.stream_id)
                if not capacity:
                    with trio.fail_after(STALL_TIMEOUT):
                        await self._host.wait_changed()
                    continue
                self._host.send_data(self.stream_id, bytes(view[:capacity]))
                view = view[capacity:]
                await self._host.wait_writable()  # a checkpoint
                sent = True
            if not sent:
                await trio.lowlevel.checkpoint()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        self._check_sendable()
        while not self._host.send_capacity(self.stream_id):
            await self._host.wait_changed()
            self._check_sendable()
        await self._host.wait_writable()

    async def send_eof(self) -> None:
        """END the stream (see the module docstring); idempotent, and a no-op once the peer ended it."""
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        if self._closed:
            raise trio.ClosedResourceError("the stream is closed")
        self._end()
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        self._receiving = True
        try:
            # One pass through the scheduler: the wait for data when there is none, else a yield that no
            # cancellation interrupts once the data is taken.
            await trio.lowlevel.checkpoint_if_cancelled()
            waited = False
            while not self._buffer:
                if self._closed:
                    raise trio.ClosedResourceError("the stream is closed")
                if self.end_reason is not None or self._eof_sent:
                    if not waited:
                        await trio.lowlevel.cancel_shielded_checkpoint()
                    return b""
                if self._error is not None:
                    raise self._error
                waited = True
                await self._readable.park()
            n = len(self._buffer) if max_bytes is None else max_bytes
            data = bytes(self._buffer[:n])
            del self._buffer[:n]
            self._room.unpark_all()
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        """Send END (unless we or the peer ended it or the circuit is gone); idempotent."""
        if not self._closed:
            self._closed = True
            self._end()
        await trio.lowlevel.checkpoint()

    def _end(self) -> None:
        if not self._eof_sent:
            self._eof_sent = True
            if self.end_reason is None and self._error is None and self._connected:
                self._host.end_stream(self.stream_id, EndReason.DONE)
            self._host.forget_stream(self.stream_id)  # the circuit delivers nothing more to us
        self._readable.unpark_all()
        self._room.unpark_all()

    def _check_sendable(self) -> None:
        if self._closed or self._eof_sent:
            raise trio.ClosedResourceError("the stream is closed" if self._closed else "send_eof was called")
        if self._error is not None:
            raise self._error
        if self.end_reason is not None:
            raise trio.BrokenResourceError(f"the peer ended the stream (reason {self.end_reason})")

    # -- fed by the circuit's task -------------------------------------------------------------------------
    async def _deliver(self, data: bytes) -> None:
        if self._closed or self._eof_sent:
            return
        self._buffer += data
        if self._readable:  # per cell: skip the ParkingLot call when nobody waits (the usual case)
            self._readable.unpark_all()
        while len(self._buffer) > self._limit and not self._eof_sent and self._error is None:
            await self._room.park()

    def _set_connected(self) -> None:
        self._connected = True
        self._readable.unpark_all()

    def _finish(self, reason: int) -> None:
        self.end_reason = reason
        self._readable.unpark_all()

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self._readable.unpark_all()
        self._room.unpark_all()

    async def _wait_connected(self) -> None:
        """Until CONNECTED; StreamRefused if END came first, the circuit's error if it died."""
        while not self._connected:
            if self.end_reason is not None:
                raise StreamRefused(self.end_reason)
            if self._error is not None:
                raise self._error
            await self._readable.park()
