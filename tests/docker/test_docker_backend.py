"""The docker backend (orchestrator/backends/docker/) against the real engine: a lab of three authorities
and three relays up, its status, labels, logs and down; a node that crashes at start; SIGKILL of `onionlab up`
mid-way, then `onionlab reap`; the pytest plugin's `onionlab_lab` fixture in a pytest of its own.

Every lab gets a /24 of its own out of 10.200.0.0-10.250.255.0 (so parallel sessions do not collide) and the
test labels (conftest.py) next to its own, so the conftest removes whatever a failing test leaves.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from ipaddress import IPv4Network, ip_address, ip_network
from pathlib import Path

import docker
import pytest

from orchestrator import cli
from orchestrator.backends import BackendError, NodeFailed, read_state
from orchestrator.backends import docker as backend_module
from orchestrator.backends.docker import DockerBackend, engine
from orchestrator.topology import Topology, parse_topology

from .conftest import REPO, SESSION, SESSION_LABEL, TEST_LABEL

pytestmark = pytest.mark.docker

UP_TIMEOUT = 120  # seconds for every node to be ready; this lab is ready in about 10 s on two cores
RUN_LABELS = (backend_module.RUN, backend_module.TOPOLOGY, backend_module.LAB, backend_module.RUN_DIR,
              backend_module.OWNER_PID, backend_module.OWNER_START, backend_module.OWNER_HOST,
              backend_module.OWNER_BOOT)
ONIONLAB = [sys.executable, "-m", "orchestrator.cli"]


def free_subnet(client: docker.DockerClient) -> IPv4Network:
    """A /24 that no network of this engine overlaps (now)."""
    pools = [pool for net in client.networks.list()
             for pool in (net.attrs.get("IPAM") or {}).get("Config") or []]
    used = [ip_network(p["Subnet"]) for p in pools if ":" not in p.get("Subnet", ":")]
    for _ in range(100):
        subnet = ip_network(f"10.{random.randint(200, 250)}.{random.randint(0, 255)}.0/24")
        if not any(subnet.overlaps(u) for u in used):
            return subnet
    pytest.fail("no free /24 in 10.200.0.0-10.250.255.0")


def topology_text(subnet: IPv4Network, name: str = "dockertest", relays: int = 3) -> str:
    return textwrap.dedent(f"""\
        name: {name}
        networks:
          labnet: {{subnet: {subnet}}}
        timing: {{voting_interval: 10}}
        nodes:
          - {{name: auth, role: authority, count: 3}}
          - {{name: relay, role: relay, count: {relays}}}
        """)


# An onion service keeps 3 intro points (the default), none on its guard: with an onion service, 4 relays.
RELAYS_WITH_HS = 4


def small_topology(client: docker.DockerClient, path: Path) -> Topology:
    path.write_text(topology_text(free_subnet(client)))
    return parse_topology(path.read_text(), str(path))


def run_objects(client: docker.DockerClient, run_id: str) -> dict[str, list]:
    selector = {"label": f"{backend_module.RUN}={run_id}"}
    return {"containers": client.containers.list(all=True, filters=selector),
            "networks": client.networks.list(filters=selector),
            "volumes": client.volumes.list(filters=selector)}


def counts(objects: dict[str, list]) -> dict[str, int]:
    return {kind: len(found) for kind, found in objects.items()}


# -- a lab up, looked at, and down ---------------------------------------------------------------------------


def test_up_status_labels_logs_down(docker_client, node_image, labels, tmp_path):
    topology = small_topology(docker_client, tmp_path / "lab.yaml")
    run_dir = tmp_path / "run"
    backend = DockerBackend(run_dir, labels=labels)
    progress: list[str] = []
    started = time.monotonic()
    try:
        info = backend.up(topology, timeout=UP_TIMEOUT, progress=progress.append)
        elapsed = time.monotonic() - started
        print(f"\nup took {elapsed:.1f} s:\n" + "\n".join(progress))
        names = [n.name for n in topology.nodes]

        # the state file: complete, with the run id every object carries
        state = read_state(run_dir)
        assert (state.backend, state.complete, state.run_id) == ("docker", True, info.run_id)
        assert [(n.name, n.address, n.container) for n in state.nodes] == [
            (n.name, str(n.address()), f"onionlab-{info.run_id}-{n.name}") for n in topology.nodes]
        subnet = topology.networks[0].subnet
        assert progress[0].startswith(f"networks: onionlab-{info.run_id}-labnet ({subnet})")
        assert progress[1].startswith("init: 6 configs and 3 authority identity keys written into the run's "
                                      "volumes (plan: ")  # the plan's size: it reaches init as a file
        assert progress[2].startswith("started 6 containers in ")
        assert any(line.startswith("auth1: consensus") for line in progress)
        assert any(line.startswith("relay3: listed") for line in progress)
        assert progress[-1].startswith("all 6 nodes ready in ")

        # status: the same shape as the local backend's, and the CLI prints it
        expected = {"nodes": [{"name": n.name, "role": n.role, "address": str(n.address()), "ready": True}
                              for n in topology.nodes],
                    "onion_services": [], "clients": []}
        status = backend.status()
        # what `export torrc` needs of each authority: its address on the lab's network, its live identities
        assert [(a["name"], a["address"], a["or_port"], a["dir_port"], len(a["v3ident"]),
                 len(a["fingerprint"])) for a in status.pop("authorities")] == [
            (n.name, str(n.address()), 9001, 9030, 40, 40) for n in topology.nodes_by_role("authority")]
        assert status == expected
        assert cli.main(["status", "--json", "--run-dir", str(run_dir)]) == 0

        # every object of the run is labelled; nothing else is (the init container is gone)
        objects = run_objects(docker_client, info.run_id)
        assert counts(objects) == {"containers": 6, "networks": 1, "volumes": 6}
        for kind, found in objects.items():
            for obj in found:
                obj_labels = obj.labels if kind == "containers" else obj.attrs["Labels"]
                assert {key: obj_labels.get(key) for key in RUN_LABELS} == {
                    backend_module.RUN: info.run_id, backend_module.TOPOLOGY: str(tmp_path / "lab.yaml"),
                    backend_module.LAB: "dockertest", backend_module.RUN_DIR: str(run_dir),
                    **backend_module.owner_labels()}
                assert obj_labels[TEST_LABEL] == "1" and obj_labels[SESSION_LABEL] == SESSION
        for kind in ("containers", "volumes"):
            assert sorted((o.labels if kind == "containers" else o.attrs["Labels"])[backend_module.NODE]
                          for o in objects[kind]) == sorted(names)
        assert objects["networks"][0].attrs["Labels"][backend_module.NETWORK] == "labnet"

        # each container: the node's name as hostname, its static address, locked down
        for node in topology.nodes:
            container = docker_client.containers.get(f"onionlab-{info.run_id}-{node.name}")
            host_config, config = container.attrs["HostConfig"], container.attrs["Config"]
            assert container.labels[backend_module.ROLE] == node.role
            assert config["Hostname"] == node.name and config["User"] == "10001:10001"
            assert config["Cmd"] == [node.role, "--config", f"/var/lib/onionlab/{node.name}/config.json"]
            assert host_config["CapDrop"] == ["ALL"] and host_config["ReadonlyRootfs"] is True
            assert "no-new-privileges:true" in host_config["SecurityOpt"]
            memory = {"authority": 192}.get(node.role, 256) * 2**20  # the role's default limits
            assert (host_config["Memory"], host_config["MemorySwap"], host_config["PidsLimit"]) == (
                memory, memory, 128)
            network = container.attrs["NetworkSettings"]["Networks"][f"onionlab-{info.run_id}-labnet"]
            assert network["IPAddress"] == str(node.address())
            assert host_config["PortBindings"] in (None, {})  # no client: nothing published

        # the authority's key lives in its volume, private to the node user
        code, output = backend.exec("auth1", ["python3", "-c", "import os, stat; s = os.stat("
                                              "'/var/lib/onionlab/auth1/keys/identity.key'); "
                                              "print(s.st_uid, oct(stat.S_IMODE(s.st_mode)), s.st_size)"])
        assert (code, output.split()) == (0, ["10001", "0o600", "32"])

        logs = backend.logs("auth1")
        assert logs.startswith(f"==> container onionlab-{info.run_id}-auth1: stdout (events) <==")
        assert '"event":"authority_started"' in logs and ": stderr <==" in logs
        with pytest.raises(BackendError, match="no node named 'auth9'"):
            backend.logs("auth9")

        # a complete run with its state file belongs to somebody: reap leaves it alone
        report = DockerBackend(tmp_path / "elsewhere").reap()
        assert info.run_id in report.kept and info.run_id not in report.removed
        assert counts(run_objects(docker_client, info.run_id)) == {"containers": 6, "networks": 1,
                                                                   "volumes": 6}
        # a second lab from the same run dir is refused while this one runs
        with pytest.raises(BackendError, match="already running"):
            DockerBackend(run_dir, labels=labels).up(topology, timeout=UP_TIMEOUT)
    finally:
        down_started = time.monotonic()
        stopped = backend.down()
        print(f"down took {time.monotonic() - down_started:.1f} s")
    assert stopped == names
    assert counts(run_objects(docker_client, info.run_id)) == {"containers": 0, "networks": 0, "volumes": 0}
    assert not run_dir.exists()
    assert elapsed < UP_TIMEOUT


def test_client_socks_is_published_on_loopback_only(docker_client, node_image, labels, tmp_path):
    """With an onion service and a client: `up` records the onion address and the SOCKS port Docker published
    on the host's 127.0.0.1 (and nowhere else); that port speaks SOCKS5 from the host."""
    subnet = free_subnet(docker_client)
    extra = ("  - {name: hs, role: onion_service, services: [{port: 80, target: http}]}\n"
             "  - {name: client, role: client}\n")
    (tmp_path / "lab.yaml").write_text(topology_text(subnet, relays=RELAYS_WITH_HS) + extra)
    topology = parse_topology((tmp_path / "lab.yaml").read_text(), str(tmp_path / "lab.yaml"))
    backend = DockerBackend(tmp_path / "run", labels=labels)
    try:
        info = backend.up(topology, timeout=UP_TIMEOUT)
        client = docker_client.containers.get(f"onionlab-{info.run_id}-client")
        bindings = client.attrs["NetworkSettings"]["Ports"]["9050/tcp"]
        assert [b["HostIp"] for b in bindings] == ["127.0.0.1"]
        socks = f"127.0.0.1:{bindings[0]['HostPort']}"
        assert info.node("client").socks == socks
        for name in ("hs", "auth1", "relay1"):  # nothing else is published
            container = docker_client.containers.get(f"onionlab-{info.run_id}-{name}")
            assert container.attrs["HostConfig"]["PortBindings"] in (None, {})

        status = backend.status()
        code, output = backend.exec("hs", ["python3", "-c", "import urllib.request as u; print(u.urlopen("
                                           f"'http://{topology.node('hs').address()}:9052/status').read()"
                                           ".decode())"])
        assert code == 0, output
        hs_status = json.loads(output)
        assert hs_status["onion"].endswith(".onion") and len(hs_status["onion"]) == 62
        assert status["onion_services"] == [{"name": "hs", "onion": hs_status["onion"], "ports": [80]}]
        assert status["clients"] == [{"name": "client", "socks": socks}]
        assert all(n["ready"] for n in status["nodes"])

        with socket.create_connection(("127.0.0.1", int(bindings[0]["HostPort"])), timeout=10) as conn:
            conn.sendall(b"\x05\x01\x00")  # SOCKS5, one method: no authentication
            assert conn.recv(2) == b"\x05\x00"
    finally:
        run_id = read_state(tmp_path / "run").run_id
        backend.down()
    assert counts(run_objects(docker_client, run_id)) == {"containers": 0, "networks": 0, "volumes": 0}


