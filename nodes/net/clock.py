"""The node's wall clock: true time plus an offset, so that a skewed node (chaos `skew`, set through the
control call) really behaves skewed: consensus validity, descriptor revisions and lifetimes, the authority's
voting schedule and the link handshake's NETINFO time all read `wall()`.

One process may run several nodes (tests/net, bench): each node's `serve` installs its own NodeClock with
`use`, and every task it starts inherits it (Trio copies the context into child tasks). Event timestamps
stay true time (nodes/net/events.py), so the orchestrator can still merge the nodes' timelines.
"""

from __future__ import annotations

import time
from contextvars import ContextVar

MAX_OFFSET = 10 * 365 * 86400.0  # seconds either way; more is a typo, not a test


class NodeClock:
    """True time plus `offset` seconds (positive: this node is ahead)."""

    __slots__ = ("offset",)

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def time(self) -> float:
        return time.time() + self.offset


_current: ContextVar[NodeClock | None] = ContextVar("onionlab_node_clock", default=None)  # None: true time


def use(clock: NodeClock) -> NodeClock:
    """Make `clock` the clock of the calling task and of every task it starts from now on."""
    _current.set(clock)
    return clock


def current() -> NodeClock | None:
    """The calling node's clock; None outside a node that installed one (true time)."""
    return _current.get()


def wall() -> float:
    """Unix time as this node believes it to be."""
    c = _current.get()
    return time.time() if c is None else c.time()


def skew() -> float:
    """The calling node's clock offset in seconds (0.0 when true)."""
    c = _current.get()
    return 0.0 if c is None else c.offset
