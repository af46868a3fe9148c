"""Streams and flow control, without circuits: two stream layers wired by an in-memory pipe."""

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodes.core import relay
from nodes.core.cells import Cell, Command
from nodes.core.errors import CryptoError, LocalProtocolError, RemoteProtocolError, UnexpectedMessage
from nodes.core.relay import RELAY_DATA_MAX, decode_msg, decode_relay_body, encode_relay_body
from nodes.core.stream import (
    ACCEPTOR_RECEIVES,
    CIRCWINDOW_INCREMENT,
    CIRCWINDOW_START,
    INITIATOR_RECEIVES,
    STREAMWINDOW_START,
    CircuitWindow,
    StreamConnected,
    StreamData,
    StreamEnd,
    StreamRequested,
    Streams,
    StreamState,
    chunk_data,
)


class End:
    """One side of the pipe: its Streams seal plain relay bodies and keep running SHA-1 digests of what they
    send and receive, the way relay crypto does, so SENDME v1 digests line up between the two ends."""

    def __init__(self, *, initiator: bool, send_seed: bytes, receive_seed: bytes) -> None:
        self.sent = hashlib.sha1(send_seed)
        self.received = hashlib.sha1(receive_seed)
        self.streams = Streams(self.seal, lambda: self.sent.digest(), lambda: self.received.digest(),
                               initiator=initiator)

    def seal(self, stream_id: int, message) -> Cell:
        body = encode_relay_body(message.COMMAND, stream_id, message.encode())
        self.sent.update(body)
        return Cell(1, Command.RELAY, body)

    def receive(self, cell: Cell):
        self.received.update(cell.payload)
        rc = decode_relay_body(cell.payload)
        return self.streams.receive(rc.stream_id, decode_msg(rc.command, rc.data, self.streams.receivable))


def pair() -> tuple[End, End]:
    """(origin side, exit side)."""
    return (End(initiator=True, send_seed=b"Df", receive_seed=b"Db"),
            End(initiator=False, send_seed=b"Db", receive_seed=b"Df"))


def deliver(to: End, cells: list[Cell], back: list[Cell] | None = None) -> list:
    events = []
    for cell in cells:
        evs, replies = to.receive(cell)
        events += evs
        if back is not None:
            back += replies
    return events


def opened(request=None):
    a, b = pair()
    sid, cell = a.streams.open(request or relay.Begin("example.com", 80))
    assert deliver(b, [cell]) == [StreamRequested(sid, request or relay.Begin("example.com", 80))]
    assert deliver(a, [b.streams.accept(sid, relay.Connected())]) == [StreamConnected(sid, relay.Connected())]
    return a, b, sid


def test_chunk_data():
    assert chunk_data(b"") == []
    assert chunk_data(bytes(498)) == [bytes(498)]
    assert [len(c) for c in chunk_data(bytes(1000))] == [498, 498, 4]
    assert chunk_data(b"abcde", 2) == [b"ab", b"cd", b"e"]
    for bad in (0, RELAY_DATA_MAX + 1):
        with pytest.raises(LocalProtocolError):
            chunk_data(b"x", bad)


def test_receivable_sets():
    begin, connected = relay.RelayCommand.BEGIN, relay.RelayCommand.CONNECTED
    assert begin not in INITIATOR_RECEIVES and connected in INITIATOR_RECEIVES
    assert begin in ACCEPTOR_RECEIVES and connected not in ACCEPTOR_RECEIVES


def test_circuit_window_sendme_v1():
    sender, receiver = CircuitWindow(), CircuitWindow()
    digests = iter(range(10_000))
    sent = []
    for _ in range(CIRCWINDOW_START):
        sender.packaged(lambda: sent.append(next(digests).to_bytes(20, "big")) or sent[-1])
    assert sender.package == 0 and len(sent) == CIRCWINDOW_START // CIRCWINDOW_INCREMENT
    with pytest.raises(LocalProtocolError):
        sender.packaged(lambda: bytes(20))
    due = [d for i in range(CIRCWINDOW_START)
           if (d := receiver.delivered(lambda i=i: i.to_bytes(20, "big"))) is not None]
    assert len(due) == 10 and receiver.deliver == CIRCWINDOW_START
    # The digest the sender recorded is the one it must get back, oldest first.
    sender.sendme_received(relay.Sendme(1, sent[0]))
    assert sender.package == CIRCWINDOW_INCREMENT
    with pytest.raises(CryptoError):
        sender.sendme_received(relay.Sendme(1, bytes(20)))
    with pytest.raises(UnexpectedMessage):
        sender.sendme_received(relay.Sendme(0))
    fresh = CircuitWindow()
    with pytest.raises(RemoteProtocolError):
        fresh.sendme_received(relay.Sendme(1, bytes(20)))  # nothing outstanding: would overflow 1000


