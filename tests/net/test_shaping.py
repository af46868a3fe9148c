"""The link-layer shaper on real links (nodes/net/shaper.py through nodes/net/channels.py), the control
call over real HTTP (nodes/net/status.py + control.py), and a skewed node's clock (nodes/net/clock.py)."""

import io
import json
import os
import time

import trio

from nodes.net import clock
from nodes.net.control import NodeControl
from nodes.net.events import EventLog
from nodes.net.metrics import Metrics
from nodes.net.shaper import LinkRule, Shaper
from nodes.net.status import serve_status
from tests.net.helpers import HOST, echo, exchange, start_client, start_relay

SECRET = "run-secret"


async def _echo_round_trip(stream, payload: bytes = b"ping" * 100) -> float:
    started = trio.current_time()
    assert await exchange(stream, payload) == payload
    return trio.current_time() - started


async def test_delay_loss_and_blackhole_on_a_real_circuit():
    async with trio.open_nursery() as nursery:
        relays = [await start_relay(nursery, f"relay{i}", dir_handler=echo) for i in range(3)]
        client = await start_client(nursery)
        with trio.fail_after(30):
            circuit = await client.circuits.build([r.status for r in relays])
            stream = await circuit.open_dir_stream()
            plain = min([await _echo_round_trip(stream) for _ in range(3)])

            # the client delays what it sends by 0.3 s: one round trip through the circuit costs that more
            client.channels.shaper.set_rule(LinkRule("delay", delay=0.3))
            delayed = await _echo_round_trip(stream)
            assert delayed >= plain + 0.3 - 0.01

            # every cell "lost" once: the delay plus one retransmission timeout, and every byte still arrives
            client.channels.shaper.set_rule(LinkRule("delay", delay=0.1, loss=1.0))
            lossy = await _echo_round_trip(stream, os.urandom(20_000))
            assert lossy >= 0.1 + 0.2 - 0.01
            assert client.metrics.value("shaper_retransmits_total") >= 1

            # a blackhole on the guard's side towards the client: nothing comes back until it goes
            client.channels.shaper.clear()
            guard_side = relays[0].channels.shaper
            guard_side.set_rule(LinkRule("cut", peers=frozenset({HOST}), blackhole=True))
            payload = os.urandom(5000)
            await stream.send_all(payload)
            with trio.move_on_after(1.0) as starved:
                await stream.receive_some(65536)
            assert starved.cancelled_caught
            guard_side.clear(["cut"])
            received = b""
            while len(received) < len(payload):
                received += await stream.receive_some(65536)
            assert received == payload
            # back to the fast path: no rule, nothing held
            assert not guard_side.active and all(c._held is None for c in relays[0].channels.channels)
        nursery.cancel_scope.cancel()


async def _http(port: int, raw: bytes) -> tuple[int, bytes]:
    stream = await trio.open_tcp_stream(HOST, port)
    await stream.send_all(raw)
    chunks = []
    with trio.fail_after(5):
        while chunk := await stream.receive_some(65536):
            chunks.append(chunk)
    await stream.aclose()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _post(body: bytes, auth: str | None = f"Bearer {SECRET}") -> bytes:
    headers = f"Authorization: {auth}\r\n" if auth else ""
    return (f"POST /control HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


async def test_control_call_over_http():
    metrics, out = Metrics(), io.StringIO()
    control = NodeControl(SECRET.encode(), Shaper(), clock.NodeClock(), metrics, EventLog("n", "relay", out))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(lambda task_status: serve_status(
            HOST, 0, lambda: {"role": "relay"}, metrics, control=control, task_status=task_status))
        rule = json.dumps({"command": "shape", "rules": [{"id": "x", "delay": 0.05}]}).encode()
        assert (await _http(port, _post(rule, auth=None)))[0] == 401
        assert (await _http(port, _post(rule, auth="Bearer nope")))[0] == 401
        assert (await _http(port, _post(b"{")))[0] == 400
        assert (await _http(port, _post(b"x" * 300_000)))[0] == 400  # over MAX_BODY: refused, not kept
        code, body = await _http(port, _post(rule))
        assert code == 200 and json.loads(body)["ok"] is True
        assert (await _http(port, _post(b'{"command": "skew", "offset": -90}')))[0] == 200
        code, body = await _http(port, b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status = json.loads(body)
        assert status["role"] == "relay" and status["clock_offset"] == -90
        assert [r["id"] for r in status["shaping"]] == ["x"]
        # GET stays read-only: a POST elsewhere is still 405
        assert (await _http(port, b"POST /status HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                                  b"Connection: close\r\n\r\n"))[0] == 405
        code, body = await _http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert b'onionlab_control_requests_total{result="unauthorized"} 2' in body
        assert b'onionlab_control_requests_total{result="bad_request"} 2' in body
        assert b'onionlab_control_requests_total{result="ok"} 2' in body
        nursery.cancel_scope.cancel()


async def test_a_skewed_node_reads_skewed_time_but_stamps_events_true():
    out = io.StringIO()
    seen: dict[str, float] = {}

    async def read(name: str) -> None:
        seen[name] = clock.wall()

    async def node(name: str, offset: float) -> None:
        clock.use(clock.NodeClock(offset))
        async with trio.open_nursery() as inner:  # a child task inherits its node's clock
            inner.start_soon(read, name)
        EventLog(name, "relay", out).emit("hello")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(node, "ahead", 600.0)
        nursery.start_soon(node, "true", 0.0)
    now = time.time()
    assert abs(seen["ahead"] - now - 600) < 5 and abs(seen["true"] - now) < 5
    events = {e["node"]: e for e in map(json.loads, out.getvalue().splitlines())}
    assert abs(events["ahead"]["ts"] - now) < 5 and events["ahead"]["skew"] == 600.0
    assert "skew" not in events["true"]
    assert clock.skew() == 0.0  # the test's own task kept true time


async def test_loss_draws_go_on_from_batch_to_batch():
    """Each batch draws anew from the link's seeded RNG (a fresh RNG per batch would draw the same number
    every time: every batch lost, or none)."""
    async with trio.open_nursery() as nursery:
        relays = [await start_relay(nursery, f"relay{i}", dir_handler=echo) for i in range(3)]
        client = await start_client(nursery)
        with trio.fail_after(60):
            circuit = await client.circuits.build([r.status for r in relays])
            stream = await circuit.open_dir_stream()
            client.channels.shaper.set_rule(LinkRule("lossy", loss=0.5))
            for _ in range(30):  # one small batch at a time: the queue empties between them
                await _echo_round_trip(stream, b"x")
            lost = client.metrics.value("shaper_retransmits_total")
            assert 5 <= lost <= 25, lost
        nursery.cancel_scope.cancel()
