"""Tor nodes (`impl: tor`) in containers of the one node image (`tor --config FILE`).

1. A tor node beside a running lab of onionlab authorities and relays: it runs locked down like every node,
   answers /status with tor's bootstrap progress read from tor's control port (> 0 as soon as tor dials an
   authority), becomes healthy, writes JSON events on stdout and tor's log on stderr, stops cleanly, starts
   again, and exits with tor's status when tor dies.
2. The whole thing: a lab whose client is a stock tor. `up` waits for tor's bootstrap, then / and 1 MB of our
   onion service come through tor's published SOCKS port, and `onionlab flow --client torclient` shows the
   six steps, the client's from tor's control events. This needs authorities and relays that speak
   dir-spec and Tor's link handshake (the tor-interop work); where they do not, tor stops part-way through
   its bootstrap and `up` fails saying so (docs/tor-interop.md).
"""

from __future__ import annotations

import json
import os
import time

import pytest

from nodes.config import AuthorityRef, NodeConfig
from orchestrator import cli
from orchestrator.backends import read_state
from orchestrator.backends.docker import DockerBackend
from orchestrator.flow import fetch_pattern, fresh_credentials, socks_connect
from orchestrator.topology import parse_topology

from .conftest import IMAGE
from .test_docker_backend import free_subnet

pytestmark = pytest.mark.docker

LAB_UP = 180  # onionlab authorities and relays: ready after their first consensus, 1-2 voting intervals
TOR_UP = 300  # ... plus tor's bootstrap, which waits for a consensus it can use
PROGRESS_WITHIN = 60.0
NODE_UID = 10001
BULK = 1_000_000


def lab_text(subnet, *, name: str, with_tor: bool) -> str:
    lines = [f"name: {name}", "networks:", f"  labnet: {{subnet: {subnet}}}", "nodes:",
             "  - {name: auth, role: authority, count: 3}"]
    if with_tor:  # an onion service keeps 3 intro points, none on its guard: 4 relays
        lines += ["  - {name: relay, role: relay, count: 4}",
                  "  - {name: hs, role: onion_service, services: [{port: 80, target: http}]}",
                  "  - {name: torclient, role: client, impl: tor}"]
    else:
        lines.append("  - {name: relay, role: relay, count: 3}")
    return "\n".join(lines) + "\n"


def _in_container(container, code: str) -> str:
    status, output = container.exec_run(["python3", "-c", code], user=f"{NODE_UID}:{NODE_UID}")
    assert status == 0, output.decode()
    return output.decode()


def _status(container) -> dict | None:
    container.reload()
    if container.status != "running":
        return None
    code = ("import urllib.request as u\ntry: print(u.urlopen('http://127.0.0.1:9052/status', timeout=2)"
            ".read().decode())\nexcept OSError: print('null')")
    return json.loads(_in_container(container, code))


def _wait(container, want, what: str, within: float = PROGRESS_WITHIN) -> dict:
    deadline = time.monotonic() + within
    status = None
    while time.monotonic() < deadline:
        status = _status(container)
        if status is not None and want(status):
            return status
        container.reload()
        assert container.status == "running", container.logs().decode()[-4000:]
        time.sleep(0.5)  # polling a condition, with a deadline
    pytest.fail(f"{what} not within {within:g} s; last /status: {status}\n"
                + container.logs(stdout=False).decode()[-4000:], pytrace=False)


def _events(container) -> list[dict]:
    return [json.loads(line) for line in container.logs(stdout=True, stderr=False).decode().splitlines()
            if line.startswith("{")]


