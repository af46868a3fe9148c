"""`onionlab attack guard-discovery TOPOLOGY`: bring the lab up, run the trials, write the report, take the
lab down (or use the lab already running in the run dir, with --running)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from orchestrator.backends import BackendError, open_backend, read_state
from orchestrator.flow import check_reachable
from orchestrator.scale import ready_timeout, voting_interval_for
from orchestrator.topology import load_topology

from .report import write_report
from .run import AttackFailed, describe_lab, result_data, run_attack


def guard_discovery(topology_path: Path, *, backend_name: str, run_dir: Path | None, seeds: int,
                    circuits: int, cells: int, out: Path, running: bool, keep: bool,
                    say: Callable[[str], None] = print) -> dict[str, Path]:
    topology = load_topology(topology_path)
    adversary = [n.name for n in topology.nodes_by_role("relay") if n.adversary]
    if not adversary:
        raise AttackFailed(f"{topology_path}: no relay is marked `adversary: true`")
    started = time.monotonic()
    if running:
        info = read_state(run_dir) if run_dir else None
        if info is None:
            raise BackendError("--running: no lab runs in the run dir")
        backend = open_backend(info.backend, run_dir)
    else:
        backend = open_backend(backend_name, run_dir)
        interval = voting_interval_for(len(topology.nodes_by_role("relay")), topology.timing.voting_interval)
        say(f"starting lab {topology.name!r}: {len(topology.nodes)} nodes, {backend_name} backend")
        backend.up(topology, timeout=ready_timeout(len(topology.nodes), interval),
                   progress=lambda line: say(f"[{time.monotonic() - started:5.1f}s] {line}"))
    try:
        status = backend.status()
        service, client = status["onion_services"][0], status["clients"][0]
        seconds = check_reachable(client["socks"], service["onion"], deadline=time.monotonic() + 120)
        say(f"[{time.monotonic() - started:5.1f}s] lab up; {service['name']} reachable via {client['name']} "
            f"({1000 * seconds:.0f} ms)")
        lab = describe_lab(status, adversary, backend)
        attack_started = time.monotonic()
        trials = run_attack(backend, lab, seeds=seeds, circuits=circuits, cells=cells, say=say)
        data = result_data(trials, lab, topology, circuits=circuits, cells=cells,
                           seconds=time.monotonic() - attack_started)
        data["lab_up_seconds"] = round(attack_started - started, 1)
        data["backend"] = info.backend if running else backend_name
        return write_report(data, out)
    finally:
        if not running and not keep:
            backend.down()
