"""Labs of growing size on each backend: `python -m bench.scale` (`make bench-scale`; not in CI: about half an
hour on 2 cores). Writes scale.json and scale.png into --out.

For each backend (local, docker) and size (10, 50, 100, 200, 300 nodes) it starts a lab of that size (the
shape of topologies/large.yaml scaled down: 3 authorities below 200 nodes and 5 from there, an onion service
per 30 nodes, a client per 60, the rest relays), measures, and brings it down again. Each lab runs under the
shared lock (/tmp/onionlab-docker.lock: every helper's Docker work and large labs take turns on this machine).

  ready_s            from calling up() to every node's /status saying ready (up() returning)
  first_fetch_s      from calling up() to the end of the first verified fetch from the first onion service
                     through the first client (orchestrator.flow.check_reachable, retried until it works)
  rss_mb, pss_mb,    per role: the node processes' resident memory (mean and max): all of it (Rss, shared
  anon_mb            libraries counted in full in every process), proportional (Pss: shared pages divided
                     among their users), anonymous (the process's own: what a container's cgroup is charged
                     beyond the page cache); under Docker the container's main process, plus shim_rss_mb:
                     the engine's per-container shim process, and cgroup_mb: what each container's memory
                     cgroup is charged, by role: all of it (usage: the process's own memory, the page cache
                     of the files it read, kernel memory), anonymous (anon) and page cache (file)
  idle_cpu_cores     the CPU time every node process (and, under Docker, its shim) used over IDLE_SECONDS
                     once the lab was ready and the fetch done, divided by those seconds (idle_cpu_by_role:
                     the node processes' share by role; idle_wakeups_per_s: a node's voluntary context
                     switches a second, mean by role: how often it wakes up)
  consensus          the published consensus from the first authority: bytes, relays listed; build_s:
                     from computing (round start + 0.2 V + vote delay) to publishing it (median of the rounds
                     seen; signing and gathering a majority of signatures included); voting_interval_s
A size that fails records its error and the bench goes on with the next.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from bench.plot import Panel, Series, render
from nodes.config import Timing
from nodes.core.consensus import parse_consensus
from nodes.net.dirclient import CONSENSUS_PATH
from orchestrator.backends import open_backend, read_state
from orchestrator.flow import check_reachable
from orchestrator.scale import ready_timeout, scaled_timing
from orchestrator.topology import parse_topology

SIZES = (10, 50, 100, 200, 300)
BACKENDS = ("local", "docker")
LOCK = "/tmp/onionlab-docker.lock"
IDLE_SECONDS = 30.0
FIRST_FETCH_TIMEOUT = 180.0
REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / ".cache" / "bench-scale"
TICK = os.sysconf("SC_CLK_TCK")


def composition(nodes: int) -> dict[str, int]:
    """How many nodes of each role a lab of `nodes` nodes has (module docstring)."""
    authorities = 3 if nodes < 200 else 5
    services, clients = max(1, nodes // 30), max(1, nodes // 60)
    return {"authority": authorities, "relay": nodes - authorities - services - clients,
            "onion_service": services, "client": clients}


def topology_text(nodes: int, image: str) -> str:
    roles = composition(nodes)
    return f"""\
name: scale{nodes}
networks:
  onionnet: {{subnet: 10.81.0.0/23}}
defaults: {{image: "{image}"}}
nodes:
  - {{name: auth, role: authority, count: {roles["authority"]}}}
  - {{name: relay, role: relay, count: {roles["relay"]}}}
  - {{name: hs, role: onion_service, count: {roles["onion_service"]}, services: [{{port: 80, target: http}}]}}
  - {{name: client, role: client, count: {roles["client"]}}}
"""


@contextmanager
def machine_lock():
    with open(LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _proc(pid: int) -> tuple[int, dict[str, int], int, int] | None:
    """(CPU ticks used, {Rss, Pss, Anonymous} in KiB, parent PID, voluntary context switches: its wakeups)
    of a process, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    memory = {key.rstrip(":"): int(value) for key, value, *_ in (line.split() for line in rollup[1:])
              if key.rstrip(":") in ("Rss", "Pss", "Anonymous")}
    switches = next((int(line.split()[1]) for line in status if line.startswith("voluntary_ctxt_switches")),
                    0)
    return int(stat[11]) + int(stat[12]), memory, int(stat[1]), switches


