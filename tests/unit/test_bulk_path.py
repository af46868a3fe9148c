"""The bulk path's shortcuts. DATA skips the message table on both circuit ends (OriginCircuit._receive_relay
and an exit's RelayCircuit._forward): it must refuse exactly what the full path refuses, and leave the
circuit FAILED when it does. encode_cells is encode_cell joined, errors included."""

import struct

import pytest

from nodes.core import relay
from nodes.core.cells import Cell, Command, encode_cell, encode_cells
from nodes.core.circuit import CircuitState, RelayState, SendCell, SendForward, SendJoined, StreamData
from nodes.core.errors import CryptoError, DecodeError, LocalProtocolError, UnexpectedMessage
from nodes.core.relay import decode_data_body, decode_relay_body
from tests.unit.test_circuit import Harness, open_stream, rendezvous


def _to_origin(h: Harness, o, exit_, body_cell: Cell) -> list:
    """A cell the exit made, carried back through the relays, fed to the origin."""
    h.backward(exit_, body_cell)
    (pending,) = h.to_origin
    h.to_origin.clear()
    return o.receive_cell(pending[1])


def _raw_data_body(stream_id: int, length: int) -> bytes:
    return struct.pack(">BHHIH", relay.RelayCommand.DATA, 0, stream_id, 0, length) + bytes(498)


def test_decode_data_body_matches_the_full_decoder():
    body = relay.encode_relay_body(relay.RelayCommand.DATA, 7, b"hello")
    full = decode_relay_body(body)
    assert decode_data_body(body) == (full.stream_id, full.data) == (7, b"hello")
    with pytest.raises(DecodeError):
        decode_data_body(_raw_data_body(7, 499))
    with pytest.raises(DecodeError):
        decode_data_body(body[:-1])


def test_origin_takes_data_and_refuses_what_the_full_path_refuses():
    h = Harness()
    o = h.origin([0, 1, 2])
    sid, exit_ = open_stream(h, o)
    assert _to_origin(h, o, exit_, exit_._send_back(relay.Data(b"abc"), sid)) == [StreamData(sid, b"abc")]

    bad_cells = {  # each made by the exit of a fresh circuit (relay crypto state is per circuit)
        "unknown stream": (lambda x, s: x._send_back(relay.Data(b"x"), s + 1), UnexpectedMessage),
        "no stream id": (lambda x, s: x._send_back(relay.Data(b"x"), 0), UnexpectedMessage),
        "over-long": (lambda x, s: Cell(x.circ_id, Command.RELAY,
                                        x._layer.encrypt_backward_originated(_raw_data_body(s, 499))),
                      DecodeError),
    }
    for make, error in bad_cells.values():
        h = Harness()
        o = h.origin([0, 1, 2])
        sid, exit_ = open_stream(h, o)
        with pytest.raises(error):
            _to_origin(h, o, exit_, make(exit_, sid))
        assert o.state is CircuitState.FAILED


def test_origin_refuses_data_before_connected():
    h = Harness()
    o = h.origin([0, 1, 2])
    sid, cell = o.open_stream(relay.Begin("example.com", 80))
    h.send(o, cell)
    h.pump()
    exit_ = h.chain(o)[-1]
    with pytest.raises(UnexpectedMessage, match="before CONNECTED"):
        _to_origin(h, o, exit_, exit_._send_back(relay.Data(b"x"), sid))
    assert o.state is CircuitState.FAILED


def test_exit_takes_data_and_refuses_an_unknown_stream():
    h = Harness()
    o = h.origin([0, 1, 2])
    sid, exit_ = open_stream(h, o)
    h.send(o, *o.send_data(sid, b"up"))
    h.pump()
    assert h.take_actions(StreamData) == [StreamData(sid, b"up")]
    assert exit_.state is RelayState.EXIT
    o._streams._streams[sid + 1] = o._streams._streams[sid]  # let the origin send on a stream the exit lacks
    h.send(o, *o.send_data(sid + 1, b"x"))
    with pytest.raises(UnexpectedMessage, match="unknown stream"):
        h.pump()
    assert exit_.state is RelayState.FAILED


