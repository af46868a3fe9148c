"""`onionlab flow`: drive the rendezvous flow through a running lab and show its six steps as a timeline.

The orchestrator plays the application: it connects to a client's SOCKS5 port (with fresh SOCKS credentials,
so the client builds a new rendezvous instead of reusing one), fetches /bytes/N from an onion service's http
port and checks every byte against the pattern. Then it reads every node's events (docs/events.md) and
rebuilds the seed's six steps from them. Steps one and two happen when the service starts, so they are the
latest ones before the fetch; steps three to six must happen during it (a cached descriptor is shown as
such). The run fails at the first step that has no event, or at the step the SOCKS reply names.

Backend-agnostic: it needs the run's RunInfo, the backend's `logs(name)` (events are its JSON lines) and the
SOCKS addresses the backend publishes.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from nodes.core.errors import RemoteProtocolError
from nodes.core.socks5 import (
    NEED_DATA,
    NO_AUTH,
    USERNAME_PASSWORD,
    ReplyCode,
    decode_auth_status,
    decode_method_choice,
    decode_reply,
    encode_greeting,
    encode_request,
    encode_username_password,
)
from nodes.roles.relay import nickname_for

from .backends import RunInfo

PATTERN_MODULUS = 251  # nodes/net/targets.py: byte i of /bytes/N is i % 251
DEFAULT_BYTES = 100_000
IO_TIMEOUT = 60.0
MAX_HEAD = 16384
RETRY_DELAY = 0.5  # between tries of check_reachable

# (step, what happens, event, role that emits it); docs/events.md is the reference.
STEPS: tuple[tuple[int, str, str, str], ...] = (
    (1, "service established an introduction point", "intro_established", "onion_service"),
    (1, "relay registered as introduction point", "intro_point_registered", "relay"),
    (2, "service uploaded its descriptor", "descriptor_published", "onion_service"),
    (2, "HSDir stored the descriptor", "descriptor_stored", "relay"),
    (3, "client fetched the descriptor", "descriptor_fetched", "client"),
    (3, "client set up the rendezvous point", "rendezvous_established", "client"),
    (3, "relay registered the rendezvous cookie", "rendezvous_point_registered", "relay"),
    (4, "client sent INTRODUCE1", "introduce_sent", "client"),
    (4, "intro point forwarded INTRODUCE2", "introduce_forwarded", "relay"),
    (5, "service decrypted INTRODUCE2", "introduce_received", "onion_service"),
    (5, "service sent RENDEZVOUS1", "rendezvous_sent", "onion_service"),
    (5, "rendezvous point joined the circuits", "rendezvous_joined", "relay"),
    (6, "client got RENDEZVOUS2", "rendezvous_completed", "client"),
    (6, "stream opened at the service", "stream_opened", "onion_service"),
)
# Recorded when they happen, never required: an intro point that refused (NACK) before the next one was tried.
RETRIES: tuple[tuple[int, str, str, str], ...] = (
    (4, "intro point refused INTRODUCE1 (NACK): the next one is tried", "introduce_nack", "client"),
)
PER_PEER = {"introduce_sent", "introduce_nack"}  # one record per intro point tried, not per node
PEER_FIELDS = ("intro", "hsdir", "rendezvous")  # the relay a step event names, in this order
DROPPED_INTRO = {"intro_lost", "intro_rotated"}  # the service no longer holds that intro point
BEFORE_FLOW = {1, 2}  # steps done when the service came up
MAY_BE_CACHED = {"descriptor_fetched"}
# a relay's step event -> (the event that names that relay, and its field): when that relay is a tor node,
# which reports nothing of what it relays, the step is shown as not visible instead of missing
RELAY_PART = {"intro_point_registered": ("intro_established", "intro"),
              "rendezvous_point_registered": ("rendezvous_established", "rendezvous"),
              "rendezvous_joined": ("rendezvous_established", "rendezvous"),
              "introduce_forwarded": ("introduce_sent", "intro"),
              "descriptor_stored": ("descriptor_published", "hsdir")}
STEP_OF_REPLY = {0xF0: 3, 0xF1: 3, 0xF6: 3, 0xF2: 4, 0xF7: 4, 0xF3: 5}
REPLY_NAMES = {0x01: "general failure", 0x04: "host unreachable", 0x05: "connection refused",
               0x06: "TTL expired", 0xF0: "onion descriptor not found", 0xF1: "onion descriptor invalid",
               0xF2: "introduction failed", 0xF3: "rendezvous failed", 0xF6: "bad onion address",
               0xF7: "introduction timed out"}


class FlowError(Exception):
    """The flow could not even start (no onion service or client in the run)."""


@dataclass(slots=True)
class StepRecord:
    step: int
    what: str
    event: str
    node: str
    role: str
    container: str | None
    ms: float  # since the run's first event
    cached: bool = False
    peer: str | None = None  # the relay the event names (intro point, HSDir, rendezvous point), a node name
    path: list[str] = field(default_factory=list)  # the hops of the circuit it went over, first hop first
    unseen: bool = False  # a tor relay played this part: it has no event for it (ms: its counterpart's)


@dataclass(slots=True)
class FlowResult:
    ok: bool
    onion: str
    client: str
    socks: str
    bytes_requested: int
    bytes_verified: int
    failed_step: int | None
    error: str | None
    flow_started_ms: float  # since the run's first event
    flow_ms: float
    steps: list[StepRecord] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class SocksRefused(ConnectionError):
    def __init__(self, code: int) -> None:
        super().__init__(f"SOCKS reply {code:#04x} ({REPLY_NAMES.get(code, 'unknown')})")
        self.code = code


# -- the application side: SOCKS5 and HTTP over blocking sockets ------------------------------------------


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"the SOCKS server closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def socks_connect(socks: str, host: str, port: int, *, credentials: tuple[bytes, bytes] | None = None,
                  timeout: float = IO_TIMEOUT) -> socket.socket:
    """A socket connected to host:port (a domain name) through the SOCKS5 server at "HOST:PORT", with RFC
    1929 credentials when given (the client uses them as an isolation key: new credentials, new rendezvous).
    SocksRefused on a refusing reply, ConnectionError when the server misbehaves."""
    address, _, socks_port = socks.rpartition(":")
    sock = socket.create_connection((address, int(socks_port)), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        method = NO_AUTH if credentials is None else USERNAME_PASSWORD
        sock.sendall(encode_greeting((method,)))
        if (chosen := decode_method_choice(_recv_exactly(sock, 2))) != method:
            raise ConnectionError(f"the SOCKS server chose method {chosen:#04x}, not {method:#04x}")
        if credentials is not None:
            sock.sendall(encode_username_password(*credentials))
            if (status := decode_auth_status(_recv_exactly(sock, 2))) != 0:
                raise ConnectionError(f"the SOCKS server refused the credentials (status {status})")
        sock.sendall(encode_request(host, port))
        buffer = b""
        while (parsed := decode_reply(buffer)) is NEED_DATA:
            chunk = sock.recv(512)
            if not chunk:
                raise ConnectionError("the SOCKS server closed before its reply")
            buffer += chunk
        reply, used = parsed
        if reply.code != ReplyCode.SUCCEEDED:
            raise SocksRefused(reply.code)
        if buffer[used:]:
            raise ConnectionError("bytes after the SOCKS reply before we sent a request")
    except RemoteProtocolError as e:
        sock.close()
        raise ConnectionError(f"a malformed SOCKS answer: {e}") from None
    except BaseException:
        sock.close()
        raise
    return sock


def fresh_credentials(tag: str) -> tuple[bytes, bytes]:
    """SOCKS credentials no connection used before: a new rendezvous circuit."""
    return f"{tag}-{secrets.token_hex(8)}".encode(), b"x"


def read_pattern(sock: socket.socket, host: str, n: int, *,
                 deadline: float | None = None) -> tuple[int, int | None]:
    """GET /bytes/n: (body bytes read, offset of the first byte that is not the pattern, or None). Bytes
    beyond n are wrong too. TimeoutError once time.monotonic() passes `deadline`."""
    sock.sendall(f"GET /bytes/{n} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk or len(buffer) > MAX_HEAD:
            raise ConnectionError("no complete HTTP response head")
        buffer += chunk
    head, _, body = buffer.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"HTTP answer {head.splitlines()[0].decode(errors='replace')}")
    good = 0
    pattern = bytes(range(PATTERN_MODULUS)) * (65536 // PATTERN_MODULUS + 2)
    while True:
        for i in range(0, len(body), 65536):
            piece = body[i:i + 65536]
            start = good % PATTERN_MODULUS
            expected = pattern[start:start + len(piece)]
            if piece != expected or good + len(piece) > n:
                first = next((j for j, (a, b) in enumerate(zip(piece, expected, strict=False)) if a != b),
                             n - good)
                return good, good + first
            good += len(piece)
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError
        body = sock.recv(65536)
        if not body:
            return good, None


def fetch_pattern(sock: socket.socket, host: str, n: int) -> int:
    """GET /bytes/n; the number of body bytes, all of them the pattern (ConnectionError naming the first
    wrong byte otherwise)."""
    good, wrong = read_pattern(sock, host, n)
    if wrong is not None:
        raise ConnectionError(f"byte {wrong} is wrong")
    return good


def check_reachable(socks: str, onion: str, *, deadline: float, n_bytes: int = 1000,
                    port: int = 80) -> float:
    """Fetch and verify /bytes/n_bytes from `onion` through `socks` (fresh credentials each try), retrying
    until time.monotonic() reaches `deadline` (a descriptor may still be on its way to the HSDirs).
    Returns the seconds the successful try took; raises the last error."""
    while True:
        started = time.monotonic()
        try:
            sock = socks_connect(socks, onion, port, credentials=fresh_credentials("up"),
                                 timeout=max(1.0, deadline - started))
            with sock:
                if fetch_pattern(sock, onion, n_bytes) == n_bytes:
                    return time.monotonic() - started
                raise ConnectionError("the stream ended early")
        except OSError:  # SocksRefused, refused, reset, wrong bytes
            if time.monotonic() + RETRY_DELAY >= deadline:
                raise
        time.sleep(RETRY_DELAY)


# -- the timeline --------------------------------------------------------------------------------------------


def parse_events(text: str) -> list[dict]:
    """The JSON event lines in a node's log output (other lines, e.g. stderr diagnostics, are skipped)."""
    events = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("ts"), int | float) and "event" in record:
                events.append(record)
    return events


