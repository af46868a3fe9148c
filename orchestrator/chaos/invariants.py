"""Protocol invariants: checkers that judge what the nodes themselves said during a run (their `node_event`
records: every link_up with the peer's address, every consensus accepted, what relays logged), besides what
the workload saw. Pure functions of a history, like checkers.py.

The history's `run` record maps each node to its addresses (`addresses`); the `lab_state` samples carry the
service's and the client's guards (`guards`: {node: {primary, order}}), the addresses each relay has links
from (`links_from`) and the relays whose /status names the service (`service_seen_by`)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from nodes.core.errors import ProtocolError
from nodes.core.onion_address import decode_onion_address

from .checkers import Verdict, _collected, _fault_windows, _node_events, heal_points

# relay events that say a relay played a part for an onion service, and which part
ROLE_EVENTS = {"intro_point_registered": "intro point", "introduce_forwarded": "intro point",
               "descriptor_stored": "HSDir", "rendezvous_point_registered": "rendezvous point",
               "rendezvous_joined": "rendezvous point"}

# a run shorter than this may see no consensus at all from a healthy lab (a consensus every 10 s in the
# default lab, up to 60 s in large ones, fetched at a random moment after it): consensus_health judges none
CONSENSUS_JUDGED_AFTER = 30.0


def _run(history: Sequence[dict]) -> dict:
    return next((r for r in history if r.get("type") == "run"), {})


def allowed_guards(history: Sequence[dict], node: str) -> set[str]:
    """Every relay that `node` may have a link to: any of its primary guards in any sample, and the guard
    after them (its first hop when a circuit's last hop is its primary guard: guard-spec 4.3). A guard that
    is in one sample's order and gone from the next failed in between, at a moment no sample saw: from then
    on the guards after it moved up, so they count as if it had been gone already."""
    samples = [g for r in history
               if r.get("type") == "lab_state" and (g := (r.get("guards") or {}).get(node))]
    allowed: set[str] = set()
    for i, guards in enumerate(samples):
        order = guards.get("order") or []
        later = set(samples[i + 1].get("order") or []) if i + 1 < len(samples) else set(order)
        primary = guards.get("primary") or []
        allowed |= set(primary) | set(order[: len(primary) + 1])
        allowed |= set([g for g in order if g in later][: len(primary) + 1])
    return allowed


def _roles_played(history: Sequence[dict]) -> dict[str, set[str]]:
    """node -> the parts it played for onion services (intro point, HSDir, rendezvous point)."""
    roles: dict[str, set[str]] = {}
    for r in _node_events(history):
        if r.get("event") in ROLE_EVENTS:
            roles.setdefault(r["node"], set()).add(ROLE_EVENTS[r["event"]])
    for r in history:
        if r.get("type") == "lab_state":
            for name in (r.get("intro_points") or {}):
                roles.setdefault(name, set()).add("intro point")
    return roles


def _who_saw(history: Sequence[dict], node: str) -> tuple[dict[str, list[tuple[float, str]]], set[str]]:
    """Which relays had a link from one of `node`'s addresses: ({relay: (when, address) of each sign of a
    link opened during the run}, {relays whose link was open already at the first sample}). Signs: the
    relays' link_up events, and their open links sampled (a link not open at the first sample was opened
    during the run, even if its event was lost). A link older than the run was judged by the run in which
    it opened: its relay may have been one of the node's guards then and no longer be."""
    addresses = set((_run(history).get("addresses") or {}).get(node) or [])
    seen: dict[str, list[tuple[float, str]]] = {}
    for r in _node_events(history, "link_up"):
        if r["node"] != node and r.get("peer") in addresses:
            seen.setdefault(r["node"], []).append((r["t"], r["peer"]))
    samples = [r for r in history if r.get("type") == "lab_state" and r.get("links_from") is not None]
    first = {(relay, p) for relay, peers in (samples[0]["links_from"] if samples else {}).items()
             for p in peers if p in addresses and relay != node}
    for r in samples[1:]:
        for relay, peers in r["links_from"].items():
            new = [(r["t"], p) for p in peers if p in addresses and relay != node and (relay, p) not in first]
            if new:
                seen.setdefault(relay, []).extend(new)
    return {relay: sorted(signs) for relay, signs in seen.items()}, {relay for relay, _ in first}


def service_secrets(onion: str) -> list[str]:
    """What names the service: its onion address and its identity key (hex), as the RP must never see."""
    try:
        return [onion.removesuffix(".onion"), decode_onion_address(onion).hex()]
    except ProtocolError:  # no onion address (a fake lab's): nothing to look for
        return []


