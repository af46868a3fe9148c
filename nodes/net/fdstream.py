"""A TCP connection as a trio stream that passes through the scheduler only when it must wait.

trio's SocketStream yields to the scheduler after every socket call that succeeded at once, and once more
after a wait: a SOCKS connection's handshake, reply and splice took about 25 passes of the client's
scheduler (each with an epoll_wait) per request. `FdStream` moves bytes with os.read and os.write on the
socket's (non-blocking) descriptor, waits with trio.lowlevel.wait_readable/wait_writable only when the
socket has nothing or is full, and keeps trio's promise where it matters: `receive_some` is always a
checkpoint (it yields once when it found bytes at once), so a loop of receive and send cannot starve the
other tasks; `send_all` is one only when it waited. TLSStream (tls.py) moves a link's bytes the same way.
"""

from __future__ import annotations

import errno
import os

import trio

RECEIVE_SIZE = 256 * 1024


class FdStream(trio.abc.HalfCloseableStream):
    """Wraps a connected trio SocketStream; closing this closes it. Errors are trio's (BrokenResourceError,
    ClosedResourceError, BusyResourceError for two concurrent senders or receivers)."""

    def __init__(self, transport: trio.SocketStream) -> None:
        self.transport = transport
        self._fd = transport.socket.fileno()
        self._sending = False
        self._receiving = False
        self._closed = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            waited = False
            while True:
                self._check()
                try:
                    data = os.read(self._fd, max_bytes or RECEIVE_SIZE)
                    break
                except BlockingIOError:
                    waited = True
                    await trio.lowlevel.wait_readable(self._fd)
                except OSError as e:
                    raise transport_error(e, "receiving") from e
            if not waited:  # a yield that no cancellation interrupts: the bytes are taken
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        finally:
            self._receiving = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            view = memoryview(data).cast("B")
            while True:
                self._check()
                try:
                    while view:
                        view = view[os.write(self._fd, view):]
                    return
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(self._fd)
                except OSError as e:
                    raise transport_error(e, "sending") from e
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        self._check()
        await self.transport.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._check()
        await self.transport.send_eof()

    async def aclose(self) -> None:
        self._closed = True
        await self.transport.aclose()

    def _check(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the stream is closed")


def transport_error(error: OSError, doing: str) -> trio.BrokenResourceError | trio.ClosedResourceError:
    """trio's error for a failed os.read or os.write on a socket."""
    if error.errno == errno.EBADF:
        return trio.ClosedResourceError(f"the socket was closed while {doing}")
    return trio.BrokenResourceError(f"socket error while {doing}: {error}")