def timeline(events: Iterable[dict], info: RunInfo, *, flow_start: float, flow_end: float,
             origin: float, service: str, client: str) -> tuple[list[StepRecord], int | None]:
    """One record per (step event, node): steps 1-2 the latest before the flow (from `service` and the
    relays), steps 3-6 the first during it. Returns the records and the first step with no event."""
    containers = {n.name: n.container for n in info.nodes}
    roles = {n.name: n.role for n in info.nodes}
    name_of = {nickname_for(n.name): n.name for n in info.nodes}  # events name relays by nickname
    chosen: dict[tuple[str, str, str], dict] = {}
    dropped: dict[str, float] = {}  # intro points the service let go (lost, rotated): when, last time
    ordered = sorted(events, key=lambda e: e["ts"])
    for e in ordered:
        node = e.get("node")
        if node == service and e["event"] in DROPPED_INTRO and e["ts"] < flow_end and "intro" in e:
            dropped[str(e["intro"])] = e["ts"]
        for step, _, event, role in STEPS + RETRIES:
            if e["event"] != event or roles.get(node) != role:
                continue
            if role == "onion_service" and node != service or role == "client" and node != client:
                continue
            # one intro point or HSDir upload of the service is one record each, as is each intro point the
            # client tried
            per_peer = step in BEFORE_FLOW or event in PER_PEER
            key = (event, node, e.get("intro") or e.get("hsdir") or "" if per_peer else "")
            if step in BEFORE_FLOW or event in MAY_BE_CACHED and e["ts"] < flow_start:
                if e["ts"] < flow_end:
                    chosen[key] = e  # the latest one
            elif flow_start <= e["ts"] <= flow_end and key not in chosen:
                chosen[key] = e  # the first one
    chosen = {k: e for k, e in chosen.items()  # not the ones it had and let go before the flow ended
              if k[0] != "intro_established" or e["ts"] > dropped.get(str(e.get("intro")), -1.0)}
    held = {name_of.get(e["intro"], e["intro"]) for k, e in chosen.items()
            if k[0] == "intro_established" and "intro" in e}
    if held:
        # only the intro points the service holds now, not every one it ever had
        chosen = {k: e for k, e in chosen.items()
                  if k[0] != "intro_point_registered" or k[1] in held}
    records = []
    what = {event: (step, text) for step, text, event, _ in STEPS + RETRIES}
    for (event, node, _), e in chosen.items():
        step, text = what[event]
        peer = next((e[f] for f in PEER_FIELDS if isinstance(e.get(f), str)), None)
        path = e.get("path") if isinstance(e.get("path"), list) else []
        records.append(StepRecord(step, text, event, node, roles[node], containers.get(node),
                                  round(1000 * (e["ts"] - origin), 1),
                                  cached=event in MAY_BE_CACHED and e["ts"] < flow_start,
                                  peer=None if peer is None else name_of.get(peer, peer),
                                  path=[name_of.get(str(hop), str(hop)) for hop in path]))
    records += _tor_relay_parts(chosen, info, origin, what)
    records.sort(key=lambda r: (r.step, r.ms))
    present = {r.event for r in records}
    missing = next((step for step, _, event, _ in STEPS if event not in present), None)
    return records, missing


