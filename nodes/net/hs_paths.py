"""Relays for onion-service circuits, from the consensus: paths, intro points, HSDirs, rendezvous points.

Every circuit of an onion service or a client has three hops: a guard, a middle relay, and the relay the
circuit is for (an intro point, an HSDir, a rendezvous point). The first hop is always one of the node's
primary guards (nodes.net.guards): the first that is not also the last hop, so that a circuit never uses one
relay twice (seed, step five: a service that stuck to no guards could be made to build circuits until an
attacker's relay is its first hop; `guards: 0` reproduces that with guards.NoGuards, docs/attack.md).
Middles are drawn at random, weighted by advertised bandwidth.

Time periods and the HSDir ring (rend-spec-v3 2.2) use the consensus both ends hold: the period of its
valid-after time, its `hs-period-minutes` and `hs-rotation-offset-minutes`, and its shared random value,
or the disaster SRV when it carries none (docs/differences.md). A service and a client that hold the same
consensus therefore agree on the blinded key and on the HSDirs.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import trio

from nodes.core import hs_common
from nodes.core.consensus import SignedConsensus
from nodes.core.errors import RemoteProtocolError
from nodes.core.netview import Flag, NetworkView, Relay
from nodes.core.relay import LinkSpec, LinkSpecEd25519, LinkSpecIPv4, LinkSpecIPv6, LinkSpecRsaId

from .circuits import CircuitBuildError, CircuitError, CircuitManager, OriginCircuitHandle
from .dirclient import DirectoryClient
from .guards import GuardManager, NoGuardAvailable
from .streams import StreamRefused

_random = secrets.SystemRandom()
BUILD_ATTEMPTS = 3  # paths tried for one circuit before its caller hears of the failure
UNREACHABLE_MEMORY = 30.0  # seconds a relay our circuits could not reach is left out of new paths


class PathError(Exception):
    """The consensus has too few usable relays for the circuit asked for."""


# What building a circuit, or a request on a stream of one, may fail with when a peer or the network (not
# our code) is at fault: the onion-service flows catch these, count them and try elsewhere.
CIRCUIT_FAILURES = (CircuitError, NoGuardAvailable, PathError, trio.TooSlowError)
STREAM_FAILURES = (StreamRefused, RemoteProtocolError, trio.TooSlowError, trio.BrokenResourceError,
                   trio.ClosedResourceError)


@dataclass(frozen=True, slots=True)
class TimePeriod:
    num: int
    length: int  # minutes
    srv: bytes  # the shared random value the HSDir ring uses in this period

    @classmethod
    def of(cls, consensus: NetworkView) -> TimePeriod:
        length = consensus.hs_period_minutes
        num = hs_common.time_period_num(consensus.valid_after, length, consensus.hs_rotation_offset_minutes)
        return cls(num, length, consensus.shared_rand_current or hs_common.disaster_srv(length, num))

    def end(self, consensus: NetworkView) -> int:
        """Unix time at which the next period starts."""
        return hs_common.time_period_start(self.num + 1, self.length, consensus.hs_rotation_offset_minutes)


def usable(consensus: NetworkView) -> list[Relay]:
    """The relays circuits may use: Running and Valid."""
    return [r for r in consensus.routers if Flag.Running in r.flags and Flag.Valid in r.flags]


def responsible_hsdirs(consensus: NetworkView, blinded_key: bytes, period: TimePeriod, *,
                       spread: int) -> list[Relay]:
    """The HSDirs for `blinded_key`: spread HSDIR_SPREAD_STORE to upload, HSDIR_SPREAD_FETCH to fetch."""
    ring = {r.identity: r for r in usable(consensus) if Flag.HSDir in r.flags}
    chosen = hs_common.responsible_hsdirs(list(ring), blinded_key, period.srv, period.num, period.length,
                                          spread=spread)
    return [ring[identity] for identity in chosen]


def find_relay(consensus: NetworkView, link_specs: Iterable[LinkSpec]) -> Relay | None:
    """The usable relay that link specifiers name (by Ed25519 identity, else by legacy node ID)."""
    specs = list(link_specs)
    ed = next((s.identity for s in specs if isinstance(s, LinkSpecEd25519)), None)
    rsa = next((s.identity for s in specs if isinstance(s, LinkSpecRsaId)), None)
    for relay in usable(consensus):
        if (ed is not None and relay.identity == ed) or (ed is None and relay.node_id == rsa):
            return relay
    return None


def relay_for(consensus: NetworkView, link_specs: Iterable[LinkSpec], onion_key: bytes) -> Relay | None:
    """The relay that a descriptor's intro point or an INTRODUCE2's rendezvous point names: from our consensus
    when it lists it with that onion key, else made from the link specifiers themselves (as Tor extends to
    them): the other end's consensus may be newer than ours. None when they name no address or identity."""
    specs = list(link_specs)
    listed = find_relay(consensus, specs)
    if listed is not None and listed.ntor_onion_key == onion_key:
        return listed
    ed = next((s.identity for s in specs if isinstance(s, LinkSpecEd25519)), None)
    rsa = next((s.identity for s in specs if isinstance(s, LinkSpecRsaId)), None)
    where = next((s for s in specs if isinstance(s, LinkSpecIPv4 | LinkSpecIPv6)), None)
    if rsa is None or where is None or not 0 < where.port < 65536:  # ntor needs the node ID; a link, an IP
        return None
    nickname = listed.nickname if listed else "unlisted"
    return Relay(nickname, rsa, ed, onion_key, where.address, where.port, 0, 0, frozenset(), "")


