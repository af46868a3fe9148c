"""The default lab in containers: `python -m bench.docker` prints one JSON object (needs the node image).

  up_to_onion_s   from calling DockerBackend.up() to the end of the first verified fetch from the onion
                  through the client's published SOCKS port (orchestrator.flow.check_reachable: /bytes/1000,
                  every byte checked). up_phases_s splits it, each phase as seconds since up() was called:
                    containers_started    the last node container's first event (its *_started line)
                    consensus             the first consensus an authority published
                    descriptor_published  the onion service's first accepted descriptor upload
                    ready                 up() returned: every node's /status ready
                    first_fetch           the first verified fetch ended
  memory_MB       per role, from the engine's stats after the fetch: rss (anonymous memory: cgroup v2 anon,
                  v1 rss) and usage (what the cgroup is charged, page cache included); max and mean over the
                  role's containers
  image_MB        the size of onionlab/node:latest
The anchors of issue 4 are there to compare with; nothing is asserted. The lab is always brought down.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from orchestrator.backends.docker import DockerBackend
from orchestrator.flow import check_reachable, parse_events
from orchestrator.topology import load_topology

DEFAULT_TOPOLOGY = Path(__file__).resolve().parents[1] / "topologies" / "default.yaml"
IMAGE = "onionlab/node:latest"
MB = 1e6
ANCHORS = {"chutney_launch_s": [87, 100], "goal_up_to_onion_s_below": 10, "goal_memory_MB_below": 40}


def _first(events: list[dict], event: str, role: str | None = None) -> float | None:
    times = [e["ts"] for e in events if e["event"] == event and (role is None or e.get("role") == role)]
    return min(times, default=None)


def _image_mb() -> float | None:
    done = subprocess.run(["docker", "image", "inspect", IMAGE, "--format", "{{.Size}}"],
                          capture_output=True, text=True)
    return round(int(done.stdout) / MB, 1) if done.returncode == 0 else None


def measure(topology_path: Path, timeout: float) -> dict:
    topology = load_topology(topology_path)
    with tempfile.TemporaryDirectory(prefix="onionlab-bench-") as run_dir:
        backend = DockerBackend(Path(run_dir) / "run")
        wall0, t0 = time.time(), time.monotonic()
        try:
            info = backend.up(topology, timeout=timeout)
            ready = time.monotonic() - t0
            status = backend.status()
            onion = status["onion_services"][0]["onion"]
            socks = status["clients"][0]["socks"]
            check_reachable(socks, onion, deadline=time.monotonic() + timeout)
            fetched = time.monotonic() - t0
            events = {n.name: parse_events(backend.logs(n.name)) for n in info.nodes}
            memory = backend.memory()
        finally:
            backend.down()
    every = [e for node_events in events.values() for e in node_events]
    started = [min((e["ts"] for e in node_events if e["event"].endswith("_started")), default=None)
               for node_events in events.values()]

    def since(ts: float | None) -> float | None:
        return None if ts is None else round(ts - wall0, 2)

    by_role: dict[str, dict] = {}
    for node in info.nodes:
        if node.name in memory:
            by_role.setdefault(node.role, {"rss": [], "usage": []})
            for key in ("rss", "usage"):
                by_role[node.role][key].append(memory[node.name][key] / MB)
    return {
        "topology": str(topology_path),
        "nodes": len(info.nodes),
        "up_to_onion_s": round(fetched, 2),
        "up_phases_s": {
            "containers_started": since(max(started)) if None not in started else None,
            "consensus": since(_first(every, "consensus_published")),
            "descriptor_published": since(_first(every, "descriptor_published", "onion_service")),
            "ready": round(ready, 2),
            "first_fetch": round(fetched, 2),
        },
        "memory_MB": {role: {key: {"max": round(max(values), 1), "mean": round(statistics.fmean(values), 1)}
                             for key, values in figures.items()}
                      for role, figures in sorted(by_role.items())},
        "image_MB": _image_mb(),
        "anchors": ANCHORS,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.docker", description=__doc__.splitlines()[0])
    parser.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY)
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.topology, args.timeout), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
