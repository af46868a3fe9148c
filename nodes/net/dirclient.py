"""The directory client: fetch and verify what C tor's clients fetch (dir-spec 5), keep it fresh, upload
relay descriptors.

A node needs three documents, all from the authorities' dir ports, at the paths C tor uses:

    /tor/keys/all                                   the authorities' key certificates (dir-spec 3.1)
    /tor/status-vote/current/consensus-microdesc    the microdesc-flavoured consensus (dir-spec 3.4.1)
    /tor/micro/d/D1-D2-...                          the microdescriptors the consensus names (dir-spec 3.3)

A certificate is used once it checks and certifies a configured authority (v3ident). A consensus is used only
after `UncheckedConsensus.check`: signatures from more than half of the configured authorities, verified
with their certificates, and the current time inside [valid-after, valid-until]. A microdescriptor is kept
only when the consensus names its digest. The layers above see a `NetworkView`: the consensus joined with
the microdescriptors. An authority that serves anything else is counted and the next one (in random order)
is tried. A consensus that lists no relay does not replace one that does (it can only mean the authorities
lost their relays; dirclient keeps the last good one until it expires).

Refresh schedule. Authorities publish the consensus for the round starting at T during that round
(nodes/roles/authority.py), and its fresh-until is T + interval. So a fresh-until passing does not mean a
newer document is available yet: the client refetches at a random moment between half and all of an
interval after fresh-until (Tor also spreads clients over a window after fresh-until), and soon again if it
got nothing newer. The document it holds meanwhile stays valid until valid-until = T + 3 intervals.

Before its first consensus a node asks again soon (a fresh lab's first one is about an interval away), at a
random moment within FIRST_RETRY_SHARE of the voting interval (at least FIRST_RETRY_MAX): the jitter keeps
a few hundred nodes started together from asking in step, and the interval (larger in larger labs,
orchestrator/scale.py) bounds the rate of those requests by the lab's size.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence

import trio

from nodes.config import AuthorityRef
from nodes.core.authcert import AuthorityCert, parse_authority_certs
from nodes.core.consensus import SignedConsensus, parse_consensus
from nodes.core.errors import RemoteProtocolError, SignatureError
from nodes.core.microdesc import Microdescriptor, parse_microdescriptors
from nodes.core.netdoc import b64encode_unpadded
from nodes.core.netview import NetworkView, join, wanted

from . import clock
from .events import EventLog
from .httpio import request_tcp
from .metrics import Metrics

CONSENSUS_PATH = "/tor/status-vote/current/consensus-microdesc"
KEYS_PATH = "/tor/keys/all"
MICRODESC_PATH = "/tor/micro/d/"
MICRODESCS_PER_REQUEST = 92  # as C tor batches them (a URL stays well under 4 KiB)
DESCRIPTOR_PATH = "/tor/"
REQUEST_TIMEOUT = 10.0
RETRY_MIN = 0.25  # seconds before retrying when no authority answered well; doubles up to RETRY_MAX
RETRY_MAX = 10.0
FIRST_RETRY_MAX = 0.5  # the retry delay's cap while we have no consensus at all (at least)...
FIRST_RETRY_SHARE = 0.05  # ... or this share of the voting interval, whichever is larger
# A consensus counts this far outside its validity, as C tor's "reasonably live" one (REASONABLY_LIVE_TIME,
# 24 h): a node whose clock is off still takes the newest consensus, and HS time periods come from its
# valid-after, not from our clock. Beyond EARLY_SKEW seconds we say our clock looks wrong (as C tor warns).
LIVE_TOLERANCE = 24 * 3600
EARLY_SKEW = 60

_random = secrets.SystemRandom()


class NoConsensusError(Exception):
    """No authority gave us a consensus we could accept. `errors` holds (authority name, exception) pairs."""

    def __init__(self, errors: list[tuple[str, BaseException]]) -> None:
        super().__init__("no usable consensus: " + "; ".join(f"{name}: {e!r}" for name, e in errors))
        self.errors = errors


class UnexpectedStatus(Exception):
    """An authority answered with an HTTP status other than 200."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200].decode('ascii', 'replace').strip()}")
        self.status = status


def failure_kind(e: BaseException) -> str:
    """A short label for why a directory request failed (metrics key)."""
    if isinstance(e, RemoteProtocolError):
        return e.kind
    if isinstance(e, UnexpectedStatus):
        return "status"
    if isinstance(e, trio.TooSlowError):
        return "timeout"
    return "network"