def test_two_networks_joined_only_by_relays(docker_client, node_image, labels, tmp_path):
    """topologies/multi-network.yaml's shape: authorities and relays on both networks, the onion service only
    on `south`, the client only on `north`. Every container has an address on each of its networks, and the
    client cannot reach the service except through relays."""
    north = free_subnet(docker_client)
    south = next(s for s in iter(lambda: free_subnet(docker_client), None) if s != north)
    (tmp_path / "lab.yaml").write_text(textwrap.dedent(f"""\
        name: twonets
        networks:
          north: {{subnet: {north}}}
          south: {{subnet: {south}}}
        timing: {{voting_interval: 10}}
        roles:
          authority: {{networks: [north, south]}}
          relay: {{networks: [north, south]}}
        nodes:
          - {{name: auth, role: authority, count: 3}}
          - {{name: relay, role: relay, count: {RELAYS_WITH_HS}}}
          - {{name: hs, role: onion_service, networks: [south], services: [{{port: 80, target: http}}]}}
          - {{name: client, role: client, networks: [north]}}
        """))
    topology = parse_topology((tmp_path / "lab.yaml").read_text(), str(tmp_path / "lab.yaml"))
    backend = DockerBackend(tmp_path / "run", labels=labels)
    try:
        info = backend.up(topology, timeout=UP_TIMEOUT)
        assert counts(run_objects(docker_client, info.run_id))["networks"] == 2
        for node in topology.nodes:
            container = docker_client.containers.get(f"onionlab-{info.run_id}-{node.name}")
            attached = container.attrs["NetworkSettings"]["Networks"]
            assert {name: n["IPAddress"] for name, n in attached.items()} == {
                f"onionlab-{info.run_id}-{i.network}": str(i.address) for i in node.interfaces}
        hs = topology.node("hs").address()
        code, output = backend.exec("client", ["python3", "-c", f"""
import socket
try:
    socket.create_connection(("{hs}", 9052), timeout=2)
    print("reached")
except OSError as e:
    print("unreachable", e)
"""])
        assert code == 0 and output.startswith("unreachable"), output
        assert all(n["ready"] for n in backend.status()["nodes"])
    finally:
        run_id = read_state(tmp_path / "run").run_id
        backend.down()
    assert counts(run_objects(docker_client, run_id)) == {"containers": 0, "networks": 0, "volumes": 0}


