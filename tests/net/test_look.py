"""`onionlab logs --follow`, `watch`, `exec`, `inspect` and petnames against a real local-backend lab
(processes on 127.0.0.x: 3 authorities, 4 relays, an onion service, a client), started once for the module
with `onionlab up --backend local`. The topology names the service `shop` (petnames), so `shop.pet` must
reach it through the client's SOCKS port. No fixed sleep: every wait polls for what it waits for."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from nodes.core.socks5 import ReplyCode
from orchestrator import readiness
from orchestrator.flow import SocksRefused, fetch_pattern, fresh_credentials, socks_connect

VOTING_INTERVAL = 10
TOPOLOGY = textwrap.dedent(f"""\
    name: looklab
    networks:
      lab: {{subnet: 10.97.0.0/24}}
    timing: {{voting_interval: {VOTING_INTERVAL}, vote_delay: 2, dist_delay: 2}}
    defaults: {{image: onionlab/node:latest, control_port: 9052}}
    roles:
      authority: {{or_port: 9001, dir_port: 9030}}
      relay: {{or_port: 9001}}
      onion_service: {{intro_points: 2, guards: 1}}
      client: {{socks_port: 9050, guards: 1}}
    nodes:
      - {{name: auth, role: authority, count: 3}}
      - {{name: relay, role: relay, count: 4}}
      - name: hs
        role: onion_service
        services:
          - {{port: 80, target: http}}
      - {{name: client, role: client}}
    petnames:
      shop: hs
    """)
NODES = 9


def _onionlab(env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


class LookLab:
    def __init__(self, env: dict, run_dir: Path) -> None:
        self.env = env
        self.run_dir = run_dir
        status = json.loads(_onionlab(env, "status", "--json").stdout)
        self.socks = status["clients"][0]["socks"]
        self.onion = status["onion_services"][0]["onion"]
        self.nodes = {n["name"]: n for n in json.loads((run_dir / "state.json").read_text())["nodes"]}

    def fetch(self, host: str, n: int = 2000) -> int:
        with socks_connect(self.socks, host, 80, credentials=fresh_credentials("look"), timeout=30) as sock:
            return fetch_pattern(sock, host, n)

    def client_metric(self, name: str, **labels: str) -> float:
        node = self.nodes["client"]
        samples = readiness.fetch_metrics(node["address"], node["ports"]["control_port"]) or []
        return sum(v for metric, lab, v in samples if metric == f"onionlab_{name}" and lab == labels)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LookLab]:
    where = tmp_path_factory.mktemp("look")
    env = {**os.environ, "ONIONLAB_RUN_DIR": str(where / "run")}
    (where / "lab.yaml").write_text(TOPOLOGY)
    up = _onionlab(env, "up", "--backend", "local", "--timeout", "90", str(where / "lab.yaml"), timeout=150)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield LookLab(env, where / "run")
    finally:
        down = _onionlab(env, "down", timeout=60)
        assert down.returncode == 0, down.stderr


def _read_until(proc: subprocess.Popen, fd: int, wanted: list[str], deadline: float, seen: list[str]) -> None:
    """Read the process's output lines into `seen` until every pattern in `wanted` matched one line."""
    buffer = b""
    while not all(any(re.search(w, line) for line in seen) for w in wanted):
        assert time.monotonic() < deadline, f"waited for {wanted}; got:\n" + "\n".join(seen[-40:])
        assert proc.poll() is None, f"exited {proc.returncode}:\n" + "\n".join(seen[-40:])
        if select.select([fd], [], [], 0.2)[0]:
            chunk = os.read(fd, 65536)
            buffer += chunk
            *lines, rest = buffer.split(b"\n")
            buffer = rest
            seen.extend(line.decode(errors="replace") for line in lines)


