"""The directory authority: collects relay descriptors, tests reachability, votes, and with the other
authorities agrees on and signs the consensus that every node downloads. Tor's documents throughout
(dir-spec), so a stock tor bootstraps from us.

HTTP on the dir port (config.address, config.dir_port) and on BEGIN_DIR streams through the OR port (C tor's
clients only ever use those: dirclient_must_use_begindir), at the paths C tor uses. A target ending in ".z",
or Accept-Encoding: deflate, gets the answer deflated (nodes/net/httpio.py).

    POST /tor/                                        a relay uploads its server descriptor (200; 400 + why)
    GET  /tor/status-vote/current/consensus-microdesc[/F1+F2...]   the published microdesc consensus
    GET  /tor/micro/d/D1-D2-...                       microdescriptors by digest (unknown ones are skipped)
    GET  /tor/keys/all | /tor/keys/authority | /tor/keys/fp/F1+F2... | /tor/keys/fp-sk/F-S+...
                                                      authority key certificates (ours and our peers')
    GET  /tor/server/all | /tor/server/authority | /tor/server/fp/F1+F2... | /tor/server/d/D1+D2...
                                                      server descriptors
    POST /tor/post/vote                               another authority pushes its vote (ours, not dir-spec's)
    GET  /tor/status-vote/next/authority              our vote for this round (for peers that missed it)
    POST /tor/post/consensus-signature                another authority pushes its detached signature

Keys (made by `nodes init`, kept in the data dir): the Ed25519 and RSA identities and ntor key its OR port
proves and uses (an authority is a relay to the links it takes), and its v3 identity and signing keys; its
key certificate is made at start, valid for CERT_LIFETIME.

The voting schedule, with V = timing.voting_interval, D_v = timing.vote_delay, D_d = timing.dist_delay.
Rounds start on wall-clock multiples of V, so authorities agree on them without talking; the round starting
at T makes the consensus with valid-after T, fresh-until T + V, valid-until T + 3V (a client keeps a usable
consensus through two missed rounds):

    T + 0.2 V          vote (from the reachability tests so far, below) and push the vote to every other
                       authority; accept theirs all the time
    T + 0.2 V + D_v    fetch votes still missing, compute the consensus from the votes for T, sign it and
                       push the signature for D_d; publish once floor(n/2)+1 signatures are valid

(the topology keeps 0.2 V + D_v + D_d within V). So the first consensus appears at most about V + 0.2 V + D_v
after start: 14 s with the defaults.

Reachability (CREATE2 with ntor over a fresh link, which proves the relay's identity in CERTS) is tested all
the time, not in a window of the round: every relay held once per V, the tests spread evenly over the
interval in a fresh random order each cycle (C tor's authorities likewise test a slice of their relays every
10 s), and every new or moved relay as soon as it uploads. Testing all relays at once at the round's start
was a burst of TLS handshakes that, at a few hundred relays on a small machine, outlasted the round and
starved the votes (issue 10). A relay is Running when it passed a test within the last
(1 + RUNNING_GRACE_ROUNDS) V: one failed or slow test does not drop it.

With fewer votes than a majority of the authorities the round produces nothing (the previous consensus stays
valid). An authority does not sign a consensus that lists no relay when a vote it used lists one: after a
restart it knows no relay yet, and its signature must not help publish an empty network (the relays it
missed upload again within descriptor_refresh, and it tests them on upload).

Flags (assign_flags), simple rules for a small testbed, where Tor's uptime and bandwidth statistics would
need hours of history to mean anything:

    Valid    every relay whose descriptor checked and is not older than the maximum age
    Running  passed a reachability test within the last (1 + RUNNING_GRACE_ROUNDS) voting intervals (one
             slow answer on a loaded machine must not drop a relay; Tor keeps a relay Running for 45 minutes)
    Stable   Running (no uptime history at seconds-scale intervals)
    Fast     Running and bandwidth at least C tor's threshold under TestingTorNetwork (fast_threshold: the
             12.5th percentile of the running relays' bandwidths, at most 100 kB/s, AuthDirFastGuarantee)
    HSDir    Running and its descriptor says hidden-service-dir and tunnelled-dir-server (C tor's
             voteflags.c: every C tor relay says hidden-service-dir, even one with DirCache 0 that refuses
             BEGIN_DIR; Tor also wants 96 h of uptime)
    V2Dir    Running and its descriptor says tunnelled-dir-server: a directory cache (C tor's clients take
             their guards only among these, and fetch the directory from them)
    Guard    Running, while at most SMALL_NETWORK relays run; beyond that Fast with bandwidth at least the
             median of the running relays
"""

