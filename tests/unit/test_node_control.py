"""The node's control call (nodes/net/control.py): commands, the secret, answers and counters."""

import io
import json
import stat

import pytest

from nodes.net.clock import NodeClock
from nodes.net.control import (
    ControlError,
    NodeControl,
    Shape,
    Skew,
    Unshape,
    load_secret,
    parse_command,
    write_secret,
)
from nodes.net.events import EventLog
from nodes.net.metrics import Metrics
from nodes.net.shaper import Shaper

SECRET = "s3cret-token"


def control(secret: bytes | None = SECRET.encode()) -> tuple[NodeControl, io.StringIO]:
    out = io.StringIO()
    return NodeControl(secret, Shaper(), NodeClock(), Metrics(), EventLog("n", "relay", out=out)), out


def post(c: NodeControl, body: object, auth: str | None = f"Bearer {SECRET}") -> tuple[int, dict]:
    return c.handle(auth, body if isinstance(body, bytes) else json.dumps(body).encode())


def test_parse_commands():
    shape = parse_command(b'{"command": "shape", "rules": [{"id": "a", "delay": 0.1}]}')
    assert isinstance(shape, Shape) and shape.rules[0].delay == 0.1
    assert parse_command(b'{"command": "unshape"}') == Unshape(None)
    assert parse_command(b'{"command": "unshape", "ids": ["a"]}') == Unshape(("a",))
    assert parse_command(b'{"command": "skew", "offset": -600}') == Skew(-600.0)
    assert parse_command(b'{"command": "unskew"}') == Skew(0.0)


@pytest.mark.parametrize("body", [b"", b"\xff", b"[]", b'{"command": 1}', b'{"command": "reboot"}',
                                  b'{"command": "shape", "rules": []}', b'{"command": "shape"}',
                                  b'{"command": "shape", "rules": [{"id": "a", "loss": 7}]}',
                                  b'{"command": "unshape", "ids": "a"}', b'{"command": "skew"}',
                                  b'{"command": "skew", "offset": "1"}',
                                  b'{"command": "skew", "offset": 1e12}',
                                  b'{"command": "unskew", "offset": 1}',
                                  b'{"command": "skew", "offset": true}'])
def test_malformed_commands_are_typed_errors(body):
    with pytest.raises(ControlError) as e:
        parse_command(body)
    assert e.value.status == 400 and e.value.kind == "bad_request"


def test_the_secret_is_required_and_results_are_counted():
    c, _ = control()
    assert post(c, {"command": "unskew"}, auth=None)[0] == 401
    assert post(c, {"command": "unskew"}, auth="Bearer wrong")[0] == 401
    assert post(c, {"command": "unskew"}, auth=f"Basic {SECRET}")[0] == 401
    code, answer = post(c, b"{not json")
    assert code == 400 and answer["ok"] is False and answer["error"] == "bad_request"
    assert post(c, {"command": "unskew"})[0] == 200
    assert c.metrics.value("control_requests_total", result="unauthorized") == 3
    assert c.metrics.value("control_requests_total", result="bad_request") == 1
    assert c.metrics.value("control_requests_total", result="ok") == 1
    off, _ = control(secret=None)
    assert post(off, {"command": "unskew"})[0] == 403


def test_shaping_and_skew_change_the_node_and_its_status():
    c, out = control()
    rule = {"id": "op1", "peers": ["10.0.0.3"], "delay": 0.1}
    code, answer = post(c, {"command": "shape", "rules": [rule]})
    assert code == 200 and answer["shaping"][0]["id"] == "op1"
    assert c.shaper.effect("10.0.0.3").delay == 0.1 and c.shaper.effect("10.0.0.4") is None
    assert post(c, {"command": "skew", "offset": 600})[1]["clock_offset"] == 600
    assert c.clock.offset == 600 and c.status()["clock_offset"] == 600
    assert c.status()["shaping"][0]["peers"] == ["10.0.0.3"]
    assert post(c, {"command": "unshape", "ids": ["op1"]})[1]["removed"] == ["op1"]
    assert not c.shaper.active
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["shaping_changed", "clock_skewed", "shaping_changed"]


def test_secret_file(tmp_path):
    assert load_secret(tmp_path) is None
    path = write_secret(tmp_path, "abc")
    assert load_secret(tmp_path) == b"abc"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_roles_own_commands_need_the_secret_and_take_nothing():
    c, _ = control()
    calls = []
    c.add_action("newnym", lambda: calls.append(1) or {"descriptors": 2})
    assert post(c, {"command": "newnym"}, auth=None)[0] == 401 and calls == []
    assert post(c, {"command": "newnym", "now": True}) == (400, {
        "ok": False, "error": "bad_request", "message": "newnym takes nothing"})
    assert post(c, {"command": "newnym"}) == (200, {"ok": True, "descriptors": 2}) and calls == [1]
    code, answer = post(control()[0], {"command": "newnym"})  # a node whose role offers none
    assert code == 400 and "unknown command 'newnym'" in answer["message"]
