"""`onionlab logs`: the nodes' output as lines people can read, merged in time order.

A backend hands over raw lines (backends.base.LogLine: node, stream, text, the engine's timestamp if any);
this module turns them into records with a time, orders them and formats them. A node writes one JSON event a
line on stdout (docs/events.md) and free text on stderr (Python logging lines, tracebacks, `fatal: ...`).
An event's time is its own `ts`; a stderr line's is the engine's timestamp (docker), else the time at the
start of a logging line, else that of the line before it in the same stream (a traceback's lines stay
together, after the line that announced it).

Pure functions: no I/O, no backend; the CLI's follow loop lives in logfollow.py.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from .backends.base import LogLine

# the asctime of nodes/__main__.py's logging format: "2026-12-07 10:09:02,123" (the node's local time)
_ASCTIME = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)?", re.IGNORECASE)
_UNITS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_HEADER = ("ts", "node", "role", "event")
HEX_SHOWN = 12  # long hex values (keys, digests) are cut to this many digits and an ellipsis
TEXT_SHOWN = 160  # longer field values are cut


class SinceError(ValueError):
    """A --since value that is neither a duration nor a timestamp."""


@dataclass(frozen=True, slots=True)
class Record:
    """One line of a node's output with its time: `event` is the parsed JSON event (None for text)."""

    ts: float
    node: str
    stream: str
    text: str  # the line as the node wrote it
    event: dict | None
    stamped: bool  # the time is the line's own (False: inherited from the line before it)


def parse_since(text: str, now: float | None = None) -> float:
    """--since: a duration back from now (`30`, `30s`, `5m`, `2h`, `1d`) or an ISO 8601 timestamp
    (`2026-12-07T10:00:00`, local time unless it names a zone, `...Z` for UTC): unix seconds."""
    now = time.time() if now is None else now
    word = text.strip()
    if (match := _DURATION.fullmatch(word)) is not None:
        unit = match.group(2).lower() if match.group(2) else None
        return now - float(match.group(1)) * _UNITS[unit]
    try:
        moment = datetime.fromisoformat(word.replace("Z", "+00:00") if word.endswith("Z") else word)
    except ValueError:
        raise SinceError(f"--since {text!r}: expected a duration (30s, 5m, 2h, 1d; a bare number is seconds) "
                         "or a timestamp (2026-12-07T10:00:00, local time; append Z for UTC)") from None
    return moment.timestamp()


def records(lines: Iterable[LogLine | None]) -> Iterator[Record | None]:
    """The lines of ONE node stream (in the order written) with their times; a None (a followed stream has
    caught up) is passed on."""
    last = 0.0
    for line in lines:
        if line is None:
            yield None
            continue
        event = _event(line.text) if line.stream == "stdout" else None
        ts = _event_ts(event)
        if ts is None:
            ts = line.ts if line.ts is not None else _asctime(line.text)
        stamped = ts is not None
        last = ts if ts is not None else last
        yield Record(last, line.node, line.stream, line.text, event, stamped)


def merge(streams: Iterable[Iterable[Record | None]]) -> list[Record]:
    """Every record of every stream in time order; a stable sort, so a traceback stays in one piece."""
    return sorted((r for stream in streams for r in stream if r is not None), key=lambda r: r.ts)


def format_record(record: Record, width: int = 8) -> str:
    """`HH:MM:SS.mmm  node  event  key=value ...` for an event; `HH:MM:SS.mmm  node  | text` for other text
    (a line that has no time of its own, such as a traceback's, gets blanks instead of a time)."""
    when = _clock(record.ts) if record.stamped else " " * 12
    node = record.node.ljust(width)
    if record.event is not None:
        event = record.event
        fields = "  ".join(f"{key}={_value(value)}" for key, value in event.items() if key not in _HEADER)
        return f"{when}  {node}  {event.get('event', '?')}" + (f"  {fields}" if fields else "")
    mark = "!" if record.stream == "stderr" else "|"
    return f"{when}  {node}  {mark} {record.text}"


def record_json(record: Record) -> str:
    """--json: an event line as the node wrote it; any other line as {"ts", "node", "stream", "text"}."""
    if record.event is not None:
        return record.text
    return json.dumps({"ts": round(record.ts, 6), "node": record.node, "stream": record.stream,
                       "text": record.text}, separators=(",", ":"))


def since_filter(items: Iterable[Record], since: float | None) -> Iterator[Record]:
    return iter(items) if since is None else (r for r in items if r.ts >= since)


def _event(text: str) -> dict | None:
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) and "event" in value else None


def _event_ts(event: dict | None) -> float | None:
    ts = event.get("ts") if event is not None else None
    return float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else None


def _asctime(text: str) -> float | None:
    match = _ASCTIME.match(text)
    if match is None:
        return None
    try:
        moment = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return moment.timestamp() + int(match.group(2)) / 1000


def _clock(ts: float) -> str:
    moment = datetime.fromtimestamp(ts)
    return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def _value(value: object) -> str:
    if isinstance(value, str):
        if len(value) > HEX_SHOWN + 8 and re.fullmatch(r"[0-9a-fA-F]+", value):
            return value[:HEX_SHOWN] + "…"
        text = value if value and not any(c.isspace() for c in value) else json.dumps(value)
    elif isinstance(value, list | tuple):
        text = "[" + ",".join(_value(v) for v in value) + "]"
    elif isinstance(value, dict):
        text = json.dumps(value, separators=(",", ":"))
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = json.dumps(value)
    return text if len(text) <= TEXT_SHOWN else text[:TEXT_SHOWN - 1] + "…"
