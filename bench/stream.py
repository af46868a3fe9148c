"""One 3-hop stream in one process: `python -m bench.stream` prints one JSON object.

Three relays and a client (tests/net/helpers.py: real TLS on 127.0.0.1, the real channel, circuit, relay and
stream code) in one Trio run; the exit's directory handler streams N pattern bytes down a BEGIN_DIR stream
and the client reads them in 64 KiB reads and checks them. Everything shares one core, so `MBps` is
1 / (seconds per MB summed over the four nodes): the cost of the data path, without the scheduling noise
of a lab of processes. `cpu_MBps` divides by the process's CPU time instead of the wall clock, which other
load on the machine disturbs less. `--profile FILE` writes a cProfile of the timed fetch. Best of `--repeat`
runs. Not a test: numbers depend on the machine and its load (reported as load_avg).

`--pings N` measures latency instead: N round trips of one small cell each way (an echo at the exit; the
first 8 cells, which ride RELAY_EARLY, are not timed), as `rtt_us` (median wall clock) and `cpu_us` (CPU per
round trip): what a warm request pays per hop, in one process, so without scheduling noise.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import sys
import time

import trio

from nodes.net.targets import CHUNK, pattern_bytes
from tests.net.helpers import start_client, start_relay

BYTES = 20_000_000
READ = 64 * 1024


async def _serve_bytes(stream) -> None:
    """The exit's directory handler: the first 12 bytes ask for N (decimal), N pattern bytes answer."""
    request = b""
    while len(request) < 12:
        data = await stream.receive_some(12 - len(request))
        if not data:
            return
        request += data
    n = int(request)
    for offset in range(0, n, CHUNK):
        await stream.send_all(pattern_bytes(offset, min(CHUNK, n - offset)))
    await stream.aclose()


async def _fetch(n: int, profile: cProfile.Profile | None) -> tuple[float, float]:
    async with trio.open_nursery() as nursery:
        relays = [await start_relay(nursery, f"relay{i}", dir_handler=_serve_bytes) for i in range(3)]
        client = await start_client(nursery)
        circuit = await client.circuits.build([r.status for r in relays])
        stream = await circuit.open_dir_stream()
        if profile is not None:
            profile.enable()
        started, cpu_started = time.perf_counter(), time.process_time()
        await stream.send_all(b"%012d" % n)
        got = 0
        while got < n:
            data = await stream.receive_some(READ)
            if not data:
                raise RuntimeError(f"stream ended after {got} of {n} bytes")
            if data != pattern_bytes(got, len(data)):
                raise RuntimeError(f"wrong bytes within {got}..{got + len(data)}")
            got += len(data)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        if profile is not None:
            profile.disable()
        await stream.aclose()
        nursery.cancel_scope.cancel()
    return n / elapsed / 1e6, n / cpu / 1e6


async def _echo(stream) -> None:
    while data := await stream.receive_some():
        await stream.send_all(data)


async def _pings(n: int, profile: cProfile.Profile | None) -> tuple[float, float]:
    """(median wall-clock seconds, CPU seconds per round trip) of n one-cell round trips over 3 hops."""
    async with trio.open_nursery() as nursery:
        relays = [await start_relay(nursery, f"relay{i}", dir_handler=_echo) for i in range(3)]
        client = await start_client(nursery)
        circuit = await client.circuits.build([r.status for r in relays])
        stream = await circuit.open_dir_stream()

        async def ping() -> float:
            started = time.perf_counter()
            await stream.send_all(b"ping")
            got = b""
            while len(got) < 4:
                got += await stream.receive_some()
            return time.perf_counter() - started

        for _ in range(8):
            await ping()
        if profile is not None:
            profile.enable()
        cpu_started = time.process_time()
        times = sorted([await ping() for _ in range(n)])
        cpu = (time.process_time() - cpu_started) / n
        if profile is not None:
            profile.disable()
        await stream.aclose()
        nursery.cancel_scope.cancel()
    return times[n // 2], cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bytes", type=int, default=BYTES)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", help="write a cProfile of the (last) timed fetch here")
    ap.add_argument("--pings", type=int, default=0, metavar="N", help="N one-cell round trips instead")
    args = ap.parse_args(argv)
    if args.pings:
        runs = []
        for i in range(args.repeat):
            profile = cProfile.Profile() if args.profile and i == args.repeat - 1 else None
            runs.append(trio.run(_pings, args.pings, profile))
            if profile is not None:
                profile.dump_stats(args.profile)
        print(json.dumps({"benchmark": "3-hop one-cell round trips, one process", "pings": args.pings,
                          "rtt_us": round(min(r[0] for r in runs) * 1e6),
                          "cpu_us": round(min(r[1] for r in runs) * 1e6),
                          "runs_rtt_us": [round(r[0] * 1e6) for r in runs],
                          "runs_cpu_us": [round(r[1] * 1e6) for r in runs],
                          "load_avg": [round(x, 2) for x in os.getloadavg()]}))
        return 0
    runs = []
    for i in range(args.repeat):
        profile = cProfile.Profile() if args.profile and i == args.repeat - 1 else None
        runs.append(trio.run(_fetch, args.bytes, profile))
        if profile is not None:
            profile.dump_stats(args.profile)
    print(json.dumps({"benchmark": "3-hop stream, one process", "bytes": args.bytes,
                      "MBps": round(max(r[0] for r in runs), 2), "runs_MBps": [round(r[0], 2) for r in runs],
                      "cpu_MBps": round(max(r[1] for r in runs), 2),
                      "load_avg": [round(x, 2) for x in os.getloadavg()]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
