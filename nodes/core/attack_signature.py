"""What a colluding relay operator can tell from one circuit (Øverlier and Syverson, "Locating Hidden
Servers", 2006): the address of the previous hop, whether that address is a listed relay's, and the timing
of the cells that travel back towards the circuit's origin. Sans-I/O: the driver (nodes/net/adversary.py)
feeds cell counts with the time they arrived.

The attacking client marks its circuits with a burst: `BURST_CELLS` RELAY cells (DROP, to the service's
virtual hop) sent at once on its joined rendezvous circuit. They reach the service along the service's own
rendezvous circuit, so every relay of that circuit sees them travel towards its origin (backward). A relay
that sees at least `cells` backward RELAY cells within `window` seconds has seen the mark. If the circuit's
previous hop is not a listed relay, the previous hop is the circuit's origin: this relay is the service's
first hop and the previous hop's address is the service's (the paper's "position 1"). Everyone else on the
path (a middle relay, the rendezvous point) sees the mark with a relay before it: "seen", not located.

The attacking client's own first hop sees the burst going away from its origin (forward), which is why only
backward cells count: the attacker is never "located" by its own mark.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum

BURST_CELLS = 40  # cells in the mark: far more than one rendezvous or introduction moves backward
BURST_WINDOW = 1.0  # seconds within which the mark's cells must arrive


class Verdict(Enum):
    LOCATED = "located"  # the mark, and the previous hop is no relay: it is the origin (the service)
    SEEN = "seen"  # the mark, with a relay before us: we are a middle or the rendezvous point


@dataclass(slots=True)
class CircuitWatch:
    """One circuit as the adversary's relay sees it. `feed` each batch of backward RELAY cells; it returns a
    Verdict once, when the mark shows (None before and after)."""

    prev_address: str
    prev_is_relay: bool
    opened: float
    cells: int = BURST_CELLS
    window: float = BURST_WINDOW
    backward_cells: int = 0
    verdict: Verdict | None = None
    _recent: deque[tuple[float, int]] = field(default_factory=deque, repr=False)  # (arrival, cells) in window
    _in_window: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if self.cells < 1 or self.window <= 0:
            raise ValueError("a mark needs at least one cell and a positive window")

    def feed(self, now: float, n: int) -> Verdict | None:
        if n <= 0:
            return None
        self.backward_cells += n
        if self.verdict is not None:
            return None
        self._recent.append((now, n))
        self._in_window += n
        while self._recent and self._recent[0][0] < now - self.window:
            self._in_window -= self._recent.popleft()[1]
        if self._in_window < self.cells:
            return None
        self.verdict = Verdict.SEEN if self.prev_is_relay else Verdict.LOCATED
        self._recent.clear()
        return self.verdict

