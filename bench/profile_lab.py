"""Where the lab's CPU goes during a bulk fetch through the onion: `python -m bench.profile_lab`.

Needs py-spy (`pip install py-spy` into the venv; not a project dependency).

It starts the default topology on the local backend, warms a rendezvous circuit, then samples every node
process with `py-spy record --format raw --gil` (only while it holds the GIL: waiting in epoll is not
counted) while the client fetches /bytes/N, and prints per node the seconds sampled and its top functions
by own time (JSON). The nodes that carry no cell of the fetch
(authorities, relays off the path) show up with a few samples only.
"""

from __future__ import annotations

import argparse
import json
import shutil
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bytes", type=int, default=30_000_000)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--idle", action="store_true", help="py-spy --idle: count waiting too")
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
            rate = bulk_MBps(socks, onion, credentials, args.bytes)
            for process, _ in samplers.values():
                process.send_signal(2)  # SIGINT: py-spy writes its output and exits
            for process, _ in samplers.values():
                process.wait(30)
            nodes = {}
            for name, (_, out) in samplers.items():
                if out.exists():
                    seconds, top = own_time(out, args.top)
                    nodes[name] = {"cpu_s": round(seconds, 2), "top_own_s": top}
        finally:
            backend.down()
    busy = dict(sorted(nodes.items(), key=lambda item: -item[1]["cpu_s"]))
    print(json.dumps({"bulk_MBps": round(rate, 2), "bytes": args.bytes, "nodes": busy}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