def test_stream_window_and_sendmes():
    a, b, sid = opened()
    data = bytes(range(256)) * 1000
    sent = 0
    got = bytearray()
    sendmes = 0
    while sent < len(data):
        cap = a.streams.capacity(sid)
        assert cap % RELAY_DATA_MAX == 0 and cap > 0
        cells = a.streams.send(sid, data[sent:sent + cap])
        sent += cap
        replies = []
        got += b"".join(e.data for e in deliver(b, cells, replies))
        sendmes += len(replies)
        deliver(a, replies)
        assert a.streams.get(sid).package_window >= 0
    assert bytes(got) == data
    assert sendmes > 0 and a.streams.window.package > 0


def test_send_beyond_windows_is_local_error():
    a, b, sid = opened()
    with pytest.raises(LocalProtocolError):
        a.streams.send(sid, bytes(STREAMWINDOW_START * RELAY_DATA_MAX + 1))
    a.streams.send(sid, bytes(STREAMWINDOW_START * RELAY_DATA_MAX))
    assert a.streams.capacity(sid) == 0
    with pytest.raises(LocalProtocolError):
        a.streams.send(sid, b"x")


def test_local_misuse():
    a, b = pair()
    with pytest.raises(LocalProtocolError):
        b.streams.open(relay.BeginDir())  # only the initiator opens
    with pytest.raises(LocalProtocolError):
        a.streams.open(relay.Data(b"x"))
    sid, cell = a.streams.open(relay.BeginDir())
    with pytest.raises(LocalProtocolError):
        a.streams.send(sid, b"x")  # not before CONNECTED
    assert a.streams.capacity(sid) == 0
    with pytest.raises(LocalProtocolError):
        a.streams.accept(sid, relay.Connected())
    with pytest.raises(LocalProtocolError):
        a.streams.get(99)
    a.streams.end(sid)
    with pytest.raises(LocalProtocolError):
        a.streams.end(sid)


def test_remote_errors():
    a, b, sid = opened()
    with pytest.raises(UnexpectedMessage):
        a.streams.receive(sid, relay.Connected())  # second CONNECTED
    with pytest.raises(UnexpectedMessage):
        a.streams.receive(sid + 1, relay.Data(b"x"))  # unknown stream
    with pytest.raises(UnexpectedMessage):
        a.streams.receive(0, relay.Data(b"x"))  # DATA needs a stream
    with pytest.raises(UnexpectedMessage):
        b.streams.receive(sid, relay.Begin("example.com", 1))  # id in use
    with pytest.raises(UnexpectedMessage):
        b.streams.receive(0, relay.BeginDir())
    with pytest.raises(RemoteProtocolError):
        a.streams.receive(sid, relay.Sendme(0))  # stream window would pass 500
    with pytest.raises(UnexpectedMessage):
        a.streams.receive(sid + 1, relay.BeginDir())  # streams are opened by the origin only
    with pytest.raises(UnexpectedMessage):
        b.streams.receive(sid, relay.Connected())
    with pytest.raises(UnexpectedMessage):
        b.streams.receive(sid, relay.Drop())
    a2, b2 = pair()
    sid2, cell = a2.streams.open(relay.BeginDir())
    with pytest.raises(UnexpectedMessage):
        a2.streams.receive(sid2, relay.Data(b"x"))  # DATA before CONNECTED


def test_acceptor_takes_optimistic_data():
    a, b = pair()
    sid, cell = a.streams.open(relay.Begin("example.com", 80))
    deliver(b, [cell])
    assert b.streams.receive(sid, relay.Data(b"early"))[0] == [StreamData(sid, b"early")]


def test_end_states():
    a, b, sid = opened()
    end = a.streams.end(sid, relay.EndReason.DONE)
    assert a.streams.get(sid).state is StreamState.HALF_CLOSED
    late = b.streams.send(sid, bytes(600))
    assert deliver(b, [end]) == [StreamEnd(sid, relay.EndReason.DONE)]
    assert sid not in b.streams
    assert deliver(a, late) == []  # counted, not delivered
    assert a.streams.get(sid).deliver_window == STREAMWINDOW_START - 2
    # Half-closed: too much DATA is still a violation.
    a.streams.get(sid).deliver_window = 0
    with pytest.raises(RemoteProtocolError):
        a.streams.receive(sid, relay.Data(b"x"))
    # END after our END closes it for good.
    a, b, sid = opened()
    a.streams.end(sid)
    assert a.streams.receive(sid, relay.End(6)) == ([], [])
    assert sid not in a.streams


def test_end_before_connected():
    a, b = pair()
    sid, cell = a.streams.open(relay.BeginDir())
    a.streams.end(sid)
    assert a.streams.receive(sid, relay.Connected()) == ([], [])  # crossed our END: ignored
    with pytest.raises(UnexpectedMessage):
        a.streams.receive(sid, relay.Connected())


def test_stream_id_allocation_wraps_and_skips_used():
    a, _ = pair()
    a.streams._next_id = 0xFFFF
    first, _ = a.streams.open(relay.BeginDir())
    second, _ = a.streams.open(relay.BeginDir())
    assert (first, second) == (0xFFFF, 1)
    a.streams._next_id = 1
    assert a.streams.open(relay.BeginDir())[0] == 2