def test_encode_cells_is_encode_cell_joined():
    cells = [Cell(0x80000001, Command.RELAY, bytes(range(200)) * 2 + bytes(109)),
             Cell(5, Command.CREATE2, b"\x00\x02\x00\x54" + bytes(84)),  # short: padded
             Cell(0, Command.VPADDING, b"var"),  # variable-length
             Cell(7, Command.DESTROY, b"\x03"),
             Cell(0xFFFFFFFF, Command.RELAY_EARLY, bytes([9]) * 509)]
    assert encode_cells(cells) == b"".join(encode_cell(c) for c in cells)
    assert encode_cells([]) == b""
    for bad in (Cell(1 << 32, Command.RELAY, bytes(509)), Cell(1, 200, bytes(509)),
                Cell(1, Command.RELAY, bytes(510))):
        with pytest.raises(LocalProtocolError):
            encode_cells([bad])


# -- the relays' bulk paths: pass_on_run and relay_backward_run give what receive_forward and
# receive_backward give cell by cell, with a cell for the relay itself (or another command) anywhere


def _passed(actions: list) -> list:
    return [a.cell if isinstance(a, SendForward | SendJoined) else a for a in actions]


def _forward_each(circuit, cells: list[Cell]) -> list:
    return [out for cell in cells for out in _passed(circuit.receive_forward(cell))]


def _forward_runs(circuit, cells: list[Cell]) -> list:
    out, i = [], 0
    while i < len(cells):
        passed, taken = circuit.pass_on_run(cells[i:])
        out += passed
        i += taken
        if i < len(cells):
            out += _passed(circuit.receive_forward(cells[i]))
            i += 1
    return out


def _forward_each_noting_errors(circuit, cells: list[Cell], runs: bool) -> list:
    """Like _forward_each (or, with `runs`, _forward_runs), going on past a protocol error as the relay
    engine's caller would see it: the error's kind in the output, later cells fed all the same."""
    out, i = [], 0
    while i < len(cells):
        if runs:
            passed, taken = circuit.pass_on_run(cells[i:])
            out += passed
            i += taken
            if i == len(cells):
                break
        try:
            out += _passed(circuit.receive_forward(cells[i]))
        except UnexpectedMessage as e:
            out.append(e.kind)
        i += 1
    return out


def test_pass_on_run_after_a_cell_that_fails_the_circuit_in_a_run():
    """One keystream call unlayers a whole run, so cells after one that fails the circuit were unlayered
    ahead: they are dropped as cell by cell (the circuit is FAILED), not refused as out of order."""
    def setup(h: Harness):
        o = h.origin([0, 1, 2])
        cells = [o.send_relay(relay.Drop(), hop=2) for _ in range(10)]
        cells.append(o._seal(0, 0, relay.Begin("example.com", 80)))  # BEGIN at a middle relay: refused
        cells += [o.send_relay(relay.Drop(), hop=2) for _ in range(5)]
        return h.first_circ[o], cells

    (a, cells_a), (b, cells_b) = setup(Harness(seed=9)), setup(Harness(seed=9))
    expected = _forward_each_noting_errors(a, cells_a, runs=False)
    assert expected.count("unexpected") == 1 and len(expected) == 11
    assert _forward_each_noting_errors(b, cells_b, runs=True) == expected
    assert a.state is b.state is RelayState.FAILED and not b._unlayered


def _middle_cells(h: Harness):
    """A 3-hop circuit's first relay (EXTENDED) and cells for it: DROPs for hop 2 (passed on), DROPs for
    hop 0 itself (recognized there) among them, and a DESTROY last."""
    o = h.origin([0, 1, 2])
    cells = [o.send_relay(relay.Drop(), hop=0 if i in (0, 7, 8, 30) else 2) for i in range(40)]
    return h.first_circ[o], [*cells, o.destroy()]


