"""What the mixed-lab tests (tests/net/test_mixed_local.py, tests/docker/test_mixed.py) check of a running
topologies/mixed.yaml, whatever the backend: every client x every service fetches / and 1 MB, every byte
checked, and `onionlab flow` shows the six steps; the tor nodes are ready by tor's own account."""

from __future__ import annotations

import json
import time
from pathlib import Path

from orchestrator import cli
from orchestrator.flow import fetch_pattern, fresh_credentials, socks_connect

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
    """A client may still be learning a fresh descriptor's intro points: retry until the deadline."""
    while True:
        try:
            return action()
        except OSError as e:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: {e}") from e
            time.sleep(1)


def _bulk(socks: str, onion: str) -> float:
    started = time.monotonic()
    with socks_connect(socks, onion, 80, credentials=fresh_credentials("bulk"), timeout=120) as sock:
        assert fetch_pattern(sock, onion, BULK) == BULK  # every byte checked
    return time.monotonic() - started


def check_every_pairing(backend, run_dir: Path, capsys) -> dict[str, float]:
    """Every pairing fetches / and 1 MB and passes `onionlab flow`; the 1 MB times, by pairing."""
    status = backend.status()
    assert all(n["ready"] for n in status["nodes"]), status["nodes"]
    onions = {s["name"]: s["onion"] for s in status["onion_services"]}
    socks = {c["name"]: c["socks"] for c in status["clients"]}
    assert set(onions) == set(SERVICES) and set(socks) == set(CLIENTS)
    for relay in ("torrelay1", "torrelay2"):
        tor_relay = backend.node_status(relay)
        assert tor_relay["impl"] == "tor" and tor_relay["conditions"] == {
            "bootstrapped": True, "descriptor_uploaded": True, "listed": True, "weighted": True}
    assert backend.node_status("torhs")["conditions"] == {"bootstrapped": True, "descriptor_uploaded": True}
    figures = {}
    for client in CLIENTS:
        for service in SERVICES:
            onion, address = onions[service], socks[client]
            deadline = time.monotonic() + FETCH_DEADLINE
            page = _retrying(f"{client} -> {service} /", lambda a=address, o=onion: _page(a, o), deadline)
            head, _, body = page.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and onion.encode() in body, page[:300]
            seconds = _retrying(f"{client} -> {service} 1 MB", lambda a=address, o=onion: _bulk(a, o),
                                deadline)
            figures[f"{client}->{service}"] = round(seconds, 2)
            capsys.readouterr()
            code = cli.main(["flow", "--client", client, "--service", service, "--json", "--run-dir",
                             str(run_dir)])
            result = json.loads(capsys.readouterr().out)
            assert code == 0 and result["ok"], result
            assert {s["step"] for s in result["steps"]} == {1, 2, 3, 4, 5, 6}
    return figures
