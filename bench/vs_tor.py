"""C tor and onionlab side by side, each in its own network of the same shape: `python -m bench.vs_tor`
prints one JSON object.

In one run it starts
  tor       a private Tor network of Debian's tor processes on 127.0.0.1, every torrc written here
            (TestingTorNetwork, the lab's timing: 10 s votes): 3 authorities, 6 relays, an onion service
            whose port 80 goes to onionlab's own `http` target (run in a child process), a client
  onionlab  topologies/default.yaml on the local backend (3 authorities, 6 relays, hs, client)
  onionlab@REV  with --baseline REV (repeatable): the same lab again from `git archive REV` of this
            repository (or from the source tree in directory REV), so a change is measured against its
            parent in the same run, under the same load
and measures them the same way, alternating between them so all see the same machine load. In each of
`rounds` rounds:

  warm_ttfb_ms      SOCKS connect (a new stream on a warm circuit) + GET / to the first response byte,
                    `samples` times each
  bulk_MBps         GET /bytes/N over the warm rendezvous circuit, every byte checked, once each
then, `cold_rounds` times:
  cold_connect_ms   SOCKS connect to the reply after the client forgot its onion-service state (tor: SIGNAL
                    NEWNYM; onionlab: the client's control call `newnym`), so each one fetches the
                    descriptor from an HSDir, introduces and rendezvouses. tor delays NEWNYMs closer than
                    10 s apart; the wait is not measured.
  ratios            onionlab / tor: bulk (goal >= 3), warm TTFB p50 (goal <= 0.3), cold connect p50, from
                    all samples pooled, and per round (median, min, max: the spread a loaded machine gives)

stdout gets one JSON object; stderr a table of the same figures.

tor's latency on loopback: C tor sets no TCP_NODELAY, so a small write that follows one not yet acknowledged
waits for the peer's delayed ACK (Nagle; 40 ms and more on Linux). Whether that happens on a hop depends on
timing, so tor's warm TTFB moves between runs and machines (seen here: 28 to 190 ms p50). `--tor-nodelay`
runs every tor with TCP_NODELAY forced (bench/tcp_nodelay.c, preloaded): tor without those stalls, the
stricter comparison. What remains is mostly the tick of tor's KIST scheduler: without a consensus
parameter for it (as here) tor runs it at most every 10 ms; `--tor-kist-interval 1` sets 1 ms. With both,
tor's warm TTFB was about 4 ms here: C tor's own work per request is smaller than ours, its timers are not.

Readiness is polled, never slept: tor's control ports (GETINFO status/bootstrap-phase, the client's
consensus listing every relay) and a verified fetch through each client. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.network import BenchError, fresh_connect, http_get, socks_connect, summary_ms
from nodes.core.torcontrol import ControlParser, Reply, authenticate_command, encode_command, getinfo_values
from nodes.torrc import build_torrc, dir_authority_lines
from orchestrator import flow
from orchestrator.backends.local import LocalBackend
from orchestrator.topology import load_topology
from orchestrator.tor_process import TorProcess, tor_binary

REPO = Path(__file__).resolve().parents[1]
TOPOLOGY = REPO / "topologies" / "default.yaml"
AUTHORITIES, RELAYS = 3, 6  # the default topology's shape
ROUNDS = 5
TTFB_SAMPLES = 15  # per round
COLD_ROUNDS = 5
BULK_BYTES = 20_000_000
NEWNYM_GAP = 10.5  # tor delays a NEWNYM within 10 s of the previous one
READY_TIMEOUT = 300.0
POLL = 0.2
ADDRESS = "127.0.0.1"
PORTS = (20000, 32000)
_given: set[int] = set()  # handed out by this process: tors bind theirs some time later
EXPECTED_WARNINGS = ("You have used DirAuthority", "TestingTorNetwork is set",
                     "V3AuthVotingInterval is very low",
                     "Your log may contain sensitive", "You are running Tor as root",
                     "Cannot open fingerprint file", "Could not open \"", "SR: Unable to read SR state")
WARNINGS_SHOWN = 10
GOALS = {"bulk": 3.0, "warm_ttfb_p50": 0.3}
# the lab's timing (topologies/default.yaml), which is also C tor's TestingTorNetwork floor
TIMING = ("V3AuthVotingInterval 10", "V3AuthVoteDelay 2", "V3AuthDistDelay 2",
          "TestingV3AuthInitialVotingInterval 10", "TestingV3AuthInitialVoteDelay 2",
          "TestingV3AuthInitialDistDelay 2", "TestingV3AuthVotingStartOffset 0")


def free_port() -> int:
    """A port free on ADDRESS now, below Linux's ephemeral range (32768+): a port the kernel handed out for
    binding to 0 may go to some outgoing connection before tor binds it."""
    for _ in range(1000):
        port = random.randrange(*PORTS)
        with socket.socket() as s:
            try:
                s.bind((ADDRESS, port))
            except OSError:
                continue
        if port not in _given:
            _given.add(port)
            return port
    raise BenchError(f"no free port in {PORTS} on {ADDRESS}")


class Control:
    """A blocking tor control connection (control-spec), cookie authenticated; replies parsed by
    nodes.core.torcontrol."""

    def __init__(self, port: int, cookie_file: Path, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((ADDRESS, port), timeout=timeout)
        self.parser = ControlParser()
        self.command_line(authenticate_command(cookie_file.read_bytes()))

    def command_line(self, line: bytes) -> Reply:
        self.sock.sendall(line)
        while (reply := self.parser.next_reply()) is None or reply.is_event:
            data = self.sock.recv(65536)
            if not data:
                raise BenchError("tor closed its control connection")
            self.parser.receive_data(data)
        if not reply.ok:
            raise BenchError(f"tor control: {line.split()[0].decode()} -> {reply.status} {reply.text}")
        return reply

    def command(self, keyword: str, *args: str) -> Reply:
        return self.command_line(encode_command(keyword, *args))

    def getinfo(self, key: str) -> str:
        return getinfo_values(self.command("GETINFO", key))[key]

    def close(self) -> None:
        self.sock.close()


class TorNetwork:
    """A private Tor network of tor processes in `root`: authorities, relays, an onion service, a client."""

    def __init__(self, root: Path, *, authorities: int = AUTHORITIES, relays: int = RELAYS,
                 env: dict[str, str] | None = None, kist_interval_ms: int | None = None) -> None:
        self.root = root
        self.n_authorities, self.n_relays = authorities, relays
        self.env = env  # every tor's environment (None: ours)
        self.kist_interval_ms = kist_interval_ms  # every tor's KISTSchedRunInterval (None: tor's default)
        self.processes: dict[str, TorProcess] = {}
        self.control_ports: dict[str, int] = {}
        self.socks = (ADDRESS, free_port())
        self.http_port = free_port()
        self.http: subprocess.Popen | None = None
        self.onion = ""

    def data_dir(self, name: str) -> Path:
        return self.root / name / "data"

    def _authority_keys(self, name: str) -> dict:
        """An authority's v3 identity (tor-gencert) and relay identity (tor --list-fingerprint)."""
        keys = self.data_dir(name) / "keys"
        keys.mkdir(parents=True, mode=0o700)
        dir_port, or_port = free_port(), free_port()
        subprocess.run(["tor-gencert", "--create-identity-key", "--passphrase-fd", "0", "-m", "12",
                        "-a", f"{ADDRESS}:{dir_port}", "-i", str(keys / "authority_identity_key"),
                        "-s", str(keys / "authority_signing_key"), "-c", str(keys / "authority_certificate")],
                       input=b"\n", check=True, capture_output=True, cwd=keys)
        v3ident = next(line.split()[1] for line in (keys / "authority_certificate").read_text().splitlines()
                       if line.startswith("fingerprint "))
        listed = subprocess.run([tor_binary(), "--list-fingerprint", "--ignore-missing-torrc", "--quiet",
                                 "--DataDirectory", str(self.data_dir(name)), "--ORPort", str(or_port),
                                 "--DirAuthority", f"dummy {ADDRESS}:1 " + "ff" * 20],
                                check=True, capture_output=True, text=True).stdout
        fingerprint = "".join(listed.split()[-10:])
        return {"name": name, "address": ADDRESS, "or_port": or_port, "dir_port": dir_port,
                "v3ident": v3ident, "fingerprint": fingerprint}

    def _torrc(self, name: str, role: str, dir_authorities: list[str], authority: dict | None = None) -> str:
        control = free_port()
        self.control_ports[name] = control
        common = [f"Nickname {name}", "ShutdownWaitLength 0", "SafeLogging 0", *TIMING]
        if self.kist_interval_ms is not None:
            common.append(f"KISTSchedRunInterval {self.kist_interval_ms} msec")
        if role in ("client", "onion_service"):
            text = build_torrc(self.authorities, header=f"bench.vs_tor: {name}", role=role,
                               data_directory=str(self.data_dir(name)),
                               socks_port=f"{self.socks[0]}:{self.socks[1]}",
                               control_port=f"{ADDRESS}:{control}", entry_guards=1,
                               service_dir=str(self.root / name / "hs"),
                               service_ports=[(80, f"{ADDRESS}:{self.http_port}")])
            return text + "\n".join(common) + "\n"
        or_port = authority["or_port"] if authority else free_port()
        lines = ["TestingTorNetwork 1", *dir_authorities, f"DataDirectory {self.data_dir(name)}",
                 "SocksPort 0", f"ControlPort {ADDRESS}:{control}", "CookieAuthentication 1",
                 f"Address {ADDRESS}", f"ORPort {ADDRESS}:{or_port}", "ExitRelay 0", "AssumeReachable 1",
                 "ContactInfo onionlab bench", "ProtocolWarnings 1", *common]
        if authority:
            lines += [f"DirPort {ADDRESS}:{authority['dir_port']}", "AuthoritativeDirectory 1",
                      "V3AuthoritativeDirectory 1", "TestingDirAuthVoteGuard *", "TestingDirAuthVoteHSDir *"]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        self.authorities = [self._authority_keys(f"auth{i}") for i in range(1, self.n_authorities + 1)]
        dir_authorities = dir_authority_lines(self.authorities)
        plan = [(a["name"], "authority", a) for a in self.authorities]
        plan += [(f"relay{i}", "relay", None) for i in range(1, self.n_relays + 1)]
        plan += [("hs", "onion_service", None), ("client", "client", None)]
        for name, role, authority in plan:
            process = TorProcess(self.root / name, self._torrc(name, role, dir_authorities, authority),
                                 env=self.env)
            process.start()
            self.processes[name] = process

    def _control(self, name: str) -> Control:
        return Control(self.control_ports[name], self.data_dir(name) / "control_auth_cookie")

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> float:
        """Until the client and the service have bootstrapped, the client's consensus lists every relay,
        the service wrote its address and a fetch through the client works; seconds since start."""
        started = time.monotonic()
        deadline = started + timeout
        hostname = self.root / "hs" / "hs" / "hostname"
        wanted = self.n_authorities + self.n_relays
        while True:
            self._check_alive()
            try:
                if hostname.exists() and self._bootstrapped("hs") and self._bootstrapped("client"):
                    control = self._control("client")
                    try:
                        listed = control.getinfo("ns/all").count("\nr ") + 1
                    finally:
                        control.close()
                    if listed >= wanted:
                        break
            except (OSError, BenchError):
                pass  # a control port not open yet
            if time.monotonic() > deadline:
                raise BenchError(f"the tor network was not ready within {timeout:.0f} s:\n"
                                 + self.processes["client"].log()[-3000:])
            time.sleep(POLL)
        self.onion = hostname.read_text().strip()
        self.http = subprocess.Popen([sys.executable, "-m", "bench.vs_tor", "--serve-http",
                                      str(self.http_port), "--onion", self.onion], cwd=REPO)
        flow.check_reachable(f"{self.socks[0]}:{self.socks[1]}", self.onion,
                             deadline=max(deadline, time.monotonic() + 60))
        return time.monotonic() - started

    def _bootstrapped(self, name: str) -> bool:
        control = self._control(name)
        try:
            return "PROGRESS=100 " in control.getinfo("status/bootstrap-phase")
        finally:
            control.close()

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.process is not None and process.process.poll() is not None:
                raise BenchError(f"tor {name} exited with {process.process.returncode}:\n"
                                 + process.tail())

    def newnym(self) -> None:
        control = self._control("client")
        try:
            control.command("SIGNAL", "NEWNYM")
        finally:
            control.close()

    def warnings(self) -> dict[str, int]:
        """The most common distinct [warn]s of the network (timestamps cut) and how many tors logged each,
        but for the ones every private network logs at start."""
        seen: dict[str, int] = {}
        for process in self.processes.values():
            for message in {line.split("] ", 1)[-1] for line in process.warnings()}:
                if not message.startswith(EXPECTED_WARNINGS):
                    seen[message] = seen.get(message, 0) + 1
        return dict(sorted(seen.items(), key=lambda item: -item[1])[:WARNINGS_SHOWN])

    def stop(self) -> None:
        if self.http is not None:
            self.http.terminate()
            self.http.wait(10)
        for process in self.processes.values():
            process.stop()


