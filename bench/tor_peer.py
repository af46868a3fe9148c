"""A stock tor client and onionlab's client against the same lab, side by side: `python -m bench.tor_peer`
prints one JSON object.

It starts the default topology on the local backend, then a stock tor (Debian's, from PATH) configured only
with `onionlab export torrc` plus a ControlPort, and measures, over one run:

  tor_bootstrap_s      tor's start to "Bootstrapped 100%" against our authorities
  connect_ms           SOCKS TCP connect to the SOCKS reply, `rounds` times, each with new SOCKS credentials
                       (a new rendezvous: new RP, intro and service circuits; the descriptor cached), for
                       `tor` (its SocksPort) and `onionlab` (the lab's client)
  cold_connect_ms      tor only: the same after SIGNAL NEWNYM, which purges tor's onion-service client state
                       (descriptor cache, intro points), so each connect also fetches the descriptor from an
                       HSDir. tor delays NEWNYMs closer than 10 s apart; the wait is not measured.
  bulk_MBps            GET /bytes/N over one warm circuit for each client, every byte checked

Nothing is asserted; the ratios are printed (onionlab / tor). Percentiles are nearest-rank.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.network import fresh_connect, pattern_MBps, summary_ms
from bench.vs_tor import Control, free_port
from orchestrator import flow
from orchestrator.backends.local import LocalBackend
from orchestrator.topology import load_topology
from orchestrator.tor_process import TorProcess

REPO = Path(__file__).resolve().parents[1]
TOPOLOGY = REPO / "topologies" / "default.yaml"
ROUNDS = 20
BULK_BYTES = 10_000_000
NEWNYM_GAP = 10.5  # tor rate-limits NEWNYM to one per 10 s


def run(rounds: int, bulk_bytes: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="onionlab-bench-tor-") as tmp:
        backend = LocalBackend(Path(tmp, "run"))
        backend.up(load_topology(TOPOLOGY), timeout=120)
        tor = None
        try:
            status = backend.status()
            onion = status["onion_services"][0]["onion"]
            host, _, port = status["clients"][0]["socks"].rpartition(":")
            ours = (host, int(port))
            theirs = ("127.0.0.1", free_port())
            control_port = free_port()
            torrc = subprocess.run(
                [sys.executable, "-m", "orchestrator.cli", "export", "torrc",
                 "--run-dir", str(Path(tmp, "run")), "--socks-port", f"{theirs[0]}:{theirs[1]}",
                 "--control-port", f"127.0.0.1:{control_port}",
                 "--data-directory", str(Path(tmp, "tor", "data"))],
                capture_output=True, text=True, check=True).stdout
            tor = TorProcess(Path(tmp, "tor"), torrc)
            tor.start()
            bootstrap = tor.wait_bootstrapped(300)
            flow.check_reachable(f"{theirs[0]}:{theirs[1]}", onion, deadline=time.monotonic() + 120)
            flow.check_reachable(f"{ours[0]}:{ours[1]}", onion, deadline=time.monotonic() + 60)

            connect = {"tor": [], "onionlab": []}
            for _ in range(rounds):  # interleaved, so both see the same machine load
                connect["tor"].append(fresh_connect(theirs, onion))
                connect["onionlab"].append(fresh_connect(ours, onion))
            control = Control(control_port, Path(tmp, "tor", "data", "control_auth_cookie"))
            cold = []
            try:
                for _ in range(rounds):
                    control.command("SIGNAL", "NEWNYM")
                    time.sleep(NEWNYM_GAP)
                    cold.append(fresh_connect(theirs, onion))
            finally:
                control.close()
            bulk = {"tor": pattern_MBps(theirs, onion, bulk_bytes),
                    "onionlab": pattern_MBps(ours, onion, bulk_bytes)}
            warnings = tor.warnings()
        finally:
            if tor is not None:
                tor.stop()
            backend.down()
    p50 = {k: summary_ms(v)["p50"] for k, v in connect.items()}
    return {
        "tor_bootstrap_s": round(bootstrap, 2),
        "connect_ms": {k: summary_ms(v) for k, v in connect.items()},
        "cold_connect_ms": {"tor": summary_ms(cold)},
        "bulk_MBps": {k: round(v, 2) for k, v in bulk.items()},
        "ratios_onionlab_over_tor": {"connect_p50": round(p50["onionlab"] / p50["tor"], 3),
                                     "bulk": round(bulk["onionlab"] / bulk["tor"], 3)},
        "tor_warnings": warnings,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--bulk-bytes", type=int, default=BULK_BYTES)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.rounds, args.bulk_bytes), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