def test_a_container_that_crashes_is_reported_with_its_own_log(docker_client, node_image, labels, tmp_path):
    """relay2's control port is its OR port (the topology checker would refuse that; the model is built by
    hand): the node itself fails to bind, and `up` says so at once, with the node's `fatal:` line first."""
    topology = small_topology(docker_client, tmp_path / "lab.yaml")
    relay2 = topology.node("relay2")
    nodes = tuple(dataclasses.replace(n, control_port=relay2.or_port) if n is relay2 else n
                  for n in topology.nodes)
    topology = dataclasses.replace(topology, nodes=nodes)
    run_dir = tmp_path / "run"
    backend = DockerBackend(run_dir, labels=labels)
    started = time.monotonic()
    with pytest.raises(NodeFailed) as failure:
        backend.up(topology, timeout=UP_TIMEOUT)
    elapsed = time.monotonic() - started

    run_id = read_state(run_dir).run_id
    assert failure.value.node == "relay2"
    headline, *log = str(failure.value).splitlines()
    assert headline == (f"relay2 (relay, container onionlab-{run_id}-relay2 on {relay2.address()}) exited "
                        "with status 1: OSError: [Errno 98] Address already in use")
    assert log[0] == f"last lines of relay2 (onionlab-{run_id}-relay2)'s log:"
    assert log[-1] == "  | fatal: OSError: [Errno 98] Address already in use"
    assert any("open_tcp_listeners" in line for line in log)
    assert elapsed < 30  # at once, not after the readiness timeout

    # everything of the run is gone; the logs were saved first
    assert counts(run_objects(docker_client, run_id)) == {"containers": 0, "networks": 0, "volumes": 0}
    saved = backend.logs("relay2")
    assert "fatal: OSError: [Errno 98] Address already in use" in saved
    assert '"event":"authority_started"' in backend.logs("auth1")
    assert backend.down() == []
    assert not run_dir.exists()


