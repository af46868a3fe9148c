"""orchestrator.flow: the six steps rebuilt from event lines, the failing step named, and the SOCKS side
against a real (tiny, in-test) SOCKS5 + HTTP server on loopback."""

import json
import socket
import threading

import pytest

from orchestrator.backends import RunInfo, RunNode
from orchestrator.flow import (
    STEPS,
    SocksRefused,
    fetch_pattern,
    parse_events,
    run_flow,
    socks_connect,
    timeline,
)

NODES = [("hs", "onion_service"), ("client", "client"), ("relay1", "relay"), ("relay2", "relay"),
         ("relay3", "relay")]
INFO = RunInfo("local", "/tmp/x", "t.yaml", "t",
               [RunNode(n, r, "127.0.0.1", {}, container=f"lab-{n}") for n, r in NODES])
NODE_OF = {"onion_service": "hs", "client": "client", "relay": "relay1"}


def _flow_events(start: float) -> list[dict]:
    """One event per step row, steps 1-2 before `start` and steps 3-6 after it, in order."""
    events = []
    for i, (step, _, event, role) in enumerate(STEPS):
        ts = (start - 10 + i) if step <= 2 else (start + i / 100)
        events.append({"ts": ts, "node": NODE_OF[role], "role": role, "event": event, "intro": "relay1"})
    return events


def test_a_complete_flow_has_every_step_in_order():
    records, missing = timeline(_flow_events(1000.0), INFO, flow_start=1000.0, flow_end=1001.0,
                                origin=990.0, service="hs", client="client")
    assert missing is None
    assert [r.event for r in records] == [event for _, _, event, _ in STEPS]
    assert [r.step for r in records] == sorted(r.step for r in records)
    assert records[0].ms == 0.0 and records[0].container == "lab-hs"


def test_a_missing_step_is_named():
    events = [e for e in _flow_events(1000.0) if e["event"] != "introduce_forwarded"]
    _, missing = timeline(events, INFO, flow_start=1000.0, flow_end=1001.0, origin=990.0, service="hs",
                          client="client")
    assert missing == 4


def test_a_tor_relays_part_is_shown_unseen_not_missing():
    """A tor relay (impl: tor) as rendezvous point writes no rendezvous_point_registered or
    rendezvous_joined: the client's event names it, so the step is shown as not visible, and an onionlab
    relay that stays silent is still a missing step."""
    info = RunInfo("local", "/x", "t", "t", [*INFO.nodes, RunNode("torrelay1", "relay", "127.0.0.1", {},
                                                                    impl="tor")])
    events = [dict(e, rendezvous="torrelay1") if e["event"] == "rendezvous_established" else e
              for e in _flow_events(1000.0) if e["event"] not in ("rendezvous_point_registered",
                                                                  "rendezvous_joined")]
    records, missing = timeline(events, info, flow_start=1000.0, flow_end=1001.0, origin=990.0, service="hs",
                                client="client")
    assert missing is None
    unseen = [(r.event, r.node) for r in records if r.unseen]
    assert unseen == [("rendezvous_point_registered", "torrelay1"), ("rendezvous_joined", "torrelay1")]
    _, missing = timeline(events, INFO, flow_start=1000.0, flow_end=1001.0, origin=990.0, service="hs",
                          client="client")
    assert missing == 3  # no such tor relay in this run: relay events are simply missing


def test_steps_three_to_six_must_happen_during_the_flow():
    events = _flow_events(1000.0)
    # an old rendezvous (before the flow) does not count for this flow; a cached descriptor does
    late = [dict(e, ts=e["ts"] - 500) if e["event"] in ("rendezvous_completed", "descriptor_fetched") else e
            for e in events]
    records, missing = timeline(late, INFO, flow_start=1000.0, flow_end=1001.0, origin=400.0, service="hs",
                                client="client")
    assert missing == 6
    assert next(r for r in records if r.event == "descriptor_fetched").cached


def test_events_of_other_clients_are_ignored():
    events = [dict(e, node="client2") if e["role"] == "client" else e for e in _flow_events(1000.0)]
    info = RunInfo("local", "/x", "t", "t", [*INFO.nodes, RunNode("client2", "client", "127.0.0.1", {})])
    _, missing = timeline(events, info, flow_start=1000.0, flow_end=1001.0, origin=990.0, service="hs",
                          client="client")
    assert missing == 3


