"""The directory authority: collects relay descriptors, tests reachability, votes, and with the other
authorities agrees on and signs the consensus that every node downloads.

HTTP on the dir port (config.address, config.dir_port), paths as in Tor's dir-spec where Tor has one:

    POST /tor/                                  a relay uploads its descriptor (200, or 400 with the reason)
    GET  /tor/status-vote/current/consensus     the latest published signed consensus (404 before the first)
    POST /tor/post/vote                         another authority pushes its vote
    GET  /tor/status-vote/next/authority        our vote for the current round (for peers that missed it)
    POST /tor/post/consensus-signature          another authority pushes its detached consensus signature
    GET  /tor/server/all                        every descriptor we hold (debugging)

The voting schedule, with V = config.timing.voting_interval seconds. Rounds start on wall-clock multiples of
V, so authorities agree on them without talking; the round starting at T makes the consensus with
valid-after T, fresh-until T + V, valid-until T + 3V (a client keeps a usable consensus through two missed
rounds). Within the round, as fractions of V:

    T + 0     test every known relay's reachability (CREATE2 with ntor over a fresh link), until T + 0.2 V
    T + 0.2   vote, push the vote to every other authority (until T + 0.45 V); accept theirs all the time
    T + 0.5   (the voting delay) fetch votes still missing, compute the consensus from the votes for T,
              sign it, push the signature (until T + 0.9 V); publish once floor(n/2)+1 signatures are valid

So the first consensus appears at most about 1.5 V after start, and a relay that uploaded before a round's
reachability tests is listed in that round's consensus. With fewer votes than a majority of the authorities
the round produces nothing (the previous consensus stays valid).

Flags (assign_flags), simple rules for a small testbed, where Tor's uptime and bandwidth statistics would
need hours of history to mean anything:

    Valid    every relay whose descriptor checked and is not older than the maximum age
    Running  passed a reachability test in this round or one of the RUNNING_GRACE_ROUNDS before it (one
             slow answer on a loaded machine must not drop a relay; Tor keeps a relay Running for 45 minutes)
    Stable   Running (no uptime history at seconds-scale intervals)
    Fast     Running and bandwidth >= 100 kB/s (Tor's AuthDirFastGuarantee)
    HSDir    Running (Tor also wants 96 h of uptime)
    Guard    Running, while at most SMALL_NETWORK relays run; beyond that Fast with bandwidth at least the
             median of the running relays
"""

from __future__ import annotations

import functools
import logging
import math
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nodes.config import AuthorityRef, ConfigError, NodeConfig
from nodes.core.cells import Cell, Command, Create2, Created2, Destroy, DestroyReason
from nodes.core.dirdocs import (
    ConsensusSignature,
    Flag,
    RelayDescriptor,
    RouterStatus,
    SignedConsensus,
    Vote,
    compute_consensus,
    make_vote,
    parse_consensus_signature,
    parse_relay_descriptor,
    parse_vote,
    relay_node_id,
    sign_consensus,
)
from nodes.core.errors import RemoteProtocolError, SignatureError, UnexpectedMessage
from nodes.core.ntor import ntor_client_finish, ntor_client_start
from nodes.net import tls
from nodes.net.dirclient import REQUEST_FAILURES, failure_kind
from nodes.net.events import EventLog
from nodes.net.httpio import request_tcp, serve_http_tcp
from nodes.net.link import Link, LinkClosed
from nodes.net.metrics import Metrics
from nodes.net.status import serve_status

log = logging.getLogger(__name__)

CONSENSUS_PATH = "/tor/status-vote/current/consensus"
VOTE_PATH = "/tor/status-vote/next/authority"
REACHABILITY_TIMEOUT = 5.0  # upper bound; the round's own deadline (0.2 V) usually cuts it shorter
MAX_RELAYS = 1000  # descriptors held at most: each costs a reachability test per round
FAST_MIN_BANDWIDTH = 100_000
SMALL_NETWORK = 50
# the round's schedule as fractions of the voting interval (module docstring)
REACHABILITY_END = 0.2
NEW_RELAY_QUEUE = 64  # uploads of new relays waiting for their first reachability test
RUNNING_GRACE_ROUNDS = 2  # a relay reached in one of the last rounds is still Running
VOTE_PUSH_END = 0.45
VOTING_DELAY = 0.5
VOTE_FETCH_END = 0.65
SIGNATURE_PUSH_END = 0.9

