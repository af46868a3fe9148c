"""Circuit state machines: circuits built entirely in memory, origin and relays wired by a tiny harness."""

import json
import random
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from nodes.core import hs_intro, hs_ntor, relay
from nodes.core.cells import Cell, Command, Create2, Created2, CreatedFast, CreateFast, DestroyReason
from nodes.core.circuit import (
    MAX_RELAY_EARLY,
    RELAY_ORIGINATES,
    RELAY_TRANSITIONS,
    RELAY_TRANSITIONS_CREATE_FAST,
    CircuitReady,
    CircuitState,
    Deliver,
    Destroyed,
    ExtendRequest,
    HopAdded,
    HopSpec,
    Introduce2,
    IntroduceAck,
    IntroEstablished,
    OriginCircuit,
    RelayCircuit,
    RelayState,
    Rendezvous2,
    RendezvousEstablished,
    SendBackward,
    SendCell,
    SendForward,
    SendJoined,
    StreamConnected,
    StreamData,
    StreamEnd,
    StreamRequested,
    Truncated,
)
from nodes.core.ed25519 import Signer
from nodes.core.errors import (
    CryptoError,
    DecodeError,
    LocalProtocolError,
    RemoteProtocolError,
    UnexpectedMessage,
)
from nodes.core.relay import RelayCommand as C
from nodes.core.relay_crypto import HopCrypto, OriginCrypto
from nodes.core.stream import StreamState

VECTORS = json.loads(Path(__file__).with_name("tor-vectors.json").read_text())


def seeded(seed) -> callable:
    return random.Random(seed).randbytes


class Relay:
    """One relay's long-term keys."""

    def __init__(self, index: int, rng) -> None:
        self.index = index
        self.node_id = rng(20)
        self.onion_secret = rng(32)
        pub = X25519PrivateKey.from_private_bytes(self.onion_secret).public_key().public_bytes_raw()
        self.spec = HopSpec(f"10.0.0.{index + 1}", 9001, self.node_id, rng(32), pub)


class Harness:
    """Moves cells. Links between relays deliver at once; the origin's link is two queues, so a test decides
    when cells arrive (and so how far windows run down)."""

    def __init__(self, n_relays: int = 6, seed: int = 1) -> None:
        self.rng = seeded(seed)
        self.relays = [Relay(i, self.rng) for i in range(n_relays)]
        self.by_node_id = {r.node_id: r for r in self.relays}
        self.first_relay: dict[OriginCircuit, Relay] = {}
        self.first_circ: dict[OriginCircuit, RelayCircuit] = {}
        self.prev: dict[RelayCircuit, object] = {}  # an OriginCircuit or a RelayCircuit
        self.next: dict[RelayCircuit, RelayCircuit] = {}
        self.relay_of: dict[RelayCircuit, Relay] = {}
        self.to_relays: list[tuple[OriginCircuit, Cell]] = []
        self.to_origin: list[tuple[OriginCircuit, Cell]] = []
        self.events: dict[OriginCircuit, list] = {}
        self.actions: list[tuple[RelayCircuit, object]] = []  # what relays report to their runtime
        self._next_id = 0x100

    # --- building

    def origin(self, path: list[int], *, circ_id: int = 7, seed: int = 2,
               build: bool = True, fast: bool = False) -> OriginCircuit:
        """`fast`: the first hop is built with CREATE_FAST instead of ntor."""
        o = OriginCircuit(circ_id, seeded(seed), path_len=len(path))
        self.events[o] = []
        self.first_relay[o] = self.relays[path[0]]
        if build:
            self.send(o, o.create_fast() if fast else o.create(self.relays[path[0]].spec))
            self.pump()
            for i in path[1:]:
                self.send(o, o.extend(self.relays[i].spec))
                self.pump()
            assert o.state is CircuitState.OPEN
            assert self.take_events(o) == [*map(HopAdded, range(len(path))), CircuitReady(len(path))]
        return o

    def chain(self, o: OriginCircuit) -> list[RelayCircuit]:
        out = [self.first_circ[o]]
        while out[-1] in self.next:
            out.append(self.next[out[-1]])
        return out

    # --- moving cells

    def send(self, o: OriginCircuit, *cells: Cell) -> None:
        self.to_relays.extend((o, c) for c in cells)

    def pump(self) -> None:
        while self.to_relays or self.to_origin:
            self.flush_forward()
            self.flush_backward()

    def flush_forward(self, n: int | None = None) -> None:
        batch, self.to_relays = self.to_relays[:n], self.to_relays[len(self.to_relays[:n]):]
        for o, cell in batch:
            if cell.command in (Command.CREATE2, Command.CREATE_FAST):
                r = self.first_relay[o]
                circ, created = RelayCircuit.accept(cell, node_id=r.node_id, onion_secret=r.onion_secret,
                                                    rng=self.rng)
                self.first_circ[o], self.prev[circ], self.relay_of[circ] = circ, o, r
                self.to_origin.append((o, created))
            elif o in self.first_circ:
                self.forward(self.first_circ[o], cell)

    def flush_backward(self, n: int | None = None) -> None:
        batch, self.to_origin = self.to_origin[:n], self.to_origin[len(self.to_origin[:n]):]
        for o, cell in batch:
            for event in o.receive_cell(cell):
                if isinstance(event, SendCell):
                    self.send(o, event.cell)
                else:
                    self.events[o].append(event)

    def forward(self, circ: RelayCircuit, cell: Cell) -> None:
        self.act(circ, circ.receive_forward(cell))

    def act(self, circ: RelayCircuit, actions: list) -> None:
        for a in actions:
            if isinstance(a, SendForward):
                if circ in self.next:
                    self.forward(self.next[circ], a.cell)
            elif isinstance(a, SendBackward):
                self.backward(circ, a.cell)
            elif isinstance(a, SendJoined):
                self.backward(circ.joined, a.cell)
            elif isinstance(a, ExtendRequest):
                self.extend(circ, a)
            else:
                self.actions.append((circ, a))

    def extend(self, circ: RelayCircuit, request: ExtendRequest) -> None:
        ident = next(s.identity for s in request.link_specs if isinstance(s, relay.LinkSpecRsaId))
        r = self.by_node_id[ident]
        self._next_id += 1
        create = circ.create_next(self._next_id)
        new, created = RelayCircuit.accept(create, node_id=r.node_id, onion_secret=r.onion_secret,
                                           rng=self.rng)
        self.next[circ], self.prev[new], self.relay_of[new] = new, circ, r
        self.backward(new, created)

    def backward(self, circ: RelayCircuit, cell: Cell) -> None:
        """`cell` leaves `circ` towards its origin."""
        prev = self.prev[circ]
        if isinstance(prev, OriginCircuit):
            self.to_origin.append((prev, cell))
            return
        out = prev.receive_backward(cell)
        if out is not None:
            self.backward(prev, out)

    def relay_send(self, circ: RelayCircuit, *cells: Cell) -> None:
        for c in cells:
            self.backward(circ, c)

    def take_actions(self, kind=object) -> list:
        got = [a for _, a in self.actions if isinstance(a, kind)]
        self.actions = [(c, a) for c, a in self.actions if not isinstance(a, kind)]
        return got

    def take_events(self, o: OriginCircuit, kind=object) -> list:
        got = [e for e in self.events[o] if isinstance(e, kind)]
        self.events[o] = [e for e in self.events[o] if not isinstance(e, kind)]
        return got