def test_a_missing_image_fails_before_anything_is_made(docker_client, labels, tmp_path):
    topology = small_topology(docker_client, tmp_path / "lab.yaml")
    topology = dataclasses.replace(topology, nodes=tuple(
        dataclasses.replace(n, image="onionlab/no-such-image:never") for n in topology.nodes))
    before = {c.id for c in docker_client.containers.list(all=True, filters={"label": backend_module.RUN})}
    with pytest.raises(BackendError, match="image onionlab/no-such-image:never is not on this Docker engine"):
        DockerBackend(tmp_path / "run", labels=labels).up(topology, timeout=UP_TIMEOUT)
    assert {c.id for c in docker_client.containers.list(all=True,
                                                        filters={"label": backend_module.RUN})} <= before
    assert not (tmp_path / "run" / "state.json").exists()


def _blocked_topology(docker_client, labels, tmp_path) -> tuple[Topology, IPv4Network, str]:
    """A topology whose subnet another network (labelled for the test) already holds."""
    subnet = free_subnet(docker_client)
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=str(subnet))])
    blocker = docker_client.networks.create(f"onionlab-test-{labels['onionlab.test.case']}", ipam=ipam,
                                            labels=labels)
    path = tmp_path / "lab.yaml"
    path.write_text(topology_text(subnet))
    return parse_topology(path.read_text(), str(path)), subnet, blocker.name


