"""The local backend on loopback: three authorities as real processes on 127.0.0.2-4.

Authorities alone are the smallest lab that can become ready: each is ready once the three have published
a consensus (an empty one: no relays), one to one and a half voting intervals after start. The topology is
built directly, because a topology file needs relays (topology.MIN_RELAYS) and these tests need none.
"""

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from orchestrator import readiness
from orchestrator.backends import BackendError, NodeFailed, local, read_state
from orchestrator.backends.local import LocalBackend
from orchestrator.topology import Interface, Network, Node, Timing, Topology

ADDRESSES = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
INTERVAL = 10  # C tor's floor: the first consensus comes 1.2 to 2.2 intervals after start
REPO = Path(__file__).resolve().parents[2]


def _free_ports(n: int) -> list[int]:
    """Ports free on 127.0.0.2 right now (other tests and labs may use the default ones)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((ADDRESSES[0], 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _authorities_topology() -> Topology:
    control, or_port, dir_port = _free_ports(3)
    net = Network("lab", IPv4Network("10.99.0.0/24"))
    nodes = tuple(
        Node(index=i, name=f"auth{i + 1}", role="authority", image="unused", control_port=control,
             interfaces=(Interface("lab", IPv4Address(f"10.99.0.{i + 2}")),), or_port=or_port,
             dir_port=dir_port)
        for i in range(3))
    return Topology("authorities", (net,), Timing(voting_interval=INTERVAL), nodes)


def _gone(pid: int) -> bool:
    """No such process, or one that has exited and waits for a parent to reap it (a node whose `up` has
    exited is reparented; its exit is all that matters here)."""
    try:
        state = Path("/proc", str(pid), "stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def test_up_status_down(tmp_path):
    run_dir = tmp_path / "run"
    backend = LocalBackend(run_dir)
    topology = _authorities_topology()
    progress: list[str] = []
    started = time.monotonic()
    try:
        info = backend.up(topology, timeout=4 * INTERVAL, progress=progress.append)
        elapsed = time.monotonic() - started

        pids = [n.pid for n in info.nodes]
        addresses = [n.address for n in info.nodes]  # 127.0.0.2.., or a later block if another lab runs
        block = addresses[0].rpartition(".")[0]
        assert addresses == [f"{block}.{i}" for i in (2, 3, 4)]
        assert len(set(pids)) == 3 and not any(map(_gone, pids))
        assert [os.getpgid(pid) for pid in pids] == pids  # each leads its own process group
        assert elapsed < 3 * INTERVAL
        assert progress[0].startswith(f"started 3 node processes on {block}.2..{block}.4")
        assert {f"auth{i}: consensus" for i in (1, 2, 3)} <= set(progress)
        assert progress[-1].startswith("all 3 nodes ready in")

        state = json.loads((run_dir / "state.json").read_text())
        assert state["backend"] == "local"
        assert [(n["name"], n["role"], n["address"], n["pid"]) for n in state["nodes"]] == [
            (n.name, "authority", a, p) for n, a, p in zip(info.nodes, addresses, pids, strict=True)]
        assert state["nodes"][0]["ports"] == {"control_port": topology.nodes[0].control_port,
                                              "or_port": topology.nodes[0].or_port,
                                              "dir_port": topology.nodes[0].dir_port}

        config = json.loads((run_dir / "nodes" / "auth2" / "config.json").read_text())
        assert config["address"] == addresses[1]
        assert [(a["name"], a["address"]) for a in config["authorities"]] == list(
            zip(["auth1", "auth2", "auth3"], addresses, strict=True))
        key = run_dir / "nodes" / "auth2" / "keys" / "identity.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32
        assert (run_dir / ".gitignore").read_text().endswith("*\n")

        status = backend.status()
        # what `export torrc` needs of each authority: the fingerprints nodes/init.py made, its live ports
        assert [(a["name"], a["address"], a["v3ident"], a["fingerprint"], a["voting_interval"])
                for a in status.pop("authorities")] == [
            (ref["name"], ref["address"], ref["v3ident"], ref["fingerprint"], INTERVAL)
            for ref in config["authorities"]]
        assert status == {
            "nodes": [{"name": f"auth{i + 1}", "role": "authority", "address": a, "ready": True}
                      for i, a in enumerate(addresses)],
            "onion_services": [],
            "clients": [],
        }
        assert '"event":"authority_started"' in backend.logs("auth1")
    finally:
        stopped = backend.down()

    assert stopped == ["auth1", "auth2", "auth3"]
    assert all(map(_gone, pids))
    assert not run_dir.exists()


def test_sigterm_is_a_clean_exit_and_keep_keeps_the_logs(tmp_path):
    backend = LocalBackend(tmp_path / "run")
    try:
        info = backend.up(_authorities_topology(), timeout=4 * INTERVAL)
    finally:
        backend.down(keep=True)
    assert all(_gone(n.pid) for n in info.nodes)
    stderr = (tmp_path / "run" / "nodes" / "auth1" / "stderr.log").read_text()
    assert "received SIGTERM, stopping" in stderr and "fatal:" not in stderr
    assert backend.status()["nodes"][0]["ready"] is False  # the state is kept, the nodes are gone
    backend.down()
    assert not (tmp_path / "run").exists()


def test_a_node_that_crashes_at_start_fails_up_at_once(tmp_path, monkeypatch):
    topology = _authorities_topology()
    monkeypatch.setattr(local, "_free_block", lambda _: local.FIRST_ADDRESS)  # stay next to the blocker
    run_dir = tmp_path / "run"
    backend = LocalBackend(run_dir)
    with socket.socket() as blocker:  # auth2's dir port is taken
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind((ADDRESSES[1], topology.nodes[1].dir_port))
        blocker.listen()
        started = time.monotonic()
        with pytest.raises(NodeFailed) as failure:
            backend.up(topology, timeout=30)
        elapsed = time.monotonic() - started

    assert failure.value.node == "auth2"
    headline, *log = str(failure.value).splitlines()
    assert headline.startswith("auth2 (authority on 127.0.0.3; ports ")
    assert headline.endswith("exited with status 1: OSError: [Errno 98] Address already in use")
    assert log[0].startswith("last lines of auth2's log")
    assert any("Traceback" in line or "open_tcp_listeners" in line for line in log)
    assert elapsed < 10  # no waiting for the readiness timeout

    info = read_state(run_dir)  # the others were stopped; the files stay for `onionlab logs`
    assert all(_gone(n.pid) for n in info.nodes)
    assert "Address already in use" in backend.logs("auth2")
    assert backend.down() == []
    assert not run_dir.exists()


def test_a_second_up_refuses_while_a_lab_runs(tmp_path):
    first = LocalBackend(tmp_path / "run")
    try:
        first.up(_authorities_topology(), timeout=4 * INTERVAL)
        with pytest.raises(BackendError, match="already running"):
            LocalBackend(tmp_path / "run").up(_authorities_topology(), timeout=4 * INTERVAL)
    finally:
        first.down()


def test_default_topology_curl_through_the_printed_socks_port(tmp_path):
    """The issue's walk-through as a user types it: `onionlab up --backend local`, curl through the printed
    SOCKS port to the printed onion, `onionlab down`; no node process is left."""
    curl = shutil.which("curl")
    if curl is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but curl is not installed: this test needs it")
        pytest.skip("curl is not installed")
    env = {**os.environ, "ONIONLAB_RUN_DIR": str(tmp_path / "run")}
    onionlab = [sys.executable, "-m", "orchestrator.cli"]
    topology = str(REPO / "topologies" / "default.yaml")
    up = subprocess.run([*onionlab, "up", "--backend", "local", "--timeout", "60", topology], env=env,
                        capture_output=True, text=True, timeout=120)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        status = json.loads(subprocess.run([*onionlab, "status", "--json"], env=env, capture_output=True,
                                           text=True, timeout=30, check=True).stdout)
        assert all(n["ready"] for n in status["nodes"]) and len(status["nodes"]) == 11
        onion, socks = status["onion_services"][0]["onion"], status["clients"][0]["socks"]
        assert onion in up.stdout and socks in up.stdout  # what `up` printed is what we use
        page = subprocess.run([curl, "--silent", "--show-error", "--max-time", "30", "--socks5-hostname",
                               socks, f"http://{onion}/"], capture_output=True, timeout=60)
        assert page.returncode == 0, page.stderr.decode()
        assert onion.encode() in page.stdout and page.stdout.startswith(b"<!doctype html>")
        pids = [n["pid"] for n in json.loads((tmp_path / "run" / "state.json").read_text())["nodes"]]
    finally:
        down = subprocess.run([*onionlab, "down"], env=env, capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    assert all(map(_gone, pids))


def test_a_lab_moves_to_the_next_address_block_when_its_ports_are_taken(tmp_path):
    topology = _authorities_topology()
    with socket.socket() as blocker:  # something listens on auth2's dir port
        blocker.bind((ADDRESSES[1], topology.nodes[1].dir_port))
        blocker.listen()
        first = local._free_block(topology)
    assert str(first).endswith(".2") and first != local.FIRST_ADDRESS
    assert local._free_block(topology) in (local.FIRST_ADDRESS, first)  # freed again (unless a lab runs)


def test_kill_and_restart_a_node(tmp_path):
    """`onionlab kill` crashes a node, `onionlab restart` brings it back with the same identity."""
    backend = LocalBackend(tmp_path / "run")
    try:
        info = backend.up(_authorities_topology(), timeout=4 * INTERVAL)
        before = readiness.fetch_status(info.nodes[1].address, info.nodes[1].ports["control_port"])
        backend.kill("auth2")
        old_pid = info.nodes[1].pid
        deadline = time.monotonic() + 10
        while not _gone(old_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(old_pid)
        assert [n["ready"] for n in backend.status()["nodes"]] == [True, False, True]
        with pytest.raises(BackendError, match="not running"):
            backend.kill("auth2")
        with pytest.raises(BackendError, match="no signal named"):
            backend.kill("auth1", "SIGNOPE")
        after = backend.restart("auth2", timeout=4 * INTERVAL)
        # the same keys from the same data dir
        assert (after["v3ident"], after["fingerprint"]) == (before["v3ident"], before["fingerprint"])
        assert read_state(tmp_path / "run").node("auth2").pid not in (None, old_pid)
    finally:
        backend.down()