def test_logs_follow_shows_a_fetch_as_it_happens(lab: LookLab) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "logs", "--follow"], env=lab.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: list[str] = []
    try:
        _read_until(proc, proc.stdout.fileno(), [r"\sclient\s+client_started\s"], time.monotonic() + 30, seen)
        assert lab.fetch("shop.pet") == 2000
        _read_until(proc, proc.stdout.fileno(),
                    [r"\sclient\s+petname_resolved\s+name=shop\.pet\s+onion=" + re.escape(lab.onion),
                     r"\shs\s+introduce_received\s", r"\sclient\s+stream_opened\s"],
                    time.monotonic() + 30, seen)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0, proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    started = next(i for i, line in enumerate(seen) if re.search(r"\sclient\s+client_started\s", line))
    resolved = [i for i, line in enumerate(seen) if "petname_resolved" in line]
    assert resolved and resolved[0] > started
    assert all(re.match(r"\d\d:\d\d:\d\d\.\d{3}  \S+\s+\S", line) or line.startswith(" " * 12)
               for line in seen)  # time, node, event (or a time-less line of a traceback)


def test_logs_follow_prints_what_was_there_in_time_order_first(lab: LookLab) -> None:
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "logs", "--follow", "--json"],
                            env=lab.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: list[str] = []
    try:  # until a line written after the start comes (a consensus every voting interval, at least)
        deadline = time.monotonic() + 3 * VOTING_INTERVAL
        buffer = b""
        while not any(json.loads(line)["ts"] > started + 1 for line in seen):
            assert time.monotonic() < deadline and proc.poll() is None, seen[-10:]
            if select.select([proc.stdout], [], [], 0.2)[0]:
                buffer += os.read(proc.stdout.fileno(), 65536)
                *lines, buffer = buffer.split(b"\n")
                seen.extend(line.decode() for line in lines)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    times = [json.loads(line)["ts"] for line in seen]
    old = [t for t in times if t < started - 0.5]  # certainly written before `logs` started: the history
    assert len(old) > NODES and times[:len(old)] == sorted(old)  # first, and merged in time order