def open_stream(h: Harness, o: OriginCircuit, request=None) -> tuple[int, RelayCircuit]:
    exit_ = h.chain(o)[-1]
    sid, cell = o.open_stream(request or relay.Begin("example.com", 80))
    h.send(o, cell)
    h.pump()
    (req,) = h.take_actions(StreamRequested)
    assert req.stream_id == sid
    h.relay_send(exit_, exit_.accept_stream(sid))
    h.pump()
    assert h.take_events(o, StreamConnected) == [StreamConnected(sid, relay.Connected())]
    return sid, exit_


# --- published vector through the circuit layer


def test_ntor_vector_through_create_and_accept():
    # Source: arti crates/tor-proto/src/crypto/handshake/ntor.rs fn testvec (tor-vectors.json "ntor").
    v = {k: bytes.fromhex(x) for k, x in VECTORS["ntor"]["cases"][0].items() if not k.endswith("ascii")}
    x_then_zeros = iter([v["x_private"]])
    origin = OriginCircuit(5, lambda n: next(x_then_zeros, None) or bytes(n), path_len=1)
    spec = HopSpec("192.0.2.1", 443, v["node_id"], None, v["b_public"])
    create = origin.create(spec)
    assert create == Cell(5, Command.CREATE2, b"\x00\x02\x00\x54" + v["client_handshake"])
    circ, created = RelayCircuit.accept(create, node_id=v["node_id"], onion_secret=v["b_private"],
                                        rng=lambda n: v["y_private"][:n])
    assert created == Cell(5, Command.CREATED2, b"\x00\x40" + v["server_handshake"])
    assert origin.receive_cell(created) == [HopAdded(0), CircuitReady(1)]
    # Both ends now hold the vector's key material: the first cell matches one encrypted independently.
    reference = OriginCrypto()
    reference.add_hop(HopCrypto.tor1(v["key_material"]))
    drop = origin.send_relay(relay.Drop())
    body = relay.encode_relay_body(C.DROP, 0, b"", lambda n: bytes(n))
    assert drop == Cell(5, Command.RELAY, reference.encrypt(body, 0))
    assert circ.receive_forward(drop) == []


# --- building


def test_three_hop_build():
    h = Harness()
    o = h.origin([0, 1, 2], build=False)
    assert o.state is CircuitState.BUILDING
    h.send(o, o.create(h.relays[0].spec))
    h.pump()
    assert h.take_events(o) == [HopAdded(0)]
    extend = o.extend(h.relays[1].spec)
    assert extend.command == Command.RELAY_EARLY
    with pytest.raises(LocalProtocolError):
        o.extend(h.relays[2].spec)  # the previous extension has not answered yet
    h.send(o, extend)
    h.pump()
    assert h.take_events(o) == [HopAdded(1)]
    h.send(o, o.extend(h.relays[2].spec))
    h.pump()
    assert h.take_events(o) == [HopAdded(2), CircuitReady(3)]
    assert o.state is CircuitState.OPEN and o.hop_count == 3
    assert [c.state for c in h.chain(o)] == [RelayState.EXTENDED, RelayState.EXTENDED, RelayState.OPEN]
    assert [h.relay_of[c].index for c in h.chain(o)] == [0, 1, 2]
    with pytest.raises(LocalProtocolError):
        o.extend(h.relays[3].spec)


def test_extend2_link_specs_in_spec_order():
    h = Harness()
    o = h.origin([0, 1])
    (circ,) = h.chain(o)[:1]
    specs = h.relays[1].spec.link_specs()
    assert [type(s) for s in specs] == [relay.LinkSpecIPv4, relay.LinkSpecRsaId, relay.LinkSpecEd25519]
    v6 = HopSpec("2001:db8::1", 9001, bytes(20), None, bytes(32)).link_specs()
    assert [type(s) for s in v6] == [relay.LinkSpecRsaId, relay.LinkSpecIPv6]
    assert circ.state is RelayState.EXTENDED


def test_create_errors():
    h = Harness()
    r = h.relays[0]
    o = OriginCircuit(9, h.rng, path_len=1)
    cell = o.create(r.spec)
    with pytest.raises(LocalProtocolError):
        o.create(r.spec)
    with pytest.raises(CryptoError):  # onionskin for another relay
        other = h.relays[1]
        RelayCircuit.accept(cell, node_id=other.node_id, onion_secret=other.onion_secret, rng=h.rng)
    tap = Cell(9, Command.CREATE2, Create2(0, bytes(84)).encode())
    with pytest.raises(UnexpectedMessage):
        RelayCircuit.accept(tap, node_id=r.node_id, onion_secret=r.onion_secret, rng=h.rng)
    with pytest.raises(UnexpectedMessage):
        RelayCircuit.accept(Cell(9, Command.CREATE, bytes(509)), node_id=r.node_id,
                            onion_secret=r.onion_secret, rng=h.rng)
    with pytest.raises(DecodeError):
        RelayCircuit.accept(Cell(0, Command.CREATE2, cell.payload), node_id=r.node_id,
                            onion_secret=r.onion_secret, rng=h.rng)
    # A forged CREATED2 fails the ntor AUTH check and leaves the origin failed.
    with pytest.raises(CryptoError):
        o.receive_cell(Cell(9, Command.CREATED2, Created2(bytes(64)).encode()))
    assert o.state is CircuitState.FAILED
    assert o.receive_cell(Cell(9, Command.RELAY, bytes(509))) == []  # ignored once failed
    assert o.destroy() == Cell(9, Command.DESTROY, b"\x00")
    with pytest.raises(LocalProtocolError):
        o.destroy()


def test_origin_argument_checks():
    with pytest.raises(LocalProtocolError):
        OriginCircuit(0, seeded(1))
    with pytest.raises(LocalProtocolError):
        OriginCircuit(1, seeded(1), path_len=10)
    o = OriginCircuit(1, seeded(1))
    with pytest.raises(LocalProtocolError):
        o.destroy()  # nothing was sent yet
    with pytest.raises(LocalProtocolError):
        o.extend(Harness().relays[0].spec)
    with pytest.raises(LocalProtocolError):
        o.send_relay(relay.Drop())
    with pytest.raises(LocalProtocolError):
        HopSpec("not-an-ip", 1, bytes(20), None, bytes(32)).link_specs()


