"""When the onion service uploads its descriptor, judged with a fake directory and a fake uploader (the
uploads themselves are tested over real circuits in test_network.py): the current and the next time period at
first, only the new next one at period rollover, everything again when an intro point changes, and the
HSDirs that failed again with backoff. Timers run on trio's autojump clock."""

from __future__ import annotations

import io
import os
from types import SimpleNamespace

import trio
import trio.testing

from nodes.core import hs_common
from nodes.core.ed25519 import Signer
from nodes.core.netview import Relay
from nodes.net.events import EventLog
from nodes.net.hs_paths import TimePeriod
from nodes.net.hs_service import IntroPoint, OnionService
from nodes.net.hsdir import HsDirStore
from nodes.net.metrics import Metrics

from .helpers import StoreCircuit

FLAGS = frozenset({"Running", "Valid", "Guard", "HSDir", "Fast", "Stable"})
PERIOD = 24  # minutes
OFFSET = 12
ROUTERS = [Relay(f"relay{i}", os.urandom(20), os.urandom(32), os.urandom(32), f"10.0.0.{i + 2}", 9001, 0,
                 1000, FLAGS, "") for i in range(6)]


def _consensus(period_num: int) -> SimpleNamespace:
    start = hs_common.time_period_start(period_num, PERIOD, OFFSET)
    return SimpleNamespace(valid_after=start + 60, hs_period_minutes=PERIOD,
                           hs_rotation_offset_minutes=OFFSET, shared_rand_current=None, routers=ROUTERS)


class FakeDirectory:
    def __init__(self) -> None:
        self.current = None
        self._changed = trio.Event()

    def install(self, consensus) -> None:
        self.current = consensus
        self._changed.set()
        self._changed = trio.Event()

    async def wait_newer(self, than):
        while self.current is None or self.current is than:
            await self._changed.wait()
        return self.current


def _service(directory: FakeDirectory, *, refuse: set[bytes] = frozenset(),
             identity: Signer | None = None) -> tuple[OnionService, list]:
    service = OnionService(identity or Signer.from_seed(os.urandom(32)), n_intro_points=1, targets={},
                           circuits=None, guards=None, directory=directory, metrics=Metrics(),
                           events=EventLog("hs", "onion_service", io.StringIO()))
    uploads: list[dict[int, set[bytes]]] = []

    async def publish(consensus, periods, missing):
        await trio.sleep(0.1)
        uploads.append({num: {h.identity for h in dirs} for num, dirs in missing.items() if dirs})
        for num, dirs in missing.items():
            for hsdir in dirs:
                if hsdir.identity not in refuse:
                    service.published.setdefault(num, set()).add(hsdir.identity)
        return not any(h.identity in refuse for dirs in missing.values() for h in dirs)

    service._publish = publish
    service.intro_points[0] = SimpleNamespace(relay=ROUTERS[0])  # what the scheduler looks at: one exists
    service._intro_changed.set()
    return service, uploads


def _responsible(service: OnionService, num: int) -> set[bytes]:
    period = TimePeriod(num, PERIOD, hs_common.disaster_srv(PERIOD, num))
    return {h.identity for h in service._hsdirs(_consensus(num), period)}


async def _until(condition) -> None:
    while not condition():
        await trio.sleep(0.05)


async def test_first_both_periods_then_only_the_new_one_at_rollover(autojump_clock):
    directory = FakeDirectory()
    service, uploads = _service(directory)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service.keep_descriptors_published)
        directory.install(_consensus(1000))
        await _until(lambda: len(uploads) == 1)
        assert uploads[0] == {1000: _responsible(service, 1000), 1001: _responsible(service, 1001)}
        assert service.descriptor_published()

        directory.install(_consensus(1001))  # rollover: 1001 is current and already published
        await _until(lambda: len(uploads) == 2)
        assert uploads[1] == {1002: _responsible(service, 1002)}
        revision = service._revision

        service._intro_changed.set()  # an intro point changed: a new revision to every HSDir
        await _until(lambda: len(uploads) == 3)
        assert uploads[2] == {1001: _responsible(service, 1001), 1002: _responsible(service, 1002)}
        assert service._revision > revision
        nursery.cancel_scope.cancel()


async def _with_a_refusing_hsdir(num: int) -> tuple[OnionService, list, bytes]:
    directory = FakeDirectory()
    directory.current = _consensus(num)
    identity = Signer.from_seed(os.urandom(32))
    probe, _ = _service(directory, identity=identity)
    stubborn = next(iter(_responsible(probe, num)))
    service, uploads = _service(directory, refuse={stubborn}, identity=identity)
    return service, uploads, stubborn


