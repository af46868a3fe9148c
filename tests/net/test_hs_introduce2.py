"""How the onion service takes INTRODUCE2 cells from its intro points, with fake circuits (the real ones are
in test_network.py): replays are refused, junk a malicious intro point sends cannot flush what protects
against them, answered rendezvous cookies are forgotten after five minutes as in Tor, and an intro point is
rotated after as many introductions as Tor allows one."""

from __future__ import annotations

import io
import math
import os
from types import SimpleNamespace

import trio

from nodes.core import circuit as core
from nodes.core import hs_common
from nodes.core.ed25519 import Signer
from nodes.core.hs_intro import IntroducePlaintext, encrypt_introduce1
from nodes.core.hs_ntor import public_key
from nodes.core.relay import Introduce2, IntroEstablished
from nodes.net import hs_service
from nodes.net.circuits import CircuitClosed
from nodes.net.events import EventLog
from nodes.net.hs_paths import TimePeriod
from nodes.net.hs_service import IntroPoint, OnionService
from nodes.net.metrics import Metrics
from tests.net.test_hs_publish_schedule import ROUTERS, FakeDirectory, _consensus

OLD_CACHE_SIZE = 16384  # what the replay cache held before: junk beyond this flushed it


class FakeIntroCircuit:
    """An established intro circuit: INTRO_ESTABLISHED first, then the INTRODUCE2 cells `deliver`ed."""

    def __init__(self, relay) -> None:
        self.path, self.circ_id, self.error = [relay], 1, None
        self._send, self._receive = trio.open_memory_channel(math.inf)
        self._send.send_nowait(core.IntroEstablished(IntroEstablished()))

    def hop_kh(self) -> bytes:
        return bytes(20)

    async def send(self, message) -> None:
        await trio.lowlevel.checkpoint()

    def deliver(self, message: Introduce2) -> None:
        self._send.send_nowait(core.Introduce2(message))

    async def receive(self, allowed=(), *, timeout: float = 30):
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise self.error from None

    async def aclose(self) -> None:
        if self.error is None:
            self.error = CircuitClosed("circuit closed by us", kind="closed")
            self._send.close()
        await trio.lowlevel.checkpoint()


def _service() -> OnionService:
    directory = FakeDirectory()
    directory.current = _consensus(5000)
    service = OnionService(Signer.from_seed(os.urandom(32)), n_intro_points=1, targets={}, circuits=None,
                           guards=SimpleNamespace(primary=lambda: []), directory=directory,
                           metrics=Metrics(), events=EventLog("hs", "onion_service", io.StringIO()))
    built: list[FakeIntroCircuit] = []

    async def build(consensus, relay, purpose="intro"):
        built.append(FakeIntroCircuit(relay))
        return built[-1]

    service._build = build
    service.built = built
    return service


def _point(service: OnionService) -> IntroPoint:
    secret = os.urandom(32)
    return IntroPoint(ROUTERS[1], FakeIntroCircuit(ROUTERS[1]), Signer.from_seed(os.urandom(32)), secret,
                      public_key(secret))


def _introduce2(service: OnionService, point: IntroPoint, cookie: bytes) -> Introduce2:
    """A genuine INTRODUCE2 for `point`, with the subcredential of the service's current period. Its
    rendezvous point names no address, so the service answers no further than accepting it."""
    period = TimePeriod.of(service.directory.current)
    blinded = hs_common.blinded_public_key(service.identity.public_key, period.num, period.length)
    subcredential = hs_common.subcredential(service.identity.public_key, blinded)
    plaintext = IntroducePlaintext(cookie, (), 1, os.urandom(32), ())
    message, _ = encrypt_introduce1(auth_key=point.auth.public_key, service_enc_key=point.enc_key,
                                    subcredential=subcredential, plaintext=plaintext, rng=os.urandom)
    return Introduce2(message.legacy_key_id, message.auth_key_type, message.auth_key, message.extensions,
                      message.encrypted)


def _junk(like: Introduce2) -> Introduce2:
    """What a malicious intro point can send: a well-formed cell whose encrypted section is random."""
    return Introduce2(like.legacy_key_id, like.auth_key_type, like.auth_key, like.extensions,
                      os.urandom(len(like.encrypted)))


def _accepted(service: OnionService) -> float:
    return service.metrics.value("introduce2_total", result="accepted")


async def test_junk_from_a_malicious_intro_point_cannot_flush_the_replay_cache():
    service = _service()
    point = _point(service)
    genuine = _introduce2(service, point, os.urandom(20))
    await service._answer(point, genuine)
    assert _accepted(service) == 1
    for _ in range(OLD_CACHE_SIZE + 1):
        await service._answer(point, _junk(genuine))
    assert service.metrics.value("errors_total", kind="crypto") == OLD_CACHE_SIZE + 1  # MAC: refused, counted
    await service._answer(point, genuine)  # the replay is still recognised
    assert _accepted(service) == 1
    assert service.metrics.value("errors_total", kind="introduce_replay") == 1


async def test_answered_cookies_are_forgotten_after_five_minutes_replays_are_not(autojump_clock):
    """Tor keeps an answered rendezvous cookie for REND_REPLAY_TIME_INTERVAL (5 min), and an INTRODUCE2's
    encrypted section for as long as the intro point's keys live."""
    service = _service()
    point = _point(service)
    cookie = os.urandom(20)
    first = _introduce2(service, point, cookie)
    await service._answer(point, first)
    await service._answer(point, _introduce2(service, point, cookie))  # another cell, the same cookie
    assert _accepted(service) == 1
    await trio.sleep(5 * 60 + 1)
    await service._answer(point, _introduce2(service, point, cookie))
    assert _accepted(service) == 2
    await service._answer(point, first)
    assert _accepted(service) == 2
    assert service.metrics.value("errors_total", kind="introduce_replay") == 2


async def test_an_intro_point_is_rotated_after_its_introductions(monkeypatch, autojump_clock):
    """Tor rotates an intro point after a random number of introductions in [16384, 32768) (its
    INTRO_POINT_MIN/MAX_LIFETIME_INTRODUCTIONS): its replay cache stays bounded, and fresh keys start a fresh
    one. Here the range is made small."""
    assert (hs_service.INTRO_MIN_INTRODUCTIONS, hs_service.INTRO_MAX_INTRODUCTIONS) == (16384, 32768)
    monkeypatch.setattr(hs_service, "INTRO_MIN_INTRODUCTIONS", 3)
    monkeypatch.setattr(hs_service, "INTRO_MAX_INTRODUCTIONS", 4)
    service = _service()
    async with trio.open_nursery() as nursery:
        service._answers = nursery
        nursery.start_soon(service.keep_intro_point, 0)
        while 0 not in service.intro_points:
            await trio.sleep(0.01)
        first = service.intro_points[0]
        for _ in range(3):
            first.circuit.deliver(_introduce2(service, first, os.urandom(20)))
        while service.intro_points.get(0) in (None, first):
            await trio.sleep(0.01)
        second = service.intro_points[0]
        assert second.auth.public_key != first.auth.public_key and first.circuit.error is not None
        assert service.metrics.value("intro_point_rotations_total") == 1
        assert service.metrics.value("intro_point_failures_total", stage="lost") == 0
        assert not service._avoid  # rotated, not failed: the relay may serve again
        second.circuit.deliver(_introduce2(service, second, os.urandom(20)))
        while _accepted(service) < 4:
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    events = [e for e in service.events._out.getvalue().splitlines() if '"intro_rotated"' in e]
    assert len(events) == 1
