"""`onionlab logs` formatting (orchestrator/logview.py), following a file (backends/filetail.py), docker's
timestamped lines (backends/docker/observe.py) and the merge of logfollow.py over a fake backend."""

from __future__ import annotations

import io
import json
import threading
import time
from datetime import UTC, datetime

import pytest

from orchestrator.backends.base import LogLine
from orchestrator.backends.docker.observe import _stamped
from orchestrator.backends.filetail import tail_file
from orchestrator.logfollow import show_logs
from orchestrator.logview import (
    SinceError,
    format_record,
    merge,
    parse_since,
    record_json,
    records,
    since_filter,
)

NOW = 1_800_000_000.0


def event(ts: float, node: str, name: str, **fields) -> LogLine:
    record = {"ts": ts, "node": node, "role": "relay", "event": name, **fields}
    return LogLine(node, "stdout", json.dumps(record))


def asctime(ts: float) -> str:
    moment = datetime.fromtimestamp(ts)
    return moment.strftime("%Y-%m-%d %H:%M:%S,") + f"{moment.microsecond // 1000:03d}"


@pytest.mark.parametrize(("text", "back"), [("30", 30), ("30s", 30), ("5m", 300), ("2h", 7200), ("1d", 86400),
                                            ("1.5m", 90), ("10 min", 600)])
def test_since_durations(text, back):
    assert parse_since(text, now=NOW) == NOW - back


def test_since_timestamps():
    assert parse_since("2027-01-15T08:00:00Z") == datetime(2027, 1, 15, 8, tzinfo=UTC).timestamp()
    assert parse_since("2027-01-15T08:00:00+02:00") == datetime(2027, 1, 15, 6, tzinfo=UTC).timestamp()
    assert parse_since("2027-01-15T08:00:00") == datetime(2027, 1, 15, 8).timestamp()  # local time


@pytest.mark.parametrize("text", ["yesterday", "5 parsecs", "-3s", ""])
def test_since_rejects(text):
    with pytest.raises(SinceError, match="expected a duration"):
        parse_since(text, now=NOW)


def test_event_line_shows_time_node_event_and_fields():
    [record] = records([event(NOW + 0.25, "relay3", "circuit_built", circ_id=7, path=["relay1", "relay2"],
                              digest="ab" * 32, reason="too slow", seconds=0.5)])
    line = format_record(record, width=8)
    clock = datetime.fromtimestamp(NOW + 0.25).strftime("%H:%M:%S.250")
    assert line == (f"{clock}  relay3    circuit_built  circ_id=7  path=[relay1,relay2]  "
                    'digest=abababababab…  reason="too slow"  seconds=0.5')
    assert json.loads(record_json(record))["event"] == "circuit_built"  # --json: the line as written


def test_traceback_lines_take_the_time_of_the_logging_line_and_stay_together():
    lines = [LogLine("hs", "stderr", f"{asctime(NOW + 5)} ERROR nodes: crashed"),
             LogLine("hs", "stderr", "Traceback (most recent call last):"),
             LogLine("hs", "stderr", '  File "x.py", line 1, in <module>'),
             LogLine("hs", "stderr", "ValueError: boom")]
    others = [event(NOW + 4, "relay1", "link_up"), event(NOW + 5.0005, "relay1", "link_down"),
              event(NOW + 6, "relay1", "consensus_received")]
    merged = merge([records(lines), records(others)])
    assert [r.text.split()[-1] if r.event is None else r.event["event"] for r in merged] == [
        "link_up", "crashed", "last):", "<module>", "boom", "link_down", "consensus_received"]
    rendered = [format_record(r, width=6) for r in merged]
    assert rendered[1].endswith("hs      ! " + lines[0].text) and rendered[1][:12].strip()
    assert rendered[2] == " " * 12 + "  hs      ! Traceback (most recent call last):"  # no time of its own
    assert json.loads(record_json(merged[4])) == {"ts": merged[1].ts, "node": "hs", "stream": "stderr",
                                                  "text": "ValueError: boom"}


