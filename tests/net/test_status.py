"""The status endpoint over real TCP: JSON status, Prometheus metrics, bad requests counted, never fatal."""

import functools
import json

import trio

from nodes.net.metrics import Metrics
from nodes.net.status import serve_status


async def _request(port: int, raw: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(raw)
    chunks = []
    with trio.fail_after(5):
        while chunk := await stream.receive_some(65536):
            chunks.append(chunk)
    await stream.aclose()
    return b"".join(chunks)


async def test_status_metrics_and_errors():
    metrics = Metrics()
    metrics.describe("cells_in_total", "counter", "cells received")
    metrics.inc("cells_in_total", 3)
    state = {"role": "relay", "ready": False}
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_status, "127.0.0.1", 0, lambda: state, metrics)

        reply = await _request(port, b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head, body = reply.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200")
        assert json.loads(body) == state
        state["ready"] = True  # status is computed per request, not cached
        reply = await _request(port, b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["ready"] is True

        reply = await _request(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        text = reply.split(b"\r\n\r\n", 1)[1].decode()
        assert "# TYPE onionlab_cells_in_total counter" in text
        assert "onionlab_cells_in_total 3" in text

        assert (await _request(port, b"POST /status HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                                     b"Connection: close\r\n\r\n")).startswith(b"HTTP/1.1 405")
        assert (await _request(port, b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                ).startswith(b"HTTP/1.1 404")
        await _request(port, b"\x00\x01garbage that is not http\r\n\r\n")
        # the server survived all of that and counted the garbage
        reply = await _request(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert b"onionlab_status_bad_requests_total 1" in reply
        assert b'onionlab_status_requests_total{code="404"} 1' in reply
        nursery.cancel_scope.cancel()


async def test_post_runs_only_the_roles_actions():
    calls = []

    def newnym() -> dict:
        calls.append(1)
        return {"descriptors": 2}

    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(serve_status, actions={"/newnym": newnym}),
                                   "127.0.0.1", 0, lambda: {}, Metrics())
        post = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        reply = await _request(port, post % b"/newnym")
        assert reply.startswith(b"HTTP/1.1 200") and json.loads(reply.split(b"\r\n\r\n", 1)[1]) == {
            "descriptors": 2}
        assert (await _request(port, post % b"/status")).startswith(b"HTTP/1.1 405")
        get = await _request(port, b"GET /newnym HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert get.startswith(b"HTTP/1.1 404")  # actions answer POST only
        assert calls == [1]
        nursery.cancel_scope.cancel()
