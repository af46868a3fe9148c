"""What an onion service serves on a virtual port: the built-in targets, or a TCP service it forwards to.

A ServicePort's `target` (nodes.config) is one of:

    http        HTTP/1.1 (h11), keep-alive, GET and HEAD only:
                  /          a small HTML page naming the service and its onion address
                  /bytes/N   N bytes (0 <= N <= MAX_BYTES) of the deterministic pattern below, streamed in
                             chunks, never held in memory whole; `Content-Length: N`
                  otherwise  404
    echo        every byte comes back, until the client ends the stream
    HOST:PORT   a TCP connection to HOST:PORT (trio.open_tcp_stream), spliced both ways

The /bytes pattern: byte i of the body (counting from 0) is `i % 251`. 251 is prime, so the pattern does
not line up with any power-of-two chunking and a lost, repeated or reordered cell shows up at once; a
client checks a body with `pattern_bytes(offset, n)`.
"""

from __future__ import annotations

import html
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import h11
import trio

from nodes.core.errors import RemoteProtocolError

from .events import EventLog
from .httpio import MAX_HEADER_BYTES, next_event
from .metrics import Metrics

PATTERN_MODULUS = 251
MAX_BYTES = 1 << 40  # /bytes/N beyond this is a 404: nobody means it, and it keeps N a sane integer
CHUNK = 64 * 1024
READ_SIZE = 16384
REQUEST_TIMEOUT = 30.0  # a request (its headers) must arrive within this after the previous response
IDLE_TIMEOUT = 600.0  # echo and forwarded connections: nothing either way for this long ends them
CONNECT_TIMEOUT = 10.0  # HOST:PORT targets
BUILTIN = ("http", "echo")

_BLOCK = bytes(range(PATTERN_MODULUS)) * (CHUNK // PATTERN_MODULUS + 2)
_BYTES_PATH = re.compile(r"/bytes/(0|[1-9][0-9]{0,12})")

Target = Callable[[trio.abc.Stream], Awaitable[None]]


async def serve_target(target: Target, stream: trio.abc.Stream, port: int, metrics: Metrics,
                       events: EventLog) -> None:
    """Run one stream through a target: junk from the client is counted as an error, a stream that breaks
    off is recorded as closed; neither reaches the caller (one bad stream must not end a service)."""
    try:
        async with stream:
            await target(stream)
    except RemoteProtocolError as e:  # e.g. junk HTTP from the client
        metrics.inc("errors_total", kind=e.kind)
        events.emit("error", kind=e.kind, detail=f"stream on port {port}: {e}")
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError) as e:
        events.emit("stream_closed", port=port, error=str(e) or type(e).__name__)


class TargetError(ValueError):
    """A target specification that is neither built in nor HOST:PORT."""


def pattern_bytes(offset: int, n: int) -> bytes:
    """Bytes offset .. offset+n-1 of the /bytes pattern."""
    parts = []
    while n > 0:
        take = min(n, CHUNK)
        start = offset % PATTERN_MODULUS
        parts.append(_BLOCK[start:start + take])
        offset += take
        n -= take
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """What the built-in pages say about the service."""

    name: str
    onion: str  # "<56 characters>.onion"


def parse_target(spec: str) -> tuple[str, int] | str:
    """"http" or "echo", or (host, port) for a HOST:PORT target; TargetError otherwise."""
    if spec in BUILTIN:
        return spec
    host, sep, port = spec.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TargetError(f"target {spec!r}: expected one of {BUILTIN} or HOST:PORT")
    return host.strip("[]"), int(port)


def make_target(spec: str, info: ServiceInfo) -> Target:
    """The handler serving one onion stream for `spec` (checked with parse_target)."""
    parsed = parse_target(spec)
    if parsed == "http":
        return lambda stream: serve_http_target(stream, info)
    if parsed == "echo":
        return serve_echo
    host, port = parsed
    return lambda stream: forward_tcp(stream, host, port)


# -- http ---------------------------------------------------------------------------------------------------


def _page(info: ServiceInfo) -> bytes:
    name, onion = html.escape(info.name), html.escape(info.onion)
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{name}</title></head>\n"
            f"<body><h1>{name}</h1><p>This is {onion}, an onionlab onion service.</p>\n"
            f"<p>Try <a href=\"/bytes/1000000\">/bytes/1000000</a> for a megabyte of test pattern.</p>"
            f"</body></html>\n").encode()