async def test_a_refusing_hsdir_is_retried_with_growing_backoff_and_the_rest_not_again(autojump_clock):
    service, uploads, stubborn = await _with_a_refusing_hsdir(2000)
    times: list[float] = []
    upload = service._publish

    async def timed(consensus, periods, missing):
        times.append(trio.current_time())
        return await upload(consensus, periods, missing)

    service._publish = timed
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service.keep_descriptors_published)
        await _until(lambda: len(times) >= 5)
        nursery.cancel_scope.cancel()
    assert len(uploads[0][2000]) > 1  # the first round went to every responsible HSDir
    for retry in uploads[1:5]:  # the retries only to the one that refused
        assert retry and all(dirs == {stubborn} for dirs in retry.values())
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps == sorted(gaps) and gaps[-1] > gaps[0]


def _intro_point(relay: Relay) -> IntroPoint:
    return IntroPoint(relay, None, Signer.from_seed(os.urandom(32)), os.urandom(32), os.urandom(32))


def _uploading_service(directory: FakeDirectory) -> tuple[OnionService, dict[bytes, HsDirStore]]:
    """A service with one intro point, its real uploader, and an HSDir store for every relay (StoreCircuit
    builds reach them)."""
    service = OnionService(Signer.from_seed(os.urandom(32)), n_intro_points=1, targets={}, circuits=None,
                           guards=None, directory=directory, metrics=Metrics(),
                           events=EventLog("hs", "onion_service", io.StringIO()))
    service.intro_points[0] = _intro_point(ROUTERS[0])
    service._intro_changed.set()
    stores = {r.identity: HsDirStore(Metrics(), EventLog(r.nickname, "relay", io.StringIO()))
              for r in ROUTERS}
    return service, stores


async def test_an_hsdir_that_comes_back_holding_our_revision_counts_as_published(autojump_clock):
    """An HSDir drops out of the consensus and comes back still holding our descriptor: it refuses the same
    revision ("already stored"), and the service takes that as published instead of retrying for 90 min."""
    directory = FakeDirectory()
    service, stores = _uploading_service(directory)
    uploads: list[bytes] = []
    async with trio.open_nursery() as nursery:
        async def build(consensus, hsdir, purpose="hsdir"):
            uploads.append(hsdir.identity)
            return StoreCircuit(nursery, stores[hsdir.identity])

        service._build = build
        nursery.start_soon(service.keep_descriptors_published)
        everyone = _consensus(3000)
        directory.install(everyone)
        await _until(lambda: service.published.get(3000) == _responsible(service, 3000))
        gone = next(iter(_responsible(service, 3000)))
        without = _consensus(3000)
        without.routers = [r for r in ROUTERS if r.identity != gone]
        directory.install(without)  # it drops out: the service forgets it held our descriptor
        await _until(lambda: gone not in service.published.get(3000, ()))
        revision = service._revision
        uploads.clear()
        directory.install(_consensus(3000))  # and comes back, still holding it
        await trio.sleep(600)
        assert service._revision == revision
        assert gone in service.published[3000]
        assert uploads.count(gone) == 1  # asked once, not again and again with backoff
        store = stores[gone].metrics
        assert store.value("hsdir_publishes_total", result="already_stored") >= 1
        assert store.value("errors_total", kind="revision") == 0  # our own revision again is no attack
        assert service.metrics.value("descriptor_uploads_total", result="refused") == 0
        nursery.cancel_scope.cancel()



async def test_a_hung_upload_does_not_hold_back_the_revision_with_new_intro_points(autojump_clock):
    """One HSDir never answers (paused: building a circuit to it takes 3 paths x 10 s, then the upload 15 s).
    An intro point changes meanwhile: the new revision reaches the other HSDirs at once, not after the hung
    upload gives up. (random-chaos on docker: 11 fetches in a row got 0xF2, the HSDirs serving a descriptor
    whose intro points were gone while the service's publisher waited for a paused HSDir.)"""
    directory = FakeDirectory()
    service, stores = _uploading_service(directory)
    directory.install(_consensus(4000))
    hung = next(iter(_responsible(service, 4000)))
    others = _responsible(service, 4000) - {hung}
    async with trio.open_nursery() as nursery:
        async def build(consensus, hsdir, purpose="hsdir"):
            if hsdir.identity == hung:
                await trio.sleep(45)
                raise trio.TooSlowError
            return StoreCircuit(nursery, stores[hsdir.identity])

        service._build = build
        nursery.start_soon(service.keep_descriptors_published)
        await _until(lambda: service.published.get(4000) == others)
        first = service._revision
        service.intro_points[0] = _intro_point(ROUTERS[1])
        service._intro_changed.set()
        changed_at = trio.current_time()
        await _until(lambda: service._revision > first and service.published.get(4000) == others)
        assert trio.current_time() - changed_at < 5
        nursery.cancel_scope.cancel()
