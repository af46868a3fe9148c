"""What `onionlab watch` shows, collected from the running lab: a Snapshot of every node's /status and
/metrics at one moment, with the rates between two snapshots. No rendering here (render.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from orchestrator import readiness
from orchestrator.backends import require_state
from orchestrator.backends.base import FaultBackend
from orchestrator.chaos.faults import JOURNAL

PARALLEL = 8  # nodes asked at once (each answer takes a few ms; one that does not answer, up to a second)
PREFIX = "onionlab_"

COUNTERS = (("fetches", "fetch_rate"), ("failures", "failure_rate"), ("errors", "error_rate"))
Samples = list[tuple[str, dict[str, str], float]]


@dataclass(slots=True)
class NodeView:
    name: str
    role: str
    state: str  # "up" (answers /status), else the backend's word: running (not answering), paused, exited
    ready: bool = False
    waiting: list[str] = field(default_factory=list)  # the readiness conditions not met
    consensus_age: float | None = None  # seconds since the valid-after of the consensus it holds
    circuits: int | None = None
    links: int | None = None
    descriptors: int | None = None  # service: HSDir uploads accepted; relay: held as HSDir; client: cached
    intro_points: list[str] = field(default_factory=list)  # service: its intro points
    intro_for: int | None = None  # relay: services it is an intro point for
    rendezvous: int | None = None  # client: live rendezvous circuits
    fetches: float = 0  # client: SOCKS replies SUCCEEDED, all time
    failures: float = 0  # client: SOCKS replies other than SUCCEEDED, all time
    errors: float = 0  # errors_total: counted peer errors, all time
    fetch_rate: float | None = None  # per second since the previous snapshot (None: the first one)
    failure_rate: float | None = None
    error_rate: float | None = None


@dataclass(slots=True)
class Snapshot:
    lab: str
    backend: str
    taken: float  # unix seconds
    nodes: list[NodeView]
    faults: list[dict]  # chaos faults in place: {"fault", "node", ...}
    voting_interval: float | None = None  # the authorities' (seconds): how old a consensus may get
    interval: float | None = None  # seconds since the previous snapshot

    @property
    def ready(self) -> int:
        return sum(n.ready for n in self.nodes)

    def total(self, key: str) -> float | None:
        values = [getattr(n, key) for n in self.nodes if getattr(n, key) is not None]
        return sum(values) if values else None

    def to_dict(self) -> dict:
        return {**asdict(self), "ready": self.ready}


def collect(backend: FaultBackend, previous: Snapshot | None = None, *,
            now: Callable[[], float] = time.time) -> Snapshot:
    """Ask every node of the run for /status and /metrics (in parallel) and the backend for those that do
    not answer; rates against `previous`."""
    info = require_state(backend.run_dir)

    def look(name: str) -> tuple[dict | None, Samples | None, str]:
        status = backend.node_status(name)
        metrics = backend.node_metrics(name) if status is not None else None
        state = "up" if status is not None else backend.node_state(name)["status"]
        return status, metrics, state

    with ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="onionlab-watch") as pool:
        answers = list(pool.map(look, [n.name for n in info.nodes]))
    taken = now()
    views = [node_view(n.name, n.role, *answer, now=taken)
             for n, answer in zip(info.nodes, answers, strict=True)]
    voting = next((s.get("voting_interval") for s, _, _ in answers if s and s.get("voting_interval")), None)
    snapshot = Snapshot(info.lab, info.backend, taken, views, faults_in_place(Path(backend.run_dir)), voting)
    if previous is not None:
        add_rates(snapshot, previous)
    return snapshot


def node_view(name: str, role: str, status: dict | None, metrics: Samples | None, state: str, *,
              now: float) -> NodeView:
    view = NodeView(name, role, state)
    if status is None:
        return view
    conditions = readiness.conditions(status)
    view.ready = readiness.is_ready(status)
    view.waiting = [c for c, ok in conditions.items() if not ok]
    view.circuits, view.links = status.get("circuits"), status.get("links")
    samples = metrics or []
    valid_after = ((status.get("consensus") or {}).get("valid_after")
                   or _value(samples, "consensus_valid_after"))
    view.consensus_age = round(now - valid_after, 1) if valid_after else None
    if role == "onion_service":
        view.descriptors = sum((status.get("published") or {}).values())
        view.intro_points = list(status.get("intro_points") or [])
    elif role == "relay" or role == "authority":
        view.descriptors = status.get("hsdir_descriptors")
        view.intro_for = len(status.get("intro_auth_keys") or []) if role == "relay" else None
    elif role == "client":
        view.descriptors = status.get("descriptors_cached")
        view.rendezvous = status.get("rendezvous_circuits")
        replies = [(labels.get("code"), value) for metric, labels, value in samples
                   if metric == PREFIX + "socks_replies_total"]
        view.fetches = sum(v for code, v in replies if code == "SUCCEEDED")
        view.failures = sum(v for code, v in replies if code != "SUCCEEDED")
    view.errors = _total(samples, "errors_total")
    return view


def add_rates(snapshot: Snapshot, previous: Snapshot) -> None:
    """Per-second rates of the counters since `previous` (a restarted node's counters start again at 0:
    a drop counts as what was counted since)."""
    seconds = snapshot.taken - previous.taken
    snapshot.interval = seconds
    if seconds <= 0:
        return
    before = {n.name: n for n in previous.nodes}
    for view in snapshot.nodes:
        old = before.get(view.name)
        if old is None or view.state != "up":
            continue
        for counter, rate in COUNTERS:
            now_, then = getattr(view, counter), getattr(old, counter)
            setattr(view, rate, round((now_ - then if now_ >= then else now_) / seconds, 3))


def faults_in_place(run_dir: Path) -> list[dict]:
    """The chaos journal: the faults a chaos run applied and has not undone yet ([] when none)."""
    try:
        faults = json.loads((run_dir / JOURNAL).read_text())
    except (OSError, ValueError):
        return []
    return [f for f in faults if isinstance(f, dict)] if isinstance(faults, list) else []


def _value(samples: Iterable[tuple[str, dict[str, str], float]], name: str) -> float | None:
    return next((value for metric, _, value in samples if metric == PREFIX + name), None)


def _total(samples: Iterable[tuple[str, dict[str, str], float]], name: str) -> float:
    return sum(value for metric, _, value in samples if metric == PREFIX + name)