def test_non_json_stdout_and_odd_json_pass_through():
    got = list(records([LogLine("c", "stdout", "plain words"), LogLine("c", "stdout", "[1, 2]"),
                        LogLine("c", "stdout", '{"no": "event"}'), LogLine("c", "stdout", "{broken")]))
    assert [r.event for r in got] == [None] * 4
    shown = [format_record(r, 1).split("| ", 1)[1] for r in got]
    assert shown == ["plain words", "[1, 2]", '{"no": "event"}', "{broken"]


def test_since_filter_uses_each_lines_time():
    got = list(since_filter(merge([records([event(NOW, "a", "old"), event(NOW + 10, "a", "new")])]), NOW + 5))
    assert [r.event["event"] for r in got] == ["new"]


def test_docker_timestamps():
    line = _stamped("relay1", "stderr", "2027-01-15T08:00:00.123456789Z fatal: boom")
    assert line == LogLine("relay1", "stderr", "fatal: boom",
                           datetime(2027, 1, 15, 8, 0, 0, 123456, tzinfo=UTC).timestamp())
    assert _stamped("relay1", "stderr", "no stamp here") == LogLine("relay1", "stderr", "no stamp here")


def test_tail_file_follows_until_the_run_is_gone(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("one\ntwo\npart")
    alive = threading.Event()
    alive.set()
    lines = tail_file(path, "n", "stdout", follow=True, alive=alive.is_set, poll=0.01)
    assert [next(lines), next(lines), next(lines)] == [LogLine("n", "stdout", "one"),
                                                       LogLine("n", "stdout", "two"), None]
    with path.open("a") as f:
        f.write("ial\nthree\n")
    assert [next(lines), next(lines)] == [LogLine("n", "stdout", "partial"), LogLine("n", "stdout", "three")]
    alive.clear()
    assert list(lines) == []
    assert list(tail_file(tmp_path / "missing", "n", "stderr")) == []
    assert [line.text for line in tail_file(path, "n", "stdout")] == ["one", "two", "partial", "three"]


class FakeBackend:
    """Two nodes whose followed streams are fed by the test."""

    def __init__(self, lines: dict[tuple[str, str], list[LogLine]]) -> None:
        self.lines = lines
        self.live: dict[tuple[str, str], list[LogLine]] = {key: [] for key in lines}
        self.stop = threading.Event()

    def log_lines(self, name, stream, *, follow=False, since=None):
        yield from self.lines[name, stream]
        if not follow:
            return
        yield None
        sent = 0
        while not self.stop.is_set():
            live = self.live[name, stream]
            while sent < len(live):
                yield live[sent]
                sent += 1
            time.sleep(0.01)


def test_follow_prints_history_in_time_order_then_live_lines():
    backend = FakeBackend({("a", "stdout"): [event(NOW + 1, "a", "a1"), event(NOW + 3, "a", "a3")],
                           ("a", "stderr"): [],
                           ("b", "stdout"): [event(NOW + 2, "b", "b2")],
                           ("b", "stderr"): [LogLine("b", "stderr", "no time: before the rest", None)]})
    out = io.StringIO()
    done = threading.Thread(target=show_logs, args=(backend, ["a", "b"], out), kwargs={"follow": True})
    done.start()
    deadline = time.monotonic() + 5
    while out.getvalue().count("\n") < 4:
        assert time.monotonic() < deadline, out.getvalue()
        time.sleep(0.01)
    backend.live["b", "stdout"].append(event(NOW + 9, "b", "b9"))
    backend.live["a", "stdout"].append(event(NOW + 8, "a", "a8"))
    while out.getvalue().count("\n") < 6:
        assert time.monotonic() < deadline, out.getvalue()
        time.sleep(0.01)
    backend.stop.set()
    done.join(timeout=5)
    assert not done.is_alive()
    words = [line.split()[-1] if "!" not in line else "stderr" for line in out.getvalue().splitlines()]
    assert words == ["stderr", "a1", "b2", "a3", "a8", "b9"]  # the live pair reordered within the window


def test_show_logs_without_follow_merges_and_counts():
    backend = FakeBackend({("a", "stdout"): [event(NOW + 3, "a", "late")], ("a", "stderr"): [],
                           ("b", "stdout"): [event(NOW + 1, "b", "early")], ("b", "stderr"): []})
    out = io.StringIO()
    assert show_logs(backend, ["a", "b"], out, as_json=True) == 2
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["early", "late"]
