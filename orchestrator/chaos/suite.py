"""The reliability suite: the scenarios of topologies/chaos/ that issue 9 names, run one after another
against one lab (each heals fully before the next), on one or more seeds; one JSON and one self-contained
HTML report (report.render_suite_html). `make chaos-suite` runs it on three seeds; tests/docker and
tests/net run every scenario once.

    python -m orchestrator.chaos.suite --seeds 1 2 3 --out chaos-suite   # the lab `onionlab up` started
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from ..backends.base import FaultBackend
from .run import run_scenario
from .scenario import ChaosRefused, Scenario, load_scenario
from .schedule import make_schedule

SCENARIOS: Final = Path(__file__).resolve().parents[2] / "topologies" / "chaos"
# in the order they run: random-chaos, the longest and roughest, last
SUITE: Final = ("intro-point-failure", "hsdir-failures", "authority-minority-loss", "authority-majority-loss",
                "rendezvous-point-dies-mid-transfer", "onion-service-restart", "guard-failure",
                "partition-heal", "relay-pause", "many-clients", "latency-loss", "clock-skew", "random-chaos")


def load_suite(names: Sequence[str] = SUITE) -> list[Scenario]:
    return [load_scenario(SCENARIOS / f"{name}.yaml") for name in names]


def supported(scenario: Scenario, backend: FaultBackend) -> bool:
    """Can this backend apply every fault of the scenario at all (local: no partition)?"""
    return {spec.fault for spec in scenario.faults} <= backend.supported_faults()


def run_one(scenario: Scenario, backend: FaultBackend, seed: int, history_dir: Path,
            say: Callable[[str], None] = lambda line: None) -> dict:
    """One run: {scenario, description, seed, ok, refused, seconds, history (records), history_path,
    verdicts, stats}."""
    path = history_dir / f"{scenario.name}-seed{seed}.jsonl"
    started = time.monotonic()
    base = {"scenario": scenario.name, "description": scenario.description, "seed": seed}
    try:
        result = run_scenario(scenario, backend, seed=seed, history_path=path, say=say)
    except ChaosRefused as e:
        return {**base, "ok": False, "refused": str(e), "seconds": time.monotonic() - started, "history": [],
                "history_path": None, "verdicts": [], "stats": None}
    return {**base, **result.to_dict(), "refused": None, "seconds": round(time.monotonic() - started, 1),
            "history": result.history, "history_path": str(path)}


def write_report(runs: Sequence[dict], out: Path) -> tuple[Path, Path]:
    """suite.json (every run without its records: they are in the history files) and suite.html."""
    from ..report import render_suite_html

    out.mkdir(parents=True, exist_ok=True)
    kept = [{k: v for k, v in r.items() if k != "history"} for r in runs]
    (out / "suite.json").write_text(json.dumps(kept, indent=2) + "\n")
    (out / "suite.html").write_text(render_suite_html(runs))
    return out / "suite.json", out / "suite.html"


def main(argv: Sequence[str] | None = None) -> int:
    from ..backends import default_run_dir, open_backend, read_state
    from ..report import recovery_line

    parser = argparse.ArgumentParser(prog="python -m orchestrator.chaos.suite",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--only", nargs="+", choices=SUITE, help="these scenarios (default: all)")
    parser.add_argument("--out", type=Path, default=Path("chaos-suite"))
    parser.add_argument("--run-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    run_dir = args.run_dir or default_run_dir()
    info = read_state(run_dir)
    if info is None:
        print(f"no lab is running (nothing in {run_dir}); start one with `onionlab up`", file=sys.stderr)
        return 2
    backend = open_backend(info.backend, run_dir)
    lab = [(n["name"], n["role"]) for n in backend.status()["nodes"]]
    runs = []
    for scenario in load_suite(args.only or SUITE):
        for seed in args.seeds:
            make_schedule(scenario, seed, lab)  # a scenario the lab cannot give its targets: say so now
            if not supported(scenario, backend):
                print(f"{scenario.name}: not on the {backend.name} backend (faults it lacks)",
                      file=sys.stderr)
            run = run_one(scenario, backend, seed, args.out / "histories",
                          say=lambda line: print(line, file=sys.stderr, flush=True))
            runs.append(run)
            figures = run["refused"] or recovery_line(run["stats"])
            verdict = "PASS" if run["ok"] else "FAIL"
            print(f"{scenario.name} seed {seed}: {verdict} in {run['seconds']:.0f} s; {figures}", flush=True)
            write_report(runs, args.out)  # after every run: an interrupted suite still leaves a report
    json_path, html_path = write_report(runs, args.out)
    print(f"{sum(r['ok'] for r in runs)} of {len(runs)} runs passed; report: {html_path}, {json_path}")
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
