"""`onionlab logs [NODE] [--follow] [--since S] [--json]`: read the nodes' lines from the backend, order them
in time and print them (formats: logview.py).

Without --follow every line there is now is read, merged and printed. With --follow one reader thread per
node and stream hands lines over a queue: once every reader has caught up, what was there is printed in time
order; after that new lines are printed as they come, held back for REORDER seconds so that lines of
different nodes written at nearly the same time still come out in order.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import TextIO

from .backends.base import STREAMS, Backend
from .logview import Record, format_record, merge, record_json, records, since_filter

REORDER = 0.3  # seconds a followed line waits for older lines of other nodes
_DONE = object()  # a reader's stream ended (the run was taken down)
_CAUGHT_UP = object()  # a reader has handed over every line that was there


def show_logs(backend: Backend, names: list[str], out: TextIO, *, follow: bool = False,
              since: float | None = None, as_json: bool = False) -> int:
    """Print the nodes' lines; with `follow` until every stream ends or Ctrl-C. The number of lines."""
    width = max(len(name) for name in names)
    show = _printer(out, width, as_json)
    if not follow:
        streams = [records(backend.log_lines(name, stream, since=since))
                   for name in names for stream in STREAMS]
        merged = list(since_filter(merge(streams), since))
        for record in merged:
            show(record)
        return len(merged)
    return _follow(backend, names, show, since)


def _printer(out: TextIO, width: int, as_json: bool) -> Callable[[Record], None]:
    def show(record: Record) -> None:
        out.write((record_json(record) if as_json else format_record(record, width)) + "\n")
        out.flush()

    return show


def _follow(backend: Backend, names: list[str], show: Callable[[Record], None], since: float | None) -> int:
    inbox: queue.Queue = queue.Queue()
    readers = [(name, stream) for name in names for stream in STREAMS]
    for name, stream in readers:
        threading.Thread(target=_read, args=(backend, name, stream, since, inbox), daemon=True,
                         name=f"logs-{name}-{stream}").start()
    shown = 0
    history: list[Record] | None = []  # None once it is printed
    waiting = len(readers)  # readers that have not caught up yet
    running = len(readers)
    pending: list[tuple[float, Record]] = []  # (arrival, record) of live lines held back for REORDER
    while running:
        try:
            item = inbox.get(timeout=REORDER / 3)
        except queue.Empty:
            item = None
        if item is _DONE:
            running -= 1
        elif item is _CAUGHT_UP:  # each reader sends it once, before _DONE
            waiting -= 1
            if waiting == 0:
                for record in since_filter(merge([history]), since):
                    show(record)
                    shown += 1
                history = None
        elif isinstance(item, Record):
            if history is not None:
                history.append(item)
            else:
                pending.append((time.monotonic(), item))
        if history is None and pending:
            due = time.monotonic() - REORDER
            pending.sort(key=lambda p: p[1].ts)
            while pending and (pending[0][0] <= due or not running):
                show(pending.pop(0)[1])
                shown += 1
    return shown


def _read(backend: Backend, name: str, stream: str, since: float | None, inbox: queue.Queue) -> None:
    """One stream of one node onto the queue: its records, _CAUGHT_UP once, _DONE at the end."""
    caught_up = False
    try:
        lines = backend.log_lines(name, stream, follow=True, since=since)
        for record in records(lines):
            if record is None:
                caught_up = True
                inbox.put(_CAUGHT_UP)
            else:
                inbox.put(record)
    finally:
        if not caught_up:
            inbox.put(_CAUGHT_UP)
        inbox.put(_DONE)
