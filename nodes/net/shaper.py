"""The link-layer shaper: latency, jitter, loss, bandwidth and blackholes on the cells a node writes to its
peers, for hosts whose kernel has no netem (docs/chaos.md, "two paths").

A rule says what happens to the cells this node SENDS to some peers (by address, or every peer): shaping is
egress only, so a link A <-> B shaped both ways is a rule on A for B and one on B for A. Every channel whose
peer a rule matches passes its cells through a ShapedQueue: each batch of cells the writer would send gets a
due time, and leaves when it is due, in order (a TCP connection never reorders):

    leaves = max(previous batch's due, serialised + delay + jitter draw + loss penalty)
    serialised = max(now, previous serialised) + bytes / rate                  (token bucket; no rate: now)

Loss: TCP hides a lost segment from the application; what reaches it is one retransmission timeout of delay
for that segment and everything behind it (head-of-line blocking) and so less throughput. Each cell is one
segment lost with probability `loss`; a batch with a lost cell waits one RTO more: RFC 6298's SRTT + 4 RTTVAR
with SRTT ~ 2 x delay (both directions shaped) and RTTVAR ~ jitter, at least Linux's 200 ms minimum.
Never a missing byte. A blackhole holds every cell (the connection starves, as behind a firewall that drops
packets) until the rule goes; then the held cells leave. The draws come from a seeded RNG per peer.

Zero cost without rules: the channel's writer asks `active` (one attribute) per batch and takes the fast
path. Rules come from the node's config (`links:` in the topology, static) and the control call (chaos).
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

MIN_RTO = 0.2  # seconds: Linux's minimum retransmission timeout (TCP_RTO_MIN)
MAX_DELAY = 60.0  # seconds; more is a typo
CELL_BYTES = 514  # a fixed cell on the wire (link protocol 4+), what a rate is charged per cell
MAX_RULES = 256
ALL = "all"


class RuleError(ValueError):
    """A shaping rule that is not well formed; the message names the field."""

    kind = "bad_rule"


@dataclass(frozen=True, slots=True)
class LinkRule:
    """What happens to the cells this node sends to `peers` (addresses; empty: every peer)."""

    id: str
    peers: frozenset[str] = frozenset()
    delay: float = 0.0  # seconds added to every batch
    jitter: float = 0.0  # seconds: each batch draws uniformly from [-jitter, +jitter] on top of delay
    loss: float = 0.0  # probability (0..1) that a cell's segment is lost once (costs an RTO, never a byte)
    rate: float = 0.0  # bytes per second (token bucket); 0: unlimited
    blackhole: bool = False  # hold every cell until the rule goes
    static: bool = False  # from the node's config (the topology's links:): `clear` without ids keeps it

    def matches(self, address: str) -> bool:
        return not self.peers or address in self.peers

    def to_json(self) -> dict:
        data = asdict(self)
        data["peers"] = sorted(self.peers) or ALL
        return data


def parse_rule(data: object, *, static: bool = False) -> LinkRule:
    """A LinkRule from JSON data: {"id", "peers": [ADDRESS...] | "all", "delay", "jitter" (seconds), "loss"
    (0..1), "rate" (bytes/s), "blackhole"}. RuleError names what is wrong."""
    if not isinstance(data, Mapping):
        raise RuleError("a rule must be an object")
    known = {"id", "peers", "delay", "jitter", "loss", "rate", "blackhole"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise RuleError(f"unknown rule field(s) {unknown} (known: {sorted(known)})")
    rule_id = data.get("id")
    if not isinstance(rule_id, str) or not 0 < len(rule_id) <= 128:
        raise RuleError("id: expected a string of 1-128 characters")
    peers = data.get("peers", ALL)
    if peers == ALL:
        peers = []
    if not isinstance(peers, list) or not all(isinstance(p, str) and 0 < len(p) <= 253 for p in peers) \
            or len(peers) > 1024:
        raise RuleError('peers: expected "all" or a list of addresses')

    def number(key: str, hi: float) -> float:
        value = data.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= hi:
            raise RuleError(f"{key}: expected a number from 0 to {hi:g}, got {value!r}")
        return float(value)

    blackhole = data.get("blackhole", False)
    if not isinstance(blackhole, bool):
        raise RuleError("blackhole: expected true or false")
    delay, jitter = number("delay", MAX_DELAY), number("jitter", MAX_DELAY)
    if jitter > delay:
        raise RuleError(f"jitter ({jitter:g} s) must not exceed delay ({delay:g} s): a cell cannot leave "
                        "before it was sent")
    return LinkRule(id=rule_id, peers=frozenset(peers), delay=delay, jitter=jitter, loss=number("loss", 1.0),
                    rate=number("rate", 1e12), blackhole=blackhole, static=static)


@dataclass(frozen=True, slots=True)
class Effect:
    """Every rule that matches one peer, combined: delays and jitters add, losses compound, the lowest
    rate wins, any blackhole holds."""

    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    rate: float = 0.0
    blackhole: bool = False

    @staticmethod
    def of(rules: Iterable[LinkRule]) -> Effect | None:
        rules = list(rules)
        if not rules:
            return None
        kept = 1.0
        for r in rules:
            kept *= 1.0 - r.loss
        rates = [r.rate for r in rules if r.rate > 0]
        return Effect(delay=sum(r.delay for r in rules), jitter=sum(r.jitter for r in rules), loss=1.0 - kept,
                      rate=min(rates) if rates else 0.0, blackhole=any(r.blackhole for r in rules))

    @property
    def rto(self) -> float:
        """What one lost segment costs: RFC 6298's SRTT + 4 RTTVAR (SRTT ~ 2 x delay), at least MIN_RTO."""
        return max(MIN_RTO, 2 * self.delay + 4 * self.jitter)


