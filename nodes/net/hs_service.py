"""The onion service's runtime: introduction points, descriptor publication, INTRODUCE2, RENDEZVOUS1, streams.

Steps one, two and five of the seed, over circuits whose first hop is always one of the service's guards:

  1. `keep_intro_point` (one task per slot): pick a relay, build a 3-hop circuit to it, send ESTABLISH_INTRO
     signed by a fresh auth key, wait for INTRO_ESTABLISHED; then pass the INTRODUCE2 cells it carries to
     `_answer`. When the circuit dies the slot picks another relay at once (the rendezvous it introduced live
     on in `run`'s nursery, not the slot's), and the descriptor is republished.
  2. `keep_descriptors_published`: for the current and the next time period (as Tor does, so a client whose
     consensus is a period ahead still finds us), build the descriptor listing the established intro points,
     sign it with the period's blinded key, and POST it over BEGIN_DIR to every responsible HSDir. Published
     again when the intro points change, at period rollover, when the HSDir ring changes, and before the
     descriptor's lifetime ends. HSDirs that refused or were unreachable are retried with backoff.
  5. `_answer`: check INTRODUCE2's MAC and decrypt it, then refuse replays: the same encrypted section (for
     as long as the intro point's keys live; Tor rotates an intro point after 16384 to 32768 introductions,
     so do we) or a rendezvous cookie answered in the last five minutes (Tor's REND_REPLAY_TIME_INTERVAL);
     build a circuit to the rendezvous point it names, send RENDEZVOUS1 and add the hs-ntor virtual hop;
     then serve every stream the client opens on that circuit with the target of its virtual port.
"""

from __future__ import annotations

import math
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import trio

from nodes.core import circuit as core
from nodes.core import hs_common
from nodes.core.ed25519 import Signer
from nodes.core.errors import RemoteProtocolError
from nodes.core.hs_descriptor import IntroPointDesc, build_descriptor
from nodes.core.hs_intro import (
    build_establish_intro,
    decrypt_introduce2,
    replay_key,
    service_rendezvous1,
)
from nodes.core.hs_ntor import public_key
from nodes.core.netview import NetworkView, Relay
from nodes.core.onion_address import encode_onion_address
from nodes.core.relay_crypto import HopCrypto

from . import clock
from .circuits import CircuitManager, OriginCircuitHandle, hop_spec
from .events import EventLog
from .guards import GuardManager
from .hs_paths import (
    CIRCUIT_FAILURES,
    STREAM_FAILURES,
    FollowingDirectoryClient,
    TimePeriod,
    UnreachableRelays,
    build_guarded,
    pick_relays_preferring,
    relay_for,
    responsible_hsdirs,
    usable,
)
from .hsdir import ALREADY_STORED, PUBLISH_PATH
from .httpio import request
from .metrics import Metrics
from .targets import ServiceInfo, Target, serve_target

Rng = Callable[[int], bytes]
T = TypeVar("T")

DESCRIPTOR_LIFETIME_MINUTES = 180
COOKIE_REPLAY_SECONDS = 5 * 60  # Tor's REND_REPLAY_TIME_INTERVAL: an answered cookie is refused this long
# Tor's INTRO_POINT_MIN/MAX_LIFETIME_INTRODUCTIONS: an intro point is rotated after a number of introductions
# drawn from [min, max), which bounds its replay cache
INTRO_MIN_INTRODUCTIONS, INTRO_MAX_INTRODUCTIONS = 16384, 32768
UPLOAD_TIMEOUT = 15.0
RETRY_MIN, RETRY_MAX = 0.5, 15.0
PERIOD_LOOKAHEAD = 2  # current and next period
REFRESH_AFTER = 60 * DESCRIPTOR_LIFETIME_MINUTES / 2  # seconds before a new revision goes everywhere
RECENT_PATHS = 16  # rendezvous circuit paths kept for /status
AVOID_FAILED_INTRO = 60.0  # seconds a relay that failed as our intro point is chosen only if no other is
SETTLE_TIME = 1.0  # after an intro point change, how long to wait for the others still being set up