def serve_http(port: int, onion: str) -> None:
    """The tor service's port 80: onionlab's own `http` target (nodes/net/targets.py), so both services
    answer with the same code."""
    import trio

    from nodes.net.targets import ServiceInfo, make_target

    handler = make_target("http", ServiceInfo("hs", onion))
    trio.run(lambda: trio.serve_tcp(handler, port, host=ADDRESS))


# -- the measurements --------------------------------------------------------------------------------------

class SourceBackend(LocalBackend):
    """The local backend running its nodes from another source tree (a baseline's `git archive`)."""

    def __init__(self, run_dir: Path, source: Path) -> None:
        super().__init__(run_dir)
        self.source = source

    def _node_env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(self.source), "PYTHONUNBUFFERED": "1"}


def export_revision(rev: str, into: Path) -> Path:
    """`git archive REV` of this repository, unpacked in `into`."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev], check=True,
                             capture_output=True).stdout
    into.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def bulk_MBps(socks: tuple[str, int], onion: str, credentials: tuple[bytes, bytes], n: int) -> float:
    with socks_connect(socks, onion, 80, credentials) as sock:
        fetch = http_get(sock, onion, f"/bytes/{n}", pattern=True)
    if fetch.status != 200 or fetch.size != n:
        raise BenchError(f"GET /bytes/{n}: status {fetch.status}, {fetch.size} bytes")
    return n / (fetch.done - fetch.sent) / 1e6


def ttfb(socks: tuple[str, int], onion: str, credentials: tuple[bytes, bytes]) -> float:
    """A new stream on the warm circuit of `credentials`, GET /: seconds to the first response byte."""
    started = time.perf_counter()
    with socks_connect(socks, onion, 80, credentials) as sock:
        fetch = http_get(sock, onion, "/")
    if fetch.status != 200 or onion.encode() not in fetch.body:
        raise BenchError(f"GET / from {onion}: status {fetch.status}")
    return fetch.first_byte - started


def spread(values: list[float], digits: int = 3) -> dict:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits), "rounds": [round(v, digits) for v in values]}


def ratios(result: dict, ours: str = "onionlab") -> dict:
    """`ours` / tor for bulk (higher is better), warm TTFB p50 and cold connect p50 (lower is better), from
    the pooled samples; per round too when the result has rounds; and whether the goals are met."""
    bulk = result["bulk_MBps"][ours]["median"] / result["bulk_MBps"]["tor"]["median"]
    ttfb_ratio = result["warm_ttfb_ms"][ours]["p50"] / result["warm_ttfb_ms"]["tor"]["p50"]
    cold = result["cold_connect_ms"][ours]["p50"] / result["cold_connect_ms"]["tor"]["p50"]
    out = {"bulk": round(bulk, 3), "warm_ttfb_p50": round(ttfb_ratio, 3), "cold_connect_p50": round(cold, 3)}
    if "round_p50" in result["warm_ttfb_ms"][ours]:
        bulk_runs = zip(result["bulk_MBps"][ours]["runs"], result["bulk_MBps"]["tor"]["runs"], strict=True)
        ttfb_runs = zip(result["warm_ttfb_ms"][ours]["round_p50"], result["warm_ttfb_ms"]["tor"]["round_p50"],
                        strict=True)
        out["bulk_per_round"] = spread([a / b for a, b in bulk_runs])
        out["warm_ttfb_p50_per_round"] = spread([a / b for a, b in ttfb_runs])
    return {**out, "goals": GOALS,
            "meets_goals": bulk >= GOALS["bulk"] and ttfb_ratio <= GOALS["warm_ttfb_p50"]}


def rates(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2), "runs": [round(v, 2) for v in values]}


def measure(ends: dict[str, dict], *, rounds: int, samples: int, cold_rounds: int, bulk_bytes: int) -> dict:
    """`ends`: per implementation (tor first) its socks, onion and newnym(). Alternates between them in
    every step."""
    warm = {name: flow.fresh_credentials(f"warm-{name}") for name in ends}
    for name, end in ends.items():  # the warm circuits
        ttfb(end["socks"], end["onion"], warm[name])
    first_byte: dict[str, list[float]] = {name: [] for name in ends}
    round_p50: dict[str, list[float]] = {name: [] for name in ends}
    bulk: dict[str, list[float]] = {name: [] for name in ends}
    for _ in range(rounds):
        this_round: dict[str, list[float]] = {name: [] for name in ends}
        for _ in range(samples):
            for name, end in ends.items():
                this_round[name].append(ttfb(end["socks"], end["onion"], warm[name]))
        for name, end in ends.items():
            bulk[name].append(bulk_MBps(end["socks"], end["onion"], warm[name], bulk_bytes))
            first_byte[name] += this_round[name]
            round_p50[name].append(statistics.median(this_round[name]) * 1e3)
    cold: dict[str, list[float]] = {name: [] for name in ends}
    last_newnym = 0.0
    for _ in range(cold_rounds):
        time.sleep(max(0.0, last_newnym + NEWNYM_GAP - time.monotonic()))  # tor's NEWNYM rate limit
        for end in ends.values():
            end["newnym"]()
        last_newnym = time.monotonic()
        for name, end in ends.items():
            cold[name].append(fresh_connect(end["socks"], end["onion"]))
    result = {"bulk_MBps": {k: rates(v) for k, v in bulk.items()},
              "warm_ttfb_ms": {k: {**summary_ms(v), "round_p50": [round(p, 1) for p in round_p50[k]]}
                               for k, v in first_byte.items()},
              "cold_connect_ms": {k: summary_ms(v) for k, v in cold.items()}}
    result["ratios_onionlab_over_tor"] = ratios(result)
    for name in ends:
        if name.startswith("onionlab@"):
            result[f"ratios_{name}_over_tor"] = ratios(result, name)
    return result


def table(result: dict) -> str:
    """The figures for people: per implementation, then each onionlab's ratios to tor."""
    lines = [f"{'':16} {'bulk MB/s median [min-max]':>28} {'warm TTFB ms p50 [round p50s]':>34} "
             f"{'cold connect ms p50 [max]':>26}"]
    for name, bulk in result["bulk_MBps"].items():
        warm, cold = result["warm_ttfb_ms"][name], result["cold_connect_ms"][name]
        lines.append(f"{name:16} {bulk['median']:>10.2f} [{bulk['min']:.2f}-{bulk['max']:.2f}]".ljust(46)
                     + f"{warm['p50']:>9.1f} {warm['round_p50']}".ljust(36)
                     + f"{cold['p50']:>9.1f} [{cold['max']:.1f}]")
    for key, r in result.items():
        if key.startswith("ratios_") and key.endswith("_over_tor"):
            name = key[len("ratios_"):-len("_over_tor")]
            line = (f"{name} / tor: bulk {r['bulk']:.2f}x (goal >= {GOALS['bulk']}), warm TTFB "
                    f"{r['warm_ttfb_p50']:.2f}x (goal <= {GOALS['warm_ttfb_p50']}), cold connect "
                    f"{r['cold_connect_p50']:.2f}x")
            if "bulk_per_round" in r:
                b, t = r["bulk_per_round"], r["warm_ttfb_p50_per_round"]
                line += (f"; per round: bulk {b['median']:.2f} [{b['min']:.2f}-{b['max']:.2f}], "
                         f"TTFB {t['median']:.2f} [{t['min']:.2f}-{t['max']:.2f}]")
            lines.append(line)
    if result.get("tor_tcp_nodelay"):
        lines.append("tor ran with TCP_NODELAY on every socket (--tor-nodelay): not tor as shipped")
    if result.get("tor_kist_interval_ms") is not None:
        lines.append(f"tor ran with KISTSchedRunInterval {result['tor_kist_interval_ms']} msec "
                     "(--tor-kist-interval): not tor as shipped")
    return "\n".join(lines)


