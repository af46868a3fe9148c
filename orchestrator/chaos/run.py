"""Running a scenario against a lab: the baseline, the schedule applied and undone on time while the workload
and the sampler run, every fault undone whatever happens, then the checkers."""

from __future__ import annotations

import bisect
import dataclasses
import math
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ..backends.base import FaultBackend
from ..signals import signal_of, signals_deferred, sigterm_interrupts
from .checkers import Verdict, fetch_stats
from .faults import (
    apply_fault,
    compare_snapshots,
    journal_path,
    lab_snapshot,
    prepare_fault,
    refusals,
    shaping_paths,
    undo_fault,
    write_journal,
)
from .history import History
from .invariants import node_event_fields, service_secrets
from .judge import judge
from .scenario import WORKLOAD_KEYS, ChaosRefused, Scenario, ScenarioError
from .schedule import Op, check_workload, lab_problems, make_schedule
from .targets import choose_live, choose_static, parse_target
from .workload import (
    LAB_STATE_EVERY,
    LabSampler,
    ReadyWatch,
    WorkloadThread,
    credentials_for,
    fetch_once,
    lab_state,
    node_events,
)

BASELINE_RETRY: Final = 0.5  # seconds between two tries of the onion before the run
# A live target that names nobody when its fault starts (no rendezvous circuit yet) is tried again this often,
# for at most the workload's timeout (the time one fetch, which makes the circuits, may take) and until
# TARGET_RETRY before the fault's end; then the op is skipped, recorded as a `target` record.
TARGET_RETRY: Final = 0.5


@dataclass
class RunResult:
    scenario: Scenario
    seed: int
    schedule: list[Op]
    history: list[dict]
    verdicts: list[Verdict]
    history_path: Path | None
    interrupted: bool = False
    interrupted_by: str | None = None  # SIGINT or SIGTERM, when interrupted

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(v.ok for v in self.verdicts)

    def to_dict(self) -> dict:
        return {"scenario": self.scenario.name, "source": self.scenario.source, "seed": self.seed,
                "ok": self.ok, "interrupted": self.interrupted,
                "history": str(self.history_path) if self.history_path else None,
                "schedule": [op.to_dict() for op in self.schedule],
                "verdicts": [v.to_dict() for v in self.verdicts], "stats": fetch_stats(self.history)}


class WorkloadCrashed(RuntimeError):
    """The workload raised something that is not a failed fetch (a bug): the run stops, faults are undone."""


def _resolve(backend: FaultBackend, op: Op, roles: dict[str, str], service: str, client: str,
             busy: set[str]) -> tuple[list[str], list[str] | None, str]:
    """(the op's nodes, the peers a partition's `from` names or None, where they come from), chosen now: a
    live target from its subject's /status (busy nodes left out, by the op's own seed); `from` in full
    (the op's own nodes left out). Either list empty: nothing to apply yet."""
    status = backend.node_status
    nodes, why = list(op.nodes), ""
    if not op.nodes:
        nodes, why = choose_live(parse_target(op.target), op.count, op.choice_seed, status, service, client,
                                 busy, lab=roles)
    peers = None
    given = dict(op.params).get("from") if op.fault == "partition" else None
    if isinstance(given, str):
        target = parse_target(given)
        if target.live:
            peers, found = choose_live(target, None, op.choice_seed, status, service, client, lab=roles)
            why = f"{why}; from {found}" if why else f"from {found}"
        else:
            chosen = choose_static(target, None, roles, random.Random(op.choice_seed), lambda _: True)
            peers = list(chosen) if isinstance(chosen, tuple) else []
    elif given is not None:
        peers = list(given)
    if peers is not None:
        peers = [p for p in peers if p not in nodes]
    return nodes, peers, why