_random = secrets.SystemRandom()


@dataclass(slots=True)
class IntroPoint:
    relay: Relay
    circuit: OriginCircuitHandle
    auth: Signer  # KP_hs_ipt_sid: what the intro point knows us by
    enc_secret: bytes = field(repr=False)  # KS_hss_ntor, per intro point
    enc_key: bytes  # KP_hss_ntor
    # digests of the encrypted sections that verified under these keys: replays are refused while the keys
    # live (rend-spec-v3 3.3); when there are max_introductions of them the intro point is rotated
    replays: set[bytes] = field(default_factory=set, repr=False)
    max_introductions: int = field(
        default_factory=lambda: _random.randrange(INTRO_MIN_INTRODUCTIONS, INTRO_MAX_INTRODUCTIONS))
    rotated: bool = False

    def descriptor_entry(self) -> IntroPointDesc:
        return IntroPointDesc(hop_spec(self.relay).link_specs(), self.relay.ntor_onion_key,
                              self.auth.public_key, self.enc_key)


class ReplayCache:
    """The keys seen in the last `lifetime` seconds: `seen(key)` is True for one of them, and remembers the
    key otherwise. Entries leave by age only, never to make room."""

    def __init__(self, lifetime: float) -> None:
        self._expires: OrderedDict[bytes, float] = OrderedDict()  # in the order they came: oldest first
        self._lifetime = lifetime

    def seen(self, key: bytes) -> bool:
        now = trio.current_time()
        while self._expires and next(iter(self._expires.values())) <= now:
            self._expires.popitem(last=False)
        if key in self._expires:
            return True
        self._expires[key] = now + self._lifetime
        return False


