"""Every client x service pairing of a mixed lab, from one run: `python -m bench.pairings` prints one JSON
object.

It starts topologies/mixed.yaml on the local backend (Debian's tor from PATH plays torrelay1-2, torhs and
torclient; onionlab plays the rest), then for each pairing, named CLIENT->SERVICE by who implements them
(tor->onionlab: tor's client, our service; onionlab->tor; tor->tor, inside onionlab; onionlab->onionlab):

  cold_connect_ms   the first SOCKS connect of that client to that service: TCP connect to the SOCKS reply,
                    with the descriptor fetch from an HSDir, intro and rendezvous (one sample per pairing,
                    taken before anything else touched the service)
  connect_ms        `rounds` more connects, each with new SOCKS credentials (a new rendezvous: new
                    rendezvous point, intro and service circuits; the descriptor cached), interleaved over
                    the pairings so that all see the same machine load
  bulk_MBps         GET /bytes/N over one circuit, every byte checked

Circuits cross relays of both kinds (the topology weights them alike). Nothing is asserted; tor's warnings
(its nodes' `last_warning`) are printed too. Percentiles are nearest-rank.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.network import fresh_connect, pattern_MBps, summary_ms
from orchestrator.backends.local import LocalBackend
from orchestrator.topology import load_topology

REPO = Path(__file__).resolve().parents[1]
TOPOLOGY = REPO / "topologies" / "mixed.yaml"
ROUNDS = 10
BULK_BYTES = 5_000_000
UP_TIMEOUT = 300
PAIRINGS = {"tor->onionlab": ("torclient", "hs"), "onionlab->tor": ("client", "torhs"),
            "tor->tor": ("torclient", "torhs"), "onionlab->onionlab": ("client", "hs")}


def _address(socks: str) -> tuple[str, int]:
    host, _, port = socks.rpartition(":")
    return host, int(port)


def run(rounds: int, bulk_bytes: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="onionlab-bench-pairings-") as tmp:
        backend = LocalBackend(Path(tmp, "run"))
        started = time.monotonic()
        backend.up(load_topology(TOPOLOGY), timeout=UP_TIMEOUT)
        up_s = time.monotonic() - started
        try:
            status = backend.status()
            onions = {s["name"]: s["onion"] for s in status["onion_services"]}
            socks = {c["name"]: _address(c["socks"]) for c in status["clients"]}
            cold = {name: fresh_connect(socks[c], onions[s]) for name, (c, s) in PAIRINGS.items()}
            connect: dict[str, list[float]] = {name: [] for name in PAIRINGS}
            for _ in range(rounds):
                for name, (c, s) in PAIRINGS.items():
                    connect[name].append(fresh_connect(socks[c], onions[s]))
            bulk = {name: pattern_MBps(socks[c], onions[s], bulk_bytes) for name, (c, s) in PAIRINGS.items()}
            warnings = {n["name"]: (backend.node_status(n["name"]) or {}).get("last_warning")
                        for n in status["nodes"] if n["name"].startswith("tor")}
        finally:
            backend.down()
    return {
        "lab_up_s": round(up_s, 1),
        "pairings": {name: {"client": c, "service": s, "cold_connect_ms": round(cold[name] * 1e3, 1),
                            "connect_ms": summary_ms(connect[name]), "bulk_MBps": round(bulk[name], 2)}
                     for name, (c, s) in PAIRINGS.items()},
        "bulk_bytes": bulk_bytes,
        "tor_last_warnings": warnings,
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