def run_scenario(scenario: Scenario, backend: FaultBackend, *, seed: int | None = None,
                 history_path: Path | None = None, say: Callable[[str], None] = lambda line: None,
                 fetch: Callable[..., dict] = fetch_once) -> RunResult:
    """Run the scenario against the lab the backend runs; every fault is undone before this returns or
    raises. ChaosRefused (nothing changed) when the lab or this host cannot run it."""
    seed = scenario.seed if seed is None else seed
    status = backend.status()
    lab = [(n["name"], n["role"]) for n in status["nodes"]]
    roles = dict(lab)
    problems = lab_problems(scenario, seed, lab)
    if problems:
        raise ScenarioError(problems)
    client, service = check_workload(scenario, lab)
    schedule = make_schedule(scenario, seed, lab)
    refused = refusals(backend, schedule)
    if refused:
        raise ChaosRefused("; ".join(refused))
    for line in shaping_paths(backend, schedule):  # up front: which path each shaping fault takes here
        say(line)
    if journal_path(backend).exists():
        raise ChaosRefused(f"faults of an earlier chaos run are still in place ({journal_path(backend)}): "
                           "undo them with `onionlab chaos --heal`")
    onion = next(s["onion"] for s in status["onion_services"] if s["name"] == service)

    def socks() -> str | None:
        return next((c["socks"] for c in backend.status()["clients"] if c["name"] == client), None)

    address = socks()
    if not onion or not address:
        raise ChaosRefused(f"{service} has no onion address or {client} no SOCKS port: is the lab ready?")
    since_wall = time.time()  # node events from here on are the run's
    deadline = time.monotonic() + scenario.ready_timeout
    while True:  # the baseline: the onion must be reachable before any fault
        started = time.monotonic()
        first = fetch(address, onion, port=scenario.workload.port, n_bytes=1000,
                      timeout=scenario.workload.timeout)
        seconds = time.monotonic() - started
        if first["ok"]:
            break
        if time.monotonic() + BASELINE_RETRY >= deadline:
            raise ChaosRefused(f"{onion} is not reachable through {client} before any fault "
                               f"({scenario.ready_timeout:g} s of tries): {first['error']}")
        time.sleep(BASELINE_RETRY)
    before = lab_snapshot(backend, [name for name, _ in lab])
    # where the nodes' peers see each (the anonymity checker's links), not node_state's networks: a backend
    # whose addresses are not the lab's to keep (swarm: each new task its own) leaves them out there
    addresses = {n["name"]: sorted({n.get("address"), *backend.node_addresses(n["name"]).values()}
                                   - {None, ""}) for n in status["nodes"]}
    history = History(history_path)
    try:
        current = {"socks": address}
        w = scenario.workload

        credentials = credentials_for(w.credentials, w.concurrency)

        def one_fetch(fetcher: int) -> dict:
            extra = {"credentials": c} if (c := credentials(fetcher)) is not None else {}
            return fetch(current["socks"], onion, port=w.port, n_bytes=w.bytes, timeout=w.timeout, **extra)

        def stamp(line: str) -> None:
            say(f"[{history.now():6.1f}s] {line}")

        history.record("run", scenario=scenario.name, source=scenario.source, seed=seed,
                       duration=scenario.duration, lab=[{"name": n, "role": r} for n, r in lab],
                       client=client, service=service, onion=onion, addresses=addresses,
                       workload={k: getattr(w, k) for k in WORKLOAD_KEYS},
                       schedule=[op.to_dict() for op in schedule])
        history.record("baseline", ok=True, latency_ms=round(1000 * seconds, 1))
        workload = WorkloadThread(history, one_fetch, w.interval, stamp, concurrency=w.concurrency,
                                  fetches=w.fetches)
        relays = [name for name, role in lab if role == "relay"]
        secrets = service_secrets(onion)
        sampler = LabSampler(history, lambda: lab_state(backend, service, client, relays, secrets))
        active: dict[int, tuple[Op, list[dict]]] = {}
        in_place: list[dict] = []
        interrupted = False
        interrupted_by: str | None = None
        arrived: list[int] = []

        waiting: dict[int, float] = {}  # op -> when it first found its target empty

        def apply(op: Op) -> float | None:
            """Apply the op now; or, when its target names nobody yet, when to try again (None: skipped)."""
            busy = {u["node"] for _, undos in active.values() for u in undos}
            nodes, peers, why = _resolve(backend, op, roles, service, client, busy)
            if not nodes or peers == []:
                now = history.now()
                first = waiting.setdefault(op.index, now)
                if now == first:
                    history.record("target", event="waiting", op=op.index, fault=op.fault, target=op.target,
                                   why=why)
                    stamp(f"op {op.index}: {op.fault} {op.target}: names nobody yet ({why}); waiting")
                deadline = min(first + w.timeout, op.until - TARGET_RETRY)
                if now < deadline:
                    return min(now + TARGET_RETRY, deadline)
                history.record("target", event="skipped", op=op.index, fault=op.fault, target=op.target,
                               why=why, waited=round(now - first, 1))
                stamp(f"op {op.index}: {op.fault} {op.target}: SKIPPED, still no target after "
                      f"{now - first:.1f} s ({why})")
                return None
            if op.index in waiting:
                history.record("target", event="found", op=op.index, target=op.target, nodes=nodes,
                               waited=round(history.now() - waiting.pop(op.index), 1))
            params = {**dict(op.params), "peers": peers}
            undos: list[dict] = []
            active[op.index] = (op, undos)
            for node in nodes:
                began = history.now()
                try:
                    undo = prepare_fault(backend, op.fault, node, params, [n for n, _ in lab])
                    undos.append(undo)
                    in_place.append(undo)
                    write_journal(backend, in_place)
                    apply_fault(backend, undo, params)
                except Exception as e:  # noqa: BLE001 - the backend's refusal is part of the history
                    history.record("fault", event="start", op=op.index, fault=op.fault, target=op.target,
                                   node=node, began=began, ok=False, error=str(e).splitlines()[0])
                    stamp(f"op {op.index}: {op.fault} {node}: FAILED: {e}")
                    continue  # its undo stays: whatever part of it happened is undone with the others
                history.record("fault", event="start", op=op.index, fault=op.fault, target=op.target,
                               node=node, began=began, ok=True, chosen_from=why or None, undo=undo)
                stamp(f"op {op.index}: {op.fault} {node}" + (f" (from {why})" if why else "") +
                      f" until {op.until:g} s")
            return None

        watches: list[ReadyWatch] = []

        def client_restarted() -> None:
            current["socks"] = socks()  # a restarted client publishes its SOCKS port anew

        def undo(op: Op, undos: list[dict], why: str, watch: bool) -> None:
            """Undo the op's faults; with `watch`, a node started again is watched until ready."""
            while undos:  # each leaves the list once undone: an interruption leaves the rest to the cleanup
                u = undos[-1]
                began = history.now()
                try:
                    how = undo_fault(backend, u)
                    ok, error = True, None
                except Exception as e:  # noqa: BLE001 - recorded; the verification after the run sees what is left
                    how, ok, error = None, False, str(e).splitlines()[0]
                undos.pop()
                if ok:  # a failed undo stays in the journal, for `onionlab chaos --heal`
                    in_place.remove(u)
                    write_journal(backend, in_place)
                history.record("fault", event="end", op=op.index, fault=op.fault, node=u["node"], began=began,
                               ok=ok, why=why, detail=how, error=error)
                if u["fault"] in ("kill", "stop") and ok and watch:
                    watches.append(ReadyWatch(history, backend, u["node"], op.index, scenario.ready_timeout,
                                              client_restarted if u["node"] == client else lambda: None))
                    watches[-1].start()
                stamp(f"op {op.index}: undo {op.fault} {u['node']} ({why}): "
                      + (how if ok else f"FAILED: {error}"))

        pending = list(schedule)
        history.restart_clock()
        history.record("start", t0_wall=round(time.time(), 3))
        stamp(f"scenario {scenario.name} (seed {seed}): {len(schedule)} ops over {scenario.duration:g} s; "
              f"workload: /bytes/{w.bytes} from {service} via {client} every {w.interval:g} s")
        try:
            with sigterm_interrupts():
                workload.start()
                sampler.start()
                while True:
                    threads = [("workload", workload), ("lab state sampler", sampler),
                               *((f"readiness watch of {t.node}", t) for t in watches)]
                    for what, thread in threads:
                        if thread.error is not None:
                            raise WorkloadCrashed(f"the {what} raised {thread.error!r}") from thread.error
                    now = history.now()
                    next_end = min((op.until for op, _ in active.values()), default=math.inf)
                    next_start = pending[0].at if pending else math.inf
                    following = min(next_end, next_start, scenario.duration)
                    if not pending and not active and not workload.is_alive():
                        break  # a workload of so many fetches is done, and so is the schedule
                    if following > now:
                        workload.stopping.wait(min(following - now, 0.25))
                        continue
                    if next_end <= following:
                        index = min(active, key=lambda i: active[i][0].until)
                        undo(*active[index], "scheduled", watch=True)
                        del active[index]
                    elif next_start <= following:
                        op = pending.pop(0)
                        again = apply(op)
                        if again is not None:  # its target names nobody yet: try again soon
                            bisect.insort(pending, dataclasses.replace(op, at=again), key=lambda o: o.at)
                    else:
                        break
        except KeyboardInterrupt as e:
            interrupted, interrupted_by = True, signal_of(e).name
            history.record("interrupted", detail="Ctrl-C or SIGTERM", signal=interrupted_by)
            stamp("interrupted: undoing every fault")
        finally:
            with signals_deferred(arrived):
                workload.stopping.set()
                sampler.stopping.set()
                for index in sorted(active, reverse=True):
                    undo(*active.pop(index), "cleanup", watch=False)
                workload.join(timeout=w.timeout + 5)
                sampler.join(timeout=LAB_STATE_EVERY + 5)
                for t in watches:  # each gives up after the ready timeout
                    t.join(timeout=scenario.ready_timeout + 5)
                after = lab_snapshot(backend, [name for name, _ in lab])
                left = compare_snapshots(before, after)
                history.record("cleanup", ok=not left, left=left, unapplied=[op.index for op in pending])
                stamp("cleanup: every fault undone, the lab is as it was" if not left
                      else "cleanup: LEFT BEHIND: " + "; ".join(left))
        if arrived:
            interrupted = True
            interrupted_by = interrupted_by or signal.Signals(arrived[0]).name
        events, missing = node_events(backend, lab, since_wall, time.time())
        t0_wall = next(r["t0_wall"] for r in history.records if r["type"] == "start")
        for fields in node_event_fields(events, t0_wall):
            history.record("node_event", **fields)
        history.record("node_events", count=len(events), missing=missing)
        verdicts = judge(history.records, scenario.checkers)
        for v in verdicts:
            history.record("verdict", **v.to_dict())
        history.record("end", ok=not interrupted and all(v.ok for v in verdicts), interrupted=interrupted)
        history.close()
        return RunResult(scenario, seed, schedule, history.records, verdicts, history_path, interrupted,
                         interrupted_by)
    finally:
        history.close()  # at once, even when something raises
