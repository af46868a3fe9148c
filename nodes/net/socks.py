"""The client's SOCKS5 front end: applications (curl, a browser) ask for an onion, we splice them to it.

The handshake is nodes.core.socks5's job; this module only moves bytes and maps outcomes to reply codes.
`connect(host, port, isolation)` belongs to the client role (it builds the onion connection); `isolation` is
the client's SOCKS username/password as one bytes value, b"" when it sent none (Tor's IsolateSOCKSAuth:
streams with different credentials never share a circuit; any credentials are accepted). `connect` reports
failures by raising the exceptions below; the table in `reply_code` turns them into what the application sees:

    OnionAddressInvalid           0xF6 HS_BAD_ADDRESS          (checksum, version, length)
    UnknownPetname                0x04 HOST_UNREACHABLE        (NAME.pet not in the client's petname table,
                                                                as tor answers a name it cannot resolve)
    DescriptorNotFound            0xF0 HS_DESCRIPTOR_NOT_FOUND (no HSDir had it)
    DescriptorInvalid             0xF1 HS_DESCRIPTOR_INVALID   (signature, expiry, decryption)
    IntroFailed                   0xF2 HS_INTRO_FAILED         (every introduction point refused or died)
    IntroTimedOut                 0xF7 HS_INTRO_TIMED_OUT
    RendezvousFailed              0xF3 HS_RENDEZVOUS_FAILED
    StreamRefused                 by its END reason, as tor:   (the service answered BEGIN with END)
                                  0x05 for DONE, CONNECTREFUSED, CONNRESET; 0x02 EXITPOLICY; 0x06 TIMEOUT;
                                  0x04 RESOLVEFAILED, NOROUTE; 0x01 for the rest (RESOURCELIMIT, MISC, ...)
    trio.TooSlowError             0x06 TTL_EXPIRED             (also when connect_timeout runs out)
    ConnectionRefusedError        0x05 CONNECTION_REFUSED      (clearnet, when allowed)
    other OSError                 0x04 HOST_UNREACHABLE
    RemoteProtocolError, a broken link or stream
                                  0x01 GENERAL_FAILURE         (a relay misbehaved while we built the path)

The 0xF0-0xF7 codes are Tor's (proposal 304; tor sends them with the ExtendedErrors SocksPort flag, we always
do). Anything else `connect` raises is a bug and propagates. A testbed client only reaches onions: any other
host but a petname (NAME.pet, nodes/net/petnames.py) gets NOT_ALLOWED unless `allow_clearnet` is set.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import ClassVar

import trio

from nodes.core.errors import RemoteProtocolError
from nodes.core.petnames import is_petname
from nodes.core.relay import EndReason
from nodes.core.socks5 import (
    NEED_DATA,
    VERSION,
    Atyp,
    ConnectRequest,
    Greeting,
    ReplyCode,
    Socks5Server,
    UsernamePassword,
)

from .events import EventLog
from .fdstream import FdStream
from .link import LinkClosed
from .metrics import Metrics
from .streams import StreamRefused

HANDSHAKE_TIMEOUT = 10.0  # greeting, credentials, request; a client that dawdles longer is not a real client
CONNECT_TIMEOUT = 120.0  # tor's SocksTimeout
IDLE_TIMEOUT = 600.0  # no byte either way for this long ends a spliced connection
CLOSE_TIMEOUT = 5.0
HANDSHAKE_READ = 512  # small reads keep the handshake buffer bounded (core caps it at MAX_BUFFERED)
# Large reads: each one is a send syscall to the application (and a trio round trip); the onion stream hands
# over whatever it has buffered, and its own windows and buffer limit bound how much that is.
SPLICE_READ = 256 * 1024

Connect = Callable[[str, int, bytes], Awaitable[trio.abc.Stream]]  # (host, port, isolation key)


class ConnectFailed(Exception):
    """Raised by `connect` when the destination cannot be reached; `reply` is what the application sees."""

    reply: ClassVar[ReplyCode] = ReplyCode.GENERAL_FAILURE


class OnionAddressInvalid(ConnectFailed):
    reply = ReplyCode.HS_BAD_ADDRESS


class DescriptorNotFound(ConnectFailed):
    reply = ReplyCode.HS_DESCRIPTOR_NOT_FOUND


class DescriptorInvalid(ConnectFailed):
    reply = ReplyCode.HS_DESCRIPTOR_INVALID


class IntroFailed(ConnectFailed):
    reply = ReplyCode.HS_INTRO_FAILED


class IntroTimedOut(ConnectFailed):
    reply = ReplyCode.HS_INTRO_TIMED_OUT


class RendezvousFailed(ConnectFailed):
    reply = ReplyCode.HS_RENDEZVOUS_FAILED


# What tor's client replies when a stream gets END instead of CONNECTED; other reasons: GENERAL_FAILURE.
_END_REPLIES = {
    EndReason.DONE: ReplyCode.CONNECTION_REFUSED,  # closed before it opened
    EndReason.CONNECTREFUSED: ReplyCode.CONNECTION_REFUSED,
    EndReason.CONNRESET: ReplyCode.CONNECTION_REFUSED,
    EndReason.EXITPOLICY: ReplyCode.NOT_ALLOWED,
    EndReason.TIMEOUT: ReplyCode.TTL_EXPIRED,
    EndReason.RESOLVEFAILED: ReplyCode.HOST_UNREACHABLE,
    EndReason.NOROUTE: ReplyCode.HOST_UNREACHABLE,
}

_BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError, LinkClosed)
_CONNECT_ERRORS = (ConnectFailed, StreamRefused, trio.TooSlowError, OSError, RemoteProtocolError, *_BROKEN)


def reply_code(error: BaseException) -> ReplyCode:
    """The table in the module docstring. Only for the exception types in _CONNECT_ERRORS."""
    if isinstance(error, ConnectFailed):
        return error.reply
    if isinstance(error, StreamRefused):
        return _END_REPLIES.get(error.reason, ReplyCode.GENERAL_FAILURE)
    if isinstance(error, trio.TooSlowError):
        return ReplyCode.TTL_EXPIRED
    if isinstance(error, ConnectionRefusedError):
        return ReplyCode.CONNECTION_REFUSED
    if isinstance(error, OSError):
        return ReplyCode.HOST_UNREACHABLE
    return ReplyCode.GENERAL_FAILURE


def is_onion(request: ConnectRequest) -> bool:
    """An onion address, or a petname for one."""
    return request.atyp is Atyp.DOMAINNAME and (request.host.lower().endswith(".onion")
                                                 or is_petname(request.host))


def describe_metrics(metrics: Metrics) -> None:
    metrics.describe("socks_connections_total", "counter", "TCP connections accepted on the SOCKS port")
    metrics.describe("socks_active_connections", "gauge", "SOCKS connections open now")
    metrics.describe("socks_replies_total", "counter", "SOCKS5 replies sent, by reply code")
    metrics.describe("socks_bytes_total", "counter", "bytes spliced: up = application to onion, down = back")
    metrics.describe("socks_connect_seconds", "summary", "time connect() took, successful or not")
    metrics.describe("errors_total", "counter", "peer errors by kind (the peer is at fault; we kept serving)")


async def serve_socks(host: str, port: int, connect: Connect, metrics: Metrics, events: EventLog, *,
                      allow_clearnet: bool = False, handshake_timeout: float = HANDSHAKE_TIMEOUT,
                      connect_timeout: float = CONNECT_TIMEOUT, idle_timeout: float = IDLE_TIMEOUT,
                      task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve SOCKS5 until cancelled. `task_status.started()` reports the bound port (useful with port 0)."""
    describe_metrics(metrics)
    front = _SocksFrontEnd(connect, metrics, events, allow_clearnet, handshake_timeout, connect_timeout,
                           idle_timeout)
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    events.emit("socks_listening", host=host, port=bound, allow_clearnet=allow_clearnet)
    task_status.started(bound)
    await trio.serve_listeners(front.handle, listeners)


