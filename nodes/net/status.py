"""The control endpoint of a node: GET /status (JSON) and GET /metrics (Prometheus text), open and
read-only, and POST /control, which needs the run's secret (nodes/net/control.py).

HTTP/1.1 parsing is h11's job; this module only routes. Every connection is bounded in time and size, so a
stuck or hostile client cannot tie the node up.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import h11
import trio

from .control import MAX_BODY, NodeControl
from .metrics import Metrics
from .pages import release_once_ready

REQUEST_TIMEOUT = 5.0
MAX_REQUESTS_PER_CONNECTION = 100


async def serve_status(host: str, port: int, status: Callable[[], dict], metrics: Metrics, *,
                       control: NodeControl | None = None, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled. `task_status.started()` reports the bound port (useful with port 0). With
    `control`, POST /control reaches it and /status shows its state (clock offset, shaping rules). The first
    answer that says ready gives back the file pages only starting touched (nodes/net/pages.py)."""
    if control is not None:
        role_status = status

        def status() -> dict:
            return {**role_status(), **control.status()}

    status = release_once_ready(status)

    async def handler(stream: trio.SocketStream) -> None:
        try:
            await _serve_connection(stream, status, metrics, control)
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


def _control(event: h11.Request, body: bytes | None, control: NodeControl | None) -> tuple[int, str, bytes]:
    if control is None:
        return 404, "text/plain", b"this node takes no control calls\n"
    if body is None:
        code, answer = 400, {"ok": False, "error": "bad_request", "message": f"body over {MAX_BODY} bytes"}
        control.metrics.inc("control_requests_total", result="bad_request")
    else:
        authorization = next((v.decode("latin-1") for k, v in event.headers if k == b"authorization"), None)
        code, answer = control.handle(authorization, body)
    return code, "application/json", json.dumps(answer, sort_keys=True).encode() + b"\n"


async def _serve_connection(stream: trio.SocketStream, status: Callable[[], dict], metrics: Metrics,
                            control: NodeControl | None = None) -> None:
    conn = h11.Connection(h11.SERVER)
    for _ in range(MAX_REQUESTS_PER_CONNECTION):
        with trio.fail_after(REQUEST_TIMEOUT):
            event = await _next_event(conn, stream)
            if isinstance(event, h11.ConnectionClosed):
                return
            assert isinstance(event, h11.Request)
            request: bytes | None = b""  # None once it is over MAX_BODY: the rest is drained, not kept
            while not isinstance(data := await _next_event(conn, stream), h11.EndOfMessage):
                if request is not None and isinstance(data, h11.Data):
                    request += bytes(data.data)
                    if len(request) > MAX_BODY:
                        request = None
            path = event.target.decode("ascii", "replace").split("?", 1)[0]
            if path == "/control" and event.method == b"POST":
                code, ctype, body = _control(event, request, control)
            elif event.method not in (b"GET", b"HEAD"):
                code, ctype, body = 405, "text/plain", b"GET only (and POST /control)\n"
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
