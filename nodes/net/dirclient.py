"""The directory client: fetch and verify the consensus, keep it fresh, upload relay descriptors.

Every node needs the consensus to build circuits; relays also publish their descriptor. A consensus is used
only after `SignedConsensus.check` with the configured authority keys: floor(n/2)+1 valid signatures and the
current time inside [valid-after, valid-until]. An authority that serves anything else is counted and the next
one (in random order) is tried.

Refresh schedule. Authorities publish the consensus for the round starting at T about half a voting interval
after T (nodes/roles/authority.py), and its fresh-until is T + interval. So a fresh-until passing does not
mean a newer document is available yet: the client refetches at a random moment between half and all of
an interval after fresh-until (Tor also spreads clients over a window after fresh-until), and soon again if it
got nothing newer. The document it holds meanwhile stays valid until valid-until = T + 3 intervals.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence

import trio

from nodes.config import AuthorityRef
from nodes.core.dirdocs import Consensus, parse_signed_consensus
from nodes.core.errors import RemoteProtocolError

from .events import EventLog
from .httpio import request_tcp
from .metrics import Metrics

CONSENSUS_PATH = "/tor/status-vote/current/consensus"
DESCRIPTOR_PATH = "/tor/"
REQUEST_TIMEOUT = 10.0
RETRY_MIN = 0.25  # seconds before retrying when no authority answered well; doubles up to RETRY_MAX
RETRY_MAX = 10.0
FIRST_RETRY_MAX = 0.5  # the retry delay's cap while we have no consensus at all

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
                 timeout: float = REQUEST_TIMEOUT) -> None:
        if not authorities:
            raise ValueError("a directory client needs at least one authority")
        self.authorities = tuple(authorities)
        self.authority_keys = frozenset(bytes.fromhex(a.identity) for a in self.authorities)
        self.metrics = metrics
        self.events = events
        self.timeout = timeout
        self.current: Consensus | None = None
        self._ready = trio.Event()
        metrics.describe("consensus_fetches_total", "counter", "consensus downloads by result")
        metrics.describe("descriptor_posts_total", "counter", "descriptor uploads to authorities by result")
        metrics.describe("errors_total", "counter", "remote and network failures by kind")

    # -- consensus -----------------------------------------------------------------------------------------
    async def fetch_consensus(self, now: int) -> Consensus:
        """Ask the authorities in random order; return the first consensus that checks at `now`.
        Raises NoConsensusError when none does."""
        errors: list[tuple[str, BaseException]] = []
        for ref in _random.sample(self.authorities, len(self.authorities)):
            try:
                status, _, body = await request_tcp(ref.address, ref.dir_port, "GET", CONSENSUS_PATH,
                                                    timeout=self.timeout)
                if status != 200:
                    raise UnexpectedStatus(status, body)
                signed = parse_signed_consensus(body)
                consensus = signed.check(self.authority_keys, now)
            except REQUEST_FAILURES as e:
                kind = failure_kind(e)
                errors.append((ref.name, e))
                self.metrics.inc("consensus_fetches_total", result="rejected"
                                 if isinstance(e, RemoteProtocolError) else "failed")
                self.metrics.inc("errors_total", kind=kind)
                self.events.emit("consensus_fetch_failed", authority=ref.name, kind=kind, reason=str(e))
                continue
            self.metrics.inc("consensus_fetches_total", result="ok")
            return consensus
        raise NoConsensusError(errors)

    async def wait_ready(self) -> Consensus:
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
                consensus = await self.fetch_consensus(int(time.time()))
            except NoConsensusError:
                await trio.sleep(retry)
                # Until the first consensus, ask often: a fresh lab's first one is seconds away, and every
                # node waits for it (a few small requests to the authorities are cheap).
                retry = min(2 * retry, RETRY_MAX if self.current is not None else FIRST_RETRY_MAX)
                continue
            retry = RETRY_MIN
            if self.current is None or consensus.valid_after > self.current.valid_after:
                self._install(consensus)
            await trio.sleep(self._next_fetch_delay(time.time()))

    def _install(self, consensus: Consensus) -> None:
        self.current = consensus
        self.metrics.set("consensus_valid_after", consensus.valid_after)
        self.events.emit("consensus_received", valid_after=consensus.valid_after,
                         relays=len(consensus.routers), digest=consensus.digest())
        self._ready.set()

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