class _SocksFrontEnd:
    def __init__(self, connect: Connect, metrics: Metrics, events: EventLog, allow_clearnet: bool,
                 handshake_timeout: float, connect_timeout: float, idle_timeout: float) -> None:
        self.connect = connect
        self.metrics = metrics
        self.events = events
        self.allow_clearnet = allow_clearnet
        self.handshake_timeout = handshake_timeout
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self._ids = itertools.count(1)
        self._active = 0

    async def handle(self, transport: trio.SocketStream) -> None:
        conn = next(self._ids)
        self.metrics.inc("socks_connections_total")
        self._set_active(+1)
        client = FdStream(transport)
        try:
            await self._serve(conn, client)
        finally:
            self._set_active(-1)
            await _close(client)

    def _set_active(self, delta: int) -> None:
        self._active += delta
        self.metrics.set("socks_active_connections", self._active)

    def _error(self, conn: int, kind: str, error: BaseException | str) -> None:
        self.metrics.inc("errors_total", kind=kind)
        self.events.emit("socks_error", conn=conn, kind=kind, error=str(error))

    async def _serve(self, conn: int, client: FdStream) -> None:
        server = Socks5Server()
        try:
            with trio.fail_after(self.handshake_timeout):
                request = await _handshake(client, server)
        except RemoteProtocolError as e:
            self._error(conn, e.kind, e)
            answer = server.failure_reply(e)
            if answer:
                if answer[0] == VERSION:  # a SOCKS5 reply, not RFC 1929's failure status
                    self._count_reply(answer[1])
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await _send_quietly(client, answer)
            return
        except trio.TooSlowError:
            self._error(conn, "socks_handshake_timeout", "no complete SOCKS5 handshake in time")
            return
        except _BROKEN as e:
            self._error(conn, "socks_client_gone", str(e) or "client connection broke during the handshake")
            return
        if request is None:  # no acceptable method: the client closes
            self._error(conn, "socks_no_acceptable_method", "client offered no method we support")
            return
        self.events.emit("socks_request", conn=conn, host=request.host, port=request.port,
                         isolated=bool(server.isolation_key))  # whether, not what: credentials stay private
        remote = await self._connect(conn, client, server, request)
        if remote is None:
            return
        try:
            await self._splice(conn, client, remote, server.trailing_data, request)
        finally:
            await _close(remote)

    async def _connect(self, conn: int, client: FdStream, server: Socks5Server,
                       request: ConnectRequest) -> trio.abc.Stream | None:
        """Open the destination and send the reply; None when it was a refusal."""
        started = trio.current_time()
        remote: trio.abc.Stream | None = None
        reason = ""
        refused = not (self.allow_clearnet or is_onion(request))
        if refused:
            code, reason = ReplyCode.NOT_ALLOWED, "only .onion (and .pet) destinations are allowed"
        else:
            try:
                with trio.fail_after(self.connect_timeout):
                    remote = await self.connect(request.host, request.port, server.isolation_key)
                code = ReplyCode.SUCCEEDED
            except _CONNECT_ERRORS as e:
                code, reason = reply_code(e), f"{type(e).__name__}: {e}"
                if isinstance(e, RemoteProtocolError):
                    self.metrics.inc("errors_total", kind=e.kind)
        seconds = trio.current_time() - started
        # The reply before its records: the application waits for the one, nobody for the others.
        sent = False
        with trio.move_on_after(self.handshake_timeout):
            sent = await _send_quietly(client, server.reply(code))
        if not refused:
            self.metrics.observe("socks_connect_seconds", seconds)
        self._count_reply(code)
        self.events.emit("socks_reply", conn=conn, host=request.host, port=request.port, code=code.name,
                         seconds=round(seconds, 6), reason=reason)
        if remote is not None and not sent:
            await _close(remote)
            self._error(conn, "socks_client_gone", "client left before our reply")
            return None
        return remote

    def _count_reply(self, code: int) -> None:
        self.metrics.inc("socks_replies_total", code=ReplyCode(code).name)

    async def _splice(self, conn: int, client: trio.abc.HalfCloseableStream, remote: trio.abc.Stream,
                      early: bytes, request: ConnectRequest) -> None:
        """Copy both ways until both sides are done, one breaks, or nothing moves for idle_timeout."""
        started = trio.current_time()
        moved = {"up": 0, "down": 0}
        outcome = "closed"
        with trio.CancelScope(deadline=started + self.idle_timeout) as idle:

            def progress(direction: str, n: int) -> None:
                moved[direction] += n
                self.metrics.inc("socks_bytes_total", n, direction=direction)
                idle.deadline = trio.current_time() + self.idle_timeout

            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_pump, client, remote, early, "up", progress)
                    nursery.start_soon(_pump, remote, client, b"", "down", progress)
            except* _BROKEN:
                outcome = "broken"
            except* RemoteProtocolError as group:
                outcome = "broken"
                for e in group.exceptions:
                    self._error(conn, e.kind, e)
        if idle.cancelled_caught:
            outcome = "idle_timeout"
        self.events.emit("socks_closed", conn=conn, host=request.host, port=request.port, outcome=outcome,
                         bytes_up=moved["up"], bytes_down=moved["down"],
                         seconds=round(trio.current_time() - started, 6))