# --- RELAY_EARLY (tor-spec 5.6)


def test_origin_uses_relay_early_for_the_first_cells_past_hop_0():
    h = Harness()
    o = h.origin([0, 1, 2])  # two EXTEND2 cells used two of the eight
    commands = [o.send_relay(relay.Drop(), hop=2).command for _ in range(8)]
    assert commands == [Command.RELAY_EARLY] * 6 + [Command.RELAY] * 2
    assert o.send_relay(relay.Drop(), hop=0).command == Command.RELAY


def test_relay_early_limit():
    h = Harness()
    o = h.origin([0])
    (circ,) = h.chain(o)
    for _ in range(MAX_RELAY_EARLY):
        cell = o.send_relay(relay.Drop())
        assert circ.receive_forward(Cell(cell.circ_id, Command.RELAY_EARLY, cell.payload)) == []
    cell = o.send_relay(relay.Drop())
    with pytest.raises(RemoteProtocolError):
        circ.receive_forward(Cell(cell.circ_id, Command.RELAY_EARLY, cell.payload))
    assert circ.state is RelayState.FAILED
    assert circ.receive_forward(o.send_relay(relay.Drop())) == []  # ignored once failed
    assert circ.destroy() == [SendBackward(Cell(o.circ_id, Command.DESTROY, bytes([DestroyReason.PROTOCOL])))]


def test_extend2_outside_relay_early_is_rejected():
    h = Harness()
    o = h.origin([0, 1], build=False)
    h.send(o, o.create(h.relays[0].spec))
    h.pump()
    cell = o.extend(h.relays[1].spec)
    circ = h.first_circ[o]
    with pytest.raises(UnexpectedMessage):
        circ.receive_forward(Cell(cell.circ_id, Command.RELAY, cell.payload))
    assert circ.state is RelayState.FAILED


def test_relay_early_towards_the_origin_is_rejected():
    h = Harness()
    o = h.origin([0, 1])
    first, second = h.chain(o)
    cell = second.originate(relay.Drop())
    with pytest.raises(UnexpectedMessage):
        first.receive_backward(Cell(cell.circ_id, Command.RELAY_EARLY, cell.payload))
    assert first.state is RelayState.FAILED
    o = h.origin([2], circ_id=8)
    cell = h.chain(o)[0].originate(relay.Drop())
    with pytest.raises(UnexpectedMessage):
        o.receive_cell(Cell(cell.circ_id, Command.RELAY_EARLY, cell.payload))
    assert o.state is CircuitState.FAILED


# --- streams and flow control


def test_one_megabyte_both_ways():
    h = Harness()
    o = h.origin([0, 1, 2])
    sid, exit_ = open_stream(h, o)
    up = random.Random(3).randbytes(1 << 20)
    down = random.Random(4).randbytes(1 << 20)
    sent_up = sent_down = 0
    got_up, got_down = bytearray(), bytearray()
    min_windows = []

    def check_windows():
        for win, stream in ((o.circuit_window, o.stream(sid)), (exit_.circuit_window, exit_.stream(sid))):
            assert 0 <= win.package <= 1000 and 900 <= win.deliver <= 1000
            assert 0 <= stream.package_window <= 500 and 450 < stream.deliver_window <= 500
            min_windows.append(min(win.package, stream.package_window))

    while sent_up < len(up) or sent_down < len(down):
        n = min(o.send_capacity(sid), len(up) - sent_up)
        h.send(o, *o.send_data(sid, up[sent_up:sent_up + n]))
        sent_up += n
        n = min(exit_.send_capacity(sid), len(down) - sent_down)
        cells = exit_.send_data(sid, down[sent_down:sent_down + n])
        sent_down += n
        check_windows()
        h.relay_send(exit_, *cells)
        h.pump()  # deliver everything in flight, and the SENDMEs that answer it
        got_up += b"".join(a.data for a in h.take_actions(StreamData))
        got_down += b"".join(e.data for e in h.take_events(o, StreamData))
        check_windows()
    assert bytes(got_up) == up and bytes(got_down) == down
    assert min(min_windows) == 0  # the windows really ran dry and SENDMEs refilled them
    # 2106 DATA cells each way: 21 circuit SENDMEs and 42 stream SENDMEs each way kept them flowing.
    assert o.circuit_window.package == exit_.circuit_window.package == 1000 - 2106 % 100
    assert o.stream(sid).package_window == 500 - 2106 % 50


def test_windows_block_sending():
    h = Harness()
    o = h.origin([0, 1])
    a, exit_ = open_stream(h, o)
    b, _ = open_stream(h, o)
    c, _ = open_stream(h, o)
    assert o.send_capacity(a) == 500 * 498
    with pytest.raises(LocalProtocolError):
        o.send_data(a, bytes(500 * 498 + 1))
    h.send(o, *o.send_data(a, bytes(500 * 498)))
    assert o.send_capacity(a) == 0 and o.stream(a).package_window == 0
    h.send(o, *o.send_data(b, bytes(500 * 498)))
    assert o.circuit_window.package == 0 and o.send_capacity(c) == 0
    with pytest.raises(LocalProtocolError):
        o.send_data(c, b"x")
    h.pump()  # the exit's SENDMEs come back
    assert o.circuit_window.package == 1000 and o.send_capacity(c) == 500 * 498
    assert sum(len(x.data) for x in h.take_actions(StreamData)) == 1000 * 498


def test_stream_end_and_half_close():
    h = Harness()
    o = h.origin([0, 1])
    sid, exit_ = open_stream(h, o)
    in_flight = exit_.send_data(sid, b"late data")
    h.send(o, o.end_stream(sid))
    assert o.stream(sid).state is StreamState.HALF_CLOSED
    with pytest.raises(LocalProtocolError):
        o.send_data(sid, b"x")
    h.pump()
    assert h.take_actions(StreamEnd) == [StreamEnd(sid, relay.EndReason.MISC)]
    with pytest.raises(LocalProtocolError):
        exit_.stream(sid)  # the exit forgot it
    h.relay_send(exit_, *in_flight)
    h.pump()
    assert h.take_events(o) == []  # data that crossed our END is dropped silently
    # The exit ends a stream: the origin reports it, and anything more on it is a protocol violation.
    sid2, _ = open_stream(h, o)
    h.relay_send(exit_, exit_.end_stream(sid2, relay.EndReason.MISC))
    h.pump()
    assert h.take_events(o) == [StreamEnd(sid2, relay.EndReason.MISC)]
    h.relay_send(exit_, exit_._send_back(relay.Data(b"more"), sid2))
    with pytest.raises(UnexpectedMessage):
        h.flush_backward()


