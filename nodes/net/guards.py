"""Entry guards, after guard-spec but small: the few relays a client ever uses as its first hop.

    guard-spec            here
    SAMPLED_GUARDS        `sampled`: Guard relays in the order they were drawn (bandwidth-weighted), persisted
    FILTERED_GUARDS       sampled guards that are Guard and Running in the consensus last given to sample()
    USABLE_FILTERED       ... not marked failed, or past their retry time (is_reachable, not persisted)
    CONFIRMED_GUARDS      `confirmed`: guards a circuit succeeded through, in that order, persisted
    PRIMARY_GUARDS        the first n_guards usable guards: confirmed ones first, then in sample order
    NUM_USABLE_PRIMARY=1  pick() returns the first primary guard, so every circuit uses the same guard while
                          it works; when it fails the next one takes its place

Left out: sample expiry (GUARD_LIFETIME, REMOVE_UNLISTED_GUARDS_AFTER), path bias, configuration filters,
exploratory circuits through non-primary guards and the waiting-for-better-guard states, and the retry
schedule (one delay, seconds-scale like the rest of the testbed).

The state file is written atomically (temporary file, fsync, rename) and is a few hundred bytes, so the
blocking write is not worth a thread. A file that does not parse is kept aside as `<name>.corrupt`, logged,
counted, and the guards are sampled afresh. Call sample() with every new consensus: until the first call no
guard is usable, since only the consensus says which sampled guards are still Running Guards.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from nodes.core.netview import Flag, Relay

from .clock import wall
from .events import EventLog
from .metrics import Metrics

Rng = Callable[[int], bytes]

STATE_VERSION = 1
MIN_FILTERED_SAMPLE = 20  # guard-spec A.1
MAX_SAMPLE_SIZE = 60
MAX_SAMPLE_THRESHOLD = 0.2
RETRY_AFTER = 60.0  # seconds before a failed guard is worth another try
_IDENTITY_HEX = re.compile(r"[0-9a-f]{64}")


class NoGuardAvailable(Exception):
    """No sampled guard is listed as a Running Guard in the consensus we were given (or none was given)."""


class GuardManager:
    def __init__(self, path: Path, n_guards: int = 3, rng: Rng = os.urandom, *, metrics: Metrics,
                 events: EventLog, clock: Callable[[], float] = wall,
                 retry_after: float = RETRY_AFTER) -> None:
        if n_guards < 1:
            raise ValueError(f"n_guards must be at least 1, not {n_guards}")
        self.path = Path(path)
        self.n_guards = n_guards
        self._rng = rng
        self._metrics = metrics
        self._events = events
        self._clock = clock
        self._retry_after = retry_after
        self._listed: dict[str, Relay] = {}  # Guard + Running relays of the latest consensus
        self._failed_until: dict[str, float] = {}
        metrics.describe("guards_sampled", "gauge", "relays in the persisted guard sample")
        metrics.describe("guard_failures_total", "counter", "guards marked failed (a circuit through failed)")
        self._sampled, self._confirmed = self._load()
        metrics.set("guards_sampled", len(self._sampled))

    # -- the consensus view ----------------------------------------------------------------------------------
    def sample(self, candidates: Sequence[Relay]) -> list[str]:
        """Take a new consensus's relays: remember which sampled guards are listed, and draw new guards
        into the sample while it has fewer than MIN_FILTERED_SAMPLE usable ones. Returns the sample (hex)."""
        self._listed = {r.identity.hex(): r for r in candidates
                        if Flag.Guard in r.flags and Flag.Running in r.flags}
        self._fill()
        return list(self._sampled)

    def _usable(self, identity: str, now: float) -> bool:
        return identity in self._listed and self._failed_until.get(identity, 0.0) <= now

    def _fill(self) -> None:
        now = self._clock()
        limit = max(min(MAX_SAMPLE_SIZE, int(MAX_SAMPLE_THRESHOLD * len(self._listed))), MIN_FILTERED_SAMPLE)
        usable = sum(self._usable(i, now) for i in self._sampled)
        fresh = [r for i, r in sorted(self._listed.items()) if i not in self._sampled]
        added = False
        while usable < MIN_FILTERED_SAMPLE and len(self._sampled) < limit and fresh:
            relay = fresh.pop(self._weighted_index([max(r.bandwidth, 1) for r in fresh]))
            self._sampled.append(relay.identity.hex())
            self._events.emit("guard_sampled", identity=relay.identity.hex(), nickname=relay.nickname,
                              position=len(self._sampled))
            usable += 1
            added = True
        if added:
            self._metrics.set("guards_sampled", len(self._sampled))
            self._save()

    def _weighted_index(self, weights: list[int]) -> int:
        point = _randbelow(self._rng, sum(weights))
        for i, w in enumerate(weights):
            if point < w:
                return i
            point -= w
        raise AssertionError("unreachable: point < sum(weights)")

    # -- choosing --------------------------------------------------------------------------------------------
    def primary(self) -> list[Relay]:
        """The first n_guards usable guards: confirmed ones in confirmation order, then sample order."""
        return self.ordered()[: self.n_guards]

    def ordered(self) -> list[Relay]:
        """Every usable guard, primary ones first. A circuit whose last hop is a primary guard takes the
        first of these that is not that relay as its first hop (guard-spec 4.3: never guard == exit)."""
        now = self._clock()
        order = self._confirmed + [i for i in self._sampled if i not in self._confirmed]
        return [self._listed[i] for i in order if self._usable(i, now)]

    def pick(self) -> Relay:
        """The guard for a new circuit's first hop: the first primary guard."""
        guards = self.primary()
        if not guards and any(i in self._listed for i in self._failed_until):
            # guard-spec 4.6: every sampled guard failed; assume the network was down and try them again
            self._events.emit("guards_retry_all", failed=len(self._failed_until))
            self._failed_until.clear()
            guards = self.primary()
        if not guards:
            raise NoGuardAvailable(f"none of {len(self._sampled)} sampled guards is a Running Guard in the "
                                   f"consensus ({len(self._listed)} listed)")
        return guards[0]

    def mark_failed(self, identity: bytes | str) -> None:
        """A circuit through this guard failed: skip it until retry_after has passed."""
        identity = _hex(identity)
        retry_at = self._clock() + self._retry_after
        self._failed_until[identity] = retry_at
        self._metrics.inc("guard_failures_total")
        self._events.emit("guard_failed", identity=identity, retry_at=round(retry_at, 3))
        self._fill()  # keep enough usable guards sampled

    def mark_succeeded(self, identity: bytes | str) -> None:
        """A circuit through this guard was built: it is reachable, and confirmed (preferred from now on)."""
        identity = _hex(identity)
        self._failed_until.pop(identity, None)
        if identity in self._sampled and identity not in self._confirmed:
            self._confirmed.append(identity)
            self._events.emit("guard_confirmed", identity=identity, position=len(self._confirmed))
            self._save()

    def status(self) -> dict:
        """For the node's /status endpoint."""
        now = self._clock()
        return {"sampled": len(self._sampled), "confirmed": len(self._confirmed),
                "primary": [g.nickname for g in self.primary()],
                "order": [g.nickname for g in self.ordered()],  # who follows the primary guards
                "failed": sorted(i for i, t in self._failed_until.items() if t > now)}

    # -- persistence -----------------------------------------------------------------------------------------
    def _load(self) -> tuple[list[str], list[str]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return [], []
        except (OSError, UnicodeDecodeError) as e:
            return self._corrupt(f"unreadable: {e}")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            return self._corrupt(f"not JSON: {e}")
        problem = _check_state(data)
        if problem:
            return self._corrupt(problem)
        return list(data["sampled"]), list(data["confirmed"])

    def _corrupt(self, problem: str) -> tuple[list[str], list[str]]:
        aside = self.path.with_name(self.path.name + ".corrupt")
        try:
            os.replace(self.path, aside)
        except OSError as e:
            problem += f" (could not move it aside: {e.strerror})"
        self._metrics.inc("errors_total", kind="guard_state_corrupt")
        self._events.emit("guard_state_corrupt", path=str(self.path), problem=problem, moved_to=str(aside))
        return [], []

    def _save(self) -> None:
        """Atomically replace the state file. A failed write (disk full) is logged and counted; the guards in
        memory stay right, and the next change tries again."""
        data = json.dumps({"version": STATE_VERSION, "sampled": self._sampled, "confirmed": self._confirmed},
                          indent=1).encode() + b"\n"
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            self._metrics.inc("errors_total", kind="guard_state_unsaved")
            self._events.emit("guard_state_unsaved", path=str(self.path), error=str(e))


class NoGuards:
    """`guards: 0`: no entry guards, as before Tor had them. Every circuit's first hop is drawn afresh from
    the Running and Valid relays, weighted by bandwidth: the setting that Øverlier and Syverson's attack
    locates after about 1/f circuits for an adversary with a bandwidth share f (nodes/net/adversary.py).

    It offers what the path code asks a GuardManager for. ordered() returns two distinct weighted draws, so
    that three_hop_path's "the first that is not the last hop" is a weighted draw among the relays other
    than the last hop. Nothing is persisted; mark_* only count."""

    n_guards = 0

    def __init__(self, *, metrics: Metrics, events: EventLog, rng: Rng = os.urandom) -> None:
        self._rng = rng
        self._metrics = metrics
        self._events = events
        self._listed: list[Relay] = []
        metrics.describe("guards_sampled", "gauge", "relays in the persisted guard sample")
        metrics.describe("guard_failures_total", "counter", "guards marked failed (a circuit through failed)")
        metrics.set("guards_sampled", 0)

    def sample(self, candidates: Sequence[Relay]) -> list[str]:
        self._listed = [r for r in candidates if Flag.Running in r.flags]
        return []

    def _draw(self, k: int) -> list[Relay]:
        pool = list(self._listed)
        out: list[Relay] = []
        while pool and len(out) < k:
            i = _weighted_index(self._rng, [max(r.bandwidth, 1) for r in pool])
            out.append(pool.pop(i))
        return out

    def primary(self) -> list[Relay]:
        return []  # nothing to keep clear of when choosing intro and rendezvous points

    def ordered(self) -> list[Relay]:
        return self._draw(2)

    def pick(self) -> Relay:
        drawn = self._draw(1)
        if not drawn:
            raise NoGuardAvailable("the consensus we were given lists no Running relay")
        return drawn[0]

    def mark_failed(self, identity: bytes | str) -> None:
        self._metrics.inc("guard_failures_total")

    def mark_succeeded(self, identity: bytes | str) -> None:
        pass

    def status(self) -> dict:
        return {"sampled": 0, "confirmed": 0, "primary": [], "order": [], "failed": [], "mode": "no guards"}


def _weighted_index(rng: Rng, weights: list[int]) -> int:
    point = _randbelow(rng, sum(weights))
    for i, w in enumerate(weights):
        if point < w:
            return i
        point -= w
    raise AssertionError("unreachable: point < sum(weights)")


def _check_state(data: object) -> str:
    """What is wrong with a loaded state file, or "" if nothing is."""
    if not isinstance(data, dict) or set(data) != {"version", "sampled", "confirmed"}:
        return "expected an object with version, sampled and confirmed"
    if data["version"] != STATE_VERSION:
        return f"version {data['version']!r}, expected {STATE_VERSION}"
    for key in ("sampled", "confirmed"):
        value = data[key]
        if not isinstance(value, list) or not all(isinstance(i, str) and _IDENTITY_HEX.fullmatch(i)
                                                  for i in value):
            return f"{key}: expected a list of 64-character lower-case hex identities"
        if len(set(value)) != len(value):
            return f"{key}: duplicate identities"
    if not set(data["confirmed"]) <= set(data["sampled"]):
        return "confirmed: identities that were never sampled"
    return ""


def _hex(identity: bytes | str) -> str:
    return identity.hex() if isinstance(identity, bytes) else identity


def _randbelow(rng: Rng, n: int) -> int:
    """Uniform in [0, n) from rng bytes, by rejection (no modulo bias)."""
    bits = max(n - 1, 1).bit_length()
    while True:
        value = int.from_bytes(rng((bits + 7) // 8), "big") & ((1 << bits) - 1)
        if value < n:
            return value
