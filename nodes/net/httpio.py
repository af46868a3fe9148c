"""Minimal HTTP/1.1 over any trio Stream (TCP or a BEGIN_DIR circuit stream); h11 does the parsing.

One request per connection: the client asks with `Connection: close` and the server closes after answering,
which is all the directory protocol needs. Both sides bound every wait in time and every body in size, so a
slow or hostile peer costs one connection, never the node.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable

import h11
import trio

from nodes.core.errors import RemoteProtocolError

READ_SIZE = 16384
MAX_HEADER_BYTES = 16384
MAX_REQUEST_BODY = 512 * 1024  # a server descriptor is at most 20,000 bytes, a vote of 1000 relays ~400 KiB
MAX_RESPONSE_BODY = 4 * 1024 * 1024
REQUEST_TIMEOUT = 10.0
MAX_REASON = 300  # characters of an error message in a status line

Handler = Callable[[str, str, bytes], Awaitable[tuple[int, str, bytes]]]


class HttpError(RemoteProtocolError):
    """The peer broke HTTP: malformed message, body over the limit, or closed in the middle of a message.
    `status` is what a server answers (400 or 413)."""

    kind = "http"

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


async def next_event(conn: h11.Connection, stream: trio.abc.Stream) -> object:
    """The next h11 event, reading from `stream` as h11 needs; HttpError on bad HTTP from the peer."""
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as e:
            raise HttpError(f"bad HTTP from peer: {e}", e.error_status_hint) from None
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await stream.receive_some(READ_SIZE))  # b"" at EOF tells h11 the peer closed


async def _read_body(conn: h11.Connection, stream: trio.abc.Stream, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        event = await next_event(conn, stream)
        if isinstance(event, h11.EndOfMessage):
            return b"".join(chunks)
        if not isinstance(event, h11.Data):
            raise HttpError(f"connection ended inside a message ({type(event).__name__})")
        size += len(event.data)
        if size > limit:
            raise HttpError(f"body over the {limit}-byte limit", 413)
        chunks.append(event.data)


# -- client ------------------------------------------------------------------------------------------------


async def request(stream: trio.abc.Stream, method: str, target: str, body: bytes = b"", *, timeout: float,
                  host: str = "onionlab",
                  max_body: int = MAX_RESPONSE_BODY) -> tuple[int, dict[str, str], bytes]:
    """Send one request and read the whole response: (status, headers with lower-case names, body).

    Raises HttpError (bad HTTP, body over `max_body`), trio.TooSlowError, or the stream's own errors
    (trio.BrokenResourceError, ...). Does not close the stream.
    """
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADER_BYTES)
    headers = [("host", host), ("connection", "close"), ("content-length", str(len(body)))]
    with trio.fail_after(timeout):
        await stream.send_all(conn.send(h11.Request(method=method, target=target, headers=headers))
                              + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
        while True:
            event = await next_event(conn, stream)
            if isinstance(event, h11.Response):
                break
            if not isinstance(event, h11.InformationalResponse):
                raise HttpError(f"connection ended before the response ({type(event).__name__})")
        payload = await _read_body(conn, stream, max_body)
    if event.status_code != 200 and not payload:
        payload = event.reason  # what went wrong, from the status line (status_reason)
    names = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
    if names.get("content-encoding", "identity") == "deflate":
        payload = _inflate(payload, max_body)
    return event.status_code, names, payload


def _inflate(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit)
    except zlib.error as e:
        raise HttpError(f"deflate body does not decompress: {e}") from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise HttpError(f"deflate body over the {limit}-byte limit or cut short")
    return out


async def request_tcp(host: str, port: int, method: str, target: str, body: bytes = b"", *, timeout: float,
                      max_body: int = MAX_RESPONSE_BODY) -> tuple[int, dict[str, str], bytes]:
    """`request` on a fresh TCP connection, connect included in `timeout`. OSError if the connect fails."""
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(host, port)
        try:
            return await request(stream, method, target, body, timeout=timeout, host=host, max_body=max_body)
        finally:
            await trio.aclose_forcefully(stream)


# -- server ------------------------------------------------------------------------------------------------


async def serve_http(stream: trio.abc.Stream, handler: Handler, *, timeout: float = REQUEST_TIMEOUT,
                     max_body: int = MAX_REQUEST_BODY) -> None:
    """Answer one request on `stream` with `await handler(method, target, body) -> (status, type, body)`.

    A malformed or oversized request is answered 400/413 (best effort) and then raised as HttpError so the
    caller can count it; reading and writing are each bounded by `timeout` (trio.TooSlowError). A peer that
    closes without sending anything is not an error. Does not close the stream.
    """
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
    try:
        with trio.fail_after(timeout):
            event = await next_event(conn, stream)
            if isinstance(event, h11.ConnectionClosed):
                return
            assert isinstance(event, h11.Request)  # h11 yields nothing else first on a server connection
            if conn.they_are_waiting_for_100_continue:
                await stream.send_all(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            body = await _read_body(conn, stream, max_body)
    except HttpError as e:
        await _answer_error(conn, stream, e)
        raise
    method, target = event.method.decode("ascii"), event.target.decode("ascii")
    deflate = target.endswith(".z") or _accepts_deflate(event.headers)
    target = target.removesuffix(".z")
    status, content_type, payload = await handler(method, target, body)
    reason = b""
    if status != 200 and content_type == "text/plain":
        reason, payload = status_reason(payload), b""
    # C tor matches "Content-Encoding: " case-sensitively (directory.c parse_http_response): Tor's casing
    headers = [("Content-Type", content_type), ("Connection", "close")]
    if deflate and status == 200:
        payload = zlib.compress(payload)
        headers.append(("Content-Encoding", "deflate"))
    headers.append(("Content-Length", str(len(payload))))
    data = conn.send(h11.Response(status_code=status, headers=headers, reason=reason))
    if method != "HEAD":
        data += conn.send(h11.Data(data=payload))
    with trio.fail_after(timeout):
        await stream.send_all(data + conn.send(h11.EndOfMessage()))


def status_reason(message: bytes) -> bytes:
    """A text answer as an HTTP reason phrase: C tor's directory servers answer errors with the reason in the
    status line and no body (write_short_http_response), and C tor's client warns about a short body
    ("labeled as uncompressed, but it seems to be confusing binary junk": dirclient.c body_is_plausible
    wants 32 printable bytes)."""
    text = " ".join(message.decode("ascii", "replace").split())
    return "".join(ch if " " <= ch <= "~" else "?" for ch in text)[:MAX_REASON].encode("ascii")


def _accepts_deflate(headers: list[tuple[bytes, bytes]]) -> bool:
    """dir-spec 6.1: a client lists the compressions it takes in Accept-Encoding ("deflate" is zlib's format,
    as Tor names it); a target ending in ".z" asks for deflate whatever the headers say."""
    return any(name == b"accept-encoding" and b"deflate" in (m.strip() for m in value.split(b","))
               for name, value in headers)


async def _answer_error(conn: h11.Connection, stream: trio.abc.Stream, error: HttpError) -> None:
    text = f"{error}\n".encode("ascii", "replace")
    headers = [("content-type", "text/plain"), ("content-length", str(len(text))), ("connection", "close")]
    try:
        data = (conn.send(h11.Response(status_code=error.status, headers=headers))
                + conn.send(h11.Data(data=text)) + conn.send(h11.EndOfMessage()))
    except h11.LocalProtocolError:
        return  # h11 says a response is no longer possible here (e.g. one was already sent)
    with trio.move_on_after(1):
        try:
            await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer that broke HTTP has gone as well; the HttpError is still raised


async def serve_http_tcp(host: str, port: int, handler: Handler, *, on_error: Callable[[str], None],
                         task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve `handler` on TCP until cancelled, one task per connection. `task_status.started()` reports the
    bound port. Failed connections are reported as `on_error(kind)`: an HttpError's kind, "timeout" or
    "broken"; any other exception is a bug and propagates."""

    async def connection(stream: trio.SocketStream) -> None:
        try:
            await serve_http(stream, handler)
        except HttpError as e:
            on_error(e.kind)
        except trio.TooSlowError:
            on_error("timeout")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            on_error("broken")
        finally:
            await trio.aclose_forcefully(stream)

    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(connection, listeners)
