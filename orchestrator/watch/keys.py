"""Reading a `q` from the terminal without waiting for Enter, while `watch` redraws."""

from __future__ import annotations

import os
import select
import sys
import termios
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager

QUIT_KEYS = (b"q", b"Q")


@contextmanager
def quit_pressed() -> Iterator[Callable[[], bool]]:
    """A function that says whether q was pressed since; with stdin not a terminal, never (Ctrl-C still
    quits). The terminal is in cbreak mode meanwhile (keys arrive one by one, Ctrl-C still signals) and
    restored afterwards."""
    if not sys.stdin.isatty():
        yield lambda: False
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def pressed() -> bool:
        while select.select([fd], [], [], 0)[0]:
            if os.read(fd, 1) in QUIT_KEYS:
                return True
        return False

    try:
        yield pressed
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