def test_exit_refuses_a_stream():
    h = Harness()
    o = h.origin([0])
    sid, cell = o.open_stream(relay.BeginDir())
    h.send(o, cell)
    h.pump()
    assert h.take_actions(StreamRequested) == [StreamRequested(sid, relay.BeginDir())]
    exit_ = h.chain(o)[0]
    h.relay_send(exit_, exit_.end_stream(sid, relay.EndReason.NOTDIRECTORY))
    h.pump()
    assert h.take_events(o) == [StreamEnd(sid, relay.EndReason.NOTDIRECTORY)]


def test_stream_ids_are_unique_and_nonzero():
    h = Harness()
    o = h.origin([0])
    ids = [o.open_stream(relay.BeginDir())[0] for _ in range(5)]
    assert len(set(ids)) == 5 and 0 not in ids


def test_sendme_with_wrong_digest_is_rejected():
    h = Harness()
    o = h.origin([0, 1])
    sid, exit_ = open_stream(h, o)
    h.send(o, *o.send_data(sid, bytes(100 * 498)))
    held = []
    real_backward = h.backward
    h.backward = lambda circ, cell: held.append((circ, cell))  # hold the exit's SENDMEs
    h.flush_forward()
    h.backward = real_backward
    assert len(held) == 3  # one circuit SENDME, two stream SENDMEs
    forged = exit_._send_back(relay.Sendme(1, bytes(20)))
    h.backward(exit_, forged)
    with pytest.raises(CryptoError):
        h.flush_backward()
    assert o.state is CircuitState.FAILED


def test_sendme_without_outstanding_data_and_v0_are_rejected():
    h = Harness()
    o = h.origin([0])
    sid, exit_ = open_stream(h, o)
    with pytest.raises(RemoteProtocolError):
        o.receive_cell(exit_._send_back(relay.Sendme(1, bytes(20))))
    h = Harness()
    o = h.origin([0])
    sid, exit_ = open_stream(h, o)
    with pytest.raises(UnexpectedMessage):
        o.receive_cell(exit_._send_back(relay.Sendme(0)))
    h = Harness()
    o = h.origin([0])
    sid, exit_ = open_stream(h, o)
    with pytest.raises(RemoteProtocolError):  # a stream SENDME that overflows the stream's package window
        o.receive_cell(exit_._send_back(relay.Sendme(0), sid))


def test_exit_checks_sendme_digests_too():
    h = Harness()
    o = h.origin([0])
    sid, exit_ = open_stream(h, o)
    h.relay_send(exit_, *exit_.send_data(sid, bytes(100 * 498)))
    h.to_origin.clear()
    with pytest.raises(CryptoError):
        exit_.receive_forward(o._seal(0, 0, relay.Sendme(1, bytes(20))))
    assert exit_.state is RelayState.FAILED


# --- typed errors for what a state does not allow


ALL_COMMANDS = [c for c in C if c in relay.MESSAGE_TYPES]
SAMPLE = {
    C.BEGIN: relay.Begin("example.com", 80), C.DATA: relay.Data(b"x"), C.END: relay.End(6),
    C.CONNECTED: relay.Connected(), C.SENDME: relay.Sendme(1, bytes(20)),
    C.EXTEND2: relay.Extend2((relay.LinkSpecIPv4("10.0.0.9", 1), relay.LinkSpecRsaId(bytes(20))), 2,
                             bytes(84)),
    C.EXTENDED2: relay.Extended2(bytes(64)), C.TRUNCATE: relay.Truncate(), C.TRUNCATED: relay.Truncated(1),
    C.DROP: relay.Drop(), C.BEGIN_DIR: relay.BeginDir(),
    C.ESTABLISH_INTRO: relay.EstablishIntro(2, bytes(32), (), bytes(32), bytes(64)),
    C.INTRO_ESTABLISHED: relay.IntroEstablished(),
    C.INTRODUCE1: relay.Introduce1(bytes(20), 2, bytes(32), (), b"enc"),
    C.INTRODUCE2: relay.Introduce2(bytes(20), 2, bytes(32), (), b"enc"),
    C.INTRODUCE_ACK: relay.IntroduceAck(0), C.ESTABLISH_RENDEZVOUS: relay.EstablishRendezvous(bytes(20)),
    C.RENDEZVOUS_ESTABLISHED: relay.RendezvousEstablished(),
    C.RENDEZVOUS1: relay.Rendezvous1(bytes(20), bytes(64)), C.RENDEZVOUS2: relay.Rendezvous2(bytes(64)),
}


def relay_in_state(state: RelayState):
    """(harness, origin, the relay circuit at the end) with that circuit driven into `state`."""
    h = Harness()
    o = h.origin([0])
    circ = h.chain(o)[0]
    if state is RelayState.OPEN:
        return h, o, circ
    if state is RelayState.EXIT:
        open_stream(h, o)
        return h, o, circ
    if state in (RelayState.EXTENDING, RelayState.EXTENDED):
        o = h.origin([0, 1], circ_id=8, build=False)
        h.send(o, o.create(h.relays[0].spec))
        h.pump()
        circ = h.first_circ[o]
        if state is RelayState.EXTENDING:
            h.forward = lambda c, cell: h.actions.append((c, c.receive_forward(cell)))
        h.send(o, o.extend(h.relays[1].spec))
        h.pump()
        return h, o, circ
    message = {RelayState.INTRO_POINT: C.ESTABLISH_INTRO, RelayState.INTRODUCING: C.INTRODUCE1,
               RelayState.REND_POINT: C.ESTABLISH_RENDEZVOUS, RelayState.REND_JOINING: C.RENDEZVOUS1}[state]
    h.send(o, o.send_relay(SAMPLE[message]))
    h.pump()
    assert circ.state is state
    return h, o, circ


@pytest.mark.parametrize("state", [s for s in RELAY_TRANSITIONS if s is not RelayState.JOINED])
def test_relay_rejects_what_its_state_does_not_allow(state):
    for command in ALL_COMMANDS:
        if command in RELAY_TRANSITIONS[state]:
            continue
        h, o, circ = relay_in_state(state)
        # The origin would refuse to send most of these: forge them with its sealing step.
        cell = o._seal(0, 0, SAMPLE[command])
        with pytest.raises(RemoteProtocolError):
            circ.receive_forward(Cell(cell.circ_id, Command.RELAY_EARLY, cell.payload))
        assert circ.state is RelayState.FAILED, command


@pytest.mark.parametrize("purpose", [None, C.ESTABLISH_INTRO, C.INTRODUCE1, C.ESTABLISH_RENDEZVOUS])
def test_origin_rejects_unsolicited_messages(purpose):
    expected = {None: set(), C.ESTABLISH_INTRO: {C.INTRO_ESTABLISHED}, C.INTRODUCE1: {C.INTRODUCE_ACK},
                C.ESTABLISH_RENDEZVOUS: {C.RENDEZVOUS_ESTABLISHED}}[purpose]
    for command in ALL_COMMANDS:
        if command in expected or command in (C.DROP, C.TRUNCATED):  # those two are always legal
            continue
        h = Harness()
        o = h.origin([0])
        circ = h.chain(o)[0]
        if purpose is not None:
            h.send(o, o.send_relay(SAMPLE[purpose]))
            h.pump()
        with pytest.raises(RemoteProtocolError):
            o.receive_cell(circ._send_back(SAMPLE[command]))
        assert o.state is CircuitState.FAILED


