"""`onionlab chaos`: break a running lab on purpose, on a seeded schedule, and judge what happened.

The Jepsen model. A scenario file (topologies/chaos/*.yaml, docs/chaos.md) names faults (kill, stop, pause,
partition, split, bandwidth, delay, loss), their targets (a node, a random node of a role, a group of
authorities, or what the protocol names: intro points, HSDirs, rendezvous point, path, guards; targets.py)
and when they start and how long they last. `make_schedule`
turns it and a seed into a list of operations: the same seed and lab give the same schedule. While the
schedule runs, a workload fetches /bytes/N from the onion through a client's SOCKS port again and again, each
time with fresh SOCKS credentials (a new rendezvous), and verifies every byte. Everything that happens goes
into a history (JSONL: every fault's start and end, every fetch with its result, latency and SOCKS reply),
and checkers judge the history afterwards: no wrong bytes ever, every fault applied and undone and nothing
left behind, availability overall and after the last fault healed, recovery within N seconds of each heal.
The lab's state is sampled too (every intro point the service lists held at its relay? the NACKs the client
got from each), so that a degraded lab fails a run even while clients get through by falling back.

Every fault is undone at the end whatever happens: the schedule ends, Ctrl-C or SIGTERM arrives, the workload
or the backend raises. Faults in place are also written to `<run dir>/chaos-faults.json`, so that even after
the orchestrator was SIGKILLed `onionlab chaos --heal` undoes them.

The faults are methods of the backend (backends/base.py: FaultBackend, and NetworkFaultBackend for the network
faults); a backend declares which it supports and a run asks before anything changes. This package decides
what to do when and judges it, one concern a module:

    scenario.py   what a scenario can say, and reading one (every problem as file:line:column: field)
    targets.py    the target grammar, and choosing a target's nodes (by the schedule, or from /status)
    schedule.py   scenario + seed + lab -> the operations, in order
    faults.py     applying and undoing a fault through the backend; the journal; what a backend refuses
    workload.py   the verified fetches and the lab-state sampler (threads writing the history)
    history.py    the history (JSONL), where it goes and how `down` keeps it
    checkers.py   pure functions of a history -> verdicts (what the workload saw, the faults, the lab state)
    invariants.py pure functions of a history -> verdicts (what the nodes said: anonymity, consensus health)
    judge.py      which checkers judge a run
    run.py        run_scenario: all of the above, every fault undone whatever happens

The names the CLI, the report and the tests use are importable from here.
"""

from __future__ import annotations

from .checkers import (
    NACK_WINDOW,
    Verdict,
    check_availability,
    check_faults,
    check_lab_state,
    check_next_fetch,
    check_no_wrong_bytes,
    check_recovers,
    fetch_stats,
    heal_points,
    recovery_times,
)
from .faults import (
    JOURNAL,
    apply_fault,
    clear_node_control,
    compare_snapshots,
    heal,
    journal_path,
    lab_snapshot,
    prepare_fault,
    refusals,
    shaping_paths,
    undo_fault,
    write_journal,
)
from .history import (
    HISTORIES,
    OLD_HISTORIES,
    History,
    default_history,
    keep_histories,
    read_history,
)
from .invariants import (
    check_anonymity,
    check_consensus_health,
    check_next_guard,
)
from .judge import judge
from .run import (
    BASELINE_RETRY,
    RunResult,
    WorkloadCrashed,
    run_scenario,
)
from .scenario import (
    ALWAYS,
    CHECKERS,
    FAULT_KEYS,
    FAULTS,
    SHAPING,
    SIGNALS,
    TOP_KEYS,
    WORKLOAD_KEYS,
    ChaosRefused,
    Checkers,
    FaultSpec,
    Scenario,
    ScenarioError,
    Where,
    Workload,
    load_scenario,
    parse_scenario,
)
from .schedule import (
    Op,
    check_workload,
    lab_problems,
    make_schedule,
)
from .targets import (
    FORMS,
    Target,
    TargetError,
    choose_live,
    live_candidates,
    parse_target,
)
from .workload import (
    LAB_STATE_EVERY,
    LabSampler,
    WorkloadThread,
    fetch_once,
    lab_state,
)

__all__ = [
    "ALWAYS",
    "BASELINE_RETRY",
    "CHECKERS",
    "ChaosRefused",
    "Checkers",
    "FAULTS",
    "FAULT_KEYS",
    "FORMS",
    "FaultSpec",
    "HISTORIES",
    "History",
    "JOURNAL",
    "LAB_STATE_EVERY",
    "LabSampler",
    "NACK_WINDOW",
    "OLD_HISTORIES",
    "Op",
    "RunResult",
    "SHAPING",
    "SIGNALS",
    "Scenario",
    "ScenarioError",
    "Target",
    "TargetError",
    "TOP_KEYS",
    "Verdict",
    "WORKLOAD_KEYS",
    "Where",
    "Workload",
    "WorkloadCrashed",
    "WorkloadThread",
    "apply_fault",
    "check_availability",
    "check_faults",
    "check_lab_state",
    "check_no_wrong_bytes",
    "check_recovers",
    "check_workload",
    "choose_live",
    "compare_snapshots",
    "default_history",
    "fetch_once",
    "fetch_stats",
    "heal",
    "heal_points",
    "journal_path",
    "judge",
    "recovery_times",
    "check_next_fetch",
    "check_anonymity",
    "check_consensus_health",
    "check_next_guard",
    "keep_histories",
    "lab_problems",
    "lab_snapshot",
    "clear_node_control",
    "shaping_paths",
    "lab_state",
    "live_candidates",
    "load_scenario",
    "make_schedule",
    "parse_scenario",
    "parse_target",
    "prepare_fault",
    "read_history",
    "refusals",
    "run_scenario",
    "undo_fault",
    "write_journal",
]
