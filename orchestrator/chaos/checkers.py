"""Checkers: pure functions of a history, each giving a Verdict."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Final

from ..flow import (
    REPLY_NAMES,
)

# A client leaves an intro point that NACKed it alone this long (Tor's HS_CACHE_CLIENT_INTRO_STATE_MAX_AGE, as
# nodes/net/hs_client.py): more NACKs from one intro point within it are a storm.
NACK_WINDOW: Final = 120.0


@dataclass
class Verdict:
    name: str
    ok: bool
    summary: str
    details: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)



def _fetches(history: Sequence[dict]) -> list[dict]:
    return [r for r in history if r.get("type") == "fetch"]


def _node_events(history: Sequence[dict], event: str | None = None) -> list[dict]:
    return [r for r in history
            if r.get("type") == "node_event" and (event is None or r.get("event") == event)]


def _collected(history: Sequence[dict]) -> dict | None:
    """The record saying which nodes' events were read after the run (None: they were not collected)."""
    return next((r for r in history if r.get("type") == "node_events"), None)


def _fault_windows(history: Sequence[dict]) -> list[tuple[float, float | None, str]]:
    """(start, end or None while in place, description) of every fault that was applied."""
    starts = {}
    windows = []
    for r in history:
        if r.get("type") != "fault" or not r.get("ok") and r.get("event") == "start":
            continue
        key = (r.get("op"), r.get("node"))
        if r["event"] == "start":
            starts[key] = r
        elif key in starts:
            s = starts.pop(key)
            windows.append((s["t"], r["t"], f"op {s['op']} {s['fault']} {s['node']}"))
    windows += [(s["t"], None, f"op {s['op']} {s['fault']} {s['node']}") for s in starts.values()]
    return sorted(windows, key=lambda w: w[0])


def heal_points(history: Sequence[dict]) -> list[tuple[float, float, str]]:
    """(fault-free from, faulty since, description): each moment a fault ended and no other was in place."""
    windows = _fault_windows(history)
    points = []
    for start, end, what in windows:
        if end is None:
            continue
        if any(s < end and (e is None or e > end) for s, e, _ in windows):
            continue
        since = min(s for s, e, _ in windows if s <= end and (e is None or e >= start))
        points.append((end, since, what))
    return points


def check_no_wrong_bytes(history: Sequence[dict]) -> Verdict:
    wrong = [f for f in _fetches(history) if f.get("result") == "wrong_bytes"]
    if wrong:
        return Verdict("no_wrong_bytes", False,
                       f"{len(wrong)} fetch(es) returned bytes that are not the pattern",
                       [f"fetch {f['n']} at {f['start']:g} s: {f.get('error')}" for f in wrong])
    return Verdict("no_wrong_bytes", True, f"every byte of {len(_fetches(history))} fetches matched or the "
                                           "fetch failed cleanly")


def check_faults(history: Sequence[dict]) -> Verdict:
    """Every scheduled fault was applied and undone (a node started again was ready again), and the lab was
    left as it was found."""
    problems = []
    for r in history:
        if r.get("type") == "fault" and not r.get("ok"):
            problems.append(f"op {r.get('op')} {r.get('event')} {r.get('fault')} {r.get('node') or ''}: "
                            f"{r.get('error')}".replace("  ", " "))
        elif r.get("type") == "ready" and not r.get("ok"):  # started again after kill or stop, never ready
            problems.append(f"op {r.get('op')} {r.get('node')}: {r.get('error')}")
    for start, end, what in _fault_windows(history):
        if end is None:
            problems.append(f"{what} (from {start:g} s) was never undone")
    cleanup = [r for r in history if r.get("type") == "cleanup"]
    if not cleanup:
        problems.append("the history has no cleanup record (the run did not finish)")
    else:
        problems += [f"left behind: {x}" for x in cleanup[-1].get("left") or []]
        if cleanup[-1].get("unapplied"):
            problems.append(f"ops never applied (the run stopped early): {cleanup[-1]['unapplied']}")
    applied = sum(1 for r in history
                  if r.get("type") == "fault" and r.get("event") == "start" and r.get("ok"))
    # ops whose live target named nobody until they gave up (run.py: TARGET_RETRY): not applied, not a failure
    skipped = [f"op {r.get('op')} skipped: {r.get('target')} named nobody ({r.get('why')})"
               for r in history if r.get("type") == "target" and r.get("event") == "skipped"]
    if problems:
        return Verdict("faults", False, f"{len(problems)} problem(s) with the faults", problems + skipped)
    return Verdict("faults", True, f"{applied} fault(s) applied and undone; the lab was left as it was found"
                   + (f"; {len(skipped)} skipped (no target)" if skipped else ""), skipped)