def test_origin_rejects_stray_cells():
    h = Harness()
    o = h.origin([0], build=False)
    with pytest.raises(UnexpectedMessage):
        o.receive_cell(Cell(o.circ_id, Command.RELAY, bytes(509)))  # before any hop exists
    o = h.origin([0], circ_id=9)
    with pytest.raises(UnexpectedMessage):
        o.receive_cell(Cell(9, Command.CREATED2, Created2(bytes(64)).encode()))
    o = h.origin([0], circ_id=10)
    with pytest.raises(UnexpectedMessage):
        o.receive_cell(Cell(10, Command.NETINFO, bytes(509)))
    o = h.origin([0], circ_id=11)
    with pytest.raises(CryptoError):  # no hop recognizes it
        o.receive_cell(Cell(11, Command.RELAY, bytes(509)))
    with pytest.raises(LocalProtocolError):
        o.receive_cell(Cell(12, Command.RELAY, bytes(509)))


def test_relay_rejects_unrecognized_cells_at_the_end():
    h = Harness()
    o = h.origin([0])
    circ = h.chain(o)[0]
    with pytest.raises(RemoteProtocolError):
        circ.receive_forward(Cell(o.circ_id, Command.RELAY, bytes(509)))
    assert circ.state is RelayState.FAILED


def test_relay_local_misuse():
    h = Harness()
    o = h.origin([0])
    circ = h.chain(o)[0]
    for message in (relay.IntroEstablished(), relay.Data(b"x"), relay.Extended2(b"")):
        with pytest.raises(LocalProtocolError):
            circ.originate(message)
    with pytest.raises(LocalProtocolError):
        circ.create_next(5)
    with pytest.raises(LocalProtocolError):
        circ.receive_backward(Cell(5, Command.RELAY, bytes(509)))
    with pytest.raises(LocalProtocolError):
        circ.send_data(1, b"x")
    with pytest.raises(LocalProtocolError):
        circ.receive_forward(Cell(o.circ_id + 1, Command.RELAY, bytes(509)))
    assert set(RELAY_ORIGINATES) <= set(RelayState)


def test_extend_request_needs_address_and_identity():
    h = Harness()
    o = h.origin([0])
    circ = h.chain(o)[0]
    bad = relay.Extend2((relay.LinkSpecRsaId(bytes(20)),), 2, bytes(84))
    with pytest.raises(DecodeError):
        circ.receive_forward(o._seal(0, 0, bad))


# --- teardown


def test_destroy_from_origin_propagates():
    h = Harness()
    o = h.origin([0, 1, 2])
    chain = h.chain(o)
    h.send(o, o.destroy(DestroyReason.FINISHED))
    h.pump()
    assert o.state is CircuitState.DESTROYED
    assert [c.state for c in chain] == [RelayState.DESTROYED] * 3
    # The first hop reports the origin's reason; the others see DESTROYED (reasons are not propagated).
    assert h.take_actions(Destroyed) == [Destroyed(DestroyReason.FINISHED),
                                         *[Destroyed(DestroyReason.DESTROYED)] * 2]
    with pytest.raises(LocalProtocolError):
        o.send_relay(relay.Drop())
    assert o.receive_cell(Cell(o.circ_id, Command.RELAY, bytes(509))) == []


def test_destroy_from_a_middle_relay_goes_both_ways():
    h = Harness()
    o = h.origin([0, 1, 2])
    first, middle, last = h.chain(o)
    h.act(middle, middle.destroy(DestroyReason.RESOURCELIMIT))
    h.pump()
    assert h.take_events(o) == [Destroyed(DestroyReason.DESTROYED)]
    assert o.state is CircuitState.DESTROYED
    assert first.state is middle.state is last.state is RelayState.DESTROYED
    assert h.take_actions(Destroyed) == [Destroyed(DestroyReason.RESOURCELIMIT)]
    with pytest.raises(LocalProtocolError):
        middle.destroy()
    with pytest.raises(LocalProtocolError):
        o.destroy()  # Destroyed means: send nothing more, not even a DESTROY


def test_truncate():
    h = Harness()
    o = h.origin([0, 1, 2])
    first, second, third = h.chain(o)
    with pytest.raises(LocalProtocolError):
        o.send_relay(relay.Truncate(), hop=2)  # the last hop has no next hop
    h.send(o, o.send_relay(relay.Truncate(), hop=0))
    h.pump()
    assert h.take_events(o) == [Truncated(0, DestroyReason.REQUESTED)]
    assert o.state is CircuitState.FAILED
    assert first.state is RelayState.OPEN and first.next_circ_id is None
    assert second.state is third.state is RelayState.DESTROYED
    h.send(o, o.destroy())
    h.pump()
    assert first.state is RelayState.DESTROYED


# --- onion-service circuits


def test_introduction():
    h = Harness()
    service = h.origin([0, 1, 2], circ_id=20, seed=20)
    client = h.origin([3, 4, 2], circ_id=21, seed=21)  # relay 2 is the intro point
    ip_service, ip_client = h.chain(service)[-1], h.chain(client)[-1]
    h.send(service, service.send_relay(SAMPLE[C.ESTABLISH_INTRO]))
    h.pump()
    assert h.take_actions(Deliver) == [Deliver(SAMPLE[C.ESTABLISH_INTRO])]
    with pytest.raises(LocalProtocolError):
        service.send_relay(SAMPLE[C.ESTABLISH_INTRO])  # one purpose per circuit
    h.relay_send(ip_service, ip_service.originate(relay.IntroEstablished()))
    h.pump()
    assert h.take_events(service) == [IntroEstablished(relay.IntroEstablished())]
    for _ in range(2):  # INTRODUCE2 repeats on an intro circuit; INTRODUCE1 comes once per client circuit
        intro1 = SAMPLE[C.INTRODUCE1]
        h.send(client, client.send_relay(intro1))
        h.pump()
        (delivered,) = h.take_actions(Deliver)
        m = delivered.message
        h.relay_send(ip_service, ip_service.originate(relay.Introduce2(
            m.legacy_key_id, m.auth_key_type, m.auth_key, m.extensions, m.encrypted)))
        h.relay_send(ip_client, ip_client.originate(relay.IntroduceAck(relay.IntroduceAckStatus.SUCCESS)))
        h.pump()
        assert h.take_events(service) == [Introduce2(SAMPLE[C.INTRODUCE2])]
        assert h.take_events(client) == [IntroduceAck(relay.IntroduceAck(0))]
        client = h.origin([3, 4, 2], circ_id=22, seed=22)
        ip_client = h.chain(client)[-1]
    with pytest.raises(LocalProtocolError):
        ip_client.originate(relay.IntroduceAck(0))  # this circuit sent no INTRODUCE1