def test_a_taken_subnet_is_named_with_exact_subnets(docker_client, node_image, labels, tmp_path):
    topology, subnet, blocker = _blocked_topology(docker_client, labels, tmp_path)
    run_dir = tmp_path / "run"
    with pytest.raises(BackendError, match=f"network labnet \\({subnet}\\): .*overlap.*{blocker}"):
        DockerBackend(run_dir, labels=labels, exact_subnets=True).up(topology, timeout=UP_TIMEOUT)
    run_id = read_state(run_dir).run_id
    assert counts(run_objects(docker_client, run_id)) == {"containers": 0, "networks": 0, "volumes": 0}


def test_a_taken_subnet_moves_the_lab_to_a_free_one(docker_client, node_image, labels, tmp_path):
    """Another lab of the same topology (here: a network on its subnet) is no clash: this one comes up on the
    next free subnet of the same size, every node at the same host part, and says so."""
    topology, subnet, blocker = _blocked_topology(docker_client, labels, tmp_path)
    run_dir = tmp_path / "run"
    backend = DockerBackend(run_dir, labels=labels)
    progress: list[str] = []
    try:
        info = backend.up(topology, timeout=UP_TIMEOUT, progress=progress.append)
        (network,) = run_objects(docker_client, info.run_id)["networks"]
        moved = ip_network(network.attrs["IPAM"]["Config"][0]["Subnet"])
        assert moved != subnet and moved.prefixlen == subnet.prefixlen and not moved.overlaps(subnet)
        assert f"network labnet: {subnet} is taken (by {blocker}); using {moved} instead" in progress
        offsets = [int(n.address()) - int(subnet.network_address) for n in topology.nodes]
        assert [n.address for n in read_state(run_dir).nodes] == [
            str(moved.network_address + offset) for offset in offsets]
        status = backend.status()
        assert all(n["ready"] for n in status["nodes"]) and \
            [n["address"] for n in status["nodes"]] == [n.address for n in info.nodes]
        for container in run_objects(docker_client, info.run_id)["containers"]:
            assert [ip_address(a) in moved for a in engine.container_addresses(container)] == [True]
    finally:
        backend.down()
    assert counts(run_objects(docker_client, info.run_id)) == {"containers": 0, "networks": 0, "volumes": 0}


# -- SIGKILL of the orchestrator, then reap ------------------------------------------------------------------


def _lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


