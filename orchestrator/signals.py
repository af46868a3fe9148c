"""SIGTERM treated like Ctrl-C, so that a terminated command cleans up as an interrupted one does; signals
held back while that cleanup runs; and the exit status of a command a signal ended (128 + its number)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: cleans up like Ctrl-C (it is a KeyboardInterrupt) but exits 143, not 130."""


def signal_of(interrupt: BaseException) -> signal.Signals:
    """The signal behind a KeyboardInterrupt: SIGTERM for Terminated, else SIGINT."""
    return signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT


def exit_status(sig: int) -> int:
    """What a shell reports for a command that `sig` ended: 128 + its number (130 SIGINT, 143 SIGTERM)."""
    return 128 + int(sig)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Turn SIGTERM into Terminated (a KeyboardInterrupt) while the block runs (main thread only; elsewhere
    nothing changes, since only the main thread can set signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_deferred(arrived: list[int] | None = None) -> Iterator[list[int]]:
    """While the block runs (a cleanup that must finish), Ctrl-C and SIGTERM are noted in `arrived` instead
    of interrupting it. Main thread only; elsewhere nothing changes."""
    arrived = [] if arrived is None else arrived
    if threading.current_thread() is not threading.main_thread():
        yield arrived
        return
    previous = {s: signal.signal(s, lambda signum, frame: arrived.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield arrived
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