def _tor_relay_parts(chosen: dict[tuple[str, str, str], dict], info: RunInfo, origin: float,
                     what: dict[str, tuple[int, str]]) -> list[StepRecord]:
    """Records for the relay steps a tor relay played (named by the service's or client's event)."""
    nodes = {n.name: n for n in info.nodes}
    records, done = [], set()
    for event, (counterpart, field_name) in RELAY_PART.items():
        for (name, _, _), e in chosen.items():
            relay = nodes.get(e.get(field_name) or "")
            if name != counterpart or relay is None or relay.impl != "tor" or (event, relay.name) in done:
                continue
            done.add((event, relay.name))
            step, text = what[event]
            records.append(StepRecord(step, text, event, relay.name, relay.role, relay.container,
                                      round(1000 * (e["ts"] - origin), 1), unseen=True))
    return records


def run_flow(info: RunInfo, logs: Callable[[str], str], *, onion: str, service: str, client: str,
             socks: str, n_bytes: int = DEFAULT_BYTES, port: int = 80,
             timeout: float = IO_TIMEOUT) -> FlowResult:
    """Fetch /bytes/n_bytes from `onion` through `socks` and judge the flow from every node's events."""
    started = time.time()
    error: str | None = None
    failed: int | None = None
    verified = 0
    try:
        sock = socks_connect(socks, onion, port, credentials=fresh_credentials("flow"), timeout=timeout)
        with sock:
            verified = fetch_pattern(sock, onion, n_bytes)
        if verified != n_bytes:
            error = f"the stream ended after {verified} of {n_bytes} bytes"
            failed = 6
    except SocksRefused as e:
        error, failed = str(e), STEP_OF_REPLY.get(e.code)
    except OSError as e:  # refused, reset, timed out, wrong bytes
        error, failed = f"{type(e).__name__}: {e}", 6
    ended = time.time()
    events = [e for n in info.nodes for e in parse_events(logs(n.name))]
    origin = min((e["ts"] for e in events), default=started)
    records, missing = timeline(events, info, flow_start=started, flow_end=ended + 1.0, origin=origin,
                                service=service, client=client)
    if missing is not None and (failed is None or missing < failed):
        failed = missing
        error = error or f"no event for step {missing}"
    return FlowResult(ok=error is None and failed is None, onion=onion, client=client, socks=socks,
                      bytes_requested=n_bytes, bytes_verified=verified, failed_step=failed, error=error,
                      flow_started_ms=round(1000 * (started - origin), 1),
                      flow_ms=round(1000 * (ended - started), 1), steps=records)


def render(result: FlowResult) -> str:
    """The timeline as a text table, then the verdict."""
    rows = [("STEP", "WHAT", "NODE", "CONTAINER", "MS")]
    for r in result.steps:
        note = " (cached)" if r.cached else " (tor relay: no event; counterpart's time)" if r.unseen else ""
        rows.append((str(r.step), r.what + note, r.node, r.container or "-", f"{r.ms:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]

    def line(row: tuple[str, ...]) -> str:
        cells = [cell.ljust(width) for cell, width in zip(row[:4], widths, strict=False)]
        return "  ".join([*cells, row[4].rjust(widths[4])])

    lines = [line(row) for row in rows]
    lines.append("")
    lines.append(f"flow started at {result.flow_started_ms:.1f} ms (ms are since the lab's first event), "
                 f"took {result.flow_ms:.1f} ms; {result.bytes_verified} of {result.bytes_requested} bytes "
                 f"from {result.onion} verified via {result.client} ({result.socks})")
    if result.ok:
        lines.append("flow OK: all six steps happened")
    else:
        lines.append(f"flow FAILED at step {result.failed_step}: {result.error}")
    return "\n".join(lines)
