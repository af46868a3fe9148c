"""Where the lab's CPU goes during a bulk fetch (or warm TTFB requests) through the onion:
`python -m bench.profile_lab [--ttfb N]`.

Needs py-spy (`pip install py-spy` into the venv; not a project dependency).

It starts the default topology on the local backend, warms a rendezvous circuit, then samples every node
process with `py-spy record --format raw --gil` (only while it holds the GIL: waiting in epoll is not
counted) while the client fetches /bytes/N (or, with --ttfb N, makes N warm TTFB requests: a new stream on
the warm circuit and GET /), and prints per node the seconds sampled and its top functions by own time
(JSON). proc_cpu_s is each node's user+system CPU time from /proc over the fetch (or requests): it also
counts what runs without the GIL (TLS records, system calls). cpu_ms_per_request (with --ttfb) is that
divided by N: next to the wall-clock TTFB it tells CPU spent per hop from time spent waiting (for the
scheduler, the kernel, another process). The nodes that carry no cell of the fetch (authorities, relays
off the path) show up with a few samples only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.vs_tor import bulk_MBps, ttfb
from orchestrator import flow
from orchestrator.backends.local import LocalBackend
from orchestrator.topology import load_topology

REPO = Path(__file__).resolve().parents[1]
TOPOLOGY = REPO / "topologies" / "default.yaml"
RATE = 250  # samples per second and process


def own_time(raw: Path, top: int) -> tuple[float, list[tuple[str, float]]]:
    """(CPU seconds sampled, [(function, seconds of own time)]) from py-spy's raw (collapsed) stacks."""
    leaf: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not frames or not count.isdigit():
            continue
        total += int(count)
        leaf[frames[-1].split(" (", 1)[0] + " " + _where(frames[-1])] += int(count)
    return total / RATE, [(name, round(n / RATE, 3)) for name, n in leaf.most_common(top)]


def _where(frame: str) -> str:
    """"(path/file.py:LINE)" -> "file.py"."""
    inside = frame.rpartition(" (")[2].rstrip(")")
    return Path(inside.partition(":")[0]).name


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bytes", type=int, default=30_000_000)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--idle", action="store_true", help="py-spy --idle: count waiting too")
    ap.add_argument("--ttfb", type=int, default=0, metavar="N",
                    help="profile N warm TTFB requests instead of a bulk fetch")
    ap.add_argument("--keep", type=Path, metavar="DIR", help="copy py-spy's raw stacks (NODE.txt) to DIR")
    args = ap.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.TemporaryDirectory(prefix="onionlab-profile-") as tmp:
        backend = LocalBackend(Path(tmp, "lab"))
        try:
            info = backend.up(load_topology(TOPOLOGY), timeout=120)
            client = next(n for n in info.nodes if n.role == "client")
            onion = next(n for n in info.nodes if n.role == "onion_service").onion
            host, _, port = client.socks.rpartition(":")
            socks = (host, int(port))
            flow.check_reachable(client.socks, onion, deadline=time.monotonic() + 60)
            credentials = flow.fresh_credentials("profile")
            ttfb(socks, onion, credentials)
            samplers = {}
            for node in info.nodes:
                out = Path(tmp, f"{node.name}.txt")
                command = [py_spy, "record", "--format", "raw", "--rate", str(RATE), "--nonblocking", "--gil",
                           "--pid", str(node.pid), "--output", str(out)] + (["--idle"] if args.idle else [])
                samplers[node.name] = (subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                                        stderr=subprocess.DEVNULL), out)
            time.sleep(1.0)  # py-spy attaches
            cpu_before = {node.name: cpu_seconds(node.pid) for node in info.nodes}
            if args.ttfb:
                waits = [ttfb(socks, onion, credentials) for _ in range(args.ttfb)]
                measured = {"warm_ttfb_ms_p50": round(statistics.median(waits) * 1e3, 2),
                            "requests": args.ttfb}
            else:
                measured = {"bulk_MBps": round(bulk_MBps(socks, onion, credentials, args.bytes), 2),
                            "bytes": args.bytes}
            cpu = {node.name: cpu_seconds(node.pid) - cpu_before[node.name] for node in info.nodes}
            for process, _ in samplers.values():
                process.send_signal(2)  # SIGINT: py-spy writes its output and exits
            for process, _ in samplers.values():
                process.wait(30)
            nodes = {}
            for name, (_, out) in samplers.items():
                if out.exists():
                    if args.keep:
                        args.keep.mkdir(parents=True, exist_ok=True)
                        shutil.copy(out, args.keep / out.name)
                    seconds, top = own_time(out, args.top)
                    nodes[name] = {"cpu_s": round(seconds, 2), "proc_cpu_s": round(cpu[name], 2),
                                   "top_own_s": top}
                    if args.ttfb:
                        nodes[name]["cpu_ms_per_request"] = round(cpu[name] * 1e3 / args.ttfb, 3)
        finally:
            backend.down()
    busy = dict(sorted(nodes.items(), key=lambda item: -item[1]["cpu_s"]))
    print(json.dumps({**measured, "nodes": busy}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