Reachable = Callable[[RelayDescriptor], Awaitable[bool]]


def load_identity(data_dir: str | Path) -> Ed25519PrivateKey:
    """The authority's Ed25519 identity from `<data_dir>/keys/identity.key` (a raw 32-byte seed). The
    orchestrator writes it (the other nodes' configs carry the public key); if it is missing we make one."""
    path = Path(data_dir, "keys", "identity.key")
    try:
        seed = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        seed = os.urandom(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(seed)
        log.warning("%s did not exist; made a new authority identity key, which no other node knows yet "
                    "(normally the orchestrator writes it)", path)
    if len(seed) != 32:
        raise ConfigError(f"{path}: expected a raw 32-byte Ed25519 seed, found {len(seed)} bytes")
    return Ed25519PrivateKey.from_private_bytes(seed)


def assign_flags(descriptors: Iterable[RelayDescriptor],
                 reachable: set[bytes]) -> dict[bytes, frozenset[Flag]]:
    """This authority's flags for each relay, by identity (rules in the module docstring)."""
    descriptors = list(descriptors)
    running = [d for d in descriptors if d.identity in reachable]
    small = len(running) <= SMALL_NETWORK
    median = statistics.median_low(d.bandwidth for d in running) if running else 0
    flags = {}
    for d in descriptors:
        f = {Flag.Valid}
        if d.identity in reachable:
            f |= {Flag.Running, Flag.Stable, Flag.HSDir}
            fast = d.bandwidth >= FAST_MIN_BANDWIDTH
            if fast:
                f.add(Flag.Fast)
            if small or (fast and d.bandwidth >= median):
                f.add(Flag.Guard)
        flags[d.identity] = frozenset(f)
    return flags


async def check_reachable(desc: RelayDescriptor, *, address_map: Mapping[str, str] | None = None) -> bool:
    """Does the relay answer at its OR port as the holder of its identity and onion key? Open a link, do the
    link handshake, send CREATE2 with an ntor onionskin for its node ID and onion key, and check CREATED2.
    `address_map` (NodeConfig.address_map) says where to dial an address we reach another way."""
    with trio.move_on_after(REACHABILITY_TIMEOUT):
        try:
            dial = (address_map or {}).get(desc.address, desc.address)
            stream = await trio.open_ssl_over_tcp_stream(dial, desc.or_port,
                                                         ssl_context=tls.client_context())
        except OSError:
            return False
        link = Link(stream, initiator=True)
        try:
            await link.handshake(now=int(time.time()), peer_address=dial)
            node_id = relay_node_id(desc.identity)
            state, onionskin = ntor_client_start(node_id, desc.ntor_onion_key, os.urandom)
            circ_id = 0x80000000 | int.from_bytes(os.urandom(4)) & 0x7FFFFFFF  # initiator sets the high bit
            await link.send_cells([Cell(circ_id, Command.CREATE2, Create2(2, onionskin).encode())])
            while True:
                cell = await link.receive_cell()
                if cell.circ_id != circ_id:
                    continue
                if cell.command != Command.CREATED2:
                    return False  # DESTROY or anything else: the relay did not take the handshake
                ntor_client_finish(state, Created2.decode(cell.payload).hdata)
                await link.send_cells([Cell(circ_id, Command.DESTROY, Destroy(DestroyReason.NONE).encode())])
                return True
        except (LinkClosed, RemoteProtocolError, trio.TooSlowError):
            return False
        finally:
            await link.aclose()
    return False


def _text(status: int, message: str) -> tuple[int, str, bytes]:
    return status, "text/plain", message.encode("ascii", "replace") + b"\n"


class Authority:
    """The state of one authority; `serve` runs it. Exposed to tests through `task_status.started`."""

    def __init__(self, config: NodeConfig, key: Ed25519PrivateKey, *, reachable: Reachable, metrics: Metrics,
                 events: EventLog) -> None:
        self.config = config
        self.key = key
        self.identity = key.public_key().public_bytes_raw()
        self.interval = config.timing.voting_interval
        self.reachable = reachable
        self.last_reached: dict[bytes, int] = {}  # relay identity -> the round it last passed the test
        self._new_relays_send, self._new_relays = trio.open_memory_channel(NEW_RELAY_QUEUE)
        self.metrics = metrics
        self.events = events
        refs = {bytes.fromhex(a.identity): a for a in config.authorities}
        if refs and self.identity not in refs:
            raise ConfigError(f"{config.name}: identity key {self.identity.hex()} is not one of the "
                              "configured authorities")
        self.authority_keys = frozenset(refs) or frozenset({self.identity})  # none configured: we are alone
        self.peers: tuple[AuthorityRef, ...] = tuple(a for k, a in refs.items() if k != self.identity)
        self.descriptor_max_age = max(3600, 10 * config.timing.descriptor_refresh)
        self.descriptors: dict[bytes, RelayDescriptor] = {}
        self.votes: dict[int, dict[bytes, Vote]] = {}  # valid-after -> authority -> vote
        self.my_vote: Vote | None = None
        self.collecting: SignedConsensus | None = None  # the latest one we computed, gathering signatures
        self.early_signatures: dict[bytes, ConsensusSignature] = {}  # for one we have not computed yet
        self.published: SignedConsensus | None = None
        self.round = 0
        self.dir_port = config.dir_port  # the bound ports, once serve() has them (config may say 0)
        self.control_port = config.control_port
        self._published_event = trio.Event()
        for name, kind, text in (
            ("descriptor_uploads_total", "counter", "relay descriptor uploads by result"),
            ("votes_received_total", "counter", "votes accepted from other authorities"),
            ("signatures_received_total", "counter", "consensus signatures accepted from other authorities"),
            ("reachability_checks_total", "counter", "relay reachability tests by result"),
            ("consensus_signatures", "gauge", "valid signatures on the published consensus"),
            ("consensus_relays", "gauge", "relays in the published consensus"),
            ("relays_known", "gauge", "relay descriptors held"),
            ("rounds_failed_total", "counter", "voting rounds without enough votes for a consensus"),
            ("errors_total", "counter", "remote and network failures by kind"),
        ):
            metrics.describe(name, kind, text)

    # -- clock -----------------------------------------------------------------------------------------------
    def _round_of(self, now: float) -> int:
        return math.floor(now / self.interval) * self.interval

    @staticmethod
    def _trio_time(wall: float) -> float:
        """The trio clock reading at wall-clock time `wall` (for move_on_at / sleep_until)."""
        return trio.current_time() + (wall - time.time())

    # -- status ----------------------------------------------------------------------------------------------
    def status(self) -> dict:
        c = self.published
        return {
            "role": "authority",
            "name": self.config.name,
            "identity": self.identity.hex(),
            "ready": c is not None,
            "conditions": {"consensus": c is not None},
            "relays_known": len(self.descriptors),
            "round": self.round,
            "consensus": None if c is None else {
                "valid_after": c.consensus.valid_after,
                "relays": len(c.consensus.routers),
                "signatures": len(c.signatures),
                "digest": c.consensus.digest().hex(),
            },
        }

    async def next_published(self) -> SignedConsensus:
        """Wait for the next consensus this authority publishes (or more signatures on the current one)."""
        await self._published_event.wait()
        assert self.published is not None
        return self.published

    def _remote_error(self, what: str, e: RemoteProtocolError) -> None:
        self.metrics.inc("errors_total", kind=e.kind)
        self.events.emit("rejected", what=what, kind=e.kind, reason=str(e))

    def http_error(self, kind: str) -> None:
        self.metrics.inc("errors_total", kind=kind)

    # -- HTTP ------------------------------------------------------------------------------------------------
    async def handle(self, method: str, target: str, body: bytes) -> tuple[int, str, bytes]:
        routes = {
            ("POST", "/tor/"): self._post_descriptor,
            ("GET", CONSENSUS_PATH): self._get_consensus,
            ("POST", "/tor/post/vote"): self._post_vote,
            ("GET", VOTE_PATH): self._get_vote,
            ("POST", "/tor/post/consensus-signature"): self._post_signature,
            ("GET", "/tor/server/all"): self._get_descriptors,
        }
        path = target.split("?", 1)[0]
        route = routes.get((method, path))
        if route is not None:
            return route(body)
        if any(p == path for _, p in routes):
            return _text(405, f"{method} not allowed on {path}")
        return _text(404, f"not found: {path}")

    def _post_descriptor(self, body: bytes) -> tuple[int, str, bytes]:
        try:
            desc = parse_relay_descriptor(body).check(int(time.time()), self.descriptor_max_age)
            if desc.identity not in self.descriptors and len(self.descriptors) >= MAX_RELAYS:
                raise UnexpectedMessage(f"already holding {MAX_RELAYS} relays")
        except RemoteProtocolError as e:
            self.metrics.inc("descriptor_uploads_total", result="rejected")
            self._remote_error("descriptor", e)
            return _text(400, f"descriptor rejected: {e}")
        self.metrics.inc("descriptor_uploads_total", result="accepted")
        old = self.descriptors.get(desc.identity)
        if old is None or desc.published >= old.published:  # an older upload does not replace a newer one
            self.descriptors[desc.identity] = desc
            self.metrics.set("relays_known", len(self.descriptors))
        if old is None:
            self.events.emit("relay_registered", nickname=desc.nickname, identity=desc.identity,
                             address=f"{desc.address}:{desc.or_port}")
        if old is None or (old.address, old.or_port, old.ntor_onion_key) != (desc.address, desc.or_port,
                                                                             desc.ntor_onion_key):
            try:  # test it now, as Tor's authorities do on upload, not only at the next round's start
                self._new_relays_send.send_nowait(desc)
            except trio.WouldBlock:
                pass  # a burst of uploads: the round's own tests cover the rest
        return _text(200, "descriptor accepted")

    def _get_consensus(self, _: bytes) -> tuple[int, str, bytes]:
        if self.published is None:
            return _text(404, "no consensus yet")
        return 200, "text/plain", self.published.encode()

    def _post_vote(self, body: bytes) -> tuple[int, str, bytes]:
        now = time.time()
        try:
            vote = parse_vote(body).check(self.authority_keys, int(now))
            self._store_vote(vote, now)
        except RemoteProtocolError as e:
            self._remote_error("vote", e)
            return _text(400, f"vote rejected: {e}")
        self.metrics.inc("votes_received_total")
        return _text(200, "vote accepted")

    def _store_vote(self, vote: Vote, now: float) -> None:
        current = self._round_of(now)
        if vote.valid_after not in (current, current + self.interval):  # the latter: a clock slightly ahead
            raise UnexpectedMessage(f"vote for round {vote.valid_after}, the current round is {current}")
        self.votes.setdefault(vote.valid_after, {})[vote.authority_id] = vote

    def _get_vote(self, _: bytes) -> tuple[int, str, bytes]:
        if self.my_vote is None:
            return _text(404, "no vote yet")
        return 200, "text/plain", self.my_vote.encode()

    def _post_signature(self, body: bytes) -> tuple[int, str, bytes]:
        try:
            claim = parse_consensus_signature(body)
            if claim.authority_id not in self.authority_keys:
                raise SignatureError(f"signature from unknown authority {claim.authority_id.hex()}")
            self._add_signature(claim)
        except RemoteProtocolError as e:
            self._remote_error("signature", e)
            return _text(400, f"signature rejected: {e}")
        return _text(200, "signature accepted")

    def _add_signature(self, claim: ConsensusSignature) -> None:
        """Add a claim to the consensus we are collecting for; if it is not for that one and we have not
        computed this round's consensus yet, keep it for when we do."""
        collecting = self.collecting
        if collecting is not None:
            try:
                claim.verify(collecting.consensus)
            except SignatureError:
                if collecting.consensus.valid_after >= self._round_of(time.time()):
                    raise
            else:
                self.collecting = collecting.add_signature(claim, self.authority_keys)
                self.metrics.inc("signatures_received_total")
                self._maybe_publish()
                return
        self.early_signatures[claim.authority_id] = claim

    def _get_descriptors(self, _: bytes) -> tuple[int, str, bytes]:
        return 200, "text/plain", b"".join(d.encode() for d in self.descriptors.values())

    async def test_new_relays(self) -> None:
        """Test every new (or moved) relay's reachability as soon as it uploads, so that the next round can
        vote it Running even when that round's own tests run short on a loaded machine."""
        async for desc in self._new_relays:
            if await self.reachable(desc):
                self.last_reached[desc.identity] = self._round_of(time.time())

    # -- voting rounds ---------------------------------------------------------------------------------------
    async def run_rounds(self) -> None:
        while True:
            start = self._round_of(time.time()) + self.interval
            await trio.sleep_until(self._trio_time(start))
            await self.run_round(start)

    async def run_round(self, start: int) -> None:
        v = self.interval
        self.round = start
        self.votes = {t: votes for t, votes in self.votes.items() if t >= start}
        now = int(time.time())
        oldest = now - self.descriptor_max_age
        self.descriptors = {k: d for k, d in self.descriptors.items() if d.published >= oldest}
        self.metrics.set("relays_known", len(self.descriptors))

        descriptors = list(self.descriptors.values())
        for identity in await self._test_reachability(descriptors, start + REACHABILITY_END * v):
            self.last_reached[identity] = start
        self.last_reached = {i: t for i, t in self.last_reached.items() if i in self.descriptors}
        reachable = {i for i, t in self.last_reached.items() if start - t <= RUNNING_GRACE_ROUNDS * v}
        flags = assign_flags(descriptors, reachable)
        vote = make_vote(self.key, published=int(time.time()), valid_after=start, fresh_until=start + v,
                         valid_until=start + 3 * v,
                         routers=[RouterStatus.from_descriptor(d, flags[d.identity]) for d in descriptors],
                         hs_period_minutes=self.config.timing.hs_period_minutes,
                         hs_rotation_offset_minutes=self.config.timing.hs_rotation_offset_minutes)
        self.my_vote = vote
        self.votes.setdefault(start, {})[self.identity] = vote
        await self._push("/tor/post/vote", vote.encode(), "vote", start + VOTE_PUSH_END * v)

        await trio.sleep_until(self._trio_time(start + VOTING_DELAY * v))
        await self._fetch_missing_votes(start, start + VOTE_FETCH_END * v)
        votes = list(self.votes.get(start, {}).values())
        if 2 * len(votes) <= len(self.authority_keys):
            self.metrics.inc("rounds_failed_total")
            self.events.emit("consensus_failed", round=start, votes=len(votes),
                             authorities=len(self.authority_keys))
            return
        consensus = compute_consensus(votes, len(self.authority_keys))
        mine = sign_consensus(consensus, self.key)
        self.collecting = SignedConsensus(consensus, (mine,))
        early, self.early_signatures = self.early_signatures, {}
        for claim in early.values():
            try:
                self.collecting = self.collecting.add_signature(claim, self.authority_keys)
            except SignatureError as e:
                self._remote_error("signature", e)
            else:
                self.metrics.inc("signatures_received_total")
        self._maybe_publish()
        await self._push("/tor/post/consensus-signature", mine.encode(), "signature",
                         start + SIGNATURE_PUSH_END * v)

    async def _test_reachability(self, descriptors: list[RelayDescriptor], until: float) -> set[bytes]:
        """Identities of the relays that passed; a test still running at `until` counts as a failure."""
        passed: set[bytes] = set()

        async def test(desc: RelayDescriptor) -> None:
            if await self.reachable(desc):
                passed.add(desc.identity)

        with trio.move_on_at(self._trio_time(until)):
            async with trio.open_nursery() as nursery:
                for d in descriptors:
                    nursery.start_soon(test, d)
        self.metrics.inc("reachability_checks_total", len(passed), result="reachable")
        self.metrics.inc("reachability_checks_total", len(descriptors) - len(passed), result="unreachable")
        return passed

    async def _push(self, path: str, body: bytes, what: str, until: float) -> None:
        async def push(peer: AuthorityRef) -> None:
            try:
                status, _, reply = await request_tcp(peer.address, peer.dir_port, "POST", path, body,
                                                     timeout=REACHABILITY_TIMEOUT)
            except REQUEST_FAILURES as e:
                self._push_failed(what, peer, failure_kind(e), str(e))
                return
            if status != 200:
                self._push_failed(what, peer, "status", f"HTTP {status}: {reply[:200]!r}")

        with trio.move_on_at(self._trio_time(until)):
            async with trio.open_nursery() as nursery:
                for peer in self.peers:
                    nursery.start_soon(push, peer)

    def _push_failed(self, what: str, peer: AuthorityRef, kind: str, reason: str) -> None:
        self.metrics.inc("errors_total", kind=kind)
        self.events.emit("push_failed", what=what, peer=peer.name, kind=kind, reason=reason)

    async def _fetch_missing_votes(self, start: int, until: float) -> None:
        async def fetch(peer: AuthorityRef) -> None:
            try:
                status, _, body = await request_tcp(peer.address, peer.dir_port, "GET", VOTE_PATH,
                                                    timeout=REACHABILITY_TIMEOUT)
                if status != 200:
                    return  # it has no vote yet: nothing to count, the push path is the normal one
                vote = parse_vote(body).check(self.authority_keys, int(time.time()))
            except RemoteProtocolError as e:
                self._remote_error("vote", e)
                return
            except REQUEST_FAILURES:
                return  # already counted when our push to it failed
            if vote.authority_id == bytes.fromhex(peer.identity) and vote.valid_after == start:
                self.votes.setdefault(start, {})[vote.authority_id] = vote
                self.metrics.inc("votes_received_total")

        have = self.votes.get(start, {})
        missing = [p for p in self.peers if bytes.fromhex(p.identity) not in have]
        with trio.move_on_at(self._trio_time(until)):
            async with trio.open_nursery() as nursery:
                for peer in missing:
                    nursery.start_soon(fetch, peer)

    def _maybe_publish(self) -> None:
        c = self.collecting
        if c is None or len(c.signatures) < len(self.authority_keys) // 2 + 1:
            return
        new = self.published is None or self.published.consensus != c.consensus
        self.published = c
        self.metrics.set("consensus_signatures", len(c.signatures))
        self.metrics.set("consensus_relays", len(c.consensus.routers))
        if new:
            self.events.emit("consensus_published", round=c.consensus.valid_after,
                             relays=len(c.consensus.routers), signatures=len(c.signatures),
                             digest=c.consensus.digest())
        self._published_event.set()
        self._published_event = trio.Event()


async def serve(config: NodeConfig, *, reachable: Reachable | None = None,
                task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Run an authority until cancelled. `task_status.started(authority)` once both ports listen.
    `reachable` replaces the CREATE2 reachability test (tests inject their own)."""
    events = EventLog(config.name, "authority")
    metrics = Metrics()
    reachable = reachable or functools.partial(check_reachable, address_map=config.address_map)
    authority = Authority(config, load_identity(config.data_dir), reachable=reachable,
                          metrics=metrics, events=events)
    async with trio.open_nursery() as nursery:
        authority.dir_port = await nursery.start(functools.partial(
            serve_http_tcp, config.bind_address, config.dir_port, authority.handle,
            on_error=authority.http_error))
        authority.control_port = await nursery.start(serve_status, config.bind_address, config.control_port,
                                                     authority.status, metrics)
        nursery.start_soon(authority.run_rounds)
        nursery.start_soon(authority.test_new_relays)
        events.emit("authority_started", identity=authority.identity, dir_port=authority.dir_port,
                    control_port=authority.control_port, authorities=len(authority.authority_keys),
                    voting_interval=authority.interval)
        task_status.started(authority)