def _cgroup_memory(pid: int, proc: Path = Path("/proc"),
                   cgroup_root: Path = Path("/sys/fs/cgroup")) -> dict[str, int] | None:
    """{usage, anon, file} in KiB that the memory cgroup of a process is charged (cgroup v1 or v2), or
    None when it cannot be read."""
    try:
        lines = (proc / str(pid) / "cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):  # v1: its own hierarchy
            base = cgroup_root / "memory" / path.lstrip("/")
            usage, anon, file = "memory.usage_in_bytes", "total_rss", "total_cache"
            break
    else:  # v2: the one unified hierarchy
        path = next((line.split(":", 2)[2] for line in lines if line.startswith("0::")), None)
        if path is None:
            return None
        base, usage, anon, file = cgroup_root / path.lstrip("/"), "memory.current", "anon", "file"
    try:
        stat = dict(line.split() for line in (base / "memory.stat").read_text().splitlines())
        return {"usage": int((base / usage).read_text()) // 1024, "anon": int(stat[anon]) // 1024,
                "file": int(stat[file]) // 1024}
    except (OSError, KeyError, ValueError):
        return None


def node_pids(backend, run_dir: Path) -> dict[str, tuple[str, int]]:
    """node name -> (role, PID of its node process, as this host sees it)."""
    info = read_state(run_dir)
    if info.backend == "local":
        return {n.name: (n.role, n.pid) for n in info.nodes}
    found = {}
    for container in backend.client.containers.list(filters={"label": f"onionlab.run={info.run_id}",
                                                             "status": "running"}):
        name = container.labels.get("onionlab.node")
        if name and name != "init":
            found[name] = (container.labels.get("onionlab.role"), container.attrs["State"]["Pid"])
    return found


def memory_and_cpu(pids: dict[str, tuple[str, int]], docker: bool) -> dict:
    """RSS by role, the shims' RSS, and the idle CPU over IDLE_SECONDS."""
    first = {pid: _proc(pid) for _, pid in pids.values()}
    shims = {p[2] for p in first.values() if p is not None} if docker else set()
    watched = set(first) | shims
    before = {pid: _proc(pid) for pid in watched}
    time.sleep(IDLE_SECONDS)
    after = {pid: _proc(pid) for pid in watched}
    ticks = sum(after[p][0] - before[p][0] for p in watched if before[p] and after[p])
    by_role: dict[str, int] = {}
    wakeups: dict[str, list[int]] = {}
    for role, pid in pids.values():
        if before.get(pid) and after.get(pid):
            by_role[role] = by_role.get(role, 0) + after[pid][0] - before[pid][0]
            wakeups.setdefault(role, []).append(after[pid][3] - before[pid][3])
    result: dict = {"idle_cpu_cores": round(ticks / TICK / IDLE_SECONDS, 3),
                    "idle_cpu_by_role": {r: round(t / TICK / IDLE_SECONDS, 3) for r, t in by_role.items()},
                    "idle_wakeups_per_s": {r: round(statistics.mean(w) / IDLE_SECONDS, 1)
                                           for r, w in wakeups.items()}}
    for key, kind in (("rss_mb", "Rss"), ("pss_mb", "Pss"), ("anon_mb", "Anonymous")):
        by_role: dict[str, list[float]] = {}
        for role, pid in pids.values():
            if after.get(pid):
                by_role.setdefault(role, []).append(after[pid][1][kind] / 1024)
        result[key] = {role: {"mean": round(statistics.mean(v), 1), "max": round(max(v), 1), "n": len(v)}
                       for role, v in by_role.items()}
    if docker:
        shim_rss = [after[p][1]["Rss"] / 1024 for p in shims if after.get(p)]
        result["shim_rss_mb"] = round(statistics.mean(shim_rss), 1) if shim_rss else None
        charged: dict[str, dict[str, list[float]]] = {}
        for role, pid in pids.values():
            if (cgroup := _cgroup_memory(pid)) is not None:
                for kind, kib in cgroup.items():
                    charged.setdefault(role, {}).setdefault(kind, []).append(kib / 1024)
        result["cgroup_mb"] = {role: {kind: {"mean": round(statistics.mean(v), 1), "max": round(max(v), 1)}
                                      for kind, v in kinds.items()} for role, kinds in charged.items()}
    return result


def consensus_figures(status: dict, events_text: str, interval: int, vote_delay: int) -> dict:
    auth = status["authorities"][0]
    url = f"http://{auth['address']}:{auth['dir_port']}{CONSENSUS_PATH}"
    with urllib.request.urlopen(url, timeout=30) as answer:
        raw = answer.read()
    published = [json.loads(line) for line in events_text.splitlines()
                 if line.startswith("{") and '"consensus_published"' in line]
    builds = [e["ts"] - (e["round"] + 0.2 * interval + vote_delay) for e in published]
    return {"bytes": len(raw), "relays": len(parse_consensus(raw).unchecked.routers),
            "build_s": round(statistics.median(builds), 2) if builds else None,
            "voting_interval_s": interval}


def measure(backend_name: str, nodes: int, image: str, run_root: Path) -> dict:
    topology = parse_topology(topology_text(nodes, image))
    t = topology.timing
    timing = scaled_timing(Timing(t.voting_interval, t.vote_delay, t.dist_delay), composition(nodes)["relay"])
    interval = timing.voting_interval
    run_dir = run_root / f"{backend_name}-{nodes}"
    backend = open_backend(backend_name, run_dir)
    result: dict = {"backend": backend_name, "nodes": nodes, "roles": composition(nodes)}
    with machine_lock():
        started = time.monotonic()
        try:
            backend.up(topology, timeout=ready_timeout(nodes, interval))
            result["ready_s"] = round(time.monotonic() - started, 1)
            status = backend.status()
            client, service = status["clients"][0], status["onion_services"][0]
            deadline = time.monotonic() + FIRST_FETCH_TIMEOUT
            check_reachable(client["socks"], service["onion"], deadline=deadline)
            result["first_fetch_s"] = round(time.monotonic() - started, 1)
            result |= memory_and_cpu(node_pids(backend, run_dir), backend_name == "docker")
            events = backend.logs(status["authorities"][0]["name"])
            result["consensus"] = consensus_figures(status, events, interval, timing.vote_delay)
        except Exception as e:  # noqa: BLE001 - a failed size is a result too
            result["error"] = f"{type(e).__name__}: {str(e)[:2000]}"
            traceback.print_exc()
        finally:
            try:
                backend.down()
            except Exception as e:  # noqa: BLE001
                result["down_error"] = str(e)[:500]
    return result


def _get(key, result: dict):
    """key(result), or None when the result lacks it (cgroup_mb: docker only)."""
    try:
        return key(result)
    except KeyError:
        return None


def plot(results: list[dict]) -> bytes:
    def series(key, suffix: str = "") -> list[Series]:
        out = []
        for backend in BACKENDS:
            points = [(r["nodes"], value) for r in results if r["backend"] == backend and "error" not in r
                      and (value := _get(key, r)) is not None]
            if points:
                out.append(Series(backend + suffix, points))
        return out

    return render([
        Panel("time to ready (s)", "nodes", series(lambda r: r["ready_s"])),
        Panel("first verified fetch (s)", "nodes", series(lambda r: r["first_fetch_s"])),
        Panel("idle cpu (cores)", "nodes", series(lambda r: r["idle_cpu_cores"])),
        Panel("relay memory (mb)", "nodes", series(lambda r: r["rss_mb"]["relay"]["mean"], " rss")
              + series(lambda r: r["anon_mb"]["relay"]["mean"], " anon")
              + series(lambda r: r["cgroup_mb"]["relay"]["usage"]["mean"], " cgroup")),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="node counts (default: %(default)s)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="default: %(default)s")
    parser.add_argument("--image", default="onionlab/node:latest", help="docker: the node image")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="default: %(default)s")
    parser.add_argument("--plot", type=Path, nargs="+", metavar="JSON",
                        help="only draw scale.png into --out from these scale.json files (merged)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.plot:
        merged = [r for path in args.plot for r in json.loads(path.read_text())["results"]]
        (args.out / "scale.png").write_bytes(plot(merged))
        return 0
    results: list[dict] = []
    report = {"machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg()}, "results": results}
    with tempfile.TemporaryDirectory(prefix="onionlab-bench-scale-") as tmp:
        for backend in args.backends.split(","):
            for nodes in map(int, args.sizes.split(",")):
                print(f"bench-scale: {backend}, {nodes} nodes", file=sys.stderr, flush=True)
                results.append(measure(backend, nodes, args.image, Path(tmp)))
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)
                (args.out / "scale.json").write_text(json.dumps(report, indent=2) + "\n")
                (args.out / "scale.png").write_bytes(plot(results))
    print(json.dumps(report, indent=2))
    print(f"bench-scale: wrote {args.out / 'scale.json'} and {args.out / 'scale.png'}", file=sys.stderr)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