def test_logs_since_and_json(lab: LookLab) -> None:
    everything = _onionlab(lab.env, "logs", "--json")
    assert everything.returncode == 0, everything.stderr
    records = [json.loads(line) for line in everything.stdout.splitlines()]
    assert {r["node"] for r in records} == set(lab.nodes)
    assert [r["ts"] for r in records] == sorted(r["ts"] for r in records)
    client = [r for r in records if r["node"] == "client"]
    middle = client[len(client) // 2]["ts"]
    since = datetime.fromtimestamp(middle).isoformat(timespec="microseconds")  # local time, as documented
    later = _onionlab(lab.env, "logs", "client", "--json", "--since", since)
    lines = [json.loads(line) for line in later.stdout.splitlines()]
    assert all(r["node"] == "client" and r["ts"] >= middle - 1e-6 for r in lines)
    assert lines[:len(client) - len(client) // 2] == client[len(client) // 2:]  # and then what came since
    day = _onionlab(lab.env, "logs", "client", "--json", "--since", "1d")
    assert [json.loads(line) for line in day.stdout.splitlines()][:len(client)] == client
    bad = _onionlab(lab.env, "logs", "--since", "yesterday")
    assert bad.returncode == 2 and "--since 'yesterday': expected a duration" in bad.stderr


def test_watch_once_reports_the_real_lab(lab: LookLab) -> None:
    result = _onionlab(lab.env, "watch", "--once", "--json")
    assert result.returncode == 0, result.stderr
    snapshot = json.loads(result.stdout)
    auth = lab.nodes["auth1"]
    valid_after = readiness.fetch_status(auth["address"], auth["ports"]["control_port"])["consensus"][
        "valid_after"]
    assert snapshot["lab"] == "looklab" and len(snapshot["nodes"]) == NODES
    assert snapshot["ready"] == NODES and all(n["state"] == "up" for n in snapshot["nodes"])
    ages = {n["name"]: n["consensus_age"] for n in snapshot["nodes"]}
    assert all(0 <= age < 3 * VOTING_INTERVAL for age in ages.values()), ages
    # the age is now minus the valid-after the authorities hold (they may have moved on by one round since)
    assert abs(ages["auth1"] - (snapshot["taken"] - valid_after)) <= VOTING_INTERVAL + 1
    service = next(n for n in snapshot["nodes"] if n["name"] == "hs")
    assert len(service["intro_points"]) == 2 and service["descriptors"] > 0
    client = next(n for n in snapshot["nodes"] if n["name"] == "client")
    assert client["fetches"] == lab.client_metric("socks_replies_total", code="SUCCEEDED") > 0
    text = _onionlab(lab.env, "watch", "--once")
    assert text.returncode == 0, text.stderr
    assert f"ready {NODES}/{NODES}" in text.stdout
    assert all(re.search(rf"^{name}\s", text.stdout, re.M) for name in lab.nodes)


def test_watch_live_quits_on_q(lab: LookLab) -> None:
    pid, fd = pty.fork()
    if pid == 0:  # the child: watch in a terminal
        os.environ.update(lab.env)
        os.execv(sys.executable, [sys.executable, "-m", "orchestrator.cli", "watch", "--interval", "0.5"])
    output = b""
    try:
        deadline = time.monotonic() + 30
        while output.count(f"ready {NODES}/{NODES}".encode()) < 2:  # two frames: it refreshes
            assert time.monotonic() < deadline, output[-2000:]
            if select.select([fd], [], [], 0.2)[0]:
                output += os.read(fd, 65536)
        os.write(fd, b"q")
        deadline = time.monotonic() + 10
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            assert time.monotonic() < deadline, "watch did not quit on q"
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    output += os.read(fd, 65536)
                except OSError:
                    pass
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)


def test_petnames_reach_the_named_onion_and_unknown_ones_get_host_unreachable(lab: LookLab) -> None:
    assert lab.fetch("shop.pet") == 2000
    assert lab.fetch("SHOP.pet") == 2000  # a name, so any case
    unknown_before = lab.client_metric("petname_lookups_total", result="unknown")
    with pytest.raises(SocksRefused) as refused:
        lab.fetch("nosuch.pet")
    assert refused.value.code == ReplyCode.HOST_UNREACHABLE == 0x04
    assert lab.client_metric("petname_lookups_total", result="unknown") == unknown_before + 1
    # the table is reread when it changes: a name added to a running lab works at once
    table = lab.run_dir / "nodes" / "client" / "petnames.json"
    assert json.loads(table.read_text()) == {"shop": lab.onion}
    table.write_text(json.dumps({"shop": lab.onion, "store": lab.onion}))
    assert lab.fetch("store.pet") == 2000
    # a broken file is refused whole and counted; the table it had stays
    errors_before = lab.client_metric("errors_total", kind="petnames_file")
    table.write_text('{"shop": "not-an-onion"}')
    assert lab.fetch("store.pet") == 2000
    assert lab.client_metric("errors_total", kind="petnames_file") == errors_before + 1


def test_exec_and_inspect_on_the_local_backend(lab: LookLab) -> None:
    echo = _onionlab(lab.env, "exec", "client", "--", "sh", "-c", 'echo "$ONIONLAB_SOCKS $PWD"; exit 7')
    assert echo.returncode == 7
    assert echo.stdout.split() == [lab.socks, str(lab.run_dir / "nodes" / "client")]
    python = _onionlab(lab.env, "exec", "hs", "--", sys.executable, "-c",
                       "import os; from nodes.config import load_config; "
                       "print(load_config(os.environ['ONIONLAB_CONFIG']).name)")
    assert python.returncode == 0 and python.stdout.strip() == "hs", python.stderr
    result = _onionlab(lab.env, "inspect", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["backend"] == "local" and data["lab"] == "looklab"
    assert [n["name"] for n in data["nodes"]] == list(lab.nodes)
    for node in data["nodes"]:
        assert node["pid"] == lab.nodes[node["name"]]["pid"] and node["state"] == "running"
        assert Path(f"/proc/{node['pid']}").exists() and Path(node["config"]).exists()
        assert node["address"] == lab.nodes[node["name"]]["address"]
    text = _onionlab(lab.env, "inspect")
    assert f"client (client): process, running, pid {lab.nodes['client']['pid']}" in text.stdout