OPS = st.lists(st.tuples(st.sampled_from(["open", "up", "down", "deliver_a", "deliver_b", "end"]),
                         st.integers(0, 7), st.integers(0, 30_000)), max_size=50)


@given(OPS)
def test_random_stream_operations(ops):
    """Whatever the order of sends and deliveries, windows stay in range and every byte arrives in order."""
    a, b = pair()
    to_a: list[Cell] = []
    to_b: list[Cell] = []
    sent: dict[tuple[str, int], bytes] = {}
    got: dict[tuple[str, int], bytes] = {}

    def run(to: End, queue: list[Cell], n: int, direction: str, back: list[Cell]):
        batch = queue[:n]
        del queue[:n]
        for ev in deliver(to, batch, back):
            if isinstance(ev, StreamData):
                got[direction, ev.stream_id] = got.get((direction, ev.stream_id), b"") + ev.data
            elif isinstance(ev, StreamRequested):
                back.append(b.streams.accept(ev.stream_id, relay.Connected()))

    for op, k, n in ops:
        ids = [s for s in a.streams._streams if a.streams.get(s).state is StreamState.OPEN]
        if op == "open":
            to_b.append(a.streams.open(relay.BeginDir())[1])
        elif op == "up" and ids:
            sid = ids[k % len(ids)]
            data = bytes([k]) * min(n, a.streams.capacity(sid))
            to_b += a.streams.send(sid, data)
            sent["up", sid] = sent.get(("up", sid), b"") + data
        elif op == "down" and ids:
            sid = ids[k % len(ids)]
            if sid in b.streams and b.streams.get(sid).state is StreamState.OPEN:
                data = bytes([k + 100]) * min(n, b.streams.capacity(sid))
                to_a += b.streams.send(sid, data)
                sent["down", sid] = sent.get(("down", sid), b"") + data
        elif op == "deliver_a":
            run(a, to_a, k * 40, "down", to_b)
        elif op == "deliver_b":
            run(b, to_b, k * 40, "up", to_a)
        elif op == "end" and ids:
            sid = ids[k % len(ids)]
            to_b.append(a.streams.end(sid))
            sent.pop(("up", sid), None)
            sent.pop(("down", sid), None)
        for side in (a, b):
            assert 0 <= side.streams.window.package <= CIRCWINDOW_START
            for s in side.streams._streams.values():
                assert 0 <= s.package_window <= STREAMWINDOW_START
    while to_a or to_b:
        run(b, to_b, len(to_b), "up", to_a)
        run(a, to_a, len(to_a), "down", to_b)
    for key, data in sent.items():
        assert got.get(key, b"") == data


@given(st.lists(st.integers(1, 140), min_size=1, max_size=14))
def test_take_data_run_counts_a_run_as_receive_data_does_cell_by_cell(runs):
    """Runs of DATA counted at once (the bulk path) leave the same windows and make the same SENDMEs,
    digests included, in order, as receive_data on each cell (SENDMEs go back; the sender goes on)."""
    a, b, sid = opened()  # cell by cell
    c, d, sid_c = opened()  # in runs
    assert sid == sid_c
    for run in runs:
        count = min(run, b.streams.capacity(sid) // RELAY_DATA_MAX)
        if not count:
            continue
        data = bytes(range(256)) * 2
        cells = b.streams.send(sid, data[:RELAY_DATA_MAX] * count)
        assert d.streams.send(sid, data[:RELAY_DATA_MAX] * count) == cells
        expected = []
        deliver(a, cells, expected)
        snapshots = []
        for cell in cells:  # the received digest right after each cell, as relay crypto keeps it
            c.received.update(cell.payload)
            snapshots.append(c.received.copy())
        final = c.received

        def after(i: int, snapshots=snapshots) -> None:
            c.received = snapshots[i]

        replies: list[Cell] = []
        assert c.streams.take_data_run(sid, len(cells), after, replies) == len(cells)
        c.received = final
        assert replies == expected
        stream_a, stream_c = a.streams.get(sid), c.streams.get(sid)
        assert (a.streams.window.deliver, stream_a.deliver_window) == (
            c.streams.window.deliver, stream_c.deliver_window)
        deliver(b, expected)
        deliver(d, replies)


def test_take_data_run_takes_nothing_from_a_stream_receive_data_refuses():
    a, b, sid = opened()
    assert a.streams.take_data_run(sid + 1, 3, lambda i: None, []) == 0  # unknown
    a.streams.end(sid, relay.EndReason.DONE)
    assert a.streams.take_data_run(sid, 3, lambda i: None, []) == 0  # half-closed
    origin, _exit = pair()
    sid, _ = origin.streams.open(relay.Begin("example.com", 80))
    assert origin.streams.take_data_run(sid, 3, lambda i: None, []) == 0  # not connected yet