def check_availability(history: Sequence[dict], *, min_ok: float | None, after_heal: float | None,
                       grace: float) -> Verdict:
    fetches = _fetches(history)
    details, ok = [], True
    if not fetches:
        return Verdict("availability", False, "no fetch in the history")
    overall = sum(f["ok"] for f in fetches) / len(fetches)
    summary = f"{overall:.0%} of {len(fetches)} fetches ok"
    if min_ok is not None and overall < min_ok:
        ok = False
        details.append(f"overall {overall:.1%} < min {min_ok:.0%}")
    if after_heal is not None:
        heals = heal_points(history)
        since = (heals[-1][0] if heals else 0.0) + grace
        late = [f for f in fetches if f["start"] >= since]
        if not late:
            ok = False
            details.append(f"no fetch started after {since:.1f} s (the last heal + {grace:g} s grace)")
        else:
            share = sum(f["ok"] for f in late) / len(late)
            summary += f"; {share:.0%} of {len(late)} after {since:.1f} s"
            if share < after_heal:
                ok = False
                details.append(f"after the last heal + {grace:g} s: {share:.1%} "
                               f"< after_heal {after_heal:.0%}")
    return Verdict("availability", ok, summary, details)


def check_recovers(history: Sequence[dict], *, within: float) -> Verdict:
    """After each heal (a fault ended, none other in place) a fetch that started after the fault began must
    succeed, ending within `within` seconds."""
    fetches = _fetches(history)
    details, worst, ok = [], 0.0, True
    heals = heal_points(history)
    end_of_history = max((r["t"] for r in history), default=0.0)
    for healed, since, what in heals:
        good = [f for f in fetches if f["ok"] and f["end"] >= healed and f["start"] >= since]
        if not good:
            ok = False
            details.append(f"{what}: healed at {healed:g} s, no successful fetch before the run ended "
                           f"({end_of_history - healed:.1f} s later)")
            continue
        delay = min(f["end"] for f in good) - healed
        worst = max(worst, delay)
        if delay > within:
            ok = False
            details.append(f"{what}: healed at {healed:g} s, reachable again only after {delay:.1f} s")
        else:
            details.append(f"{what}: healed at {healed:g} s, reachable again after {max(delay, 0):.1f} s")
    if not heals:
        return Verdict("recovers", True, "no fault healed in this run: nothing to recover from")
    return Verdict("recovers", ok,
                   f"{len(heals)} heal(s); slowest recovery {worst:.1f} s (limit {within:g} s)", details)


def recovery_times(history: Sequence[dict]) -> list[float | None]:
    """Seconds from each heal until a fetch that started after the fault began succeeded (None: none did)."""
    fetches = _fetches(history)
    times: list[float | None] = []
    for healed, since, _ in heal_points(history):
        good = [f["end"] for f in fetches if f["ok"] and f["end"] >= healed and f["start"] >= since]
        times.append(round(max(0.0, min(good) - healed), 1) if good else None)
    return times


def check_next_fetch(history: Sequence[dict]) -> Verdict:
    """For each fault: the fetches in flight when it began may fail, cleanly (no_wrong_bytes judges that);
    the first fetch that started after the fault began and after those ended must succeed."""
    fetches = _fetches(history)
    problems, details = [], []
    for start, _, what in _fault_windows(history):
        in_flight = [f for f in fetches if f["start"] <= start < f["end"]]
        settled = max([f["end"] for f in in_flight] + [start])
        following = [f for f in fetches if f["start"] >= settled]
        flight = ", ".join(f"fetch {f['n']} {f['result']}" for f in in_flight) or "no fetch"
        if not following:
            problems.append(f"{what}: no fetch started after the one(s) in flight ({flight})")
            continue
        nxt = min(following, key=lambda f: f["start"])
        line = (f"{what} at {start:g} s: in flight {flight}; the next, fetch {nxt['n']} at "
                f"{nxt['start']:g} s: {nxt['result']}")
        (details if nxt["ok"] else problems).append(line)
    if not problems and not details:
        return Verdict("next_fetch", False, "no fault was applied: nothing to judge")
    if problems:
        return Verdict("next_fetch", False, f"{len(problems)} fault(s) not followed by a good fetch",
                       problems + details)
    return Verdict("next_fetch", True, f"after each of {len(details)} fault(s) the next fetch succeeded",
                   details)