from __future__ import annotations

import functools
import logging
import math
import os
import random
import ssl
import statistics
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nodes.config import AuthorityRef, ConfigError, NodeConfig
from nodes.core.authcert import AuthorityCert, make_authority_cert
from nodes.core.cells import Cell, Command, Create2, Created2, Destroy, DestroyReason
from nodes.core.consensus import DirectorySignature, SignedConsensus, parse_detached_signature, sign_consensus
from nodes.core.errors import RemoteProtocolError, SignatureError, UnexpectedMessage
from nodes.core.microdesc import Microdescriptor, microdescriptor_for
from nodes.core.netview import Flag
from nodes.core.ntor import ntor_client_finish, ntor_client_start
from nodes.core.server_descriptor import ServerDescriptor, parse_server_descriptor, split_upload
from nodes.core.vote import DirAuthority, Vote, VoteRouter, compute_consensus, make_vote, parse_vote
from nodes.net import clock, dircache, heap, tls
from nodes.net.addresses import resolve_ip
from nodes.net.channels import ChannelManager
from nodes.net.control import node_control
from nodes.net.dirclient import REQUEST_FAILURES, failure_kind
from nodes.net.events import EventLog
from nodes.net.httpio import HttpError, request_tcp, serve_http, serve_http_tcp
from nodes.net.link import Link, LinkClosed
from nodes.net.metrics import Metrics
from nodes.net.node_keys import (
    AuthorityKeys,
    NodeKeys,
    link_identity,
    load_or_create_authority_keys,
    load_or_create_node_keys,
)
from nodes.net.relay_engine import RelayEngine
from nodes.net.status import serve_status

log = logging.getLogger(__name__)

VOTE_PATH = "/tor/status-vote/next/authority"
REACHABILITY_TIMEOUT = 5.0  # upper bound; the round's own deadline usually cuts it shorter
MAX_RELAYS = 1000  # descriptors held at most: each costs a reachability test per round
FAST_GUARANTEE = 100_000  # C tor's AuthDirFastGuarantee: at least this much is always Fast
RELAY_MIN_BANDWIDTH = 75 * 1024  # C tor's RELAY_REQUIRED_MIN_BANDWIDTH
SMALL_NETWORK = 50
CERT_LIFETIME = 365 * 86400  # the key certificate made at start (tor-gencert's default is 12 months)
NEW_RELAY_QUEUE = 64  # uploads of new relays waiting for their first reachability test
MAX_FETCH = 96  # descriptors asked of one peer at once (C tor asks for at most 96 per request)
EARLY_CLAIMS = 4  # unchecked signature claims kept per authority until our consensus is computed
RUNNING_GRACE_ROUNDS = 2  # a relay reached in one of the last rounds is still Running
MIN_TEST_TIME = 0.2  # of V: from the round's start to the vote (module docstring)
PUSH_MARGIN = 0.1  # of a delay: pushes stop this much before the next step, so late answers do not stall it

Reachable = Callable[[ServerDescriptor], Awaitable[bool]]
_random = random.SystemRandom()


def assign_flags(descriptors: Iterable[ServerDescriptor],
                 reachable: set[bytes]) -> dict[bytes, frozenset[str]]:
    """This authority's flags for each relay, by node ID (rules in the module docstring)."""
    descriptors = list(descriptors)
    running = [d for d in descriptors if d.node_id in reachable]
    small = len(running) <= SMALL_NETWORK
    median = statistics.median_low(d.bandwidth_observed for d in running) if running else 0
    fast_min = fast_threshold([d.bandwidth_observed for d in running])
    flags = {}
    for d in descriptors:
        f = {Flag.Valid}
        if d.node_id in reachable:
            f |= {Flag.Running, Flag.Stable}
            if d.tunnelled_dir_server:  # it answers BEGIN_DIR as a directory cache (C tor's guards must)
                f.add(Flag.V2Dir)
            if d.hidden_service_dir and d.tunnelled_dir_server:  # descriptors travel over BEGIN_DIR
                f.add(Flag.HSDir)
            fast = d.bandwidth_observed >= fast_min
            if fast:
                f.add(Flag.Fast)
            if small or (fast and d.bandwidth_observed >= median):
                f.add(Flag.Guard)
        flags[d.node_id] = frozenset(str(x) for x in f)
    return flags


