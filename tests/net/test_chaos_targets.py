"""The protocol-aware chaos targets against a live local-backend lab (processes on 127.0.0.x: 3 authorities,
10 relays, an onion service with 3 intro points, a client): each target is resolved from the nodes' /status as
`onionlab chaos` resolves it when a fault starts, and the nodes it names are checked against evidence the
target's resolution does not read: the relays' own /status and events, and the other side's events.

    intro points of hs          each relay holds an intro circuit under the auth key hs lists for it
    hsdirs of hs                hs uploaded its descriptor to each of these for the period (its events), and
                                each stored it (the relay's events)
    rendezvous point of client  each relay registered a rendezvous cookie and joined the circuits (its events)
                                and hs sent RENDEZVOUS1 to it (hs's events)
    path of client              every relay on a circuit the client built (its events) and carrying circuits
    guards of hs                the first hop of every circuit hs built (its events)
    majority of authorities     2 of the 3, each an authority by its own /status

No fixed sleep: `up` waits on /status, and each check polls its condition with a deadline."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.backends.local import LocalBackend
from orchestrator.chaos import choose_live, parse_target
from orchestrator.chaos.targets import choose_static
from orchestrator.chaos.workload import fetch_once
from orchestrator.topology import parse_topology

from .helpers import small_lab

TOPOLOGY = small_lab("livetargets", "10.97.0.0/24", relays=10, intro_points=3)
DEADLINE = 60.0


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> LocalBackend:
    backend = LocalBackend(tmp_path_factory.mktemp("targets") / "run")
    backend.up(parse_topology(TOPOLOGY), timeout=120)
    try:
        yield backend
    finally:
        backend.down()


def events(backend: LocalBackend, name: str, event: str) -> list[dict]:
    path = Path(backend.run_dir, "nodes", name, "events.jsonl")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("event") == event]


def until(check: Callable[[], object], what: str, deadline: float = DEADLINE) -> object:
    """check()'s first truthy answer, asked again every 0.5 s until `deadline` seconds have passed."""
    end = time.monotonic() + deadline
    while True:
        answer = check()
        if answer:
            return answer
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {deadline:g} s")
        time.sleep(0.5)


def resolve(backend: LocalBackend, text: str) -> list[str]:
    nodes, _ = choose_live(parse_target(text), None, 1, backend.node_status, "hs", "client")
    return nodes


def fetch(backend: LocalBackend) -> None:
    status = backend.status()
    onion = status["onion_services"][0]["onion"]
    socks = status["clients"][0]["socks"]
    result = until(lambda: (r := fetch_once(socks, onion, port=80, n_bytes=2000, timeout=15))["ok"] and r,
                   "a fetch from the onion")
    assert result["bytes"] == 2000


def test_intro_points_of_hs_are_held_by_those_relays(lab: LocalBackend) -> None:
    intro = until(lambda: len(resolve(lab, "intro points of hs")) == 3 and resolve(lab, "intro points of hs"),
                  "hs lists 3 intro points")
    keys = lab.node_status("hs")["intro_auth_keys"]
    for relay in intro:
        assert relay.startswith("relay")
        assert keys[relay] in lab.node_status(relay)["intro_auth_keys"], relay
        assert any(e["auth_key"] == keys[relay] for e in events(lab, relay, "intro_point_registered"))


def test_hsdirs_of_hs_are_where_it_published_for_the_period(lab: LocalBackend) -> None:
    def agree() -> list[str] | None:
        hsdirs = resolve(lab, "hsdirs of hs")
        period = (lab.node_status("hs").get("hsdirs") or {}).get("period")
        published = {e["hsdir"] for e in events(lab, "hs", "descriptor_published")
                     if e.get("period") == period}
        return hsdirs if hsdirs and set(hsdirs) <= published else None

    # (an earlier consensus may have put other relays on the ring: hs published to those too, then)
    hsdirs = until(agree, "hs published to every HSDir its /status names")
    assert 1 <= len(hsdirs) < 10, hsdirs  # the ring picks some of the 10 relays, not all
    for relay in hsdirs:
        assert events(lab, relay, "descriptor_stored"), relay
        assert lab.node_status(relay)["hsdir_descriptors"] >= 1


def test_the_rendezvous_point_of_client_joined_its_circuits(lab: LocalBackend) -> None:
    fetch(lab)
    points = until(lambda: resolve(lab, "rendezvous point of client"), "client has a rendezvous circuit")
    sent = {e["rendezvous"] for e in events(lab, "hs", "rendezvous_sent")}
    for relay in points:
        assert relay.startswith("relay")
        assert events(lab, relay, "rendezvous_point_registered") and events(lab, relay, "rendezvous_joined")
        assert relay in sent


def test_path_of_client_is_the_relays_of_its_circuits(lab: LocalBackend) -> None:
    fetch(lab)
    path = until(lambda: resolve(lab, "path of client"), "client has live circuits")
    built = {relay for e in events(lab, "client", "circuit_built") for relay in e["path"]}
    assert set(path) <= built
    assert all(relay.startswith("relay") for relay in path)
    assert all(lab.node_status(relay)["circuits"] >= 1 for relay in path)
    # the client's rendezvous points are on its path
    assert set(resolve(lab, "rendezvous point of client")) <= set(path)


def test_guards_of_hs_are_the_first_hop_of_its_circuits(lab: LocalBackend) -> None:
    (guard,) = until(lambda: resolve(lab, "guards of hs"), "hs has a primary guard")
    # a circuit to the guard itself needs another first hop (a relay is never twice on a circuit)
    first_hops = {e["path"][0] for e in events(lab, "hs", "circuit_built") if e["path"][-1] != guard}
    assert first_hops == {guard}
    assert resolve(lab, "service guard") == [guard]  # the alias names the same


def test_majority_of_authorities(lab: LocalBackend) -> None:
    roles = {n["name"]: n["role"] for n in lab.status()["nodes"]}
    for text, size in (("majority of authorities", 2), ("minority of authorities", 1),
                       ("all authorities", 3)):
        chosen = choose_static(parse_target(text), 1, roles, random.Random(3), lambda _: True)
        assert len(chosen) == size
        assert all(lab.node_status(name)["role"] == "authority" for name in chosen)
