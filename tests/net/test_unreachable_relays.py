"""A relay our circuits could not reach (stopped, cut off, still listed) is left out of new paths for
UNREACHABLE_MEMORY seconds: on a Docker network an extend to a stopped container costs a whole step timeout,
and random-chaos lost an onion service's every intro point for 23 s to builds through stopped relays."""

from __future__ import annotations

import io
import os
from types import SimpleNamespace

import pytest
import trio

from nodes.core.netview import Relay
from nodes.net import hs_paths
from nodes.net.circuits import CircuitBuildError
from nodes.net.events import EventLog
from nodes.net.guards import NoGuards
from nodes.net.hs_paths import UNREACHABLE_MEMORY, UnreachableRelays, build_guarded
from nodes.net.metrics import Metrics

FLAGS = frozenset({"Running", "Valid", "Fast", "Stable", "Guard"})
RELAYS = [Relay(f"relay{i}", os.urandom(20), os.urandom(32), os.urandom(32), f"10.0.0.{i + 2}", 9001, 0,
                1000, FLAGS, "") for i in range(6)]
CONSENSUS = SimpleNamespace(routers=RELAYS)
GUARD, STOPPED, LAST = RELAYS[0], RELAYS[1], RELAYS[5]


class Guards(NoGuards):
    """One fixed guard: what the test looks at is the middle."""

    def __init__(self) -> None:
        super().__init__(metrics=Metrics(), events=EventLog("hs", "onion_service", io.StringIO()))

    def ordered(self) -> list[Relay]:
        return [GUARD]


class Circuits:
    """Builds fail at the middle when it is the stopped relay (after a step timeout), else succeed."""

    def __init__(self) -> None:
        self.middles: list[str] = []

    async def build(self, path):
        self.middles.append(path[1].nickname)
        if path[1] is STOPPED:
            await trio.sleep(10)
            raise CircuitBuildError("no CREATED2 in 10 s", kind="timeout", hop=1)
        return SimpleNamespace(purpose=None)


@pytest.fixture
def stopped_first(monkeypatch):
    """Middles are drawn the stopped relay first whenever it is a candidate."""
    def pick(consensus, n, *, exclude=()):
        left = [r for r in RELAYS if r.identity not in set(exclude)]
        return sorted(left, key=lambda r: r is not STOPPED)[:n]

    monkeypatch.setattr(hs_paths, "pick_relays", pick)


async def test_a_middle_that_could_not_be_reached_is_left_out_for_a_while(stopped_first, autojump_clock):
    circuits, unreachable = Circuits(), UnreachableRelays()
    await build_guarded(circuits, Guards(), CONSENSUS, LAST, "intro", unreachable=unreachable)
    assert circuits.middles == ["relay1", "relay2"]  # one timeout, then another middle
    assert unreachable.recent() == {STOPPED.identity}
    circuits.middles.clear()
    for _ in range(5):  # the next builds do not pay the timeout again
        await build_guarded(circuits, Guards(), CONSENSUS, LAST, "intro", unreachable=unreachable)
    assert "relay1" not in circuits.middles
    await trio.sleep(UNREACHABLE_MEMORY + 1)
    assert unreachable.recent() == set()  # forgotten: it may be back


async def test_the_unreachable_relay_is_still_used_when_nothing_else_is_left(autojump_clock):
    unreachable = UnreachableRelays()
    unreachable.mark(RELAYS[1].identity)
    few = SimpleNamespace(routers=RELAYS[:3])
    path = hs_paths.three_hop_path(few, [RELAYS[0]], RELAYS[2], avoid=unreachable.recent())
    assert path[1] is RELAYS[1]
