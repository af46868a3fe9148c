"""The bulk path's shortcuts. DATA skips the message table on both circuit ends (OriginCircuit._receive_relay
and an exit's RelayCircuit._forward): it must refuse exactly what the full path refuses, and leave the
circuit FAILED when it does. encode_cells is encode_cell joined, errors included."""

import struct

import pytest

from nodes.core import relay
from nodes.core.cells import Cell, Command, encode_cell, encode_cells
from nodes.core.circuit import CircuitState, RelayState, StreamData
from nodes.core.errors import DecodeError, LocalProtocolError, UnexpectedMessage
from nodes.core.relay import decode_data_body, decode_relay_body
from tests.unit.test_circuit import Harness, open_stream


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
