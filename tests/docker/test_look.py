"""`onionlab exec`, `inspect`, `logs` (--follow too) and petnames against one small docker lab: 3 authorities,
4 relays, an onion service and a client whose petname table names the service `shop`. Everything is
compared with what the engine itself says (container ids, PIDs, addresses, subnets, published ports)."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import docker
import pytest

from orchestrator.backends.docker import DockerBackend
from orchestrator.flow import fetch_pattern, fresh_credentials, socks_connect
from orchestrator.topology import parse_topology

from .test_docker_backend import RELAYS_WITH_HS, UP_TIMEOUT, free_subnet

pytestmark = pytest.mark.docker


def _topology(subnet) -> str:
    return (f"name: looktest\nnetworks:\n  labnet: {{subnet: {subnet}}}\ntiming: {{voting_interval: 10}}\n"
            "nodes:\n  - {name: auth, role: authority, count: 3}\n"
            f"  - {{name: relay, role: relay, count: {RELAYS_WITH_HS}}}\n"
            "  - {name: hs, role: onion_service, intro_points: 2, services: [{port: 80, target: http}]}\n"
            "  - {name: client, role: client}\n"
            "petnames:\n  shop: hs\n")


@pytest.fixture
def lab(docker_client, node_image, labels, tmp_path) -> Iterator[tuple[DockerBackend, dict]]:
    path = tmp_path / "lab.yaml"
    path.write_text(_topology(free_subnet(docker_client)))
    backend = DockerBackend(tmp_path / "run", labels=labels)
    env = {**os.environ, "ONIONLAB_RUN_DIR": str(tmp_path / "run"),
           "ONIONLAB_LABELS": ",".join(f"{k}={v}" for k, v in labels.items())}
    try:
        backend.up(parse_topology(path.read_text(), str(path)), timeout=UP_TIMEOUT)
        yield backend, env
    finally:
        backend.down()


def _onionlab(env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_exec_inspect_logs_and_petnames_in_containers(lab, docker_client: docker.DockerClient) -> None:
    backend, env = lab
    info = backend._state()
    client = info.node("client")

    # exec: in the container, as the node user, with the node's variables; the exit status passed on
    run = _onionlab(env, "exec", "client", "--", "sh", "-c",
                    'echo "$ONIONLAB_NODE $(id -u) $(hostname)"; exit 5')
    assert run.returncode == 5, run.stderr
    assert run.stdout.split() == ["client", "10001", "client"]
    table = _onionlab(env, "exec", "client", "--", "cat", "/var/lib/onionlab/client/petnames.json")
    assert table.returncode == 0, table.stderr
    onion = backend.status()["onion_services"][0]["onion"]
    assert json.loads(table.stdout) == {"shop": onion}  # the address init made, before hs started
    missing = _onionlab(env, "exec", "client", "--", "no-such-command")
    assert missing.returncode in (126, 127)  # docker exec's status for a command it cannot start

    # inspect: what the engine says
    data = json.loads(_onionlab(env, "inspect", "--json").stdout)
    assert (data["backend"], data["lab"], data["run_id"]) == ("docker", "looktest", info.run_id)
    for node in data["nodes"]:
        container = docker_client.containers.get(node["container"])
        assert (node["id"], node["state"], node["pid"]) == (container.short_id, "running",
                                                             container.attrs["State"]["Pid"])
        assert node["addresses"] == {"labnet": info.node(node["name"]).address}
        assert node["volumes"] == [{"name": f"onionlab-{info.run_id}-{node['name']}",
                                    "path": f"/var/lib/onionlab/{node['name']}"}]
    by_name = {n["name"]: n for n in data["nodes"]}
    assert by_name["client"]["published"]["9050/tcp"] == [client.socks]
    [network] = data["networks"]
    engine_network = docker_client.networks.get(network["name"])
    assert network["subnet"] == engine_network.attrs["IPAM"]["Config"][0]["Subnet"]
    assert sorted(data["volumes"]) == sorted(f"onionlab-{info.run_id}-{n.name}" for n in info.nodes)
    text = _onionlab(env, "inspect").stdout
    assert f"client (client): container {client.container} {by_name['client']['id']}, running" in text

    # logs --follow: a fetch of http://shop.pet/ appears as it happens
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "logs", "--follow", "client"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: list[str] = []
    try:
        _wait_for(proc, [r"client\s+client_started"], seen)
        with socks_connect(client.socks, "shop.pet", 80, credentials=fresh_credentials("look"),
                           timeout=60) as sock:
            assert fetch_pattern(sock, "shop.pet", 3000) == 3000
        _wait_for(proc, [rf"client\s+petname_resolved\s+name=shop\.pet\s+onion={re.escape(onion)}",
                         r"client\s+stream_opened"], seen)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0, proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # exec passes stdin on: a new petname table written into the running client's volume works at once
    write = subprocess.run([sys.executable, "-m", "orchestrator.cli", "exec", "client", "--", "sh", "-c",
                            "cat > /var/lib/onionlab/client/petnames.json"], env=env, capture_output=True,
                           input=json.dumps({"store": onion}).encode(), timeout=60)
    assert write.returncode == 0, write.stderr
    with socks_connect(client.socks, "store.pet", 80, credentials=fresh_credentials("look"),
                       timeout=60) as sock:
        assert fetch_pattern(sock, "store.pet", 1000) == 1000

    # watch: the same values from the containers' /status and /metrics
    snapshot = json.loads(_onionlab(env, "watch", "--once", "--json").stdout)
    assert (snapshot["backend"], len(snapshot["nodes"]), snapshot["ready"]) == ("docker", len(info.nodes),
                                                                              len(info.nodes))
    assert all(0 <= n["consensus_age"] < 30 for n in snapshot["nodes"]), snapshot["nodes"]
    assert next(n for n in snapshot["nodes"] if n["name"] == "client")["fetches"] >= 2

    # logs of every node, merged in time order, with the engine's timestamps for stderr
    merged = [json.loads(line) for line in _onionlab(env, "logs", "--json").stdout.splitlines()]
    assert {r["node"] for r in merged} == {n.name for n in info.nodes}
    assert [r["ts"] for r in merged] == sorted(r["ts"] for r in merged)
    recent = [json.loads(line) for line in _onionlab(env, "logs", "hs", "--json", "--since", "2m").stdout
              .splitlines()]
    assert recent and all(r["node"] == "hs" and r["ts"] >= time.time() - 125 for r in recent)


def _wait_for(proc: subprocess.Popen, wanted: list[str], seen: list[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    buffer = b""
    fd = proc.stdout.fileno()
    while not all(any(re.search(w, line) for line in seen) for w in wanted):
        assert time.monotonic() < deadline, f"waited for {wanted}; got:\n" + "\n".join(seen[-30:])
        assert proc.poll() is None, f"exited {proc.returncode}: {proc.stderr.read().decode()}"
        if select.select([fd], [], [], 0.2)[0]:
            buffer += os.read(fd, 65536)
            *lines, buffer = buffer.split(b"\n")
            seen.extend(line.decode(errors="replace") for line in lines)


