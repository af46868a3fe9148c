"""topologies/mixed.yaml in containers: onionlab's authorities, four onionlab relays and two tor relays, one
onion service and one client of each kind (tor nodes are Debian's tor in the same node image).

`up` waits for every node's readiness, tor's from its control port (bootstrap, descriptor uploaded, a tor
relay listed with its observed bandwidth). Then every client x every service: / and 1 MB, every byte
checked, and `onionlab flow` shows the six steps; then topologies/chaos/kill-intro-point.yaml runs unchanged
against the lab (its first service and client, onionlab's). The lab is always taken down.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from orchestrator import chaos, cli, report
from orchestrator.backends.docker import DockerBackend
from orchestrator.flow import fetch_pattern, fresh_credentials, socks_connect
from orchestrator.topology import parse_topology

from .conftest import REPO
from .test_docker_backend import free_subnet

pytestmark = pytest.mark.docker

MIXED = REPO / "topologies" / "mixed.yaml"
KILL_INTRO_POINT = REPO / "topologies" / "chaos" / "kill-intro-point.yaml"
UP_TIMEOUT = 400  # the first consensus, tor's bootstrap, and a tor relay's first observed bandwidth (~1 min)
FETCH_DEADLINE = 120
BULK = 1_000_000
SERVICES = ("hs", "torhs")
CLIENTS = ("client", "torclient")


def _page(socks: str, onion: str) -> bytes:
    with socks_connect(socks, onion, 80, credentials=fresh_credentials("page"), timeout=60) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {onion}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _retrying(what: str, action, deadline: float):
    """A tor client may still be learning a fresh descriptor's intro points: retry until the deadline."""
    while True:
        try:
            return action()
        except OSError as e:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: {e}") from e
            time.sleep(1)


@pytest.fixture(scope="module")
def mixed_lab(docker_client, node_image, tmp_path_factory):
    base = tmp_path_factory.mktemp("mixed")
    text = re.sub(r"subnet: [0-9./]+", f"subnet: {free_subnet(docker_client)}", MIXED.read_text())
    (base / "mixed.yaml").write_text(text)
    backend = DockerBackend(base / "run", labels={"onionlab.test": "1", "onionlab.test.case": base.name})
    try:
        backend.up(parse_topology(text, str(base / "mixed.yaml")), timeout=UP_TIMEOUT, progress=print)
        yield backend, base
    except BaseException:
        if (base / "run" / "state.json").exists():
            for name in ("torrelay1", "torhs", "torclient"):
                print(f"==> {name} <==\n" + backend.logs(name)[-4000:])
        raise
    finally:
        backend.down()


def test_every_client_reaches_every_service(mixed_lab, capsys):
    backend, base = mixed_lab
    status = backend.status()
    assert all(n["ready"] for n in status["nodes"]), status["nodes"]
    onions = {s["name"]: s["onion"] for s in status["onion_services"]}
    socks = {c["name"]: c["socks"] for c in status["clients"]}
    assert set(onions) == set(SERVICES) and set(socks) == set(CLIENTS)
    tor_relay = backend.node_status("torrelay1")
    assert tor_relay["impl"] == "tor" and tor_relay["conditions"] == {
        "bootstrapped": True, "descriptor_uploaded": True, "listed": True, "weighted": True}
    figures = {}
    for client in CLIENTS:
        for service in SERVICES:
            onion = onions[service]
            deadline = time.monotonic() + FETCH_DEADLINE
            page = _retrying(f"{client} -> {service} /",
                             lambda client=client, onion=onion: _page(socks[client], onion), deadline)
            head, _, body = page.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and onion.encode() in body, page[:300]

            def bulk(client=client, onion=onion) -> float:
                started = time.monotonic()
                with socks_connect(socks[client], onion, 80, credentials=fresh_credentials("bulk"),
                                   timeout=120) as sock:
                    assert fetch_pattern(sock, onion, BULK) == BULK  # every byte checked
                return time.monotonic() - started

            seconds = _retrying(f"{client} -> {service} 1 MB", bulk, deadline)
            figures[f"{client}->{service}"] = round(seconds, 2)

            capsys.readouterr()
            code = cli.main(["flow", "--client", client, "--service", service, "--json", "--run-dir",
                             str(base / "run")])
            result = json.loads(capsys.readouterr().out)
            assert code == 0 and result["ok"], result
            assert {s["step"] for s in result["steps"]} == {1, 2, 3, 4, 5, 6}
    print(json.dumps({"bulk_1MB_s": figures}))


def test_kill_intro_point_passes_on_the_mixed_lab(mixed_lab):
    """The scenario unchanged: it kills one of the first service's (onionlab's) intro points, which may be a
    tor relay; its relays' circuits, paths and rendezvous points include tor relays."""
    backend, base = mixed_lab
    scenario = chaos.load_scenario(KILL_INTRO_POINT)
    lines: list[str] = []
    result = chaos.run_scenario(scenario, backend, history_path=base / "kill-intro-point.jsonl",
                                say=lines.append)
    summary = report.render_summary(result.history)
    print("\n" + "\n".join(lines) + "\n\n" + summary)
    kill = next(r for r in result.history if r["type"] == "fault" and r["event"] == "start")
    assert kill["fault"] == "kill" and kill["chosen_from"].startswith("hs's intro points")
    assert result.ok, summary
