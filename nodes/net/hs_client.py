"""The client's side of the rendezvous: steps three, four and six of the seed, behind `connect(onion, port)`.

  3. the descriptor, from the HSDirs responsible for the onion in our consensus's time period (in random
     order, the next one when one fails), checked and decrypted; cached until it expires. A rendezvous point
     is set up with a fresh one-time cookie (ESTABLISH_RENDEZVOUS) on a 3-hop circuit.
  4. INTRODUCE1, encrypted to the service's intro point keys, through one intro point after another (in
     random order) until one answers INTRODUCE_ACK with success. As Tor's client does, an intro point that
     NACKed or timed out, or could not be reached five times, is left alone for two minutes; when no intro
     point of the descriptor is left, the descriptor is dropped, fetched anew and the introduction retried,
     once per connection (as Tor's client does).
  6. RENDEZVOUS2 arrives on the rendezvous circuit: finish hs-ntor, add the virtual hop, open the stream.

A petname (NAME.pet) is first looked up in the client's petname table (nodes/net/petnames.py).

A live rendezvous circuit is kept per (onion, SOCKS credentials) and reused by later connections with the
same credentials (new streams on it); concurrent connects with one key share one setup. Entries of circuits
that died are dropped as new connections come, so the tables hold only live circuits and setups under way.
Failures are the typed ConnectFailed errors (and StreamRefused) nodes.net.socks maps to SOCKS replies.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import trio

from nodes.core import circuit as core
from nodes.core import hs_common
from nodes.core.errors import AddressError, RemoteProtocolError
from nodes.core.hs_descriptor import HsDescriptor, parse_descriptor
from nodes.core.hs_intro import IntroducePlaintext, client_handle_rendezvous2, encrypt_introduce1
from nodes.core.netview import NetworkView, Relay
from nodes.core.onion_address import decode_onion_address, encode_onion_address
from nodes.core.petnames import is_petname
from nodes.core.relay import REND_COOKIE_LEN, EstablishRendezvous, IntroduceAckStatus
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
from .hsdir import FETCH_PREFIX
from .httpio import request
from .metrics import Metrics
from .petnames import PetnameTable
from .socks import (
    DescriptorInvalid,
    DescriptorNotFound,
    IntroFailed,
    IntroTimedOut,
    OnionAddressInvalid,
    RendezvousFailed,
)

Rng = Callable[[int], bytes]

FETCH_TIMEOUT = 15.0
INTRO_ACK_TIMEOUT = 10.0
RENDEZVOUS_TIMEOUT = 20.0  # INTRODUCE_ACK -> RENDEZVOUS2: the service builds a circuit meanwhile
CONSENSUS_WAIT = 30.0
RENDEZVOUS_ATTEMPTS = 3  # relays tried as rendezvous point for one connection
MAX_RENDEZVOUS_CIRCUITS = 256  # live rendezvous circuits kept for reuse (one per onion and credentials)
INTRO_FAILURE_MEMORY = 120.0  # Tor's HS_CACHE_CLIENT_INTRO_STATE_MAX_AGE: seconds a failure is remembered
MAX_INTRO_UNREACHABLE = 5  # Tor's MAX_INTRO_POINT_REACHABILITY_FAILURES; one NACK or timeout is enough

_random = secrets.SystemRandom()


@dataclass(slots=True)
class _Cached:
    descriptor: HsDescriptor
    period: int
    expires: float  # clock.wall()


class OnionClient:
    def __init__(self, *, circuits: CircuitManager, guards: GuardManager, directory: FollowingDirectoryClient,
                 metrics: Metrics, events: EventLog, rng: Rng = os.urandom,
                 petnames: PetnameTable | None = None) -> None:
        self.circuits = circuits
        self.guards = guards
        self.unreachable = UnreachableRelays()  # relays our circuits could not reach lately
        self.directory = directory
        self.metrics = metrics
        self.events = events
        self.rng = rng
        self.petnames = petnames if petnames is not None else PetnameTable(None, metrics, events)
        self.control_port = 0  # the role sets it once its status server listens
        self.descriptors: dict[bytes, _Cached] = {}  # by service identity key
        # live joined circuits by (identity key, SOCKS isolation key): other credentials, another circuit
        self.rendezvous: dict[tuple[bytes, bytes], OriginCircuitHandle] = {}
        self._locks: dict[tuple[bytes, bytes], trio.Lock] = {}
        # intro points that failed us, by auth key (random per intro point): (first failure, failures)
        self._intro_failures: dict[bytes, tuple[float, int]] = {}
        for name, kind, text in (
                ("descriptor_fetches_total", "counter", "descriptor fetches from HSDirs by result"),
                ("descriptor_refetches_total", "counter",
                 "descriptors dropped within a connection because no intro point of theirs took it"),
                ("introductions_total", "counter", "INTRODUCE1 attempts by intro point and result"),
                ("rendezvous_total", "counter", "rendezvous setups by result"),
                ("rendezvous_seconds", "summary", "connect() to a joined rendezvous circuit"),
                ("rendezvous_reused_total", "counter", "connections served by a live rendezvous circuit"),
                ("errors_total", "counter", "remote protocol errors by kind")):
            metrics.describe(name, kind, text)

    def status(self) -> dict:
        live = [(key, c) for key, c in self.rendezvous.items() if c.error is None]
        return {"descriptors_cached": len(self.descriptors), "rendezvous_circuits": len(self.rendezvous),
                "rendezvous_points": sorted({c.path[-1].nickname for _, c in live}),  # chaos targets
                # the live ones' hops, for `onionlab graph --live`
                "rendezvous": [{"onion": encode_onion_address(identity) + ".onion", "path": _hops(c)}
                               for (identity, _), c in live]}

    # -- the SOCKS entry point -------------------------------------------------------------------------------
    async def connect(self, host: str, port: int, isolation: bytes = b"") -> trio.abc.Stream:
        if is_petname(host):
            host = self.petnames.resolve(host)  # UnknownPetname when the table has no such name
        try:
            identity = decode_onion_address(host)
        except AddressError as e:
            self.metrics.inc("errors_total", kind="bad_onion_address")
            raise OnionAddressInvalid(f"{host}: {e}") from None
        key = (identity, isolation)  # isolation: the SOCKS credentials (nodes.net.socks), b"" for none
        self._forget_dead()
        lock = self._locks.setdefault(key, trio.Lock())
        async with lock:
            circuit = self.rendezvous.get(key)
            if circuit is not None and circuit.error is None:
                self.metrics.inc("rendezvous_reused_total")
            else:
                circuit = await self._rendezvous(identity, host)
                self.rendezvous.pop(key, None)  # a dead one's entry: the new circuit goes last (newest)
                self.rendezvous[key] = circuit
                while len(self.rendezvous) > MAX_RENDEZVOUS_CIRCUITS:  # the oldest goes (Tor: dirtiness)
                    oldest = next(iter(self.rendezvous))
                    if not self._locks[oldest].locked():
                        del self._locks[oldest]
                    await self.rendezvous.pop(oldest).aclose()
        # An END instead of CONNECTED (StreamRefused) is not a rendezvous failure: nodes.net.socks replies to
        # it by its END reason, as tor does.
        stream = await circuit.open_stream("", port)
        self.events.emit("stream_opened", onion=host, port=port, circuit=circuit.circ_id)
        return stream

    async def rendezvous_via(self, onion: str, rendezvous: str) -> OriginCircuitHandle:
        """A fresh joined rendezvous circuit to `onion` through the relay nicknamed `rendezvous`, neither
        cached nor reused: one more circuit the service must build (the guard-discovery attack's step,
        nodes/net/attack_client.py). The caller closes it."""
        try:
            identity = decode_onion_address(onion)
        except AddressError as e:
            raise OnionAddressInvalid(f"{onion}: {e}") from None
        consensus = await self._consensus()
        relay = next((r for r in usable(consensus) if r.nickname == rendezvous), None)
        if relay is None:
            raise RendezvousFailed(f"our consensus lists no usable relay {rendezvous}")
        return await self._rendezvous(identity, onion, only=relay)

    def newnym(self) -> dict:
        """What tor's SIGNAL NEWNYM does to its onion-service client state: forget every cached descriptor
        and intro-point failure, and reuse no rendezvous circuit for new connections. Rendezvous circuits
        without a stream are closed; those carrying streams are left to them, as tor leaves them."""
        forgotten = {"descriptors": len(self.descriptors), "rendezvous_circuits": len(self.rendezvous)}
        self.descriptors.clear()
        self._intro_failures.clear()
        circuits, self.rendezvous = self.rendezvous, {}
        for circuit in circuits.values():
            if not circuit.stream_count:
                circuit.close_nowait()
        self._forget_dead()
        self.events.emit("newnym", **forgotten)
        return forgotten

    def _forget_dead(self) -> None:
        """Drop rendezvous circuits that died, and the locks nobody holds or waits for with them."""
        self.rendezvous = {k: c for k, c in self.rendezvous.items() if c.error is None}
        self._locks = {k: lock for k, lock in self._locks.items()
                       if k in self.rendezvous or lock.locked() or lock.statistics().tasks_waiting}

    async def _consensus(self) -> NetworkView:
        with trio.fail_after(CONSENSUS_WAIT):
            return await self.directory.wait_newer(None)

    async def _build(self, consensus: NetworkView, last: Relay, purpose: str) -> OriginCircuitHandle:
        return await build_guarded(self.circuits, self.guards, consensus, last, purpose,
                                   unreachable=self.unreachable)

    async def _rendezvous(self, identity: bytes, onion: str, *,
                          only: Relay | None = None) -> OriginCircuitHandle:
        started = trio.current_time()
        consensus = await self._consensus()
        descriptor, subcredential = await self._descriptor(consensus, identity, onion)
        cookie = self.rng(REND_COOKIE_LEN)
        rend = await self._establish_rendezvous(consensus, cookie, onion, only=only)
        try:
            state = await self._introduce_or_refetch(consensus, identity, descriptor, subcredential, cookie,
                                                     rend, onion)
            try:
                with trio.fail_after(RENDEZVOUS_TIMEOUT):
                    event = await rend.receive((core.Rendezvous2,), timeout=RENDEZVOUS_TIMEOUT)
                keys = client_handle_rendezvous2(state, event.message)
            except (trio.TooSlowError, trio.BrokenResourceError) as e:
                self.metrics.inc("rendezvous_total", result="no_rendezvous2")
                raise RendezvousFailed(f"no RENDEZVOUS2 at {rend.path[-1].nickname}: {e}") from None
            except RemoteProtocolError as e:
                self.metrics.inc("errors_total", kind=e.kind)
                self.metrics.inc("rendezvous_total", result="bad_rendezvous2")
                raise RendezvousFailed(f"RENDEZVOUS2 did not verify: {e}") from None
            rend.add_virtual_hop(HopCrypto.hs_virtual(keys, service_side=False))
        except BaseException:
            await rend.aclose()
            raise
        seconds = trio.current_time() - started
        self.metrics.inc("rendezvous_total", result="joined")
        self.metrics.observe("rendezvous_seconds", seconds)
        self.events.emit("rendezvous_completed", onion=onion, rendezvous=rend.path[-1].nickname,
                         circuit=rend.circ_id, path=_hops(rend), seconds=round(seconds, 4))
        return rend

    # -- step 3: descriptor and rendezvous point -----------------------------------------------------------
    async def _descriptor(self, consensus: NetworkView, identity: bytes, onion: str,
                          newer_than: int = -1) -> tuple[HsDescriptor, bytes]:
        """The cached descriptor, else one fetched; either of a revision above `newer_than` if any HSDir has
        one (after a stale one's intro points all failed us)."""
        period = TimePeriod.of(consensus)
        blinded = hs_common.blinded_public_key(identity, period.num, period.length)
        subcredential = hs_common.subcredential(identity, blinded)
        cached = self.descriptors.get(identity)
        if (cached is not None and cached.period == period.num and clock.wall() < cached.expires
                and cached.descriptor.revision_counter > newer_than):
            return cached.descriptor, subcredential
        descriptor, expires = await self._fetch(consensus, period, blinded, subcredential, onion, newer_than)
        self.descriptors[identity] = _Cached(descriptor, period.num, expires)
        return descriptor, subcredential

    async def _fetch(self, consensus: NetworkView, period: TimePeriod, blinded: bytes, subcredential: bytes,
                     onion: str, newer_than: int) -> tuple[HsDescriptor, float]:
        """The descriptor from the first responsible HSDir that has a valid one of a revision above
        `newer_than`, and when it expires; when none has, the freshest seen. (An HSDir the service could not
        reach lately, paused or cut off, still serves the revision before.)"""
        hsdirs = responsible_hsdirs(consensus, blinded, period, spread=hs_common.HSDIR_SPREAD_FETCH)
        _random.shuffle(hsdirs)
        invalid: list[str] = []
        stale: tuple[HsDescriptor, float] | None = None
        target = FETCH_PREFIX + base64.b64encode(blinded).decode().rstrip("=")
        for hsdir in hsdirs:
            try:
                circuit = await self._build(consensus, hsdir, "hsdir")
            except CIRCUIT_FAILURES as e:
                self.metrics.inc("descriptor_fetches_total", result="circuit_failed")
                self.events.emit("descriptor_fetch_failed", hsdir=hsdir.nickname, error=str(e))
                continue
            try:
                stream = await circuit.open_dir_stream()
                async with stream:
                    status, _, body = await request(stream, "GET", target, timeout=FETCH_TIMEOUT)
            except STREAM_FAILURES as e:
                self.metrics.inc("descriptor_fetches_total", result="failed")
                self.events.emit("descriptor_fetch_failed", hsdir=hsdir.nickname, error=str(e))
                continue
            finally:
                await circuit.aclose()
            if status != 200:
                self.metrics.inc("descriptor_fetches_total", result=f"http_{status}")
                self.events.emit("descriptor_fetch_failed", hsdir=hsdir.nickname, status=status)
                continue
            now = int(clock.wall())
            try:
                checked = parse_descriptor(body).check(now, blinded)
                descriptor = checked.decrypt(subcredential)
            except RemoteProtocolError as e:
                self.metrics.inc("descriptor_fetches_total", result="invalid")
                self.metrics.inc("errors_total", kind=e.kind)
                self.events.emit("descriptor_invalid", hsdir=hsdir.nickname, kind=e.kind, error=str(e))
                invalid.append(f"{hsdir.nickname}: {e}")
                continue
            if not descriptor.intro_points:
                invalid.append(f"{hsdir.nickname}: the descriptor lists no introduction point")
                continue
            expires = min(now + 60 * descriptor.lifetime, checked.expires)
            if descriptor.revision_counter <= newer_than:
                self.metrics.inc("descriptor_fetches_total", result="stale")
                self.events.emit("descriptor_stale", onion=onion, hsdir=hsdir.nickname,
                                 revision=descriptor.revision_counter, wanted_above=newer_than)
                if stale is None or descriptor.revision_counter > stale[0].revision_counter:
                    stale = descriptor, expires
                continue
            self.metrics.inc("descriptor_fetches_total", result="ok")
            self.events.emit("descriptor_fetched", onion=onion, hsdir=hsdir.nickname,
                             revision=descriptor.revision_counter, intro_points=len(descriptor.intro_points),
                             circuit=circuit.circ_id, path=_hops(circuit))
            return descriptor, expires
        if stale is not None:
            return stale
        if invalid:
            raise DescriptorInvalid("; ".join(invalid))
        raise DescriptorNotFound(f"none of {len(hsdirs)} responsible HSDirs had a descriptor for {onion}")

    async def _establish_rendezvous(self, consensus: NetworkView, cookie: bytes, onion: str, *,
                                    only: Relay | None = None) -> OriginCircuitHandle:
        """A rendezvous point for `cookie`: up to RENDEZVOUS_ATTEMPTS relays (not our guards while others
        are left), the next when one cannot be reached or refuses (it may have gone since the consensus);
        `only` that relay when given."""
        guards = {g.identity for g in self.guards.primary()}
        candidates = [only] if only is not None else pick_relays_preferring(
            consensus, RENDEZVOUS_ATTEMPTS, (guards | self.unreachable.recent(), guards, ()))
        if not candidates:
            raise RendezvousFailed("the consensus lists no relay to be a rendezvous point")
        problems = []
        for relay in candidates:
            try:
                rend = await self._build(consensus, relay, "rendezvous")
            except CIRCUIT_FAILURES as e:
                problems.append(f"{relay.nickname}: {e}")
                self.metrics.inc("rendezvous_total", result="establish_failed")
                continue
            try:
                await rend.send(EstablishRendezvous(cookie))
                await rend.receive((core.RendezvousEstablished,), timeout=INTRO_ACK_TIMEOUT)
            except (trio.TooSlowError, trio.BrokenResourceError) as e:
                await rend.aclose()
                problems.append(f"{relay.nickname}: {e}")
                self.metrics.inc("rendezvous_total", result="establish_failed")
                continue
            self.events.emit("rendezvous_established", onion=onion, rendezvous=relay.nickname,
                             circuit=rend.circ_id, path=_hops(rend))
            return rend
        raise RendezvousFailed("no rendezvous point: " + "; ".join(problems))

    # -- step 4: introduction ------------------------------------------------------------------------------
    async def _introduce_or_refetch(self, consensus: NetworkView, identity: bytes, descriptor: HsDescriptor,
                                    subcredential: bytes, cookie: bytes, rend: OriginCircuitHandle,
                                    onion: str):
        """_introduce; when no intro point of the descriptor took the introduction, the descriptor is stale
        (the service has likely moved its intro points and published new ones): as Tor's client does when
        none is usable (hs_client_any_intro_points_usable), drop it, fetch it anew and retry within this
        connection, on the same rendezvous point. Once only: failures are remembered by intro point auth
        key, so a new descriptor's points are tried fresh while the same one's fail at once, and the
        connection then fails with the first error, the descriptor dropped so the next one fetches again."""
        try:
            return await self._introduce(consensus, descriptor, subcredential, cookie, rend, onion)
        except (IntroFailed, IntroTimedOut) as e:
            failure = e
        self._drop_descriptor(identity, descriptor)
        self.metrics.inc("descriptor_refetches_total")
        self.events.emit("descriptor_refetch", onion=onion, error=str(failure))
        # a concurrent connection's, if newer; else from the HSDirs, asking each until one has a newer one
        descriptor, _ = await self._descriptor(consensus, identity, onion, descriptor.revision_counter)
        try:
            if not self._usable_points(descriptor):  # the HSDirs still serve the intro points that failed
                raise failure
            return await self._introduce(consensus, descriptor, subcredential, cookie, rend, onion)
        except (IntroFailed, IntroTimedOut):
            self._drop_descriptor(identity, descriptor)
            raise

    def _drop_descriptor(self, identity: bytes, descriptor: HsDescriptor) -> None:
        """Uncache `descriptor`, not a fresher one a concurrent connection has fetched meanwhile."""
        cached = self.descriptors.get(identity)
        if cached is not None and cached.descriptor is descriptor:
            del self.descriptors[identity]

    def _usable_points(self, descriptor: HsDescriptor) -> list:
        """The descriptor's intro points that have not failed us lately (forgetting older failures)."""
        now = trio.current_time()
        self._intro_failures = {k: f for k, f in self._intro_failures.items()
                                if f[0] + INTRO_FAILURE_MEMORY > now}
        return [p for p in descriptor.intro_points if self._usable(p.auth_key)]

    def _usable(self, auth_key: bytes) -> bool:
        return self._intro_failures.get(auth_key, (0, 0))[1] < MAX_INTRO_UNREACHABLE

    async def _introduce(self, consensus: NetworkView, descriptor: HsDescriptor, subcredential: bytes,
                         cookie: bytes, rend: OriginCircuitHandle, onion: str):
        rp = rend.path[-1]
        plaintext = IntroducePlaintext(cookie, (), 1, rp.ntor_onion_key, hop_spec(rp).link_specs())
        points = self._usable_points(descriptor)
        if not points:
            raise IntroFailed(f"every intro point of the descriptor failed us in the last "
                              f"{INTRO_FAILURE_MEMORY:g} s")
        _random.shuffle(points)
        timed_out = 0
        problems: list[str] = []
        for point in points:
            relay = relay_for(consensus, point.link_specs, point.onion_key)
            if relay is None:
                problems.append("an intro point without an address and identity")
                continue
            if not self._usable(point.auth_key):  # a concurrent connection's introduction failed there
                problems.append(f"{relay.nickname}: failed another connection meanwhile")
                continue
            message, state = encrypt_introduce1(auth_key=point.auth_key, service_enc_key=point.enc_key,
                                                subcredential=subcredential, plaintext=plaintext,
                                                rng=self.rng)
            intro = relay.nickname
            try:
                circuit = await self._build(consensus, relay, "intro")
            except CIRCUIT_FAILURES as e:
                self._intro_failed(point.auth_key, intro, "circuit_failed")
                problems.append(f"{intro}: {e}")
                continue
            try:
                self.events.emit("introduce_sent", onion=onion, intro=intro, rendezvous=rp.nickname,
                                 circuit=circuit.circ_id, path=_hops(circuit))
                await circuit.send(message)
                ack = await circuit.receive((core.IntroduceAck,), timeout=INTRO_ACK_TIMEOUT)
            except trio.TooSlowError:
                timed_out += 1
                self._intro_failed(point.auth_key, intro, "timeout")
                problems.append(f"{intro}: no INTRODUCE_ACK in {INTRO_ACK_TIMEOUT:g} s")
                continue
            except trio.BrokenResourceError as e:
                self._intro_failed(point.auth_key, intro, "circuit_failed")
                problems.append(f"{intro}: {e}")
                continue
            finally:
                await circuit.aclose()
            status = ack.message.status
            if status != IntroduceAckStatus.SUCCESS:
                self._intro_failed(point.auth_key, intro, "nack")
                self.events.emit("introduce_nack", onion=onion, intro=intro, key=point.auth_key.hex(),
                                 status=status, circuit=circuit.circ_id, path=_hops(circuit))
                problems.append(f"{intro}: INTRODUCE_ACK status {status}")
                continue
            self.metrics.inc("introductions_total", intro=intro, result="acked")
            self.events.emit("introduce_acked", onion=onion, intro=relay.nickname)
            return state
        if timed_out and timed_out == len(problems):
            raise IntroTimedOut("; ".join(problems))
        raise IntroFailed("; ".join(problems) or "the descriptor lists no introduction point")

    def _intro_failed(self, auth_key: bytes, intro: str, result: str) -> None:
        """Count the failure, and remember it: a NACK or a timeout puts the intro point aside at once, a
        circuit failure after MAX_INTRO_UNREACHABLE of them (it may be our path's fault, not its)."""
        self.metrics.inc("introductions_total", intro=intro, result=result)
        since, failures = self._intro_failures.get(auth_key, (trio.current_time(), 0))
        failures = failures + 1 if result == "circuit_failed" else MAX_INTRO_UNREACHABLE
        self._intro_failures[auth_key] = (since, failures)


def _hops(circuit: OriginCircuitHandle) -> list[str]:
    """A circuit's relays by nickname, first hop first: what the events and /status name."""
    return [r.nickname for r in circuit.path]