def rendezvous(h: Harness, rp: int = 2):
    """Client and service circuits joined at relay `rp`, each with its virtual hop."""
    client = h.origin([0, 1, rp], circ_id=30, seed=30)
    service = h.origin([3, 4, rp], circ_id=31, seed=31)
    rp_client, rp_service = h.chain(client)[-1], h.chain(service)[-1]
    cookie = bytes(range(20))
    h.send(client, client.send_relay(relay.EstablishRendezvous(cookie)))
    h.pump()
    assert h.take_actions(Deliver) == [Deliver(relay.EstablishRendezvous(cookie))]
    h.relay_send(rp_client, rp_client.originate(relay.RendezvousEstablished()))
    h.pump()
    assert h.take_events(client) == [RendezvousEstablished(relay.RendezvousEstablished())]
    with pytest.raises(LocalProtocolError):
        service.add_virtual_hop(HopCrypto.hs_virtual(bytes(128), service_side=True))  # no RENDEZVOUS1 yet
    handshake_info = bytes(range(64))
    h.send(service, service.send_relay(relay.Rendezvous1(cookie, handshake_info)))
    h.pump()
    (delivered,) = h.take_actions(Deliver)
    assert delivered.message.cookie == cookie and rp_service.state is RelayState.REND_JOINING
    h.relay_send(rp_client, rp_client.join(rp_service, relay.Rendezvous2(delivered.message.handshake_info)))
    h.pump()
    assert h.take_events(client) == [Rendezvous2(relay.Rendezvous2(handshake_info))]
    key_material = random.Random(5).randbytes(128)  # what hs-ntor would give both ends
    assert service.add_virtual_hop(HopCrypto.hs_virtual(key_material, service_side=True)) == 3
    assert client.add_virtual_hop(HopCrypto.hs_virtual(key_material, service_side=False)) == 3
    assert rp_client.state is rp_service.state is RelayState.JOINED
    return client, service, rp_client, rp_service


def test_rendezvous_virtual_hop_round_trip():
    h = Harness()
    client, service, rp_client, rp_service = rendezvous(h)
    sid, cell = client.open_stream(relay.Begin("", 80))
    h.send(client, cell)
    h.pump()
    assert h.take_events(service) == [StreamRequested(sid, relay.Begin("", 80))]
    with pytest.raises(LocalProtocolError):
        service.open_stream(relay.Begin("", 80))  # streams come from the client
    h.send(service, service.accept_stream(sid))
    h.pump()
    assert h.take_events(client) == [StreamConnected(sid, relay.Connected())]
    up, down = random.Random(6).randbytes(300_000), random.Random(7).randbytes(300_000)
    got = {client: bytearray(), service: bytearray()}
    for sender, receiver, data in ((client, service, up), (service, client, down)):
        sent = 0
        while sent < len(data):
            n = min(sender.send_capacity(sid), len(data) - sent)
            h.send(sender, *sender.send_data(sid, data[sent:sent + n]))
            sent += n
            h.pump()
            got[receiver] += b"".join(e.data for e in h.take_events(receiver, StreamData))
    assert bytes(got[service]) == up and bytes(got[client]) == down
    # DROP to the rendezvous point itself is still recognized there.
    h.send(client, client.send_relay(relay.Drop(), hop=2))
    h.pump()
    assert client.state is service.state is CircuitState.OPEN
    # Tear-down crosses the join.
    h.send(client, client.destroy())
    h.pump()
    assert rp_client.state is rp_service.state is RelayState.DESTROYED
    assert h.take_events(service) == [Destroyed(DestroyReason.DESTROYED)]


def test_onion_service_flow_with_real_handshakes():
    """The six steps with real ESTABLISH_INTRO auth, INTRODUCE1 encryption and hs-ntor virtual-hop keys."""
    h = Harness(n_relays=6)
    auth = Signer.from_seed(bytes(range(32)))  # the intro point auth key of the service
    enc_secret = bytes(range(100, 132))
    enc_key = hs_ntor.public_key(enc_secret)
    subcred = bytes(32)
    # 1. The service establishes an intro point at relay 2; the intro point checks KH and the signature.
    service_intro = h.origin([0, 1, 2], circ_id=50, seed=50)
    ip_service = h.chain(service_intro)[-1]
    h.send(service_intro, service_intro.send_relay(hs_intro.build_establish_intro(auth,
                                                                                   service_intro.hop_kh())))
    h.pump()
    (est,) = h.take_actions(Deliver)
    hs_intro.verify_establish_intro(est.message, ip_service.kh)
    h.relay_send(ip_service, ip_service.originate(relay.IntroEstablished()))
    h.pump()
    assert h.take_events(service_intro) == [IntroEstablished(relay.IntroEstablished())]
    # 2. The client sets up a rendezvous point at relay 5.
    client_rend = h.origin([3, 4, 5], circ_id=51, seed=51)
    rp_client = h.chain(client_rend)[-1]
    cookie = bytes(range(20, 40))
    h.send(client_rend, client_rend.send_relay(relay.EstablishRendezvous(cookie)))
    h.pump()
    h.take_actions(Deliver)
    h.relay_send(rp_client, rp_client.originate(relay.RendezvousEstablished()))
    h.pump()
    assert h.take_events(client_rend) == [RendezvousEstablished(relay.RendezvousEstablished())]
    # 3. The client introduces itself through the intro point; the service decrypts INTRODUCE2.
    client_intro = h.origin([4, 3, 2], circ_id=52, seed=52)
    ip_client = h.chain(client_intro)[-1]
    rp = h.relays[5].spec
    plaintext = hs_intro.IntroducePlaintext(cookie, (), hs_intro.ONION_KEY_TYPE_NTOR, rp.ntor_onion_key,
                                            rp.link_specs())
    intro1, client_state = hs_intro.encrypt_introduce1(auth_key=auth.public_key, service_enc_key=enc_key,
                                                       subcredential=subcred, plaintext=plaintext,
                                                       rng=seeded(53))
    h.send(client_intro, client_intro.send_relay(intro1))
    h.pump()
    (delivered,) = h.take_actions(Deliver)
    m = delivered.message
    intro2 = relay.Introduce2(m.legacy_key_id, m.auth_key_type, m.auth_key, m.extensions, m.encrypted)
    h.relay_send(ip_service, ip_service.originate(intro2))
    h.relay_send(ip_client, ip_client.originate(relay.IntroduceAck(relay.IntroduceAckStatus.SUCCESS)))
    h.pump()
    assert h.take_events(client_intro) == [IntroduceAck(relay.IntroduceAck(0))]
    (got_intro2,) = h.take_events(service_intro)
    opened, x_pub = hs_intro.decrypt_introduce2(got_intro2.message, service_enc_secret=enc_secret,
                                                service_enc_key=enc_key, subcredential=subcred)
    assert opened.rendezvous_cookie == cookie
    # 4. The service goes to the rendezvous point named in INTRODUCE2 and sends RENDEZVOUS1.
    service_rend = h.origin([1, 0, 5], circ_id=54, seed=54)
    rp_service = h.chain(service_rend)[-1]
    rend1, service_keys = hs_intro.service_rendezvous1(opened.rendezvous_cookie, X=x_pub,
                                                       service_enc_secret=enc_secret, service_enc_key=enc_key,
                                                       auth_key=auth.public_key, rng=seeded(55))
    h.send(service_rend, service_rend.send_relay(rend1))
    service_rend.add_virtual_hop(HopCrypto.hs_virtual(service_keys, service_side=True))
    h.pump()
    # 5. The rendezvous point matches the cookie and joins the circuits.
    (delivered,) = h.take_actions(Deliver)
    assert delivered.message.cookie == cookie
    h.relay_send(rp_client, rp_client.join(rp_service, relay.Rendezvous2(delivered.message.handshake_info)))
    h.pump()
    (rend2,) = h.take_events(client_rend)
    client_keys = hs_intro.client_handle_rendezvous2(client_state, rend2.message)
    client_rend.add_virtual_hop(HopCrypto.hs_virtual(client_keys, service_side=False))
    # 6. A stream end to end, through both circuits and the join.
    sid, begin = client_rend.open_stream(relay.Begin("", 80))
    h.send(client_rend, begin)
    h.pump()
    assert h.take_events(service_rend) == [StreamRequested(sid, relay.Begin("", 80))]
    h.send(service_rend, service_rend.accept_stream(sid), *service_rend.send_data(sid, b"hello, client"))
    h.pump()
    assert h.take_events(client_rend) == [StreamConnected(sid, relay.Connected()),
                                          StreamData(sid, b"hello, client")]


