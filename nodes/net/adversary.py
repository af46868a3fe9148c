"""An adversary's relay (topology `adversary: true`): watches every circuit through it for the attacking
client's mark (nodes/core/attack_signature.py) and reports what a colluding operator learns.

It uses only what the relay sees: the previous hop's address (the link the circuit came in on), whether the
relay's own consensus lists a relay at that address, and the backward RELAY cells' timing. It never asks the
service or the orchestrator anything. Events:

    attack_pattern_seen   the mark, with a relay before us (we are a middle or the rendezvous point)
    attack_located        the mark, and the previous hop is no listed relay: its address is the service's;
                          `circuits` is how many marked circuits this relay has seen so far
"""

from __future__ import annotations

import time
from collections.abc import Callable

from nodes.core.attack_signature import CircuitWatch, Verdict

from .events import EventLog
from .metrics import Metrics
from .relay_engine import RelayCircuitRef

MAX_LOCATED = 64  # addresses kept for /status


class AdversaryObserver:
    def __init__(self, events: EventLog, metrics: Metrics, relay_addresses: Callable[[], frozenset[str]], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._events = events
        self._metrics = metrics
        self._relay_addresses = relay_addresses  # addresses of the relays our current consensus lists
        self._clock = clock
        self._watches: dict[RelayCircuitRef, CircuitWatch] = {}
        self.marked = 0  # circuits on which we saw the mark
        self.located: list[dict] = []
        metrics.describe("attack_marks_total", "counter",
                         "circuits seen carrying the attack mark, by verdict")

    def opened(self, circuit: RelayCircuitRef) -> None:
        address = circuit.prev.address
        self._watches[circuit] = CircuitWatch(address, address in self._relay_addresses(), self._clock())

    def backward(self, circuit: RelayCircuitRef, cells: int) -> None:
        watch = self._watches.get(circuit)
        if watch is None or (verdict := watch.feed(self._clock(), cells)) is None:
            return
        self.marked += 1
        self._metrics.inc("attack_marks_total", verdict=verdict.value)
        fields = {"previous_hop": watch.prev_address, "previous_is_relay": watch.prev_is_relay,
                  "circuits": self.marked, "circuit": repr(circuit),
                  "seconds_open": round(self._clock() - watch.opened, 3)}
        if verdict is Verdict.LOCATED:
            record = self._events.emit("attack_located", address=watch.prev_address, **fields)
            self.located = [*self.located, record][-MAX_LOCATED:]
        else:
            self._events.emit("attack_pattern_seen", **fields)

    def closed(self, circuit: RelayCircuitRef) -> None:
        self._watches.pop(circuit, None)

    def status(self) -> dict:
        """For the relay's /status (only an adversary's relay shows it)."""
        return {"watching": len(self._watches), "marked": self.marked,
                "located": [{"address": r["address"], "ts": r["ts"], "circuits": r["circuits"]}
                            for r in self.located]}
