"""Reading a log file line by line, and following it as it grows (`onionlab logs --follow`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .base import LogLine

POLL = 0.2  # seconds between two looks at a followed file


def tail_file(path: Path, node: str, stream: str, *, follow: bool = False,
              alive: Callable[[], bool] = lambda: True, poll: float = POLL) -> Iterator[LogLine | None]:
    """The file's lines; with `follow`, None once the end is reached, then the lines appended later (a
    line counts once its newline is written) until `alive()` says the run is gone. A missing file is empty
    (a node that has not started yet)."""
    offset, partial, caught_up = 0, b"", False
    while True:
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            data = b""
        offset += len(data)
        *complete, partial = (partial + data).split(b"\n")
        for raw in complete:
            yield LogLine(node, stream, raw.decode(errors="replace"))
        if not follow:
            if partial:
                yield LogLine(node, stream, partial.decode(errors="replace"))
            return
        if not caught_up:
            caught_up = True
            yield None
        if not alive():
            return
        time.sleep(poll)