def test_joined_circuit_accepts_only_drop_for_the_rendezvous_point():
    h = Harness()
    client, service, rp_client, _ = rendezvous(h)
    h.send(client, client.send_relay(relay.Drop(), hop=2))
    h.pump()
    h.send(client, client._seal(2, 0, relay.BeginDir()))
    with pytest.raises(UnexpectedMessage):
        h.flush_forward()
    assert rp_client.state is RelayState.FAILED
    h.act(rp_client, rp_client.destroy())
    h.pump()
    assert h.take_events(client) == [Destroyed(DestroyReason.DESTROYED)]  # relays do not pass reasons on
    assert h.take_events(service) == [Destroyed(DestroyReason.DESTROYED)]


def test_join_needs_the_right_states():
    h = Harness()
    o1, o2 = h.origin([0], circ_id=40), h.origin([0], circ_id=41)
    c1, c2 = h.chain(o1)[0], h.chain(o2)[0]
    with pytest.raises(LocalProtocolError):
        c1.join(c2, relay.Rendezvous2(b""))


def test_virtual_hop_rules():
    h = Harness()
    o = h.origin([0, 1])
    with pytest.raises(LocalProtocolError):
        o.add_virtual_hop(HopCrypto.hs_virtual(bytes(128), service_side=False))  # no RENDEZVOUS2 seen
    h.send(o, o.send_relay(relay.EstablishRendezvous(bytes(20))))
    with pytest.raises(LocalProtocolError):
        o.open_stream(relay.BeginDir())  # not before the virtual hop


# --- random operation sequences


OPS = st.lists(st.tuples(st.sampled_from(["up", "down", "fwd", "bwd", "end", "open", "drop"]),
                         st.integers(0, 3), st.integers(0, 1200)), max_size=30)


@given(OPS)
def test_random_operation_sequences(ops):
    """Sends, partial deliveries in both directions, stream opens and ends in any order: windows stay in
    range, nothing fails, and every byte of every stream not ended arrives in order."""
    h = Harness(n_relays=2)
    o = h.origin([0, 1])
    first, exit_ = open_stream(h, o)
    streams = [first]
    sent: dict[tuple[str, int], bytes] = {}
    got: dict[tuple[str, int], bytes] = {}

    def collect():
        for a in h.take_actions(StreamData):
            got["up", a.stream_id] = got.get(("up", a.stream_id), b"") + a.data
        for e in h.take_events(o, StreamData):
            got["down", e.stream_id] = got.get(("down", e.stream_id), b"") + e.data

    for op, k, n in ops:
        live = [s for s in streams if o.stream(s).state is StreamState.OPEN]
        if op == "open" and len(streams) < 4:
            streams.append(open_stream(h, o)[0])
        elif op in ("up", "down") and live:
            sid = live[k % len(live)]
            side = o if op == "up" else exit_
            data = random.Random(n).randbytes(min(side.send_capacity(sid), n * 498))
            cells = side.send_data(sid, data)
            sent[op, sid] = sent.get((op, sid), b"") + data
            if side is o:
                h.send(o, *cells)
            else:
                h.relay_send(exit_, *cells)
        elif op == "fwd":
            h.flush_forward(n % 300)
        elif op == "bwd":
            h.flush_backward(n % 300)
        elif op == "end" and live:
            sid = live[k % len(live)]
            h.send(o, o.end_stream(sid))
            sent.pop(("up", sid), None)
            sent.pop(("down", sid), None)
        elif op == "drop":
            h.send(o, o.send_relay(relay.Drop(), hop=k % 2))
        collect()
        for side in (o, exit_):
            assert 0 <= side.circuit_window.package <= 1000
            assert 900 <= side.circuit_window.deliver <= 1000
        for sid in live:
            assert 0 <= o.stream(sid).package_window <= 500
    h.pump()
    collect()
    for key, data in sent.items():
        assert got.get(key, b"") == data
    assert o.state is CircuitState.OPEN and exit_.state is RelayState.EXIT


# --- CREATE_FAST (tor-spec 5.1.5): a first hop without an onion key