def test_tor_node_beside_a_lab_reports_its_bootstrap(docker_client, node_image, labels, tmp_path):
    (tmp_path / "lab.yaml").write_text(lab_text(free_subnet(docker_client), name="tornode", with_tor=False))
    topology = parse_topology((tmp_path / "lab.yaml").read_text(), str(tmp_path / "lab.yaml"))
    backend = DockerBackend(tmp_path / "run", labels=labels)
    container = None
    try:
        info = backend.up(topology, timeout=LAB_UP)
        authorities = backend.status()["authorities"]
        address = str(topology.networks[0].subnet.network_address + 200)
        config = NodeConfig(
            name="torclient", role="client", impl="tor", address=address,
            data_dir="/var/lib/onionlab/torclient", control_port=9052, socks_port=9050,
            socks_address="0.0.0.0", listen_address="0.0.0.0", guards=1,
            authorities=tuple(AuthorityRef(a["name"], a["address"], a["dir_port"], a["or_port"], a["v3ident"],
                                           a["fingerprint"]) for a in authorities))
        data = tmp_path / "torclient"
        data.mkdir(mode=0o700)
        (data / "config.json").write_text(config.to_json())
        if os.geteuid() == 0:
            for path in (data, data / "config.json"):
                os.chown(path, NODE_UID, NODE_UID)
        network = f"onionlab-{info.run_id}-labnet"
        container = docker_client.containers.run(
            IMAGE, ["tor", "--config", "/var/lib/onionlab/torclient/config.json"], detach=True,
            labels=labels, user=None if os.geteuid() == 0 else f"{os.getuid()}:{os.getgid()}",
            network=network, read_only=True, tmpfs={"/tmp": "size=16m"}, cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            networking_config={network: docker_client.api.create_endpoint_config(ipv4_address=address)},
            volumes={str(data): {"bind": "/var/lib/onionlab/torclient", "mode": "rw"}})

        status = _wait(container, lambda s: s["bootstrap"] > 0, "bootstrap progress")
        expected = {"role": "client", "impl": "tor", "name": "torclient", "socks": "0.0.0.0:9050"}
        assert status | expected == status
        assert status["tor_version"].startswith("0.4.9") and status["conditions"].keys() == {"bootstrapped"}
        assert _in_container(container, "import os; print(os.getuid())").strip() == str(NODE_UID)
        _wait(container, lambda s: container.attrs["State"]["Health"]["Status"] == "healthy", "healthy")
        # every lab's authorities accept tor's TCP connection: 10% "Connected to a relay"; how much further
        # tor gets depends on the lab's Tor compatibility, printed for the record
        status = _wait(container, lambda s: s["bootstrap"] >= 10, "bootstrap to 10% (conn_done)")
        events = _events(container)
        reached = [(e["progress"], e["tag"], e.get("warning")) for e in events if e["event"] == "bootstrap"]
        print(f"\ntor node beside an onionlab lab: bootstrap {status['bootstrap']}% "
              f"({status['bootstrap_tag']}), phases {reached}; last warning: {status['last_warning']}")
        assert [e["event"] for e in events[:2]] == ["tor_started", "client_started"]
        assert "tor: " in container.logs(stdout=False).decode()

        container.stop(timeout=10)  # SIGTERM to the node: tor stops with it, exit 0
        container.reload()
        assert container.attrs["State"]["ExitCode"] == 0
        container.start()  # again, same data dir: a fresh control port, bootstrap again
        status = _wait(container, lambda s: s["bootstrap"] > 0 and s["tor_pid"], "bootstrap after a restart")
        container.exec_run(["sh", "-c", f"kill -9 {status['tor_pid']}"], user=f"{NODE_UID}:{NODE_UID}")
        assert container.wait(timeout=30)["StatusCode"] == 137  # tor's end (SIGKILL) is the node's
        stderr = container.logs(stdout=False).decode().splitlines()
        assert stderr[-1].startswith("fatal: TorExited: tor exited with signal 9")
    finally:
        if container is not None:
            container.remove(force=True)  # before down: the lab's network must have no endpoint left
        backend.down()


def _get(socks: str, onion: str, path: str) -> bytes:
    with socks_connect(socks, onion, 80, credentials=fresh_credentials("get"), timeout=60) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {onion}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_lab_with_a_tor_client_end_to_end(docker_client, node_image, labels, tmp_path, capsys):
    (tmp_path / "lab.yaml").write_text(lab_text(free_subnet(docker_client), name="torlab", with_tor=True))
    topology = parse_topology((tmp_path / "lab.yaml").read_text(), str(tmp_path / "lab.yaml"))
    run_dir = tmp_path / "run"
    backend = DockerBackend(run_dir, labels=labels)
    try:
        info = backend.up(topology, timeout=TOR_UP, progress=print)  # waits for tor's bootstrap too
        container = docker_client.containers.get(f"onionlab-{info.run_id}-torclient")
        assert container.attrs["Config"]["Cmd"] == ["tor", "--config",
                                                    "/var/lib/onionlab/torclient/config.json"]
        assert container.labels["onionlab.role"] == "client" and container.labels["onionlab.impl"] == "tor"
        status = backend.status()
        (client,) = status["clients"]
        (service,) = status["onion_services"]
        socks, onion = client["socks"], service["onion"]
        assert socks.startswith("127.0.0.1:")  # tor's SOCKS port, published on the host's loopback

        page = _get(socks, onion, "/")
        head, _, body = page.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and body.startswith(b"<!doctype html>")
        assert onion.encode() in body
        with socks_connect(socks, onion, 80, credentials=fresh_credentials("bulk"), timeout=120) as sock:
            assert fetch_pattern(sock, onion, BULK) == BULK

        capsys.readouterr()
        code = cli.main(["flow", "--client", "torclient", "--json", "--run-dir", str(run_dir)])
        result = json.loads(capsys.readouterr().out)
        assert code == 0 and result["ok"], result
        steps = {(s["event"], s["node"]) for s in result["steps"]}
        for event in ("descriptor_fetched", "rendezvous_established", "introduce_sent",
                      "rendezvous_completed"):
            assert (event, "torclient") in steps, (event, result["steps"])
        translated = [e for e in _events(container) if e.get("via")]
        assert {e["event"] for e in translated} >= {"rendezvous_established", "introduce_sent",
                                                     "rendezvous_completed", "stream_opened"}
        assert read_state(run_dir).node("torclient").impl == "tor"
    except BaseException:
        if (run_dir / "state.json").exists():
            print(backend.logs("torclient")[-8000:])
        raise
    finally:
        backend.down()



def test_the_image_has_debians_tor(docker_client, node_image, labels):
    output = docker_client.containers.run(IMAGE, ["--version"], entrypoint=["tor"], network_mode="none",
                                          labels=labels, remove=True).decode()
    assert output.startswith("Tor version 0.4.9.")