def test_intro_points_the_service_let_go_are_not_shown_as_held():
    events = _flow_events(1000.0)
    intro = next(e for e in events if e["event"] == "intro_established")
    registered = next(e for e in events if e["event"] == "intro_point_registered")
    events += [dict(intro, intro="relay2", ts=intro["ts"] - 1), dict(registered, node="relay2"),
               {"ts": intro["ts"] - 0.5, "node": "hs", "event": "intro_lost", "intro": "relay2"}]
    records, missing = timeline(events, INFO, flow_start=1000.0, flow_end=1001.0, origin=990.0,
                                service="hs", client="client")
    assert missing is None
    assert {(r.event, r.peer) for r in records if r.step == 1} == {("intro_point_registered", "relay1"),
                                                                    ("intro_established", "relay1")}


def test_each_intro_point_tried_is_a_record_with_its_path():
    events = _flow_events(1000.0)
    sent = next(e for e in events if e["event"] == "introduce_sent")
    events += [dict(sent, intro="relay2", ts=sent["ts"] - 0.002, path=["relay3", "relay1", "relay2"]),
               dict(sent, event="introduce_nack", intro="relay2", ts=sent["ts"] - 0.001)]
    records, missing = timeline(events, INFO, flow_start=1000.0, flow_end=1001.0, origin=990.0,
                                service="hs", client="client")
    assert missing is None
    tried = [(r.event, r.peer, r.path) for r in records if r.step == 4 and r.node == "client"]
    assert tried == [("introduce_sent", "relay2", ["relay3", "relay1", "relay2"]),
                     ("introduce_nack", "relay2", []), ("introduce_sent", "relay1", [])]


def test_parse_events_skips_what_is_not_an_event():
    text = "\n".join(["2026 INFO nodes: started", json.dumps({"ts": 1.5, "node": "a", "event": "x"}),
                      "{not json", json.dumps({"node": "a"}), json.dumps([1, 2])])
    assert parse_events(text) == [{"ts": 1.5, "node": "a", "event": "x"}]


# -- the SOCKS side, against a tiny server --------------------------------------------------------------


def _serve_once(reply: int, body: bytes) -> int:
    """A one-connection SOCKS5 server: takes username/password auth, answers CONNECT with `reply`, then
    answers any HTTP request with `body`. Returns its port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        conn, _ = listener.accept()
        with conn, listener:
            assert conn.recv(3) == b"\x05\x01\x02"  # one method offered: username/password
            conn.sendall(b"\x05\x02")
            version, ulen = conn.recv(2)
            user = conn.recv(ulen)
            password = conn.recv(conn.recv(1)[0])
            assert version == 1 and user and password == b"x"
            conn.sendall(b"\x01\x00")
            conn.recv(512)
            conn.sendall(bytes([5, reply, 0, 1, 127, 0, 0, 1, 0, 80]))
            if reply == 0:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    threading.Thread(target=run, daemon=True).start()
    return listener.getsockname()[1]


def test_fetch_checks_every_byte_of_the_pattern():
    good = bytes(i % 251 for i in range(70_000))
    port = _serve_once(0, good)
    with socks_connect(f"127.0.0.1:{port}", "x.onion", 80, credentials=(b"u", b"x"), timeout=5) as sock:
        assert fetch_pattern(sock, "x.onion", len(good)) == len(good)
    bad = good[:60_000] + b"\x00" + good[60_001:]
    port = _serve_once(0, bad)
    with socks_connect(f"127.0.0.1:{port}", "x.onion", 80, credentials=(b"u", b"x"), timeout=5) as sock:
        with pytest.raises(ConnectionError, match="byte 60000 is wrong"):
            fetch_pattern(sock, "x.onion", len(bad))


def test_a_socks_refusal_names_its_step():
    port = _serve_once(0xF2, b"")
    with pytest.raises(SocksRefused) as refused:
        socks_connect(f"127.0.0.1:{port}", "x.onion", 80, credentials=(b"u", b"x"), timeout=5)
    assert refused.value.code == 0xF2 and "introduction failed" in str(refused.value)
    port = _serve_once(0xF0, b"")
    result = run_flow(INFO, lambda name: "", onion="x.onion", service="hs", client="client",
                      socks=f"127.0.0.1:{port}", n_bytes=10, timeout=5)
    assert not result.ok and result.failed_step == 1  # no event at all: step 1 is the first one missing
    assert "descriptor not found" in result.error