def _weighted(candidates: Sequence[Relay]) -> Relay:
    return _random.choices(candidates, weights=[max(r.bandwidth, 1) for r in candidates])[0]


def pick_relays(consensus: NetworkView, n: int, *, exclude: Iterable[bytes] = ()) -> list[Relay]:
    """Up to n distinct usable relays (bandwidth-weighted), none of whose identities is in `exclude`."""
    excluded = set(exclude)
    candidates = [r for r in usable(consensus) if r.identity not in excluded]
    picked: list[Relay] = []
    while candidates and len(picked) < n:
        relay = _weighted(candidates)
        candidates.remove(relay)
        picked.append(relay)
    return picked


def pick_relays_preferring(consensus: NetworkView, n: int, preferences: Iterable[Iterable[bytes]], *,
                           exclude: Iterable[bytes] = ()) -> list[Relay]:
    """pick_relays leaving out `exclude`, and the first of `preferences` (relays to leave out as well, in the
    order they are given up) that leaves any relay to pick; [] when none does."""
    excluded = set(exclude)
    for avoided in preferences:
        picked = pick_relays(consensus, n, exclude=excluded | set(avoided))
        if picked:
            return picked
    return []


class UnreachableRelays:
    """Relays that a circuit of ours could not reach lately. A stopped or cut-off relay stays listed until a
    consensus or two later, and an extend to it costs a whole step timeout (on a Docker network a SYN to a
    stopped container gets no answer at all): new paths leave such relays out while others are left."""

    def __init__(self, memory: float = UNREACHABLE_MEMORY) -> None:
        self.memory = memory
        self._until: dict[bytes, float] = {}

    def mark(self, identity: bytes) -> None:
        self._until[identity] = trio.current_time() + self.memory

    def recent(self) -> set[bytes]:
        now = trio.current_time()
        self._until = {k: until for k, until in self._until.items() if until > now}
        return set(self._until)


def three_hop_path(consensus: NetworkView, guards: Sequence[Relay], last: Relay, *,
                   avoid: Iterable[bytes] = ()) -> list[Relay]:
    """[guard, middle, last]: the first of `guards` (primary guards, in order) that is not `last`, and a
    random middle relay that is neither, and not in `avoid` while another is left. NoGuardAvailable /
    PathError when there is no such relay."""
    first = next((g for g in guards if g.identity != last.identity), None)
    if first is None:
        raise NoGuardAvailable(f"no primary guard other than {last.nickname}, the circuit's last hop")
    middle = pick_relays_preferring(consensus, 1, (avoid, ()), exclude=(first.identity, last.identity))
    if not middle:
        raise PathError(f"no relay left for the middle of a circuit from {first.nickname} to {last.nickname}")
    return [first, middle[0], last]


async def build_guarded(circuits: CircuitManager, guards: GuardManager, consensus: NetworkView,
                        last: Relay, purpose: str, *, attempts: int = BUILD_ATTEMPTS,
                        unreachable: UnreachableRelays | None = None) -> OriginCircuitHandle:
    """A 3-hop circuit to `last` whose first hop is one of our guards (three_hop_path). A guard that fails
    is marked so the next one takes its place, and a failed middle is replaced by another, up to `attempts`
    paths; when `last` itself cannot be reached the error is raised at once (the caller picks another).
    A middle or last hop that could not be reached goes into `unreachable`, whose relays later paths leave
    out. `purpose` (hsdir, intro, rendezvous) labels the circuit in the node's /status."""
    for attempt in range(attempts):
        avoid = unreachable.recent() if unreachable is not None else ()
        path = three_hop_path(consensus, guards.ordered(), last, avoid=avoid)
        try:
            circuit = await circuits.build(path)
        except CircuitBuildError as e:
            if e.hop == 0:
                guards.mark_failed(path[0].identity)
            elif unreachable is not None and 0 < e.hop < len(path):
                unreachable.mark(path[e.hop].identity)
            if e.hop == len(path) - 1 or attempt == attempts - 1:
                raise
            continue
        guards.mark_succeeded(path[0].identity)
        circuit.purpose = purpose
        return circuit
    raise AssertionError("unreachable: the last attempt returns or raises")


class FollowingDirectoryClient(DirectoryClient):
    """A DirectoryClient that also tells waiters about every newer consensus it installs (DirectoryClient
    itself only signals the first one); onion services republish on each. `on_consensus` runs before any
    waiter wakes (guards resample there, so no circuit is planned from a consensus they have not seen)."""

    def __init__(self, *args, on_consensus: Callable[[NetworkView], None] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._newer = trio.lowlevel.ParkingLot()
        self._on_consensus = on_consensus

    def _install(self, signed: SignedConsensus, raw: bytes) -> None:
        before = self.current
        super()._install(signed, raw)  # wakes no task before our next checkpoint: on_consensus runs first
        if self.current is not before:  # not refused
            if self._on_consensus is not None:
                self._on_consensus(self.current)
            self._newer.unpark_all()

    async def wait_newer(self, than: NetworkView | None) -> NetworkView:
        """The current consensus, once it is not `than` (at once if it already is not, and is not None)."""
        while self.current is None or self.current is than:
            await self._newer.park()
        return self.current