async def serve_http_target(stream: trio.abc.Stream, info: ServiceInfo) -> None:
    """Answer requests on `stream` until the client closes it or is silent for REQUEST_TIMEOUT.

    A malformed request ends the stream with HttpError (a RemoteProtocolError for the caller to count)."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
    while True:
        with trio.move_on_after(REQUEST_TIMEOUT) as idle:
            request = await next_event(conn, stream)
            while not isinstance(request, h11.ConnectionClosed | h11.Request):
                request = await next_event(conn, stream)
            if isinstance(request, h11.Request):  # drain a body (nobody should send one)
                while not isinstance(await next_event(conn, stream), h11.EndOfMessage):
                    pass
        if idle.cancelled_caught or isinstance(request, h11.ConnectionClosed):
            return
        await _respond(conn, stream, request, info)
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            return
        conn.start_next_cycle()


async def _respond(conn: h11.Connection, stream: trio.abc.Stream, request: h11.Request,
                   info: ServiceInfo) -> None:
    path = request.target.decode("ascii", "replace").split("?", 1)[0]
    head = request.method == b"HEAD"
    if request.method not in (b"GET", b"HEAD"):
        status, body, size = 405, b"GET or HEAD only\n", None
    elif path == "/":
        status, body, size = 200, _page(info), None
    elif (match := _BYTES_PATH.fullmatch(path)) and int(match[1]) <= MAX_BYTES:
        status, body, size = 200, b"", int(match[1])
    else:
        status, body, size = 404, b"not found\n", None
    ctype = "text/html; charset=utf-8" if path == "/" and status == 200 else (
        "application/octet-stream" if size is not None else "text/plain")
    length = size if size is not None else len(body)
    headers = [("content-type", ctype), ("content-length", str(length)), ("server", "onionlab")]
    response = conn.send(h11.Response(status_code=status, headers=headers))
    if size is None and not head:
        # A small body goes out with the head in one write: one cell, where two writes were two cells and a
        # pass through every hop each.
        await stream.send_all(response + conn.send(h11.Data(data=body)))
    else:
        await stream.send_all(response)
        if not head:
            for offset in range(0, size, CHUNK):
                chunk = pattern_bytes(offset, min(CHUNK, size - offset))
                await stream.send_all(conn.send(h11.Data(data=chunk)))
    await stream.send_all(conn.send(h11.EndOfMessage()))


# -- echo and forwarding -------------------------------------------------------------------------------------


async def serve_echo(stream: trio.abc.Stream) -> None:
    while True:
        with trio.move_on_after(IDLE_TIMEOUT) as idle:
            data = await stream.receive_some(READ_SIZE)
        if idle.cancelled_caught or not data:
            return
        await stream.send_all(data)


async def forward_tcp(stream: trio.abc.Stream, host: str, port: int) -> None:
    """Splice the onion stream with a TCP connection to host:port. OSError if the connect fails.

    The service's EOF is passed on as a TCP half-close; the TCP side's EOF ends the onion stream."""
    with trio.fail_after(CONNECT_TIMEOUT):
        upstream = await trio.open_tcp_stream(host, port)
    async with upstream:
        with trio.CancelScope(deadline=trio.current_time() + IDLE_TIMEOUT) as idle:

            async def pump(src: trio.abc.ReceiveStream, dst: trio.abc.SendStream) -> None:
                while data := await src.receive_some(READ_SIZE):
                    await dst.send_all(data)
                    idle.deadline = trio.current_time() + IDLE_TIMEOUT

            async def onion_to_tcp() -> None:
                await pump(stream, upstream)
                await upstream.send_eof()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(onion_to_tcp)
                await pump(upstream, stream)
                nursery.cancel_scope.cancel()


# -- the built-in targets over TCP, for an onion service that a stock tor runs ----------------------------


async def serve_local_targets(services: Iterable[tuple[int, str]], info: Callable[[], ServiceInfo], *,
                              serve_stream: Callable[[Target, trio.abc.Stream, int], Awaitable[None]],
                              host: str = "127.0.0.1", task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve each built-in target of `services` ((virtual port, target spec)) on `host` at a port the OS
    picks, until cancelled; `task_status.started([(virtual port, "HOST:PORT"), ...])`: what tor's
    HiddenServicePort lines point at (HOST:PORT targets go to tor as they are). Each connection is one onion
    stream that tor opened: `serve_stream(target, stream, virtual port)` serves it. `info()` is read per
    stream (tor writes the onion address after the ports are needed)."""
    forwards = []
    async with trio.open_nursery() as nursery:
        for virtual, spec in services:
            if parse_target(spec) not in BUILTIN:
                forwards.append((virtual, spec))
                continue
            listeners = await trio.open_tcp_listeners(0, host=host)
            forwards.append((virtual, f"{host}:{listeners[0].socket.getsockname()[1]}"))

            async def connection(stream: trio.SocketStream, spec: str = spec, virtual: int = virtual) -> None:
                await serve_stream(make_target(spec, info()), stream, virtual)

            nursery.start_soon(trio.serve_listeners, connection, listeners)
        task_status.started(forwards)