def _lab_end(backend: LocalBackend) -> dict:
    info = backend.up(load_topology(TOPOLOGY), timeout=120)
    client = next(n for n in info.nodes if n.role == "client")
    onion = next(n for n in info.nodes if n.role == "onion_service").onion
    host, _, port = client.socks.rpartition(":")
    flow.check_reachable(client.socks, onion, deadline=time.monotonic() + 60)
    return {"socks": (host, int(port)), "onion": onion,
            "newnym": lambda: backend.control(client.name, {"command": "newnym"})}


def nodelay_env(into: Path) -> dict[str, str]:
    """The environment that makes tor's TCP sockets TCP_NODELAY: bench/tcp_nodelay.c built into `into` and
    preloaded. BenchError without a C compiler."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise BenchError("--tor-nodelay builds bench/tcp_nodelay.c and needs a C compiler (cc or gcc)")
    shim = into / "tcp_nodelay.so"
    source = REPO / "bench" / "tcp_nodelay.c"
    subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(shim), str(source), "-ldl"], check=True,
                   capture_output=True)
    return {**os.environ, "LD_PRELOAD": str(shim)}


def run(*, rounds: int, samples: int, cold_rounds: int, bulk_bytes: int,
        baselines: Sequence[str] = (), tor_nodelay: bool = False, tor_kist_ms: int | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="onionlab-vs-tor-") as tmp:
        tor = TorNetwork(Path(tmp, "tor"), env=nodelay_env(Path(tmp)) if tor_nodelay else None,
                         kist_interval_ms=tor_kist_ms)
        backends = {"onionlab": LocalBackend(Path(tmp, "lab"))}
        for i, baseline in enumerate(baselines):
            source = (Path(baseline) if Path(baseline).is_dir()
                      else export_revision(baseline, Path(tmp, f"baseline-src{i}")))
            backends[f"onionlab@{Path(baseline).name}"] = SourceBackend(Path(tmp, f"baseline-lab{i}"), source)
        try:
            started = time.monotonic()
            tor.start()
            ours, ready = {}, {}
            for name, backend in backends.items():
                ours[name] = _lab_end(backend)
                ready[name] = round(time.monotonic() - started, 1)
            ready["tor"] = round(tor.wait_ready(), 1)
            theirs = {"socks": tor.socks, "onion": tor.onion, "newnym": tor.newnym}
            result = measure({"tor": theirs, **ours}, rounds=rounds, samples=samples,
                             cold_rounds=cold_rounds, bulk_bytes=bulk_bytes)
            warnings = tor.warnings()
        finally:
            tor.stop()
            for backend in backends.values():
                backend.down()
    return {"benchmark": "C tor vs onionlab, same topology shape, same run",
            "shape": f"{AUTHORITIES} authorities, {RELAYS} relays, an onion service, a client",
            "tor_version": subprocess.run([tor_binary(), "--version"], capture_output=True,
                                          text=True).stdout.splitlines()[0],
            "tor_tcp_nodelay": tor_nodelay, "tor_kist_interval_ms": tor_kist_ms,
            "bulk_bytes": bulk_bytes, "rounds": rounds, "ttfb_samples_per_round": samples, "ready_s": ready,
            **result, "load_avg": [round(x, 2) for x in os.getloadavg()], "tor_warnings": warnings}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=ROUNDS, help="bulk fetches per implementation")
    ap.add_argument("--samples", type=int, default=TTFB_SAMPLES, help="warm TTFB samples per implementation")
    ap.add_argument("--cold-rounds", type=int, default=COLD_ROUNDS)
    ap.add_argument("--bulk-bytes", type=int, default=BULK_BYTES)
    ap.add_argument("--baseline", metavar="REV", action="append", default=[],
                    help="also run the lab of git revision REV (e.g. HEAD~1), or of the source tree in "
                    "directory REV (repeatable)")
    ap.add_argument("--tor-nodelay", action="store_true",
                    help="run every tor with TCP_NODELAY on its sockets (an LD_PRELOAD shim built from "
                    "bench/tcp_nodelay.c): tor without its Nagle stalls on loopback, not tor as shipped")
    ap.add_argument("--tor-kist-interval", type=int, metavar="MS",
                    help="every tor's KISTSchedRunInterval in ms (tor's default: 10 ms when the consensus "
                    "does not set it, as in this private network): not tor as shipped")
    ap.add_argument("--serve-http", type=int, metavar="PORT", help=argparse.SUPPRESS)
    ap.add_argument("--onion", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_http:
        serve_http(args.serve_http, args.onion)
        return 0
    result = run(rounds=args.rounds, samples=args.samples, cold_rounds=args.cold_rounds,
                 bulk_bytes=args.bulk_bytes, baselines=args.baseline, tor_nodelay=args.tor_nodelay,
                 tor_kist_ms=args.tor_kist_interval)
    print(table(result), file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