def check_anonymity(history: Sequence[dict]) -> Verdict:
    """No relay but the service's guards ever has a link from the service's address (so no intro point,
    HSDir or rendezvous point does), and none but the client's guards from the client's; no relay's event or
    /status names the service's onion address or identity key (the rendezvous point above all)."""
    run, collected = _run(history), _collected(history)
    problems: list[str] = []
    if collected is None or collected.get("missing"):
        problems.append("the nodes' events could not be read"
                        + (f" from {', '.join(collected['missing'])}" if collected else ""))
    addresses = run.get("addresses") or {}
    roles = _roles_played(history)
    judged, older = 0, 0
    for who, node in (("service", run.get("service")), ("client", run.get("client"))):
        if not addresses.get(node):
            problems.append(f"the history has no address of the {who} {node}: cannot judge who saw it")
            continue
        guards = allowed_guards(history, node)
        if not guards:
            problems.append(f"no sample of the {who} {node}'s guards: cannot judge who saw it")
            continue
        saw, before = _who_saw(history, node)
        older += len(before)
        if not saw and not before:
            problems.append(f"no sign of a link from the {who} {node} at any relay: nothing to judge")
        for peer, signs in sorted(saw.items()):
            judged += len(signs)
            if peer not in guards:
                parts = ", ".join(sorted(roles.get(peer, ()))) or "no onion-service part seen"
                problems.append(f"{peer} ({parts}) had a link from the {who} {node}'s address {signs[0][1]} "
                                f"({len(signs)} sign(s), first at {signs[0][0]:.1f} s); its guards: "
                                f"{', '.join(sorted(guards))}")
    secrets = service_secrets(str(run.get("onion") or ""))
    relay_events = [r for r in _node_events(history) if r.get("role") == "relay"]
    for r in relay_events:
        text = json.dumps({k: v for k, v in r.items() if k not in ("type", "t")})
        for secret in secrets:
            if secret in text:
                what = "onion address" if len(secret) == 56 else "identity key"
                problems.append(f"{r['node']} ({', '.join(sorted(roles.get(r['node'], ()))) or 'a relay'}) "
                                f"logged the service's {what} in its {r['event']} event at {r['t']:.1f} s")
    seen_by = sorted({n for r in history if r.get("type") == "lab_state"
                      for n in r.get("service_seen_by") or ()})
    problems += [f"{n}'s /status names the service's onion address or identity key" for n in seen_by]
    if problems:
        return Verdict("anonymity", False, f"{len(problems)} anonymity problem(s)", problems)
    return Verdict("anonymity", True, f"{judged} sign(s) of links opened during the run from the service or "
                                      f"the client, each at one of its guards ({older} older link(s) not "
                                      f"judged); no relay named the service in {len(relay_events)} events")


def check_consensus_health(history: Sequence[dict], *, fresh_within: float | None = None,
                           stalled_after: float | None = None) -> Verdict:
    """Every consensus a node accepted lists relays. With `fresh_within`: after the last heal every node that
    accepted a consensus during the run accepts a newer one within that many seconds (a lab whose
    authorities came back makes consensuses again). With `stalled_after`: while a majority of the
    authorities is down (from the fault that took the majority down until the undo that restores it
    begins) nothing new can be signed: no node accepts a consensus valid from more than `stalled_after`
    seconds into that time until its end, so nodes keep the last one."""
    # a stock tor node's consensus_received (translated from its control events) says neither how many relays
    # nor from when: it cannot be judged here
    every = _node_events(history, "consensus_received")
    received = [r for r in every if "relays" in r]
    unjudged = len(every) - len(received)
    collected = _collected(history)
    problems = []
    if collected is None or collected.get("missing"):
        problems.append("the nodes' events could not be read"
                        + (f" from {', '.join(collected['missing'])}" if collected else ""))
    run_seconds = max((r["t"] for r in history), default=0.0)
    if not received and run_seconds >= CONSENSUS_JUDGED_AFTER:
        problems.append(f"no node accepted a consensus in the run's {run_seconds:.0f} s")
    elif not received:  # a short run (many-clients: 5 s) may fall between two consensuses of a healthy lab
        return Verdict("consensus_health", True, f"no consensus arrived in the run's {run_seconds:.0f} s "
                                                 f"(under {CONSENSUS_JUDGED_AFTER:g} s): not judged")
    empty = [r for r in received if not r.get("relays")]
    problems += [f"{r['node']} accepted a consensus listing {r.get('relays')} relays (valid-after "
                 f"{r.get('valid_after')}) at {r['t']:.1f} s" for r in empty]
    summary = f"{len(received)} consensus(es) accepted, each listing relays" + (
        f" ({unjudged} more from tor nodes, which do not say)" if unjudged else "")
    if stalled_after is not None:
        start = next((r for r in history if r.get("type") == "start"), None)
        if start is None:
            problems.append("the history has no start record: cannot place the consensuses in time")
        else:
            t0 = start["t0_wall"]
            spans = _majority_down(history)
            for lo, hi in spans:
                made = [r for r in received
                        if t0 + lo + stalled_after < (r.get("valid_after") or 0) < t0 + hi]
                problems += [f"{r['node']} accepted a consensus valid from {r['valid_after']} "
                             f"({r['valid_after'] - t0:.1f} s), made while a majority of the authorities was "
                             f"down ({lo:.1f} to {hi:.1f} s)" for r in made]
            if not spans:
                problems.append("stalled_after: a majority of the authorities was never down: nothing to "
                                "judge")
            else:
                summary += (f"; none made while a majority of the authorities was down "
                            f"({', '.join(f'{lo:.1f}-{hi:.1f} s' for lo, hi in spans)})")
    if fresh_within is not None:
        heals = heal_points(history)
        if heals:
            healed = heals[-1][0]
            late = []
            for node in sorted({r["node"] for r in received}):
                after = [r["t"] for r in received if r["node"] == node and r["t"] >= healed]
                if not after or after[0] - healed > fresh_within:
                    late.append(node)
            if late:
                problems.append(f"no new consensus within {fresh_within:g} s of the last heal "
                                f"({healed:.1f} s) at {', '.join(late)}")
            else:
                summary += f"; every node had a new one within {fresh_within:g} s of the last heal"
    if problems:
        return Verdict("consensus_health", False, f"{len(problems)} consensus problem(s)", problems)
    return Verdict("consensus_health", True, summary)


