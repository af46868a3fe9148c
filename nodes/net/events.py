"""Structured events: one JSON object a line (ts, node, role, event, fields...) on a text stream.

The orchestrator rebuilds timelines and checks the six steps of the rendezvous flow from these lines, so an
event name, once used, is an interface: change it only together with the orchestrator's checks.

`ts` is always true time, even on a node whose clock is skewed on purpose (nodes/net/clock.py), so that
timelines of several nodes merge; such a node's events also carry `skew` (its clock offset in seconds).
"""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

from .clock import skew


class EventLog:
    def __init__(self, node: str, role: str, out: TextIO | None = None) -> None:
        self.node = node
        self.role = role
        self._out = out if out is not None else sys.stdout

    def emit(self, event: str, **fields: object) -> dict:
        record = {"ts": round(time.time(), 6), "node": self.node, "role": self.role, "event": event, **fields}
        offset = skew()
        if offset:
            record["skew"] = offset
        self._out.write(_ENCODER.encode(record) + "\n")
        self._out.flush()
        return record


def _jsonable(value: object) -> object:
    if isinstance(value, bytes | bytearray):
        return value.hex()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


# one encoder for every line: json.dumps with options builds a new one per call
_ENCODER = json.JSONEncoder(default=_jsonable, separators=(",", ":"))