def test_create_fast_vector_through_create_fast_and_accept():
    # Source: arti crates/tor-proto/src/crypto/handshake/fast.rs fn testvec, case 1 ("Generated from Tor").
    x = bytes.fromhex("080E247DF7C252FCD2DC10F459703480C223E3A6")
    reply = bytes.fromhex("BA95C0D092335428BF80093BBED0B7A26C49E1E8696FBF9C8D6BE26504219C000D26AFE370FCEF04")
    keys = bytes.fromhex("AFA89B4FC8CF882335A582C52478B5FCB1E08DAF707E2C2D23B8C27D30BD461F3DF98A3AF82221CB"
                         "658AD0AA8680B99067E4F7DBC546970EA9A56B26433C71DA867BDD09C14A1308")  # Df Db Kf Kb
    x_then_zeros = iter([x])
    origin = OriginCircuit(5, lambda n: next(x_then_zeros, None) or bytes(n), path_len=1)
    create = origin.create_fast()
    assert create == Cell(5, Command.CREATE_FAST, x)
    assert CreateFast.decode(create.payload.ljust(509, b"\0")) == CreateFast(x)  # as it arrives, padded
    circ, created = RelayCircuit.accept(create, node_id=bytes(20), onion_secret=bytes(32),
                                        rng=lambda n: reply[:n])
    assert created == Cell(5, Command.CREATED_FAST, reply)
    assert circ.created_fast and circ.state is RelayState.OPEN
    assert origin.receive_cell(created) == [HopAdded(0), CircuitReady(1)]
    # KH (the proof in CREATED_FAST) is the circuit's KH on both ends, as ntor's KH is.
    assert origin.hop_kh() == circ.kh == reply[20:]
    # Both ends hold the vector's keys: the first cell matches one encrypted independently.
    reference = OriginCrypto()
    reference.add_hop(HopCrypto.tor1(keys))
    drop = origin.send_relay(relay.Drop())
    body = relay.encode_relay_body(C.DROP, 0, b"", lambda n: bytes(n))
    assert drop == Cell(5, Command.RELAY, reference.encrypt(body, 0))
    assert circ.receive_forward(drop) == []


def test_create_fast_first_hop_then_ntor_hops_carry_a_stream():
    h = Harness()
    o = h.origin([0, 1, 2], fast=True)
    chain = h.chain(o)
    assert [c.created_fast for c in chain] == [True, False, False]
    assert [c.state for c in chain] == [RelayState.EXTENDED, RelayState.EXTENDED, RelayState.OPEN]
    assert [o.hop_kh(i) for i in range(3)] == [c.kh for c in chain]
    sid, exit_ = open_stream(h, o, relay.BeginDir())
    h.send(o, *o.send_data(sid, b"GET / HTTP/1.0\r\n\r\n"))
    h.pump()
    assert h.take_actions(StreamData) == [StreamData(sid, b"GET / HTTP/1.0\r\n\r\n")]
    h.relay_send(exit_, *exit_.send_data(sid, b"HTTP/1.0 200 OK\r\n\r\n"))
    h.pump()
    assert h.take_events(o, StreamData) == [StreamData(sid, b"HTTP/1.0 200 OK\r\n\r\n")]


def test_one_hop_create_fast_directory_stream():
    h = Harness()
    o = h.origin([3], fast=True)
    (circ,) = h.chain(o)
    sid, _ = open_stream(h, o, relay.BeginDir())
    assert circ.state is RelayState.EXIT
    h.relay_send(circ, *circ.send_data(sid, b"x" * 2000), circ.end_stream(sid))
    h.pump()
    assert b"".join(e.data for e in h.take_events(o, StreamData)) == b"x" * 2000
    assert h.take_events(o, StreamEnd) == [StreamEnd(sid, relay.EndReason.DONE)]


def test_create_fast_errors():
    h = Harness()
    o = OriginCircuit(9, h.rng, path_len=1)
    o.create_fast()
    with pytest.raises(LocalProtocolError):
        o.create_fast()
    with pytest.raises(LocalProtocolError):
        o.create(h.relays[0].spec)
    # A CREATED_FAST whose KH does not match: a crypto error, the circuit failed.
    with pytest.raises(CryptoError):
        o.receive_cell(Cell(9, Command.CREATED_FAST, CreatedFast(bytes(20), bytes(20)).encode()))
    assert o.state is CircuitState.FAILED
    # The wrong reply for the handshake outstanding.
    o = OriginCircuit(9, h.rng, path_len=1)
    o.create_fast()
    with pytest.raises(UnexpectedMessage):
        o.receive_cell(Cell(9, Command.CREATED2, Created2(bytes(64)).encode()))
    o = OriginCircuit(9, h.rng, path_len=1)
    o.create(h.relays[0].spec)
    with pytest.raises(UnexpectedMessage):
        o.receive_cell(Cell(9, Command.CREATED_FAST, bytes(40)))
    # After the first hop answered, another CREATED_FAST is a stray.
    o = h.origin([0], fast=True, circ_id=10)
    with pytest.raises(UnexpectedMessage):
        o.receive_cell(Cell(10, Command.CREATED_FAST, bytes(40)))
    # A short CREATED_FAST is a decode error.
    o = OriginCircuit(11, h.rng, path_len=1)
    o.create_fast()
    with pytest.raises(DecodeError):
        o.receive_cell(Cell(11, Command.CREATED_FAST, bytes(39)))
    # The relay side: circuit id 0 and a short body are refused.
    r = h.relays[0]
    for bad, error in ((Cell(0, Command.CREATE_FAST, bytes(20)), DecodeError),
                       (Cell(12, Command.CREATE_FAST, bytes(19)), DecodeError)):
        with pytest.raises(error):
            RelayCircuit.accept(bad, node_id=r.node_id, onion_secret=r.onion_secret, rng=h.rng)


def test_create_fast_circuit_refuses_what_a_first_hop_must_not_do():
    refused = set(RELAY_TRANSITIONS[RelayState.OPEN]) - set(RELAY_TRANSITIONS_CREATE_FAST[RelayState.OPEN])
    assert refused == {C.BEGIN, C.ESTABLISH_RENDEZVOUS, C.INTRODUCE1}
    assert {s: t for s, t in RELAY_TRANSITIONS_CREATE_FAST.items() if s is not RelayState.OPEN} == \
        {s: t for s, t in RELAY_TRANSITIONS.items() if s is not RelayState.OPEN}
    for command in sorted(refused):
        h = Harness()
        o = h.origin([0], fast=True)
        (circ,) = h.chain(o)
        with pytest.raises(UnexpectedMessage):
            circ.receive_forward(o._seal(0, 0, SAMPLE[command]))
        assert circ.state is RelayState.FAILED
    # ESTABLISH_INTRO stays legal (C tor never sends it on a CREATE_FAST circuit), keyed with the KH.
    h = Harness()
    o = h.origin([0], fast=True)
    (circ,) = h.chain(o)
    intro = SAMPLE[C.ESTABLISH_INTRO]
    assert circ.receive_forward(o.send_relay(intro)) == [Deliver(intro)]
    assert circ.state is RelayState.INTRO_POINT


@pytest.mark.parametrize("htype", [0, 1])
def test_extend2_refuses_tap_and_create_fast_handshakes(htype):
    # C tor (onion.c) refuses EXTEND2 with either; CREATE_FAST is for the first hop only (tor-spec 5.1.5).
    h = Harness()
    o = h.origin([0])
    (circ,) = h.chain(o)
    bad = relay.Extend2(h.relays[1].spec.link_specs(), htype, bytes(20))
    with pytest.raises(UnexpectedMessage):
        circ.receive_forward(o._seal(0, 0, bad))
    assert circ.state is RelayState.FAILED