def test_pass_on_run_matches_receive_forward_on_a_middle_relay():
    reference, bulk = Harness(seed=3), Harness(seed=3)
    (circuit_a, cells_a), (circuit_b, cells_b) = _middle_cells(reference), _middle_cells(bulk)
    assert cells_a == cells_b
    expected = _forward_each(circuit_a, cells_a)
    relayed = (Command.RELAY, Command.RELAY_EARLY)
    assert sum(isinstance(x, Cell) and x.command in relayed for x in expected) == 36
    assert _forward_runs(circuit_b, cells_b) == expected
    assert circuit_b.state is circuit_a.state is RelayState.DESTROYED


def _joined_cells(h: Harness):
    client, service, rp_client, rp_service = rendezvous(h)
    stream_id, cell = client.open_stream(relay.Begin("", 80))
    h.send(client, cell)
    h.pump()
    h.send(service, service.accept_stream(stream_id))
    h.pump()
    cells = [*service.send_data(stream_id, bytes(range(256)) * 10),
             service.send_relay(relay.Drop(), hop=2),  # for the rendezvous point itself
             *service.send_data(stream_id, bytes(range(256)) * 30)]
    arriving = []  # the service's cells as the rendezvous point gets them: through the service's relays
    for cell in cells:
        for middle in h.chain(service)[:-1]:
            (action,) = middle.receive_forward(cell)
            cell = action.cell
        arriving.append(cell)
    return rp_service, arriving


def test_pass_on_run_matches_receive_forward_on_a_rendezvous_point():
    reference, bulk = Harness(seed=4), Harness(seed=4)
    (rp_a, cells_a), (rp_b, cells_b) = _joined_cells(reference), _joined_cells(bulk)
    expected = _forward_each(rp_a, cells_a)
    assert len(expected) == len(cells_a) - 1  # the DROP was for the rendezvous point: nothing to pass on
    assert _forward_runs(rp_b, cells_b) == expected


def test_relay_backward_run_matches_receive_backward():
    def setup(h: Harness):
        o = h.origin([0, 1, 2])
        middle, last = h.chain(o)[1], h.chain(o)[2]
        cells = [Cell(middle.next_circ_id, Command.RELAY, last.originate(relay.Drop()).payload)
                 for _ in range(20)]
        return middle, [*cells[:10], Cell(middle.next_circ_id, Command.DESTROY, bytes(509)), *cells[10:]]

    (a, cells_a), (b, cells_b) = setup(Harness(seed=5)), setup(Harness(seed=5))
    expected = [a.receive_backward(cell) for cell in cells_a]
    got, i = [], 0
    while i < len(cells_b):
        passed, taken = b.relay_backward_run(cells_b[i:])
        got += passed
        i += taken
        if i < len(cells_b):
            got.append(b.receive_backward(cells_b[i]))
            i += 1
    assert got == expected and got[10].command == Command.DESTROY and got[11:] == [None] * 10


def test_pass_on_run_leaves_a_cell_that_may_be_for_the_relay_to_receive_forward():
    h = Harness(seed=6)
    o = h.origin([0, 1, 2])
    circuit = h.first_circ[o]
    for _ in range(6):  # the origin's RELAY_EARLY cells: pass_on_run leaves those to receive_forward too
        early = o.send_relay(relay.Drop(), hop=2)
        assert early.command == Command.RELAY_EARLY and circuit.pass_on_run([early]) == ([], 0)
        circuit.receive_forward(early)
    mine, onward = o.send_relay(relay.Drop(), hop=0), o.send_relay(relay.Drop(), hop=2)
    assert circuit.pass_on_run([mine, onward]) == ([], 0)
    with pytest.raises(LocalProtocolError):
        circuit.receive_forward(onward)  # not the cell whose layer pass_on_run removed
    assert circuit.receive_forward(mine) == []  # a DROP for this relay
    passed, taken = circuit.pass_on_run([onward])
    assert taken == 1 and passed[0].circ_id == circuit.next_circ_id