def check_lab_state(history: Sequence[dict], *, grace: float, max_nacks: int) -> Verdict:
    """From the `lab_state` samples: once no fault has been in place for `grace` seconds, every intro point
    the service lists must be held at its relay (an intro point that is not, in two samples running, is
    advertised but NACKs every client). From the clients' `introduce_nack` events: no intro point (a relay
    and the auth key of one circuit there) may NACK a client more than `max_nacks` times within NACK_WINDOW
    seconds (the client leaves it alone that long after a NACK). NACKs from one relay for several intro
    points in turn are the service replacing them, not a storm."""
    samples = [r for r in history if r.get("type") == "lab_state"]
    if not samples:
        return Verdict("lab_state", False, "the history has no lab_state sample")
    windows = _fault_windows(history)
    details: list[str] = []
    lost: dict[str, list[float]] = {}  # intro point -> [first, last] time it was listed but not held
    failing: set[str] = set()
    calm = 0
    for r in samples:
        t, intro = r["t"], r.get("intro_points")
        if intro is None or any(s <= t and (e is None or e > t - grace) for s, e, _ in windows):
            failing = set()
            continue
        calm += 1
        now = {name for name, held in intro.items() if held is False}  # None: a relay that cannot tell
        for name in now & failing:  # two samples running: not the moment between a loss and its notice
            lost.setdefault(name, [t, t])[1] = t
        failing = now
    details += [f"{name}: listed by the service as an intro point but held by no relay "
                f"(from {a:g} to {b:g} s)" for name, (a, b) in lost.items()]
    storms, unread = _nack_storms(history, max_nacks)
    details += [f"{node}: {n} NACKs from {intro} (intro point {key[:16]}…) within {NACK_WINDOW:g} s "
                f"(at most {max_nacks})" for (node, intro, key), n in storms.items()]
    details += unread
    if details:
        return Verdict("lab_state", False, f"{len(lost)} intro point(s) advertised but not held, "
                                           f"{len(storms)} NACK storm(s)"
                                           + (", NACKs not judged" if unread else ""), details)
    return Verdict("lab_state", True, f"{len(samples)} samples ({calm} with no fault for {grace:g} s): every "
                                      f"intro point listed was held; no NACK storm")


NackCounts = dict[tuple[str, str, str], int]  # (client, relay, auth key) -> NACKs


def _nack_storms(history: Sequence[dict], max_nacks: int) -> tuple[NackCounts, list[str]]:
    """(client, relay, auth key) -> the most NACKs it got from that intro point within NACK_WINDOW seconds
    of one of them, where above `max_nacks`; and why the NACKs cannot be judged (the clients' events were not
    read). A NACK counts only when its INTRODUCE1 was sent after the first NACK (`introduce_sent` on the same
    circuit; without one, when the NACK came): introductions already in flight then (concurrent fetches with
    one stale descriptor) could not have known."""
    collected = _collected(history)
    if collected is None:
        return {}, ["the nodes' events were not collected: NACKs cannot be judged"]
    clients = {r.get("client") for r in history if r.get("type") == "run"} - {None}
    unread = [f"{c}: its events could not be read: NACKs cannot be judged"
              for c in sorted(clients & set(collected.get("missing") or ()))]
    events = _node_events(history)
    sent = {(r["node"], r.get("circuit")): r["t"] for r in events if r.get("event") == "introduce_sent"}
    nacks: dict[tuple[str, str, str], list[tuple[float, float]]] = {}  # -> [(sent, NACKed)]
    for r in events:
        if r.get("event") == "introduce_nack":
            when = sent.get((r["node"], r.get("circuit")), r["t"])
            nacks.setdefault((r["node"], r.get("intro", "?"), r.get("key", "?")), []).append((when, r["t"]))
    storms = {}
    for point, pairs in nacks.items():
        most = max(1 + sum(1 for other_sent, _ in pairs if t < other_sent <= t + NACK_WINDOW)
                   for _, t in pairs)
        if most > max_nacks:
            storms[point] = most
    return storms, unread


def fetch_stats(history: Sequence[dict]) -> dict:
    fetches = _fetches(history)
    latencies = sorted(f["latency_ms"] for f in fetches if f["ok"])
    reasons: dict[str, int] = {}
    for f in fetches:
        if not f["ok"]:
            key = f["result"] + (f" {f['socks_reply']:#04x} {REPLY_NAMES.get(f['socks_reply'], '')}".rstrip()
                                 if f["result"] == "socks_refused" else "")
            reasons[key] = reasons.get(key, 0) + 1

    def pct(p: float) -> float | None:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else None

    recovered = sorted(t for t in recovery_times(history) if t is not None)
    heals = len(heal_points(history))
    return {"fetches": len(fetches), "ok": sum(f["ok"] for f in fetches), "failed": reasons,
            "availability": round(sum(f["ok"] for f in fetches) / len(fetches), 4) if fetches else None,
            "latency_ms": {"p50": pct(0.5), "p95": pct(0.95), "max": latencies[-1] if latencies else None},
            "recovery_s": {"heals": heals, "recovered": len(recovered),
                           "median": statistics.median(recovered) if recovered else None,
                           "max": recovered[-1] if recovered else None}}
