"""Readiness from each node's control endpoint (GET /status), for every backend.

The rule, the same for every role: a node is ready when its /status answers with JSON whose "conditions" are
all true. The roles choose their conditions; the ones known today:

    authority      consensus   it has published a signed consensus (an empty one counts: a lab of
                               authorities alone is ready after one voting round, 1 to 1.5 voting intervals)
    relay, onion service, client: their own conditions (consensus, descriptor uploaded, intro points, ...)

The orchestrator is not trio-bound, so this is blocking code with http.client: one short request per node per
round, every request under a timeout, exponential backoff between rounds, never a fixed sleep standing in for
a condition.
"""

from __future__ import annotations

import http.client
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

STATUS_TIMEOUT = 2.0  # per request: a node that takes longer is not ready
MAX_STATUS_BYTES = 1 << 20
FIRST_DELAY = 0.05
MAX_DELAY = 0.5
DELAY_PER_NODE = 0.01  # a large lab is asked less often: 300 nodes every 3 s, not a request storm
SUMMARY_ABOVE = 30  # labs with more nodes get a progress line of counts, not a line per node and condition
SUMMARY_EVERY = 5.0  # seconds between two such lines (while something changes)

#: on_change(node, condition, value): condition None means "answers /status" (value False: stopped answering)
OnChange = Callable[[str, str | None, bool], None]


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    host: str
    port: int  # the control port


class ReadinessTimeout(Exception):
    """Some nodes were not ready in time; `waiting` maps each to what it still lacks."""

    def __init__(self, timeout: float, waiting: dict[str, str]) -> None:
        self.timeout = timeout
        self.waiting = waiting
        lines = "\n".join(f"  {name}: {why}" for name, why in waiting.items())
        super().__init__(f"not ready after {timeout:g} s:\n{lines}")


def _get(host: str, port: int, path: str, timeout: float) -> bytes | None:
    """The body of a 200 answer to GET `path`, or None (refused, reset, timed out, another status)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.read(MAX_STATUS_BYTES) if response.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def fetch_status(host: str, port: int, *, timeout: float = STATUS_TIMEOUT) -> dict | None:
    """The node's /status as a dict, or None when it does not answer (yet) with a JSON object."""
    body = _get(host, port, "/status", timeout)
    try:
        status = json.loads(body) if body is not None else None
    except ValueError:
        return None
    return status if isinstance(status, dict) else None


_SAMPLE = re.compile(r"(\w+)(?:\{(.*)\})? (\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def fetch_metrics(host: str, port: int, *,
                  timeout: float = STATUS_TIMEOUT) -> list[tuple[str, dict[str, str], float]] | None:
    """The node's /metrics as parse_metrics gives them, or None when it does not answer."""
    body = _get(host, port, "/metrics", timeout)
    return None if body is None else parse_metrics(body.decode("utf-8", "replace"))


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text exposition as (name, labels, value) samples; comments and odd lines are skipped."""
    samples = []
    for line in text.splitlines():
        match = _SAMPLE.fullmatch(line)  # None for "# HELP" and "# TYPE" lines
        if match is None:
            continue
        try:
            value = float(match[3])
        except ValueError:
            continue
        labels = {k: re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], v)
                  for k, v in _LABEL.findall(match[2] or "")}
        samples.append((match[1], labels, value))
    return samples


def conditions(status: dict | None) -> dict[str, bool]:
    found = status.get("conditions") if status else None
    return {str(k): v is True for k, v in found.items()} if isinstance(found, dict) else {}


def is_ready(status: dict | None) -> bool:
    return status is not None and all(conditions(status).values())


def lacking(endpoint: Endpoint, status: dict | None) -> str:
    """What a node still lacks, in words."""
    if status is None:
        return f"no answer from http://{endpoint.host}:{endpoint.port}/status"
    missing = [name for name, ok in conditions(status).items() if not ok]
    return "waiting for " + ", ".join(missing) if missing else "ready"


def wait_until_ready(endpoints: Iterable[Endpoint], *, timeout: float = 60.0,
                     check: Callable[[], None] | None = None,
                     on_change: OnChange | None = None) -> dict[str, dict]:
    """Poll every node until all are ready in the same round; return their statuses by name.

    `check()` runs before each round and raises to abort (a backend's "a node process exited");
    `on_change` hears every change of a node's answering or of one of its conditions.
    Raises ReadinessTimeout listing what each unready node lacks."""
    endpoints = list(endpoints)
    deadline = time.monotonic() + timeout
    seen: dict[str, dict[str | None, bool]] = {e.name: {} for e in endpoints}
    delay = FIRST_DELAY
    while True:
        if check is not None:
            check()
        statuses = {e.name: fetch_status(e.host, e.port) for e in endpoints}
        for name, status in statuses.items():
            now = {None: status is not None, **conditions(status)}
            for condition, value in now.items():
                if seen[name].get(condition, False) != value and on_change is not None:
                    on_change(name, condition, value)
            seen[name] = now
        if all(map(is_ready, statuses.values())):
            return statuses  # type: ignore[return-value]  # none is None once all are ready
        left = deadline - time.monotonic()
        if left <= 0:
            raise ReadinessTimeout(timeout, {e.name: lacking(e, statuses[e.name])
                                             for e in endpoints if not is_ready(statuses[e.name])})
        time.sleep(min(delay, left))
        delay = min(2 * delay, max(MAX_DELAY, DELAY_PER_NODE * len(endpoints)))


class ConditionCounts:
    """An OnChange for large labs: says how many nodes have each condition, one line at most every
    SUMMARY_EVERY seconds ("answering 300/300 · consensus 212/300 · listed 180/280 ..."), and at once when a
    node stops answering. `flush()` says the last counts."""

    def __init__(self, say: Callable[[str], None], roles: dict[str, str], *,
                 every: float = SUMMARY_EVERY) -> None:
        self.say = say
        self.roles = roles  # node -> role: a condition counts among the nodes of the roles that report it
        self.every = every
        self.have: dict[str | None, set[str]] = {}
        self.known: dict[str | None, set[str]] = {}  # the roles that report each condition
        self.last = time.monotonic()
        self.dirty = False

    def __call__(self, name: str, condition: str | None, value: bool) -> None:
        if condition is None and not value and name in self.have.get(None, ()):
            self.say(f"{name}: stopped answering /status")
        self.known.setdefault(condition, set()).add(self.roles.get(name, ""))
        have = self.have.setdefault(condition, set())
        (have.add if value else have.discard)(name)
        self.dirty = True
        if time.monotonic() - self.last >= self.every:
            self.flush()

    def flush(self) -> None:
        if not self.dirty:
            return
        parts = [f"answering {len(self.have.get(None, ()))}/{len(self.roles)}"]
        parts += [f"{c} {len(self.have.get(c, ()))}/{sum(r in roles for r in self.roles.values())}"
                  for c, roles in self.known.items() if c]
        self.say(" · ".join(parts))
        self.last, self.dirty = time.monotonic(), False


AUTHORITY_FIELDS = ("or_port", "dir_port", "v3ident", "fingerprint", "voting_interval")


def authority_entries(nodes: Iterable, live: dict[str, dict | None]) -> list[dict]:
    """What a tor joining the lab needs of each authority (orchestrator/torrc.py): the address the
    orchestrator reaches it at, then the fields of its /status (None while it does not answer)."""
    return [{"name": n.name, "address": n.address,
             **{k: (live.get(n.name) or {}).get(k) for k in AUTHORITY_FIELDS}}
            for n in nodes if n.role == "authority"]