def _service_data(h: Harness, batched: bool, n: int):
    client, service, _, _ = rendezvous(h)
    stream_id, cell = client.open_stream(relay.Begin("", 80))
    h.send(client, cell)
    h.pump()
    h.send(service, service.accept_stream(stream_id))
    h.pump()
    if not batched:
        service._streams._seal_data = None  # the reference: _seal on each cell
    cells = []
    for size in (5, 498 * 3 + 1, n):  # the first cells still ride RELAY_EARLY past hop 0 (cell by cell)
        cells += service.send_data(stream_id, bytes(range(256)) * (size // 256) + bytes(size % 256))
    window = service._streams.window
    return cells, (window.package, list(window._expected), service._streams.get(stream_id).package_window)


def test_an_origin_seals_data_in_batches_as_it_would_cell_by_cell():
    """OriginCircuit._seal_data (one keystream call per layer) makes the same cells as _seal on each, and
    the windows and the SENDME v1 digests they expect come out the same."""
    n = 498 * 250  # past two SENDME increments of the circuit window
    reference, batched = _service_data(Harness(seed=5), False, n), _service_data(Harness(seed=5), True, n)
    assert len(reference[0]) == 1 + 4 + 250
    assert batched == reference
    assert {c.command for c in reference[0]} == {Command.RELAY, Command.RELAY_EARLY}


def _exit_cells(h: Harness):
    """An origin with a stream at its exit, and what the exit and the middle relay then send it: 260 DATA
    cells (circuit and stream SENDMEs fall due), a DROP from the middle relay among them, an END last."""
    o = h.origin([0, 1, 2])
    sid, exit_ = open_stream(h, o)
    middle = h.chain(o)[1]
    data = bytes(range(256)) * 600
    h.relay_send(exit_, *exit_.send_data(sid, data[:498 * 130]))
    h.relay_send(middle, middle.originate(relay.Drop()))
    h.relay_send(exit_, *exit_.send_data(sid, data[498 * 130:498 * 260]), exit_.end_stream(sid))
    cells = [cell for _, cell in h.to_origin]
    h.to_origin.clear()
    return o, cells


def test_decrypt_ahead_then_receive_cell_matches_receive_cell_alone():
    """The layers of a run of cells removed at once (one keystream call per layer): the same events as
    cell by cell, SENDME v1 cells included (each echoes the digest right after the cell that made it due,
    not the running digest at the end of the run)."""
    (a, cells_a), (b, cells_b) = _exit_cells(Harness(seed=7)), _exit_cells(Harness(seed=7))
    assert [c.payload for c in cells_a] == [c.payload for c in cells_b]
    expected = [e for cell in cells_a for e in a.receive_cell(cell)]
    assert b.decrypt_ahead(cells_b) == len(cells_b) == 262
    with pytest.raises(LocalProtocolError):
        b.receive_cell(cells_b[1])  # not the next cell decrypt_ahead took
    got = [e for cell in cells_b for e in b.receive_cell(cell)]
    assert got == expected
    sendmes = [e for e in got if isinstance(e, SendCell)]
    assert len(sendmes) == 2 + 5  # circuit SENDMEs at 100 and 200 DATA cells, stream ones every 50
    assert b.decrypt_ahead([]) == 0 and not b._ahead


def test_decrypt_ahead_takes_the_leading_relay_cells_and_nothing_after_a_failure():
    h = Harness(seed=8)
    o, cells = _exit_cells(h)
    destroy = Cell(o.circ_id, Command.DESTROY, bytes(509))
    assert o.decrypt_ahead([*cells[:3], destroy, *cells[3:]]) == 3
    o.receive_cell(cells[0])
    forged = Cell(o.circ_id, Command.RELAY, bytes(509))
    with pytest.raises(LocalProtocolError):
        o.receive_cell(forged)
    for cell in cells[1:3]:
        o.receive_cell(cell)
    assert o.decrypt_ahead([forged, *cells[3:]]) == len(cells) - 2
    with pytest.raises(CryptoError):  # a cell no hop recognizes fails the circuit, as cell by cell
        o.receive_cell(forged)
    assert o.state is CircuitState.FAILED
    assert o.receive_cell(cells[3]) == [] and o.decrypt_ahead(cells[4:]) == 0


def _receive_with_runs(o, cells: list[Cell]) -> tuple[list, list, list]:
    """As circuits.py feeds a batch: decrypt_ahead, then receive_data_run, and receive_cell where a run
    ends. (data chunks, cells to send, other events), each in order."""
    data, sent, other = [], [], []
    o.decrypt_ahead(cells)
    i = 0
    while i < len(cells):
        taken, stream_id, run, replies = o.receive_data_run(cells[i:])
        if taken:
            data += [(stream_id, chunk) for chunk in run]
            sent += replies
            i += taken
            continue
        for event in o.receive_cell(cells[i]):
            if isinstance(event, StreamData):
                data.append((event.stream_id, event.data))
            elif isinstance(event, SendCell):
                sent.append(event.cell)
            else:
                other.append(event)
        i += 1
    return data, sent, other


def test_receive_data_run_matches_receive_cell():
    """The same data, SENDME cells (digests included) and other events as receive_cell on each cell."""
    (a, cells_a), (b, cells_b) = _exit_cells(Harness(seed=7)), _exit_cells(Harness(seed=7))
    events = [e for cell in cells_a for e in a.receive_cell(cell)]
    expected = ([(e.stream_id, e.data) for e in events if isinstance(e, StreamData)],
                [e.cell for e in events if isinstance(e, SendCell)],
                [e for e in events if not isinstance(e, StreamData | SendCell)])
    got = _receive_with_runs(b, cells_b)
    assert got == expected
    assert len(got[0]) == 260 and len(got[1]) == 7 and len(got[2]) == 1  # the END


def test_receive_data_run_leaves_what_receive_cell_refuses_to_it():
    h = Harness(seed=8)
    o = h.origin([0, 1, 2])
    sid, cell = o.open_stream(relay.Begin("example.com", 80))
    h.send(o, cell)
    h.pump()
    exit_ = h.chain(o)[-1]
    h.relay_send(exit_, exit_._send_back(relay.Data(b"too early"), sid))  # before CONNECTED
    (pending,) = [c for _, c in h.to_origin]
    assert o.decrypt_ahead([pending]) == 1
    assert o.receive_data_run([pending]) == (0, 0, [], [])
    with pytest.raises(UnexpectedMessage, match="before CONNECTED"):
        o.receive_cell(pending)
    assert o.state is CircuitState.FAILED and o.receive_data_run([pending]) == (0, 0, [], [])


def test_an_origin_refuses_an_over_long_data_chunk_before_sealing_any():
    h = Harness(seed=6)
    client, service, _, _ = rendezvous(h)
    stream_id, cell = client.open_stream(relay.Begin("", 80))
    h.send(client, cell)
    h.pump()
    h.send(service, service.accept_stream(stream_id))
    h.send(service, *service.send_data(stream_id, bytes(498 * 8)))  # past the cells that ride RELAY_EARLY
    h.pump()
    assert len(h.take_events(client, StreamData)) == 8
    counted = []
    with pytest.raises(LocalProtocolError):
        service._seal_data(3, stream_id, [b"ok", bytes(499)], lambda: counted.append(1))
    assert counted == []
    h.send(service, *service.send_data(stream_id, b"after"))  # the keystreams and digests did not move
    h.pump()
    assert h.take_events(client, StreamData) == [StreamData(stream_id, b"after")]