async def _handshake(client: trio.abc.Stream, server: Socks5Server) -> ConnectRequest | None:
    while True:
        event = server.next_event()
        if event is NEED_DATA:
            server.receive_data(await client.receive_some(HANDSHAKE_READ))
        elif isinstance(event, Greeting):
            if event.method is None:
                await client.send_all(server.reject_methods())
                return None
            await client.send_all(server.accept_method())
        elif isinstance(event, UsernamePassword):
            await client.send_all(server.accept_credentials())
        else:
            return event


async def _pump(src: trio.abc.ReceiveStream, dst: trio.abc.SendStream, first: bytes, direction: str,
                progress: Callable[[str, int], None]) -> None:
    """One direction. send_all waits while the other side is slow, so nothing piles up here."""
    data = first
    while True:
        if data:
            await dst.send_all(data)
            progress(direction, len(data))
        data = await src.receive_some(SPLICE_READ)
        if not data:
            break
    # Pass the EOF on. To a TCP peer it is a half-close; an onion stream has none and sends END (as tor does
    # when its application closes), so the service stops waiting for another request and the other direction
    # ends now, not at the service's timeout. On other streams the other direction goes on until it ends.
    if isinstance(dst, trio.abc.HalfCloseableStream):
        await dst.send_eof()


async def _send_quietly(stream: trio.abc.SendStream, data: bytes) -> bool:
    """Send a last message to a client that may already be gone; False if it was."""
    try:
        await stream.send_all(data)
    except _BROKEN:
        return False
    return True


async def _close(stream: trio.abc.AsyncResource) -> None:
    """Graceful when it can be (an onion stream sends its END), bounded, and safe under cancellation."""
    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
        try:
            await stream.aclose()
        except _BROKEN:
            pass