@dataclass(slots=True)
class ShapedQueue:
    """The cells held for one peer: batches with the time each may leave (trio clock), in order."""

    rng: random.Random
    batches: deque[tuple[float, list]] = field(default_factory=deque)
    serialised: float = 0.0  # when the token bucket has sent what it holds
    last_due: float = 0.0
    generation: int = -1  # of the Shaper's rules when the due times were computed
    cells: int = 0
    delayed_by_loss: int = 0  # batches that paid an RTO (a metric)

    def __len__(self) -> int:
        return len(self.batches)

    def push(self, cells: list, effect: Effect | None, now: float) -> None:
        if effect is None:
            due = max(now, self.last_due)
        elif effect.blackhole:
            due = math.inf
        else:
            sent = now
            if effect.rate > 0:
                sent = self.serialised = max(now, self.serialised) + len(cells) * CELL_BYTES / effect.rate
            due = sent + effect.delay
            if effect.jitter:
                due += self.rng.uniform(-effect.jitter, effect.jitter)
            if effect.loss and self.rng.random() < 1.0 - (1.0 - effect.loss) ** len(cells):
                due += effect.rto
                self.delayed_by_loss += 1
            due = max(due, self.last_due)
        self.last_due = due
        self.cells += len(cells)
        self.batches.append((due, cells))

    def pop_due(self, now: float) -> list:
        """Every cell whose batch is due, in order ([] when none is)."""
        out: list = []
        while self.batches and self.batches[0][0] <= now:
            out.extend(self.batches.popleft()[1])
        self.cells -= len(out)
        return out

    def next_due(self) -> float:
        return self.batches[0][0] if self.batches else math.inf

    def release_held(self, now: float) -> None:
        """A blackhole went: what it held leaves now (what came after it keeps its own time)."""
        self.batches = deque((now if due == math.inf else due, cells) for due, cells in self.batches)
        self.last_due = max((due for due, _ in self.batches), default=now)


class Shaper:
    """The node's shaping rules. `active` is False while there are none: the channels' fast path."""

    def __init__(self, seed: str = "", rules: Sequence[LinkRule] = ()) -> None:
        self.seed = seed
        self.active = False
        self.generation = 0
        self._rules: dict[str, LinkRule] = {}
        self._effects: dict[str, Effect | None] = {}
        self._listeners: list[Callable[[], None]] = []
        for rule in rules:
            self.set_rule(rule)

    @property
    def rules(self) -> list[LinkRule]:
        return list(self._rules.values())

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` after every change (the channels wake their writers)."""
        self._listeners.append(listener)

    def set_rule(self, rule: LinkRule) -> None:
        """Add the rule, or replace the one with its id."""
        if rule.id not in self._rules and len(self._rules) >= MAX_RULES:
            raise RuleError(f"at most {MAX_RULES} rules")
        self._rules[rule.id] = rule
        self._changed()

    def clear(self, ids: Iterable[str] | None = None) -> list[str]:
        """Remove the rules with these ids (None: every rule that is not static); the ids removed."""
        if ids is None:
            gone = [i for i, r in self._rules.items() if not r.static]
        else:
            gone = [i for i in ids if i in self._rules]
        for rule_id in gone:
            del self._rules[rule_id]
        if gone:
            self._changed()
        return gone

    def effect(self, address: str) -> Effect | None:
        """What the rules do to cells sent to `address` (None: nothing)."""
        try:
            return self._effects[address]
        except KeyError:
            effect = self._effects[address] = Effect.of(r for r in self._rules.values() if r.matches(address))
            return effect

    def queue(self, link: str) -> ShapedQueue:
        """A queue for one link (its peer's address, port and direction): its draws are seeded by both."""
        return ShapedQueue(random.Random(f"{self.seed}/{link}"))

    def status(self) -> list[dict]:
        return [r.to_json() for r in self._rules.values()]

    def _changed(self) -> None:
        self.active = bool(self._rules)
        self.generation += 1
        self._effects.clear()
        for listener in self._listeners:
            listener()