# what a directory request to one authority may fail with, other than bugs
REQUEST_FAILURES = (RemoteProtocolError, UnexpectedStatus, trio.TooSlowError, OSError,
                    trio.BrokenResourceError)


class DirectoryClient:
    def __init__(self, authorities: Sequence[AuthorityRef], metrics: Metrics, events: EventLog, *,
                 timeout: float = REQUEST_TIMEOUT, voting_interval: float = 10.0) -> None:
        if not authorities:
            raise ValueError("a directory client needs at least one authority")
        self.authorities = tuple(authorities)
        self.configured = frozenset(bytes.fromhex(a.v3ident) for a in self.authorities)
        self.metrics = metrics
        self.events = events
        self.timeout = timeout
        self.first_retry_max = max(FIRST_RETRY_MAX, FIRST_RETRY_SHARE * voting_interval)
        self.certs: dict[bytes, AuthorityCert] = {}  # v3ident -> its newest checked certificate
        self.microdescs: dict[bytes, Microdescriptor] = {}  # digest -> microdescriptor of the consensus
        self.signed: SignedConsensus | None = None
        self.raw: bytes | None = None  # the installed consensus as its authority served it
        self.current: NetworkView | None = None
        self._ready = trio.Event()
        metrics.describe("consensus_fetches_total", "counter", "consensus downloads by result")
        metrics.describe("descriptor_posts_total", "counter", "descriptor uploads to authorities by result")
        metrics.describe("errors_total", "counter", "remote and network failures by kind")

    # -- documents -----------------------------------------------------------------------------------------
    async def _get(self, ref: AuthorityRef, path: str) -> bytes:
        status, _, body = await request_tcp(ref.address, ref.dir_port, "GET", path, timeout=self.timeout)
        if status != 200:
            raise UnexpectedStatus(status, body)
        return body

    async def _fetch_certs(self, ref: AuthorityRef, now: int) -> None:
        """Every certificate `ref` serves that checks and belongs to a configured authority."""
        for unchecked in parse_authority_certs(await self._get(ref, KEYS_PATH)):
            cert = unchecked.check(now)
            old = self.certs.get(cert.v3ident)
            if cert.v3ident in self.configured and (old is None or cert.published > old.published):
                self.certs[cert.v3ident] = cert

    async def _fetch_microdescs(self, ref: AuthorityRef, digests: Sequence[bytes]) -> None:
        want = set(digests)
        for i in range(0, len(digests), MICRODESCS_PER_REQUEST):
            batch = digests[i:i + MICRODESCS_PER_REQUEST]
            body = await self._get(ref, MICRODESC_PATH + "-".join(b64encode_unpadded(d) for d in batch))
            for md in parse_microdescriptors(body):
                if md.digest in want:  # an authority cannot slip in a key the consensus does not name
                    self.microdescs[md.digest] = md

    async def fetch_consensus(self, now: int) -> tuple[SignedConsensus, bytes]:
        """Ask the authorities in random order; return the first consensus that checks at `now` (and its
        bytes as served), having fetched the certificates it needs and the microdescriptors it names that
        we lack. Raises NoConsensusError when none does."""
        errors: list[tuple[str, BaseException]] = []
        for ref in _random.sample(self.authorities, len(self.authorities)):
            try:
                raw = await self._get(ref, CONSENSUS_PATH)
                unchecked = parse_consensus(raw)
                try:
                    signed = unchecked.check(self.certs, self.configured, now, tolerance=LIVE_TOLERANCE)
                except SignatureError:
                    await self._fetch_certs(ref, now)  # new authorities or signing keys: then once more
                    signed = unchecked.check(self.certs, self.configured, now, tolerance=LIVE_TOLERANCE)
                await self._fetch_microdescs(ref, wanted(signed.consensus, self.microdescs))
            except REQUEST_FAILURES as e:
                kind = failure_kind(e)
                errors.append((ref.name, e))
                self.metrics.inc("consensus_fetches_total", result="rejected"
                                 if isinstance(e, RemoteProtocolError) else "failed")
                self.metrics.inc("errors_total", kind=kind)
                self.events.emit("consensus_fetch_failed", authority=ref.name, kind=kind, reason=str(e))
                continue
            self.metrics.inc("consensus_fetches_total", result="ok")
            return signed, raw
        raise NoConsensusError(errors)

    async def wait_ready(self) -> NetworkView:
        """Wait for the first consensus `run` obtains."""
        await self._ready.wait()
        assert self.current is not None
        return self.current

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Keep `current` up to date until cancelled (see the module docstring for the schedule)."""
        task_status.started()
        retry = RETRY_MIN
        while True:
            try:
                signed, raw = await self.fetch_consensus(int(clock.wall()))
            except NoConsensusError:
                if self.current is None:  # a fresh lab's first consensus: soon, at a random moment
                    await trio.sleep(retry * _random.uniform(0.5, 1.0))
                    retry = min(2 * retry, self.first_retry_max)
                else:
                    await trio.sleep(retry)
                    retry = min(2 * retry, RETRY_MAX)
                continue
            retry = RETRY_MIN
            if self.signed is None or signed.consensus.valid_after > self.signed.consensus.valid_after:
                self._install(signed, raw)
            await trio.sleep(self._next_fetch_delay(clock.wall()))

    def _install(self, signed: SignedConsensus, raw: bytes) -> None:
        consensus = signed.consensus
        if not consensus.routers and self.current is not None and self.current.relays \
                and clock.wall() < self.current.valid_until:
            self.metrics.inc("errors_total", kind="empty_consensus")
            self.events.emit("consensus_refused", valid_after=consensus.valid_after,
                             reason="lists no relay; keeping the last one that does")
            return
        self.signed, self.raw = signed, raw
        names = {r.md_digest for r in consensus.routers}
        self.microdescs = {d: md for d, md in self.microdescs.items() if d in names}
        self.current = join(consensus, self.microdescs)
        self.metrics.set("consensus_valid_after", consensus.valid_after)
        now = clock.wall()
        off = consensus.valid_after - now if now < consensus.valid_after else \
            consensus.valid_until - now if now > consensus.valid_until else 0
        if abs(off) > EARLY_SKEW:  # positive: our clock is behind the authorities'
            self.metrics.inc("errors_total", kind="clock_skew")
            self.events.emit("clock_skew_suspected", seconds=round(off), valid_after=consensus.valid_after)
        self.events.emit("consensus_received", valid_after=consensus.valid_after,
                         relays=len(consensus.routers), usable=len(self.current.relays),
                         digest=signed.digest)
        self._ready.set()

    # -- what a relay serves as a directory cache (dircache.Documents) ---------------------------------------
    def consensus_document(self) -> bytes | None:
        return self.raw

    def microdescriptors(self) -> Mapping[bytes, Microdescriptor]:
        return self.microdescs

    def authority_certs(self) -> Iterable[AuthorityCert]:
        return self.certs.values()

    def own_cert(self) -> None:
        return None

    def _next_fetch_delay(self, now: float) -> float:
        c = self.current
        assert c is not None
        interval = c.fresh_until - c.valid_after
        due = c.fresh_until + interval * (0.5 + 0.5 * _random.random())
        if due <= now:  # we already passed that window and got nothing newer: the next one is late
            return min(RETRY_MAX, max(RETRY_MIN, interval / 4))
        return due - now

    # -- descriptors ---------------------------------------------------------------------------------------
    async def upload_descriptor(self, desc_bytes: bytes) -> int:
        """POST a relay descriptor to every authority at once; return how many accepted it."""
        accepted = 0

        async def upload(ref: AuthorityRef) -> None:
            nonlocal accepted
            try:
                status, _, body = await request_tcp(ref.address, ref.dir_port, "POST", DESCRIPTOR_PATH,
                                                    desc_bytes, timeout=self.timeout)
                if status != 200:
                    raise UnexpectedStatus(status, body)
            except REQUEST_FAILURES as e:
                kind = failure_kind(e)
                self.metrics.inc("descriptor_posts_total", result="failed")
                self.metrics.inc("errors_total", kind=kind)
                self.events.emit("descriptor_upload_failed", authority=ref.name, kind=kind, reason=str(e))
                return
            self.metrics.inc("descriptor_posts_total", result="accepted")
            accepted += 1

        async with trio.open_nursery() as nursery:
            for ref in self.authorities:
                nursery.start_soon(upload, ref)
        return accepted