class OnionService:
    def __init__(self, identity: Signer, *, n_intro_points: int, targets: Mapping[int, Target],
                 circuits: CircuitManager, guards: GuardManager, directory: FollowingDirectoryClient,
                 metrics: Metrics, events: EventLog, rng: Rng = os.urandom) -> None:
        self.identity = identity
        self.onion = encode_onion_address(identity.public_key)
        self.n_intro_points = n_intro_points
        self.targets = dict(targets)
        self.circuits = circuits
        self.guards = guards
        self.unreachable = UnreachableRelays()  # relays our circuits could not reach lately
        self.directory = directory
        self.metrics = metrics
        self.events = events
        self.rng = rng
        self.control_port = 0  # the role sets it once its status server listens
        self.intro_points: dict[int, IntroPoint] = {}  # by slot
        self._claimed: dict[int, bytes] = {}  # slot -> the relay it uses or is setting up
        self._avoid: dict[bytes, float] = {}  # relays that failed as intro points, until time.monotonic()
        self.published: dict[int, set[bytes]] = {}  # period num -> identities of HSDirs holding our latest
        self._intro_changed = trio.Event()
        self._revision = 0
        self._cookies = ReplayCache(COOKIE_REPLAY_SECONDS)  # rendezvous cookies answered
        self._subcredentials: dict[tuple[int, int], bytes] = {}  # by (period num, length)
        self._signing: dict[int, Signer] = {}  # descriptor signing key per period
        self._answers: trio.Nursery | None = None  # run() sets it: where introductions are answered
        self._status_hsdirs: tuple[NetworkView | None, dict | None] = (None, None)  # current_hsdirs' cache
        self._rendezvous_circuits: set[OriginCircuitHandle] = set()  # to clients' RPs, serving streams
        self.rendezvous_sent = 0  # rendezvous circuits built (RENDEZVOUS1 sent)
        self._recent_paths: list[list[str]] = []  # the latest RECENT_PATHS of them, first hop first
        for name, kind, text in (
                ("intro_points_established", "gauge", "introduction points we hold now"),
                ("intro_point_failures_total", "counter", "introduction point setups or circuits lost"),
                ("intro_point_rotations_total", "counter", "intro points replaced after their introductions"),
                ("descriptor_uploads_total", "counter", "descriptor uploads to HSDirs by result"),
                ("introduce2_total", "counter", "INTRODUCE2 cells by result"),
                ("rendezvous_total", "counter", "rendezvous circuits to a client's RP by result"),
                ("streams_total", "counter", "client streams by virtual port and result"),
                ("errors_total", "counter", "remote protocol errors by kind")):
            metrics.describe(name, kind, text)

    @property
    def info(self) -> ServiceInfo:
        return ServiceInfo(self.events.node, self.onion + ".onion")

    def enough_intro_points(self) -> bool:
        """All slots hold an intro point, or as many as the consensus has relays for."""
        c = self.directory.current
        return c is not None and len(self.intro_points) >= max(1, min(self.n_intro_points, len(usable(c))))

    def descriptor_published(self) -> bool:
        c = self.directory.current
        return c is not None and bool(self.published.get(TimePeriod.of(c).num))

    def status(self) -> dict:
        c = self.directory.current
        names = {} if c is None else {r.identity: r.nickname for r in c.relays}
        return {"intro_points": [ip.relay.nickname for ip in self.intro_points.values()],
                "intro_auth_keys": {ip.relay.nickname: ip.auth.public_key.hex()
                                    for ip in self.intro_points.values()},
                "published": {str(num): len(h) for num, h in sorted(self.published.items())},
                # who holds our descriptor, by period: what `onionlab graph --live` draws
                "descriptor_hsdirs": {str(num): sorted(names.get(i, i.hex()) for i in h)
                                      for num, h in sorted(self.published.items())},
                "rendezvous": [[r.nickname for r in c.path] for c in self._rendezvous_circuits],
                # every rendezvous circuit, closed ones too: how `onionlab attack` sees the first hops
                "rendezvous_sent": {"count": self.rendezvous_sent, "recent": self._recent_paths},
                "hsdirs": self.current_hsdirs()}  # responsible now (the hash ring): chaos targets

    def current_hsdirs(self) -> dict | None:
        """The HSDirs responsible for our descriptor in the current time period (the hash ring, as we upload
        to it): {"period", "relays"}; None without a consensus. Cached per consensus."""
        c = self.directory.current
        if c is None:
            return None
        if self._status_hsdirs[0] is not c:
            period = TimePeriod.of(c)
            self._status_hsdirs = (c, {"period": period.num,
                                       "relays": [r.nickname for r in self._hsdirs(c, period)]})
        return self._status_hsdirs[1]

    async def run(self) -> None:
        """Every intro point slot and the descriptor publisher, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._answers = nursery
            for slot in range(self.n_intro_points):
                nursery.start_soon(self.keep_intro_point, slot)
            nursery.start_soon(self.keep_descriptors_published)

    # -- paths -----------------------------------------------------------------------------------------------
    async def _build(self, consensus: NetworkView, last: Relay, purpose: str) -> OriginCircuitHandle:
        return await build_guarded(self.circuits, self.guards, consensus, last, purpose,
                                   unreachable=self.unreachable)

    def _intro_candidates(self, consensus: NetworkView) -> list[Relay]:
        """A relay for a new intro point: never one another slot uses or is setting up. Preferred, each
        preference given up only when no relay is left with it: not one whose intro circuit we lost lately,
        not our guard, not one our circuits could not reach lately. (A dead guard takes every intro circuit
        with it: when that made every relay one we had lost lately, the service stayed without any intro
        point until the first of them was a minute old: 16 s of 0xF2 in random-chaos on docker.)"""
        now = time.monotonic()
        claimed = set(self._claimed.values())
        avoided = {i for i, until in self._avoid.items() if until > now}
        guards = {g.identity for g in self.guards.primary()}
        preferences = (avoided | guards | self.unreachable.recent(), avoided | guards, avoided, guards, ())
        return pick_relays_preferring(consensus, 1, preferences, exclude=claimed)

    # -- step 1: intro points ------------------------------------------------------------------------------
    async def keep_intro_point(self, slot: int) -> None:
        retry = RETRY_MIN
        while True:
            consensus = await self.directory.wait_newer(None)
            candidates = self._intro_candidates(consensus)
            if not candidates:  # every relay is an intro point of ours already
                await self.directory.wait_newer(consensus)
                continue
            relay = candidates[0]
            self._claimed[slot] = relay.identity
            try:
                point = await self._establish(consensus, relay)
            except (*CIRCUIT_FAILURES, RemoteProtocolError) as e:
                del self._claimed[slot]
                self._avoid[relay.identity] = time.monotonic() + AVOID_FAILED_INTRO
                self.metrics.inc("intro_point_failures_total", stage="establish")
                self.events.emit("intro_failed", intro=relay.nickname, error=str(e), kind=_kind(e))
                await trio.sleep(retry)
                retry = min(2 * retry, RETRY_MAX)
                continue
            retry = RETRY_MIN
            self.intro_points[slot] = point
            self._intro_points_changed()
            try:
                await self._serve_introductions(point)
            finally:
                del self.intro_points[slot], self._claimed[slot]
                self._intro_points_changed()
                await point.circuit.aclose()
            if point.rotated:
                self.metrics.inc("intro_point_rotations_total")
                self.events.emit("intro_rotated", intro=point.relay.nickname,
                                 introductions=len(point.replays))
                continue
            self._avoid[point.relay.identity] = time.monotonic() + AVOID_FAILED_INTRO
            self.metrics.inc("intro_point_failures_total", stage="lost")
            self.events.emit("intro_lost", intro=point.relay.nickname, error=str(point.circuit.error))

    async def _establish(self, consensus: NetworkView, relay: Relay) -> IntroPoint:
        circuit = await self._build(consensus, relay, "intro")
        try:
            auth = Signer.from_seed(self.rng(32))
            enc_secret = self.rng(32)
            await circuit.send(build_establish_intro(auth, circuit.hop_kh()))
            await circuit.receive((core.IntroEstablished,))
        except BaseException:
            await circuit.aclose()
            raise
        self.events.emit("intro_established", intro=relay.nickname, identity=relay.identity,
                         circuit=circuit.circ_id, path=[r.nickname for r in circuit.path])
        return IntroPoint(relay, circuit, auth, enc_secret, public_key(enc_secret))

    def _intro_points_changed(self) -> None:
        self.metrics.set("intro_points_established", len(self.intro_points))
        self._intro_changed.set()

    async def _serve_introductions(self, point: IntroPoint) -> None:
        """Until the intro circuit dies: answer each INTRODUCE2 in a task of its own. The tasks run in the
        service's nursery: a rendezvous lasts as long as its client keeps it, and must not keep a dead intro
        point advertised until then."""
        while True:
            try:
                event = await point.circuit.receive((core.Introduce2,), timeout=math.inf)
            except trio.BrokenResourceError:  # CircuitClosed: the caller replaces the intro point
                return
            self._answers.start_soon(self._answer, point, event.message)

    # -- step 5: rendezvous --------------------------------------------------------------------------------
    def _refuse(self, kind: str, detail: str) -> None:
        self.metrics.inc("introduce2_total", result=kind)
        self.metrics.inc("errors_total", kind=kind)
        self.events.emit("error", kind=kind, detail=detail)

    async def _answer(self, point: IntroPoint, message) -> None:
        key = replay_key(message)
        if key in point.replays:
            self._refuse("introduce_replay", "INTRODUCE2 replayed (same encrypted section)")
            return
        consensus = self.directory.current
        period = TimePeriod.of(consensus)
        try:
            plaintext, client_x = self._open(point, message, period)
        except RemoteProtocolError as e:
            self._refuse(e.kind, f"INTRODUCE2 refused: {e}")
            return
        # Remembered only once the MAC verified: junk from a malicious intro point cannot crowd it out.
        point.replays.add(key)
        if len(point.replays) >= point.max_introductions and not point.rotated:
            point.rotated = True  # its slot sets up a fresh intro point: new keys, an empty cache
            await point.circuit.aclose()
        if self._cookies.seen(plaintext.rendezvous_cookie):
            self._refuse("introduce_replay", "INTRODUCE2 names a rendezvous cookie we already answered")
            return
        self.metrics.inc("introduce2_total", result="accepted")
        rend = relay_for(consensus, plaintext.link_specs, plaintext.onion_key)
        self.events.emit("introduce_received", intro=point.relay.nickname,
                         rendezvous=rend.nickname if rend else None)
        if rend is None:
            self.metrics.inc("rendezvous_total", result="bad_link_specifiers")
            self.events.emit("rendezvous_failed", reason="INTRODUCE2 names no address and identity")
            return
        try:
            circuit = await self._build(consensus, rend, "rendezvous")
        except CIRCUIT_FAILURES as e:
            self.metrics.inc("rendezvous_total", result="circuit_failed")
            self.events.emit("rendezvous_failed", rendezvous=rend.nickname, error=str(e), kind=_kind(e))
            return
        try:
            rendezvous1, keys = service_rendezvous1(
                plaintext.rendezvous_cookie, X=client_x, service_enc_secret=point.enc_secret,
                service_enc_key=point.enc_key, auth_key=point.auth.public_key, rng=self.rng)
            await circuit.send(rendezvous1)
            circuit.add_virtual_hop(HopCrypto.hs_virtual(keys, service_side=True))
        except trio.BrokenResourceError as e:
            self.metrics.inc("rendezvous_total", result="circuit_failed")
            self.events.emit("rendezvous_failed", rendezvous=rend.nickname, error=str(e))
            return
        self.metrics.inc("rendezvous_total", result="sent")
        self.rendezvous_sent += 1
        self._recent_paths = [*self._recent_paths, [r.nickname for r in circuit.path]][-RECENT_PATHS:]
        self.events.emit("rendezvous_sent", rendezvous=rend.nickname, circuit=circuit.circ_id,
                         path=[r.nickname for r in circuit.path])
        await self._serve_streams(circuit)

    def _open(self, point: IntroPoint, message, period: TimePeriod):
        """Decrypt with this period's subcredential, else a neighbouring period's (a client whose consensus
        is older or newer than ours used theirs). The first period's error is raised if none works."""
        errors: list[RemoteProtocolError] = []
        for num in (period.num, period.num + 1, period.num - 1):
            try:
                return decrypt_introduce2(message, service_enc_secret=point.enc_secret,
                                          service_enc_key=point.enc_key,
                                          subcredential=self._subcredential(num, period.length))
            except RemoteProtocolError as e:
                errors.append(e)
        raise errors[0]

    def _subcredential(self, num: int, length: int) -> bytes:
        """Of period `num`, cached: blinding costs milliseconds, and junk INTRODUCE2 cells would pay it three
        times each before their MAC fails."""
        subcredential = self._subcredentials.get((num, length))
        if subcredential is None:
            subcredential = hs_common.subcredential(self.identity.public_key, self._blinded_key(num, length))
            self._subcredentials[(num, length)] = subcredential
            while len(self._subcredentials) > 6:  # the three tried now, and the three before a rollover
                del self._subcredentials[next(iter(self._subcredentials))]
        return subcredential

    async def _serve_streams(self, circuit: OriginCircuitHandle) -> None:
        self._rendezvous_circuits.add(circuit)
        try:
            await self._serve_streams_of(circuit)
        finally:
            self._rendezvous_circuits.discard(circuit)

    async def _serve_streams_of(self, circuit: OriginCircuitHandle) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    stream, port = await circuit.accept_stream()
                except trio.BrokenResourceError:
                    return
                target = self.targets.get(port)
                if target is None:
                    self.metrics.inc("streams_total", port=str(port), result="no_such_port")
                    self.events.emit("stream_refused", port=port, reason="no service on this port")
                    await stream.aclose()
                    continue
                self.metrics.inc("streams_total", port=str(port), result="opened")
                self.events.emit("stream_opened", onion=self.onion, port=port, circuit=circuit.circ_id)
                nursery.start_soon(serve_target, target, stream, port, self.metrics, self.events)

    # -- step 2: descriptors -------------------------------------------------------------------------------
    async def keep_descriptors_published(self) -> None:
        """Publish whenever something changed; retry what failed with backoff."""
        consensus = await self.directory.wait_newer(None)
        retry = RETRY_MIN
        refresh_at = -math.inf
        while True:
            if not self.intro_points:
                await self._wait_for_change(consensus, math.inf)
                consensus = self.directory.current
                continue
            if self._intro_changed.is_set():
                self._intro_changed = trio.Event()
                if len(self.intro_points) < self.n_intro_points:  # more may be on their way: let them come
                    await self._wait_for_change(consensus, SETTLE_TIME)
                    if self._intro_changed.is_set():
                        continue
                refresh_at = -math.inf
            if time.monotonic() >= refresh_at:  # a new revision for every HSDir
                self._revision = max(self._revision + 1, int(clock.wall()))
                self.published = {}
                refresh_at = time.monotonic() + REFRESH_AFTER
            periods = self._periods(consensus)
            wanted = {p.num: self._hsdirs(consensus, p) for p in periods}
            # forget periods that are over and HSDirs the ring no longer makes responsible
            self.published = {num: self.published.get(num, set()) & {h.identity for h in dirs}
                              for num, dirs in wanted.items()}
            missing = {num: [h for h in dirs if h.identity not in self.published[num]]
                       for num, dirs in wanted.items()}
            ok = (not any(missing.values())
                  or await self._publish_until_intro_change(consensus, periods, missing))
            if ok is not None:  # None: the intro points changed meanwhile, and the loop publishes them now
                await self._wait_for_change(consensus, refresh_at - time.monotonic() if ok else retry)
                retry = RETRY_MIN if ok else min(2 * retry, RETRY_MAX)
            consensus = self.directory.current

    async def _publish_until_intro_change(self, consensus: NetworkView, periods: list[TimePeriod],
                                          missing: dict[int, list[Relay]]) -> bool | None:
        """_publish, given up (None) when the intro points change before every upload has ended: an upload to
        an HSDir that hangs (paused, unreachable: up to a minute of circuit and upload timeouts) must not hold
        back the revision that drops a dead intro point. Uploads that ended count as they ended."""
        return await self._until_intro_change(lambda: self._publish(consensus, periods, missing))

    async def _wait_for_change(self, consensus: NetworkView, timeout: float) -> None:
        """Until the intro points change, a newer consensus arrives, or `timeout` seconds pass."""
        with trio.move_on_after(timeout):
            await self._until_intro_change(lambda: self.directory.wait_newer(consensus))

    async def _until_intro_change(self, work: Callable[[], Awaitable[T]]) -> T | None:
        """What `work` returns, or None when the intro points change first (`work` is cancelled then)."""
        changed = self._intro_changed
        result: T | None = None
        async with trio.open_nursery() as nursery:
            async def run() -> None:
                nonlocal result
                result = await work()
                nursery.cancel_scope.cancel()

            async def watch() -> None:
                await changed.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(run)
            nursery.start_soon(watch)
        return result

    def _periods(self, consensus: NetworkView) -> list[TimePeriod]:
        first = TimePeriod.of(consensus)
        srv = consensus.shared_rand_current
        return [first] + [TimePeriod(first.num + i, first.length,
                                     srv or hs_common.disaster_srv(first.length, first.num + i))
                          for i in range(1, PERIOD_LOOKAHEAD)]

    def _blinded(self, period: TimePeriod) -> Signer:
        return hs_common.blinded_signer(self.identity, period.num, period.length)

    def _blinded_key(self, num: int, length: int) -> bytes:
        return hs_common.blinded_public_key(self.identity.public_key, num, length)

    def _hsdirs(self, consensus: NetworkView, period: TimePeriod) -> list[Relay]:
        return responsible_hsdirs(consensus, self._blinded_key(period.num, period.length), period,
                                  spread=hs_common.HSDIR_SPREAD_STORE)

    def _descriptor(self, period: TimePeriod) -> bytes:
        blinded = self._blinded(period)
        signing = self._signing.get(period.num)
        if signing is None:
            signing = self._signing[period.num] = Signer.from_seed(self.rng(32))
            for old in [n for n in self._signing if n < period.num - 1]:
                del self._signing[old]
        subcredential = hs_common.subcredential(self.identity.public_key, blinded.public_key)
        return build_descriptor(identity=self.identity, blinded=blinded, signing=signing,
                                subcredential=subcredential, revision_counter=self._revision,
                                intro_points=[ip.descriptor_entry() for ip in self.intro_points.values()],
                                now=int(clock.wall()), lifetime_minutes=DESCRIPTOR_LIFETIME_MINUTES,
                                rng=self.rng)

    async def _publish(self, consensus: NetworkView, periods: list[TimePeriod],
                       missing: dict[int, list[Relay]]) -> bool:
        """Upload to every HSDir in `missing` (one circuit per HSDir carries every period's descriptor).
        True when every upload was accepted."""
        documents = {p.num: self._descriptor(p) for p in periods if missing.get(p.num)}
        by_hsdir: dict[bytes, tuple[Relay, list[int]]] = {}
        for num, hsdirs in missing.items():
            for hsdir in hsdirs:
                by_hsdir.setdefault(hsdir.identity, (hsdir, []))[1].append(num)
        failures = 0

        async def upload(hsdir: Relay, nums: list[int]) -> None:
            nonlocal failures
            try:
                circuit = await self._build(consensus, hsdir, "hsdir")
            except CIRCUIT_FAILURES as e:
                failures += len(nums)
                self.metrics.inc("descriptor_uploads_total", result="circuit_failed")
                self.events.emit("descriptor_upload_failed", hsdir=hsdir.nickname, error=str(e),
                                 kind=_kind(e))
                return
            try:
                for num in nums:
                    try:
                        stream = await circuit.open_dir_stream()
                        async with stream:
                            status, _, body = await request(stream, "POST", PUBLISH_PATH, documents[num],
                                                            timeout=UPLOAD_TIMEOUT)
                    except STREAM_FAILURES as e:
                        status, body = 0, str(e).encode()
                    # ALREADY_STORED: an HSDir that left the ring and came back still holds this revision
                    if status in (200, ALREADY_STORED):
                        self.published.setdefault(num, set()).add(hsdir.identity)
                        self.metrics.inc("descriptor_uploads_total",
                                         result="accepted" if status == 200 else "already_stored")
                        self.events.emit("descriptor_published", hsdir=hsdir.nickname, period=num,
                                         revision=self._revision,
                                         blinded_key=self._blinded_key(num, periods[0].length),
                                         circuit=circuit.circ_id, path=[r.nickname for r in circuit.path])
                    else:
                        failures += 1
                        self.metrics.inc("descriptor_uploads_total", result="refused")
                        self.events.emit("descriptor_upload_failed", hsdir=hsdir.nickname, period=num,
                                         status=status, reason=body[:200].decode("ascii", "replace"))
            finally:
                await circuit.aclose()

        async with trio.open_nursery() as nursery:
            for hsdir, nums in by_hsdir.values():
                nursery.start_soon(upload, hsdir, nums)
        return failures == 0


def _kind(e: BaseException) -> str:
    return getattr(e, "kind", None) or type(e).__name__
