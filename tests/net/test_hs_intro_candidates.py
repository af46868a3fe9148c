"""Where the onion service puts a new intro point. Its guard died and took every intro circuit with it, so
every relay of a small lab had lost an intro point lately: the service must still pick one (random-chaos on
docker: no intro point for 16 s, until the first loss was a minute old)."""

from __future__ import annotations

import io
import os
import time
from types import SimpleNamespace

from nodes.core.ed25519 import Signer
from nodes.core.netview import Relay
from nodes.net.events import EventLog
from nodes.net.hs_service import AVOID_FAILED_INTRO, OnionService
from nodes.net.metrics import Metrics

FLAGS = frozenset({"Running", "Valid", "Fast", "Stable", "Guard", "HSDir"})
RELAYS = [Relay(f"relay{i}", os.urandom(20), os.urandom(32), os.urandom(32), f"10.0.0.{i + 2}", 9001, 0,
                1000, FLAGS, "") for i in range(6)]
CONSENSUS = SimpleNamespace(routers=RELAYS)


def _service() -> OnionService:
    guard = RELAYS[0]
    return OnionService(Signer.from_seed(os.urandom(32)), n_intro_points=3, targets={}, circuits=None,
                        guards=SimpleNamespace(primary=lambda: [guard]), directory=None, metrics=Metrics(),
                        events=EventLog("hs", "onion_service", io.StringIO()))


async def test_when_every_relay_lost_an_intro_point_lately_one_of_them_is_picked():
    service = _service()
    until = time.monotonic() + AVOID_FAILED_INTRO
    service._avoid = {r.identity: until for r in RELAYS}
    service._claimed = {0: RELAYS[1].identity}
    picks = {service._intro_candidates(CONSENSUS)[0].nickname for _ in range(50)}
    assert picks and "relay1" not in picks  # another slot's is never taken
    assert "relay0" not in picks  # the guard only when nothing else is left


async def test_preferences_in_order_avoided_then_guard_then_unreachable():
    service = _service()
    service._avoid = {RELAYS[2].identity: time.monotonic() + AVOID_FAILED_INTRO}
    for r in RELAYS[3:]:
        service.unreachable.mark(r.identity)
    def picks() -> set[str]:
        return {service._intro_candidates(CONSENSUS)[0].nickname for _ in range(30)}

    assert picks() == {"relay1"}
    service._claimed = {0: RELAYS[1].identity}  # then the unreachable ones, before the avoided or the guard
    assert picks() <= {"relay3", "relay4", "relay5"}
    service._claimed = {i: r.identity for i, r in enumerate(RELAYS[1:])}  # only the guard is left
    assert service._intro_candidates(CONSENSUS)[0].nickname == "relay0"