def fast_threshold(bandwidths: list[int]) -> int:
    """The bandwidth a running relay needs for Fast, as C tor's authorities compute it (voteflags.c) with
    TestingMinFastFlagThreshold 0 (TestingTorNetwork): the 12.5th percentile (the 25th if that is under
    half of RELAY_MIN_BANDWIDTH), at most FAST_GUARANTEE. A C tor relay starts with the bandwidth its
    self-test observed (tens of kB/s on loopback), so a fixed 100 kB/s floor left it without Fast, and C tor
    builds its onion-service circuits (they need capacity) only through Fast relays."""
    if not bandwidths:
        return FAST_GUARANTEE
    ranked = sorted(bandwidths)
    threshold = ranked[len(ranked) // 8]
    if threshold < RELAY_MIN_BANDWIDTH // 2:
        threshold = ranked[len(ranked) // 4]
    return min(threshold, FAST_GUARANTEE)


async def check_reachable(desc: ServerDescriptor, *, address_map: Mapping[str, str] | None = None,
                          dial_names: Mapping[str, str] | None = None,
                          source_address: str | None = None) -> bool:
    """Does the relay answer at its OR port as the holder of its identity and onion key? Open a link (its
    CERTS must prove the descriptor's node ID), send CREATE2 with an ntor onionskin for its node ID and onion
    key, and check CREATED2. `address_map` (NodeConfig.address_map) says where to dial an address we reach
    another way, `dial_names` (NodeConfig.dial_names) which name to resolve for it instead, by the
    descriptor's nickname (Swarm); `source_address` (NodeConfig.source_address) where the test comes from."""
    with trio.move_on_after(REACHABILITY_TIMEOUT):
        try:
            dial = (address_map or {}).get(desc.address, desc.address)
            if dial_names and desc.nickname in dial_names:
                dial = await resolve_ip(dial_names[desc.nickname])
            stream = await tls.open_tls_stream(dial, desc.or_port, _reachability_context(),
                                               local_address=source_address)
        except (OSError, trio.BrokenResourceError):
            return False
        link = Link(stream, initiator=True)
        try:
            await link.handshake(now=int(clock.wall()), peer_address=dial,
                                 peer_tls_cert_der=stream.peer_cert_der(), expected_node_id=desc.node_id)
            state, onionskin = ntor_client_start(desc.node_id, desc.ntor_onion_key, os.urandom)
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


@functools.cache
def _reachability_context() -> ssl.SSLContext:
    """One TLS client context for every reachability test (each still a full handshake: a client context
    resumes no session unless given one). A context per test made and freed an OpenSSL SSL_CTX a few times a
    second at 300 relays, for nothing."""
    return tls.client_context()


def split_descriptors(data: bytes) -> list[bytes]:
    """A /tor/server/ answer, concatenated descriptors, as one document each (each begins "router ")."""
    starts = [0] if data.startswith(b"router ") else []
    at = data.find(b"\nrouter ")
    while at != -1:
        starts.append(at + 1)
        at = data.find(b"\nrouter ", at + 1)
    return [data[a:b] for a, b in zip(starts, starts[1:] + [len(data)], strict=False)]


def _text(status: int, message: str) -> tuple[int, str, bytes]:
    return status, "text/plain", message.encode("ascii", "replace") + b"\n"


def _version(platform: str) -> str | None:
    """The consensus "v" line from a descriptor's platform: its first two words ("Tor 0.4.9.11")."""
    words = platform.split()
    return " ".join(words[:2]) if len(words) >= 2 else None


def _dir_authority(ref: AuthorityRef, ip: str) -> DirAuthority:
    return DirAuthority("".join(c for c in ref.name if c.isalnum())[:19] or "authority",
                        bytes.fromhex(ref.v3ident), ip, ref.dir_port, ref.or_port)


class Authority:
    """The state of one authority; `serve` runs it. Exposed to tests through `task_status.started`."""

    def __init__(self, config: NodeConfig, node_keys: NodeKeys, keys: AuthorityKeys, *, reachable: Reachable,
                 metrics: Metrics, events: EventLog) -> None:
        self.config = config
        self.node_keys = node_keys
        self.keys = keys
        now = int(clock.wall())
        self.cert: AuthorityCert = make_authority_cert(keys.v3_identity, keys.signing, now - 60,
                                                       now + CERT_LIFETIME)
        self.v3ident = self.cert.v3ident
        self.timing = config.timing
        self.interval = config.timing.voting_interval
        self.reachable = reachable
        self.last_reached: dict[bytes, float] = {}  # relay node ID -> when it last passed the test (wall)
        self._new_relays_send, self._new_relays = trio.open_memory_channel(NEW_RELAY_QUEUE)
        self.metrics = metrics
        self.events = events
        refs = {bytes.fromhex(a.v3ident): a for a in config.authorities}
        if refs and self.v3ident not in refs:
            raise ConfigError(f"{config.name}: v3 identity {self.v3ident.hex().upper()} is not one of the "
                              "configured authorities")
        self.configured = frozenset(refs) or frozenset({self.v3ident})  # none configured: we are alone
        self.peers: tuple[AuthorityRef, ...] = tuple(a for k, a in refs.items() if k != self.v3ident)
        self.certs: dict[bytes, AuthorityCert] = {self.v3ident: self.cert}  # ours; peers' from their votes
        self.descriptor_max_age = max(3600, 10 * config.timing.descriptor_refresh)
        self.descriptors: dict[bytes, ServerDescriptor] = {}  # node ID -> newest descriptor
        self.microdescs: dict[bytes, Microdescriptor] = {}  # digest -> microdescriptor of a held descriptor
        # valid-after -> v3ident -> vote, until the consensus of that round is computed: then only what the
        # round still needs is kept (the relays each vote lists), not 5 parsed votes of every relay
        self.votes: dict[int, dict[bytes, Vote]] = {}
        self.my_vote: bytes | None = None  # our latest vote as sent (GET VOTE_PATH)
        self.collecting: SignedConsensus | None = None  # the latest one we computed, gathering signatures
        # claims for a consensus we have not computed yet, unchecked: every one is kept (a few per authority),
        # so that a forged claim in a peer's name cannot push its real one out before we can check them
        self.early_signatures: dict[bytes, deque[DirectorySignature]] = {}
        self.published: SignedConsensus | None = None
        self.round = 0
        self.dir_port = config.dir_port  # the bound ports, once serve() has them (config may say 0)
        self.or_port = config.or_port
        self.control_port = config.control_port
        self._published_event = trio.Event()
        for name, kind, text in (
            ("descriptor_uploads_total", "counter", "relay descriptor uploads by result"),
            ("extra_info_ignored_total", "counter", "extra-info documents C tor uploaded with a descriptor"),
            ("votes_received_total", "counter", "votes accepted from other authorities"),
            ("signatures_received_total", "counter", "consensus signatures accepted from other authorities"),
            ("reachability_checks_total", "counter", "relay reachability tests by result"),
            ("consensus_signatures", "gauge", "valid signatures on the published consensus"),
            ("consensus_relays", "gauge", "relays in the published consensus"),
            ("consensus_withheld_total", "counter", "consensuses we did not sign because they list no relay"),
            ("relays_known", "gauge", "relay descriptors held"),
            ("rounds_failed_total", "counter", "voting rounds without enough votes for a consensus"),
            ("directory_requests_total", "counter", "directory documents served, by kind"),
            ("errors_total", "counter", "remote and network failures by kind"),
        ):
            metrics.describe(name, kind, text)

    # -- clock -----------------------------------------------------------------------------------------------
    def _round_of(self, now: float) -> int:
        return math.floor(now / self.interval) * self.interval

    @staticmethod
    def _trio_time(wall: float) -> float:
        """The trio clock reading at wall-clock time `wall` (for move_on_at / sleep_until)."""
        return trio.current_time() + (wall - clock.wall())

    # -- status ----------------------------------------------------------------------------------------------
    def status(self) -> dict:
        c = self.published
        return {
            "role": "authority",
            "name": self.config.name,
            "v3ident": self.v3ident.hex().upper(),
            "fingerprint": self.node_keys.fingerprint,
            "or_port": self.or_port,
            "dir_port": self.dir_port,
            "voting_interval": self.interval,
            "ready": c is not None,
            "conditions": {"consensus": c is not None},
            "relays_known": len(self.descriptors),
            "round": self.round,
            "consensus": None if c is None else {
                "valid_after": c.consensus.valid_after,
                "relays": len(c.consensus.routers),
                "signatures": len(c.signatures),
                "digest": c.digest.hex(),
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
        path = target.split("?", 1)[0]
        posts = {"/tor/": self._post_descriptor, "/tor/post/vote": self._post_vote,
                 "/tor/post/consensus-signature": self._post_signature}
        if path in posts:
            return posts[path](body) if method == "POST" else _text(405, f"{method} not allowed on {path}")
        if method not in ("GET", "HEAD"):
            return _text(405, f"{method} not allowed on {path}")
        if path == VOTE_PATH:
            return self._get_vote()
        found = dircache.answer(path, self) or self._get_descriptors(path)
        if found[0] == 200:
            self.metrics.inc("directory_requests_total", kind=path.split("/")[2])
        return found

    # -- what dircache serves (dircache.Documents) -----------------------------------------------------------
    def consensus_document(self) -> bytes | None:
        return None if self.published is None else self.published.encode()

    def microdescriptors(self) -> Mapping[bytes, Microdescriptor]:
        return self.microdescs

    def authority_certs(self) -> Iterable[AuthorityCert]:
        return self.certs.values()

    def own_cert(self) -> AuthorityCert:
        return self.cert

    def _post_descriptor(self, body: bytes) -> tuple[int, str, bytes]:
        try:
            document, extra_infos = split_upload(body)
            if extra_infos:
                self.metrics.inc("extra_info_ignored_total", extra_infos)
            desc = parse_server_descriptor(document).check(int(clock.wall()), max_age=self.descriptor_max_age,
                                                       max_skew=self.interval * 3 + 60)
            if desc.node_id not in self.descriptors and len(self.descriptors) >= MAX_RELAYS:
                raise UnexpectedMessage(f"already holding {MAX_RELAYS} relays")
            microdesc = microdescriptor_for(desc)
        except RemoteProtocolError as e:
            self.metrics.inc("descriptor_uploads_total", result="rejected")
            self._remote_error("descriptor", e)
            return _text(400, f"descriptor rejected: {e}")
        self.metrics.inc("descriptor_uploads_total", result="accepted")
        old = self.descriptors.get(desc.node_id)
        if old is None or desc.published >= old.published:  # an older upload does not replace a newer one
            self.descriptors[desc.node_id] = desc
            self.microdescs[microdesc.digest] = microdesc
            self.metrics.set("relays_known", len(self.descriptors))
        if old is None:
            self.events.emit("relay_registered", nickname=desc.nickname, identity=desc.ed25519_identity,
                             fingerprint=desc.node_id.hex().upper(), address=f"{desc.address}:{desc.or_port}")
        if old is None or (old.address, old.or_port, old.ntor_onion_key) != (desc.address, desc.or_port,
                                                                             desc.ntor_onion_key):
            try:  # test it now, as Tor's authorities do on upload, not only at the next round's start
                self._new_relays_send.send_nowait(desc)
            except trio.WouldBlock:
                pass  # a burst of uploads: the round's own tests cover the rest
        return _text(200, "descriptor accepted")

    def _get_descriptors(self, path: str) -> tuple[int, str, bytes]:
        """/tor/server/all | fp/F1+F2... | d/D1+D2...: the server descriptors we hold."""
        prefix = "/tor/server/"
        if not path.startswith(prefix):
            return _text(404, f"not found: {path}")
        resource, descs = path[len(prefix):], list(self.descriptors.values())
        try:
            if resource == "all":
                chosen = descs
            elif resource.startswith("fp/"):
                wanted = {bytes.fromhex(fp) for fp in resource[3:].split("+") if fp}
                chosen = [d for d in descs if d.node_id in wanted]
            elif resource.startswith("d/"):
                wanted = {bytes.fromhex(h) for h in resource[2:].split("+") if h}
                chosen = [d for d in descs if d.digest in wanted]
            else:  # "authority": we run no relay of our own in the consensus
                chosen = []
        except ValueError:
            return _text(400, f"bad request: {resource[:60]!r} is not hex")
        if not chosen:
            return _text(404, "no such descriptor")
        return 200, "text/plain", b"".join(d.raw for d in chosen)

    def _post_vote(self, body: bytes) -> tuple[int, str, bytes]:
        now = clock.wall()
        try:
            vote = parse_vote(body).check(self.configured, int(now))
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
        self.votes.setdefault(vote.valid_after, {})[vote.authority] = vote
        old = self.certs.get(vote.authority)
        if old is None or vote.cert.published >= old.published:  # checked with the vote
            self.certs[vote.authority] = vote.cert

    def _get_vote(self) -> tuple[int, str, bytes]:
        if self.my_vote is None:
            return _text(404, "no vote yet")
        return 200, "text/plain", self.my_vote

    def _post_signature(self, body: bytes) -> tuple[int, str, bytes]:
        try:
            claim = parse_detached_signature(body)
            if claim.v3ident not in self.configured:
                raise SignatureError(f"signature from unknown authority {claim.v3ident.hex().upper()}")
            self._add_signature(claim)
        except RemoteProtocolError as e:
            self._remote_error("signature", e)
            return _text(400, f"signature rejected: {e}")
        return _text(200, "signature accepted")

    def _add_signature(self, claim: DirectorySignature) -> None:
        """Add a claim to the consensus we are collecting for; if it is not for that one and we have not
        computed this round's consensus yet, keep it for when we do."""
        collecting = self.collecting
        if collecting is not None:
            try:
                added = collecting.add_signature(claim, self.certs)
            except SignatureError:
                if collecting.consensus.valid_after >= self._round_of(clock.wall()):
                    raise
            else:
                self.collecting = added
                self.metrics.inc("signatures_received_total")
                self._maybe_publish()
                return
        self.early_signatures.setdefault(claim.v3ident, deque(maxlen=EARLY_CLAIMS)).append(claim)

    async def test_new_relays(self) -> None:
        """Test every new (or moved) relay's reachability as soon as it uploads, so that the next round can
        vote it Running without waiting for its turn in the cycle."""
        async for desc in self._new_relays:
            await self._test(desc)

    async def test_reachability(self) -> None:
        """Test every relay held once per voting interval, the tests spread evenly over it in a random order
        (module docstring). Each test runs on its own (a slow relay delays no other) within
        REACHABILITY_TIMEOUT, so at most about that many seconds' worth of tests run at once."""
        async with trio.open_nursery() as nursery:
            while True:
                # node IDs, not descriptors: a cycle holding the descriptors kept every replaced one alive
                # for up to V (and tested none of them: a relay that uploaded again was skipped)
                relays = list(self.descriptors)
                if not relays:
                    await trio.sleep(MIN_TEST_TIME * self.interval)
                    continue
                gap = self.interval / len(relays)
                for node_id in _random.sample(relays, len(relays)):
                    desc = self.descriptors.get(node_id)
                    if desc is not None:  # not expired meanwhile; its newest descriptor
                        nursery.start_soon(self._test, desc)
                    del desc  # not held through the sleep
                    await trio.sleep(gap)

    async def _test(self, desc: ServerDescriptor) -> None:
        passed = await self.reachable(desc)
        if passed:
            self.last_reached[desc.node_id] = clock.wall()
        self.metrics.inc("reachability_checks_total", result="reachable" if passed else "unreachable")

    def running(self, now: float) -> set[bytes]:
        """The node IDs of the relays held that passed a test recently enough to be Running."""
        window = (1 + RUNNING_GRACE_ROUNDS) * self.interval
        self.last_reached = {i: t for i, t in self.last_reached.items() if i in self.descriptors}
        return {i for i, t in self.last_reached.items() if now - t <= window}

    # -- voting rounds ---------------------------------------------------------------------------------------
    async def run_rounds(self) -> None:
        while True:
            start = self._round_of(clock.wall()) + self.interval
            await trio.sleep_until(self._trio_time(start))
            await self.run_round(start)
            heap.release_free_heap()  # what the round's peak freed (nodes/net/heap.py)

    async def _dir_authorities(self) -> tuple[DirAuthority, ...]:
        """Every configured authority as the consensus' dir-source lines name it, with an IP address: a
        Swarm stack plans with service names. OSError when one does not resolve."""
        if not self.config.authorities:
            return (DirAuthority("authority", self.v3ident, await resolve_ip(self.config.address),
                                 self.dir_port, self.or_port),)
        return tuple([_dir_authority(ref, await resolve_ip(ref.address)) for ref in self.config.authorities])

    def _schedule(self, start: int) -> tuple[float, float, float]:
        """(vote at, compute at, end) of the round starting at `start` (module docstring)."""
        vote = start + MIN_TEST_TIME * self.interval
        compute = vote + self.timing.vote_delay
        return vote, compute, min(compute + self.timing.dist_delay, start + self.interval)

    @staticmethod
    def _vote_routers(descriptors: list[ServerDescriptor], microdescs: Mapping[bytes, Microdescriptor],
                      flags: Mapping[bytes, frozenset[str]]) -> list[VoteRouter]:
        """Each relay as our vote lists it; `microdescs` by node ID."""
        return [VoteRouter(d.nickname, d.node_id, d.ed25519_identity, d.address, d.or_port, d.dir_port,
                           d.published, max(1, d.bandwidth_observed // 1000), _version(d.platform), d.proto,
                           microdescs[d.node_id].digest, flags[d.node_id]) for d in descriptors]

    async def run_round(self, start: int) -> None:
        vote_at, compute_at, end = self._schedule(start)
        v = self.interval
        self.round = start
        self.votes = {t: votes for t, votes in self.votes.items() if t >= start}
        await trio.sleep_until(self._trio_time(vote_at))
        now = int(clock.wall())
        oldest = now - self.descriptor_max_age
        self.descriptors = {k: d for k, d in self.descriptors.items() if d.published >= oldest}
        descriptors = list(self.descriptors.values())
        by_node = {d.node_id: microdescriptor_for(d) for d in descriptors}  # derived once, for store and vote
        self.microdescs = {m.digest: m for m in by_node.values()}
        self.metrics.set("relays_known", len(self.descriptors))

        flags = assign_flags(descriptors, self.running(now))
        vote = make_vote(self.cert, self.keys.signing, published=int(clock.wall()), valid_after=start,
                         fresh_until=start + v, valid_until=start + 3 * v, vote_delay=self.timing.vote_delay,
                         dist_delay=self.timing.dist_delay,
                         routers=self._vote_routers(descriptors, by_node, flags),
                         # for a tor without TestingTorNetwork; ours and testing tors use 24 V (netview.py)
                         hs_period_minutes=max(5, 24 * v // 60))
        self.my_vote = vote.encode()
        self.votes.setdefault(start, {})[self.v3ident] = vote
        del vote  # held in self.votes until the consensus is computed, no longer
        await self._push("/tor/post/vote", self.my_vote, "vote",
                         compute_at - PUSH_MARGIN * self.timing.vote_delay)

        await trio.sleep_until(self._trio_time(compute_at))
        await self._fetch_missing_votes(start, compute_at + PUSH_MARGIN * self.timing.dist_delay)
        votes = list(self.votes.get(start, {}).values())
        if 2 * len(votes) <= len(self.configured):
            self.metrics.inc("rounds_failed_total")
            self.events.emit("consensus_failed", round=start, votes=len(votes),
                             authorities=len(self.configured))
            return
        try:
            dir_authorities = await self._dir_authorities()
        except OSError as e:  # a Swarm service name that does not resolve (yet)
            self.metrics.inc("rounds_failed_total")
            self.events.emit("consensus_failed", round=start, votes=len(votes), reason=str(e))
            return
        consensus = compute_consensus(votes, dir_authorities)
        listed = {vote.authority: [r.node_id for r in vote.routers] for vote in votes}
        lists_relays = any(vote.routers for vote in votes)
        del votes
        self.votes.pop(start, None)  # computed: a late vote for this round changes nothing now
        if not consensus.routers and lists_relays:
            self.metrics.inc("consensus_withheld_total")
            self.events.emit("consensus_withheld", round=start, votes=len(listed),
                             reason="it lists no relay while a vote lists some")
            return
        collecting = SignedConsensus.unsigned(consensus)
        mine = sign_consensus(collecting.body, self.cert, self.keys.signing)
        self.collecting = collecting.add_signature(mine, self.certs)
        early, self.early_signatures = self.early_signatures, {}
        for claim in (c for claims in early.values() for c in claims):
            try:
                self.collecting = self.collecting.add_signature(claim, self.certs)
            except SignatureError as e:
                self._remote_error("signature", e)
            else:
                self.metrics.inc("signatures_received_total")
        self._maybe_publish()
        await self._push("/tor/post/consensus-signature", mine.encode(), "signature", end)
        await self._fetch_missing_descriptors(listed, start + v)

    async def _fetch_missing_descriptors(self, listed: Mapping[bytes, list[bytes]], until: float) -> None:
        """Fetch from its voter every descriptor a peer's vote listed (`listed`: the node IDs each authority's
        vote listed, by v3ident) and we lack, as C tor's authorities do:
        an authority that restarted (and knows no relay) learns them within a round instead of waiting for
        each relay's next upload. Each is checked and tested like an upload."""
        refs = {bytes.fromhex(p.v3ident): p for p in self.peers}

        async def fetch(peer: AuthorityRef, node_ids: list[bytes]) -> None:
            path = "/tor/server/fp/" + "+".join(n.hex().upper() for n in node_ids)
            try:
                status, _, body = await request_tcp(peer.address, peer.dir_port, "GET", path,
                                                    timeout=REACHABILITY_TIMEOUT)
            except REQUEST_FAILURES:
                return  # its votes and signatures come through anyway; the relays upload again
            if status == 200:
                for document in split_descriptors(body):
                    self._post_descriptor(document)

        with trio.move_on_at(self._trio_time(until)):
            async with trio.open_nursery() as nursery:
                for authority, node_ids in listed.items():
                    missing = [n for n in node_ids if n not in self.descriptors]
                    if authority in refs and missing:
                        nursery.start_soon(fetch, refs[authority], missing[:MAX_FETCH])

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
                vote = parse_vote(body).check(self.configured, int(clock.wall()))
            except RemoteProtocolError as e:
                self._remote_error("vote", e)
                return
            except REQUEST_FAILURES:
                return  # already counted when our push to it failed
            if vote.authority == bytes.fromhex(peer.v3ident) and vote.valid_after == start:
                self._store_vote(vote, clock.wall())
                self.metrics.inc("votes_received_total")

        have = self.votes.get(start, {})
        missing = [p for p in self.peers if bytes.fromhex(p.v3ident) not in have]
        with trio.move_on_at(self._trio_time(until)):
            async with trio.open_nursery() as nursery:
                for peer in missing:
                    nursery.start_soon(fetch, peer)

    def _maybe_publish(self) -> None:
        c = self.collecting
        if c is None or len(c.signatures) < len(self.configured) // 2 + 1:
            return
        new = self.published is None or self.published.consensus != c.consensus
        self.published = c
        self.metrics.set("consensus_signatures", len(c.signatures))
        self.metrics.set("consensus_relays", len(c.consensus.routers))
        if new:
            self.events.emit("consensus_published", round=c.consensus.valid_after,
                             relays=len(c.consensus.routers), signatures=len(c.signatures), digest=c.digest)
        self._published_event.set()
        self._published_event = trio.Event()


async def serve(config: NodeConfig, *, reachable: Reachable | None = None,
                task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Run an authority until cancelled. `task_status.started(authority)` once its ports listen.
    `reachable` replaces the CREATE2 reachability test (tests inject their own)."""
    events = EventLog(config.name, "authority")
    metrics = Metrics()
    reachable = reachable or functools.partial(check_reachable, address_map=config.address_map,
                                               dial_names=config.dial_names,
                                               source_address=config.source_address)
    node_keys = load_or_create_node_keys(config.data_dir)
    authority = Authority(config, node_keys, load_or_create_authority_keys(config.data_dir),
                          reachable=reachable, metrics=metrics, events=events)
    # The OR port: Tor's link handshake, CREATE_FAST and CREATE2, and BEGIN_DIR into the same HTTP handler
    control = node_control(config.name, config.data_dir, config.shaping, metrics, events)
    channels = ChannelManager(link_identity(node_keys, Ed25519PrivateKey.generate(), int(clock.wall())),
                              metrics, events, address=config.address, address_map=config.address_map,
                              shaper=control.shaper,
                              source_address=config.source_address)

    async def begin_dir(stream: trio.abc.Stream) -> None:
        try:
            await serve_http(stream, authority.handle)
        except HttpError as e:
            authority.http_error(e.kind)
        except trio.TooSlowError:
            authority.http_error("timeout")

    RelayEngine(channels, node_keys.relay_keys, metrics, events, handlers={}, dir_handler=begin_dir)
    async with trio.open_nursery() as nursery:
        authority.dir_port = await nursery.start(functools.partial(
            serve_http_tcp, config.bind_address, config.dir_port, authority.handle,
            on_error=authority.http_error))
        authority.or_port = await nursery.start(channels.serve, config.bind_address, config.or_port)
        authority.control_port = await nursery.start(functools.partial(
            serve_status, config.bind_address, config.control_port, authority.status, metrics,
            control=control))
        nursery.start_soon(authority.run_rounds)
        nursery.start_soon(authority.test_new_relays)
        nursery.start_soon(authority.test_reachability)
        events.emit("authority_started", v3ident=authority.v3ident.hex().upper(),
                    fingerprint=node_keys.fingerprint, dir_port=authority.dir_port, or_port=authority.or_port,
                    control_port=authority.control_port, authorities=len(authority.configured),
                    voting_interval=authority.interval)
        task_status.started(authority)