@pytest.mark.parametrize("kill_after", ["networks:", "started 6 containers"])
def test_sigkill_mid_up_then_reap_leaves_nothing(docker_client, node_image, labels, tmp_path, kill_after):
    """`onionlab up` in a process of its own, SIGKILLed once it has made networks (or started containers):
    its objects stay behind; `onionlab reap` removes every one of them, and then finds nothing else to do."""
    path = tmp_path / "lab.yaml"
    path.write_text(topology_text(free_subnet(docker_client)))
    run_dir = tmp_path / "run"
    env = {**os.environ, "ONIONLAB_RUN_DIR": str(run_dir),
           "ONIONLAB_LABELS": ",".join(f"{k}={v}" for k, v in labels.items())}
    up = subprocess.Popen([*ONIONLAB, "up", "--timeout", str(UP_TIMEOUT), str(path)], env=env, cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(up.stdout, lines), daemon=True).start()
    seen = []
    try:
        deadline = time.monotonic() + 60
        while not any(kill_after in line for line in seen):
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, "onionlab up ended early:\n" + "".join(seen)
            seen.append(line)
        up.send_signal(signal.SIGKILL)
        assert up.wait(timeout=10) == -signal.SIGKILL
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()

    state = read_state(run_dir)
    assert state is not None and not state.complete
    left = counts(run_objects(docker_client, state.run_id))
    assert left["networks"] == 1  # killed after the networks were made: there is something to reap
    if kill_after.startswith("started"):
        assert left == {"containers": 6, "networks": 1, "volumes": 6}  # mid-readiness: nobody owns them

    reap = subprocess.run([*ONIONLAB, "reap"], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert reap.returncode == 0, reap.stderr
    assert f"removed run {state.run_id}: its orchestrator (pid {up.pid}) died during `up`" in reap.stdout
    assert counts(run_objects(docker_client, state.run_id)) == {"containers": 0, "networks": 0, "volumes": 0}
    assert not run_dir.exists()  # the half-made run's state went with it

    again = subprocess.run([*ONIONLAB, "reap"], env=env, cwd=REPO, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0 and f"run {state.run_id}" not in again.stdout


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_up_removes_its_run_and_status_says_so(docker_client, node_image, labels, tmp_path,
                                                              sig, code):
    """Ctrl-C or SIGTERM while `onionlab up` waits for readiness: it exits 128 + the signal, having removed
    every container, network and volume it made; `status` then says the lab did not come up (exit 1)."""
    path = tmp_path / "lab.yaml"
    path.write_text(topology_text(free_subnet(docker_client)))
    run_dir = tmp_path / "run"
    env = {**os.environ, "ONIONLAB_RUN_DIR": str(run_dir),
           "ONIONLAB_LABELS": ",".join(f"{k}={v}" for k, v in labels.items())}
    up = subprocess.Popen([*ONIONLAB, "up", "--timeout", str(UP_TIMEOUT), str(path)], env=env, cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(up.stdout, lines), daemon=True).start()
    seen = []
    try:
        deadline = time.monotonic() + 60
        while not any("started 6 containers" in line for line in seen):
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, "onionlab up ended early:\n" + "".join(seen)
            seen.append(line)
        up.send_signal(sig)
        assert up.wait(timeout=90) == code, "".join(seen)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    while (line := lines.get(timeout=10)) is not None:
        seen.append(line)
    output = "".join(seen)
    assert f"onionlab: interrupted by {signal.Signals(sig).name}" in output
    assert "`up` was interrupted: every container, network and volume of the run is removed" in output

    state = read_state(run_dir)
    assert state.failed == f"interrupted by {signal.Signals(sig).name}" and not state.complete
    assert counts(run_objects(docker_client, state.run_id)) == {"containers": 0, "networks": 0, "volumes": 0}
    status = subprocess.run([*ONIONLAB, "status"], env=env, cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert status.returncode == 1 and "did not come up (interrupted by" in status.stderr, status
    assert status.stdout == ""  # no table of nodes that are not there
    logs = subprocess.run([*ONIONLAB, "logs", "auth1", "--json"], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    # the removed container's logs were saved (empty when the interrupt came before it wrote) and are read
    saved = [json.loads(line) for line in logs.stdout.splitlines()]
    assert (run_dir / "logs" / "auth1.stdout").is_file() and (run_dir / "logs" / "auth1.stderr").is_file()
    assert logs.returncode == 0 and {e.get("node") for e in saved} <= {"auth1"}, logs
    down = subprocess.run([*ONIONLAB, "down"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert down.returncode == 0 and not run_dir.exists(), down


# -- the pytest plugin ---------------------------------------------------------------------------------------

PLUGIN_TEST = '''
def test_lab_is_up(onionlab_lab):
    status = onionlab_lab.status()
    assert [n["name"] for n in status["nodes"]] == ["auth1", "auth2", "auth3", "relay1", "relay2", "relay3"]
    assert all(n["ready"] for n in status["nodes"]), status
    assert onionlab_lab.onions == {} and onionlab_lab.socks == {}
    result = onionlab_lab.exec("relay1", "hostname")
    assert (result.exit_code, result.output.strip()) == (0, "relay1")
    print("RUN_ID", onionlab_lab.run_id)


def test_kill_and_restart(onionlab_lab):
    onionlab_lab.kill("relay2")
    assert not onionlab_lab.status()["nodes"][4]["ready"]
    status = onionlab_lab.restart("relay2")
    assert status["name"] == "relay2" and status["ready"] is True
    assert onionlab_lab.status()["nodes"][4]["ready"] is True
'''


def test_pytest_plugin_brings_a_lab_up_once_and_removes_it(docker_client, node_image, labels, tmp_path):
    (tmp_path / "lab.yaml").write_text(topology_text(free_subnet(docker_client), name="plugintest"))
    (tmp_path / "pytest.ini").write_text("[pytest]\nonionlab_topology = lab.yaml\nonionlab_timeout = 120\n")
    (tmp_path / "test_e2e.py").write_text(PLUGIN_TEST)
    env = {**os.environ, "ONIONLAB_LABELS": ",".join(f"{k}={v}" for k, v in labels.items())}
    env.pop("ONIONLAB_TOPOLOGY", None)
    result = subprocess.run([sys.executable, "-m", "pytest", "-s", "-p", "no:cacheprovider", "-q",
                             str(tmp_path / "test_e2e.py")], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "2 passed" in result.stdout
    run_id = next(line.split()[-1] for line in result.stdout.splitlines() if "RUN_ID" in line)
    assert counts(run_objects(docker_client, run_id)) == {"containers": 0, "networks": 0, "volumes": 0}