def _fault_spans(history: Sequence[dict]) -> list[tuple[float, float, str]]:
    """(start, when its undo began, description) of every applied fault (the run's end when never undone)."""
    end_of_run = max((r["t"] for r in history), default=0.0)
    undo_began = {(r.get("op"), r.get("node")): r.get("began", r["t"]) for r in history
                  if r.get("type") == "fault" and r.get("event") == "end"}
    return [(r["t"], undo_began.get((r.get("op"), r.get("node")), end_of_run),
             f"op {r.get('op')} {r.get('fault')} {r.get('node')}") for r in history
            if r.get("type") == "fault" and r.get("event") == "start" and r.get("ok")]


def _majority_down(history: Sequence[dict]) -> list[tuple[float, float]]:
    """(from, to) of each time more than half of the lab's authorities were in a fault."""
    authorities = {n["name"] for n in _run(history).get("lab") or [] if n.get("role") == "authority"}
    changes = sorted([(lo, 1) for lo, _, what in _fault_spans(history) if what.split()[-1] in authorities]
                     + [(hi, -1) for _, hi, what in _fault_spans(history) if what.split()[-1] in authorities])
    spans, down, since = [], 0, 0.0
    for t, step in changes:
        was = down > len(authorities) / 2
        down += step
        if not was and down > len(authorities) / 2:
            since = t
        elif was and not down > len(authorities) / 2:
            spans.append((since, t))
    return spans


def check_next_guard(history: Sequence[dict]) -> Verdict:
    """When a fault takes down the service's primary guard, the service moves to the guard that came next
    in its order before the fault (not to some other relay): every sample during the fault shows the old
    primary or that one, and at least one shows the move."""
    service = _run(history).get("service")
    samples = [r for r in history if r.get("type") == "lab_state" and (r.get("guards") or {}).get(service)]
    problems, judged = [], []
    for start, end, what in _fault_windows(history):
        node = what.split()[-1]
        before = [s for s in samples if s["t"] <= start]
        if not before:
            continue
        was = before[-1]["guards"][service]
        if node not in (was.get("primary") or []):
            continue
        successor = next((g for g in was.get("order") or [] if g not in was["primary"]), None)
        during = [s for s in samples if start < s["t"] and (end is None or s["t"] <= end)]
        moved = [s for s in during if successor in (s["guards"][service].get("primary") or [])]
        wrong = [(s["t"], p) for s in during for p in s["guards"][service].get("primary") or []
                 if p not in (*was["primary"], successor)]
        judged.append(f"{what}: {service}'s guard {node}, next in order {successor}: moved there in "
                      f"{len(moved)} of {len(during)} samples during the fault")
        if successor is None:
            problems.append(f"{what}: {service} had no guard after {node} in its order {was.get('order')}")
        elif not moved:
            problems.append(f"{what}: {service} never moved to its next guard {successor} "
                            f"({len(during)} samples during the fault)")
        problems += [f"{what}: at {t:.1f} s {service}'s primary guard was {p}, neither {node} nor the next "
                     f"in order {successor}" for t, p in wrong]
    if not judged:
        return Verdict("next_guard", False, f"no fault took down {service}'s primary guard: nothing to judge")
    if problems:
        return Verdict("next_guard", False, f"{len(problems)} problem(s) with the guard moves",
                       problems + judged)
    return Verdict("next_guard", True, f"{len(judged)} guard loss(es), each followed by a move to the next "
                                       "guard in order", judged)


def node_event_fields(events: Iterable[dict], t0_wall: float) -> list[dict]:
    """Node events as the fields of `node_event` history records: t (seconds since the run's start), ts (the
    node's wall clock), node, role, event and the event's own fields."""
    return [{**{k: v for k, v in e.items() if k != "type"}, "t": round(e["ts"] - t0_wall, 3)}
            for e in sorted(events, key=lambda e: e["ts"])]
