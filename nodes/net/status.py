"""The control endpoint of a node: GET /status (JSON) and GET /metrics (Prometheus text), and the POST
actions a role offers (a client's POST /newnym); nothing else changes a node from here.

HTTP/1.1 parsing is h11's job; this module only routes. Every connection is bounded in time and size, so a
stuck or hostile client cannot tie the node up.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

import h11
import trio

from .metrics import Metrics

REQUEST_TIMEOUT = 5.0
MAX_REQUESTS_PER_CONNECTION = 100

Actions = Mapping[str, Callable[[], dict]]  # POST path -> what it does; its result is the JSON answer


async def serve_status(host: str, port: int, status: Callable[[], dict], metrics: Metrics, *,
                       actions: Actions | None = None, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled. `task_status.started()` reports the bound port (useful with port 0)."""

    async def handler(stream: trio.SocketStream) -> None:
        try:
            await _serve_connection(stream, status, metrics, actions or {})
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, h11.ProtocolError):
            metrics.inc("status_bad_requests_total")
        finally:
            await trio.aclose_forcefully(stream)

    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handler, listeners)


def _route(target: str, status: Callable[[], dict], metrics: Metrics) -> tuple[int, str, bytes]:
    path = target.split("?", 1)[0]
    if path == "/status":
        return 200, "application/json", json.dumps(status(), sort_keys=True).encode() + b"\n"
    if path == "/metrics":
        return 200, "text/plain; version=0.0.4", metrics.render().encode()
    return 404, "text/plain", b"not found: try /status or /metrics\n"


def _act(target: str, actions: Actions) -> tuple[int, str, bytes]:
    action = actions.get(target.split("?", 1)[0])
    if action is None:
        allowed = ", ".join(actions) or "nothing (read-only endpoint)"
        return 405, "text/plain", f"POST goes to {allowed}\n".encode()
    return 200, "application/json", json.dumps(action(), sort_keys=True).encode() + b"\n"


async def _serve_connection(stream: trio.SocketStream, status: Callable[[], dict], metrics: Metrics,
                            actions: Actions) -> None:
    conn = h11.Connection(h11.SERVER)
    for _ in range(MAX_REQUESTS_PER_CONNECTION):
        with trio.fail_after(REQUEST_TIMEOUT):
            event = await _next_event(conn, stream)
            if isinstance(event, h11.ConnectionClosed):
                return
            assert isinstance(event, h11.Request)
            while not isinstance(await _next_event(conn, stream), h11.EndOfMessage):
                pass  # a GET has no body worth reading; drain whatever was sent
            if event.method == b"POST":
                code, ctype, body = _act(event.target.decode("ascii", "replace"), actions)
            elif event.method not in (b"GET", b"HEAD"):
                code, ctype, body = 405, "text/plain", b"GET, HEAD or POST only\n"
            else:
                code, ctype, body = _route(event.target.decode("ascii", "replace"), status, metrics)
            metrics.inc("status_requests_total", code=str(code))
            headers = [("content-type", ctype), ("content-length", str(len(body)))]
            await stream.send_all(conn.send(h11.Response(status_code=code, headers=headers)))
            if event.method != b"HEAD":
                await stream.send_all(conn.send(h11.Data(data=body)))
            await stream.send_all(conn.send(h11.EndOfMessage()))
        if conn.our_state is h11.MUST_CLOSE:
            return
        conn.start_next_cycle()


async def _next_event(conn: h11.Connection, stream: trio.SocketStream):
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(16384))
            continue
        return event
