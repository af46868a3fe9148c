"""The whole network end to end: `python -m bench.network` prints one JSON object.

It starts the default topology (topologies/default.yaml: 3 authorities, 6 relays, the onion service `hs`,
the client) on the local backend in a temporary run dir, measures, and always brings the lab down again.
A plain blocking-socket SOCKS5 client (stdlib sockets, nodes.core.socks5's client codec, h11 for HTTP)
takes the times with time.perf_counter(); every body is checked.

  launch_to_onion_s  from calling LocalBackend.up() to the end of the first verified fetch of / from the
                     onion through SOCKS (status 200 and the page names the onion). launch_phases_s splits it:
                     processes_started (every node process spawned), ready (up() returned: every /status is
                     ready), first_fetch (descriptor fetch, rendezvous and GET /, retried while it fails).
  rendezvous_ms      SOCKS TCP connect to SOCKS reply, for `samples` connections, each with new SOCKS
                     credentials: each is a new rendezvous (new circuits: RP, intro, and the service's
                     circuit to the RP), with the descriptor already cached. rendezvous_joined is what the
                     client's /metrics counted meanwhile (it should equal n).
  warm_ttfb_ms       SOCKS TCP connect to the first byte of the response to GET / for `samples` connections
                     with the same credentials: a new stream on the existing rendezvous circuit each time
                     (what curl calls time_starttransfer). warm_reused: the client's count meanwhile.
  bulk_MBps          GET /bytes/N (N = 50,000,000) over the warm circuit: bytes / (first request byte sent to
                     last body byte received), MB = 10^6 bytes; every byte checked against i % 251.
  tcp_MBps           the same GET and checks over plain TCP on 127.0.0.1 against a tiny server thread in
                     this process serving the same pattern in the same 64 KiB chunks; ratio = bulk / tcp.
Percentiles are nearest-rank. The anchors (issue 3) are there to compare with; nothing is asserted: the
numbers depend on the machine and on what else runs on it. The local backend moves to the next free block
of loopback addresses (127.0.N.2..) when another lab holds the default one.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import h11

from nodes.net.targets import CHUNK, pattern_bytes
from orchestrator import flow
from orchestrator.backends.local import LocalBackend
from orchestrator.topology import load_topology

REPO = Path(__file__).resolve().parents[1]
TOPOLOGY = REPO / "topologies" / "default.yaml"
BULK_BYTES = 50_000_000
SAMPLES = 20
UP_TIMEOUT = 60.0
FIRST_FETCH_TIMEOUT = 60.0  # retried while the onion is not reachable yet
IO_TIMEOUT = 60.0  # any one socket operation
RECV = 256 * 1024
ANCHORS = {  # issue 3: C tor 0.4.9 in chutney on this machine, and the goals
    "chutney_launch_s": [87, 100],
    "goal_launch_s_below": 8,
    "goal_rendezvous_p50_ms_below": 150,
    "ctor_warm_ttfb_ms": 28,
    "goal_warm_ttfb_ms_below": 28,
    "ctor_chutney_bulk_MBps": 5.0,
    "goal_bulk_MBps_at_least": 10,
}


class BenchError(Exception):
    """Something the benchmark saw go wrong: a SOCKS failure, a bad HTTP answer, a corrupt byte."""


def socks_connect(socks: tuple[str, int], host: str, port: int,
                  credentials: tuple[bytes, bytes] | None = None) -> socket.socket:
    """A connected socket through the SOCKS5 server at `socks` (orchestrator.flow's client)."""
    return flow.socks_connect(f"{socks[0]}:{socks[1]}", host, port, credentials=credentials,
                              timeout=IO_TIMEOUT)


def fresh_connect(socks: tuple[str, int], onion: str) -> float:
    """SOCKS connect with fresh credentials (a new rendezvous) to the reply: seconds; the stream is then
    checked (1000 pattern bytes)."""
    started = time.perf_counter()
    sock = socks_connect(socks, onion, 80, flow.fresh_credentials("bench"))
    elapsed = time.perf_counter() - started
    with sock:
        if flow.fetch_pattern(sock, onion, 1000) != 1000:
            raise BenchError("short body")
    return elapsed


def pattern_MBps(socks: tuple[str, int], onion: str, n: int) -> float:
    """n pattern bytes over a new rendezvous, every byte checked: MB/s from the request to the last byte."""
    with socks_connect(socks, onion, 80, credentials=flow.fresh_credentials("bulk")) as sock:
        started = time.perf_counter()
        if flow.fetch_pattern(sock, onion, n) != n:
            raise BenchError("short body")
        return n / (time.perf_counter() - started) / 1e6


# -- HTTP over a connected socket ----------------------------------------------------------------------------

@dataclass(slots=True)
class Fetch:
    status: int
    size: int
    body: bytes  # only when not checked against the pattern
    sent: float  # perf_counter() when the request was sent
    first_byte: float  # ... when the first byte of the response arrived
    done: float  # ... when the last byte of the body arrived


def http_get(sock: socket.socket, host: str, path: str, *, pattern: bool = False) -> Fetch:
    """GET `path` (Connection: close). With `pattern`, check the body against the /bytes pattern as it
    arrives instead of keeping it."""
    conn = h11.Connection(h11.CLIENT)
    request = conn.send(h11.Request(method="GET", target=path,
                                    headers=[("Host", host), ("Connection", "close")]))
    request += conn.send(h11.EndOfMessage())
    sent = time.perf_counter()
    sock.sendall(request)
    first_byte = 0.0
    status, size, kept = 0, 0, bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as e:
            raise BenchError(f"bad HTTP response to GET {path}: {e}") from None
        if event is h11.NEED_DATA:
            data = sock.recv(RECV)
            if not first_byte:
                first_byte = time.perf_counter()
            conn.receive_data(data)
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            if pattern and event.data != pattern_bytes(size, len(event.data)):
                raise BenchError(f"GET {path}: the body differs from the pattern within bytes "
                                 f"{size}..{size + len(event.data)}")
            if not pattern:
                kept += event.data
            size += len(event.data)
        elif isinstance(event, h11.EndOfMessage):
            return Fetch(status, size, bytes(kept), sent, first_byte, time.perf_counter())
        else:
            raise BenchError(f"GET {path}: connection closed before the response ended")


def _fetch_page(socks: tuple[str, int], onion: str, credentials: tuple[bytes, bytes] | None) -> Fetch:
    with socks_connect(socks, onion, 80, credentials) as sock:
        fetch = http_get(sock, onion, "/")
    if fetch.status != 200 or onion.encode() not in fetch.body:
        raise BenchError(f"GET / from the onion: status {fetch.status}, {fetch.size} bytes without its name")
    return fetch


def _fetch_bytes(sock: socket.socket, host: str, n: int) -> float:
    """MB/s of GET /bytes/n on `sock`, checked."""
    fetch = http_get(sock, host, f"/bytes/{n}", pattern=True)
    if fetch.status != 200 or fetch.size != n:
        raise BenchError(f"GET /bytes/{n}: status {fetch.status}, {fetch.size} bytes")
    return n / (fetch.done - fetch.sent) / 1e6


class PatternServer:
    """One HTTP response of `size` pattern bytes to the first connection on 127.0.0.1 (a thread)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, name="pattern-server", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with self.listener:
            self.listener.settimeout(IO_TIMEOUT)
            conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(IO_TIMEOUT)
            head = b""
            while b"\r\n\r\n" not in head:
                if not (chunk := conn.recv(4096)):
                    return
                head += chunk
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n" % self.size)
            for offset in range(0, self.size, CHUNK):
                conn.sendall(pattern_bytes(offset, min(CHUNK, self.size - offset)))


def tcp_MBps(n: int) -> float:
    server = PatternServer(n)
    with socket.create_connection(("127.0.0.1", server.port), timeout=IO_TIMEOUT) as sock:
        rate = _fetch_bytes(sock, "127.0.0.1", n)
    server.thread.join(IO_TIMEOUT)
    return rate


# -- helpers -----------------------------------------------------------------------------------------------

def summary_ms(seconds: list[float]) -> dict:
    """{p50, p95, n, max} in milliseconds; p95 by nearest rank."""
    ordered = sorted(seconds)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
    return {"p50": round(statistics.median(ordered) * 1e3, 1), "p95": round(p95 * 1e3, 1), "n": len(ordered),
            "max": round(ordered[-1] * 1e3, 1)}


def metric(address: str, port: int, name: str, labels: str = "") -> float:
    """One sample from a node's /metrics (Prometheus text; our names carry the onionlab_ prefix)."""
    with urllib.request.urlopen(f"http://{address}:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    pattern = re.compile(rf"^onionlab_{re.escape(name)}{re.escape(labels)} (\S+)$", re.M)
    match = pattern.search(text)
    return float(match[1]) if match else 0.0


def _until_fetched(socks: tuple[str, int], onion: str, timeout: float) -> int:
    """Fetch / (no credentials) until it works; the number of attempts."""
    deadline = time.monotonic() + timeout
    attempts = 0
    while True:
        attempts += 1
        try:
            _fetch_page(socks, onion, None)
            return attempts
        except (BenchError, OSError) as e:
            if time.monotonic() >= deadline:
                raise BenchError(f"no verified fetch from {onion} within {timeout:g} s "
                                 f"({attempts} attempts; last: {e})") from None
            time.sleep(0.1)


def _tail(backend: LocalBackend, names: tuple[str, ...], lines: int = 15) -> str:
    out = []
    for name in names:
        try:
            log = backend.logs(name).splitlines()[-lines:]
        except Exception as e:  # noqa: BLE001 - only diagnostics on the way out
            log = [f"(no logs: {e})"]
        out.append(f"--- {name}\n" + "\n".join(log))
    return "\n".join(out)


# -- the run -----------------------------------------------------------------------------------------------

def run(topology_path: Path, samples: int, bulk_bytes: int) -> dict:
    topology = load_topology(topology_path)
    with tempfile.TemporaryDirectory(prefix="onionlab-bench-") as tmp:
        backend = LocalBackend(Path(tmp, "run"))
        phases: dict[str, float] = {}
        started = time.perf_counter()

        def progress(message: str) -> None:
            if message.startswith("started ") and "processes_started" not in phases:
                phases["processes_started"] = time.perf_counter() - started

        try:
            info = backend.up(topology, timeout=UP_TIMEOUT, progress=progress)
            phases["ready"] = time.perf_counter() - started
            service = next(n for n in info.nodes if n.role == "onion_service")
            client = next(n for n in info.nodes if n.role == "client")
            if not service.onion or not client.socks:
                raise BenchError(f"up() reported no onion ({service.onion}) or SOCKS port ({client.socks})")
            onion = service.onion
            host, _, port = client.socks.rpartition(":")
            socks = (host, int(port))
            control = (client.address, client.ports["control_port"])

            attempts = _until_fetched(socks, onion, FIRST_FETCH_TIMEOUT)
            launched = time.perf_counter() - started
            phases["first_fetch"] = launched - phases["ready"]

            joined_before = metric(*control, "rendezvous_total", '{result="joined"}')
            rendezvous = []
            for i in range(samples):
                t0 = time.perf_counter()
                sock = socks_connect(socks, onion, 80, flow.fresh_credentials(f"rdv{i}"))
                rendezvous.append(time.perf_counter() - t0)
                with sock:  # the circuit works, untimed
                    fetch = http_get(sock, onion, "/")
                if fetch.status != 200:
                    raise BenchError(f"GET / after rendezvous {i}: status {fetch.status}")
            joined = metric(*control, "rendezvous_total", '{result="joined"}') - joined_before

            warm_credentials = flow.fresh_credentials("warm")
            _fetch_page(socks, onion, warm_credentials)  # the circuit the warm fetches reuse
            reused_before = metric(*control, "rendezvous_reused_total")
            ttfb = []
            for _ in range(samples):
                t0 = time.perf_counter()
                fetch = _fetch_page(socks, onion, warm_credentials)
                ttfb.append(fetch.first_byte - t0)
            reused = metric(*control, "rendezvous_reused_total") - reused_before

            with socks_connect(socks, onion, 80, warm_credentials) as sock:
                bulk = _fetch_bytes(sock, onion, bulk_bytes)
            tcp = tcp_MBps(bulk_bytes)
        except BaseException:
            print(_tail(backend, ("client", "hs")), file=sys.stderr)
            raise
        finally:
            backend.down()
    return {
        "benchmark": "network, local backend",
        "topology": str(topology_path.relative_to(REPO) if topology_path.is_relative_to(REPO)
                        else topology_path),
        "nodes": len(topology.nodes),
        "launch_to_onion_s": round(launched, 2),
        "launch_phases_s": {key: round(value, 2) for key, value in phases.items()},
        "first_fetch_attempts": attempts,
        "rendezvous_ms": summary_ms(rendezvous),
        "rendezvous_joined": int(joined),
        "warm_ttfb_ms": summary_ms(ttfb),
        "warm_reused": int(reused),
        "bulk_MBps": round(bulk, 2),
        "tcp_MBps": round(tcp, 1),
        "ratio": round(bulk / tcp, 4),
        "bulk_bytes": bulk_bytes,
        "bytes_verified": True,
        "anchors": ANCHORS,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--topology", type=Path, default=TOPOLOGY)
    ap.add_argument("--samples", type=int, default=SAMPLES, help="rendezvous and warm fetches (default 20)")
    ap.add_argument("--bulk-bytes", type=int, default=BULK_BYTES)
    args = ap.parse_args(argv)
    print(json.dumps(run(args.topology.resolve(), args.samples, args.bulk_bytes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
