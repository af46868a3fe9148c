"""Circuit state machines fed mutated cells.

Each input is a run of 514-byte cells (link protocol 4 framing; the CircID is replaced by the circuit's own,
as the channel layer routes by it). Every case starts from a freshly set-up circuit whose keys come from a
fixed RNG, so the seeds (cells a real peer would send next) decrypt and parse, and their mutations reach deep
states.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from nodes.core import relay
from nodes.core.cells import Cell, CellFramer, Command, Created2, Destroy, DestroyReason, encode_cell
from nodes.core.circuit import HopSpec, OriginCircuit, RelayCircuit
from tests.fuzz.driver import Target

CIRC_ID = 0x80000001
NEXT_CIRC_ID = 5
NODE_ID = bytes(range(20))
ONION_SECRET = bytes(range(32, 64))
SPEC = HopSpec("192.0.2.7", 9001, NODE_ID, bytes(32),
               X25519PrivateKey.from_private_bytes(ONION_SECRET).public_key().public_bytes_raw())


def _rng(n: int) -> bytes:
    return bytes(i * 7 % 251 for i in range(n))


def _origin() -> tuple[OriginCircuit, Cell]:
    """An origin that sent CREATE2 (same ephemeral key every time), and that CREATE2."""
    origin = OriginCircuit(CIRC_ID, _rng, path_len=1)
    return origin, origin.create(SPEC)


def _relay(create: Cell) -> tuple[RelayCircuit, Cell]:
    return RelayCircuit.accept(create, node_id=NODE_ID, onion_secret=ONION_SECRET, rng=_rng)


def _fast_origin() -> tuple[OriginCircuit, Cell]:
    """An origin that sent CREATE_FAST (the same X every time), and that CREATE_FAST."""
    origin = OriginCircuit(CIRC_ID, _rng, path_len=1)
    return origin, origin.create_fast()


def _pair(*, fast: bool = False) -> tuple[OriginCircuit, RelayCircuit]:
    origin, create = _fast_origin() if fast else _origin()
    circ, created = _relay(create)
    origin.receive_cell(created)
    return origin, circ


def _feed(data: bytes, circ_id: int, receive) -> None:
    for cell in CellFramer().feed(data):
        receive(Cell(circ_id, cell.command, cell.payload))


def _wire(*cells: Cell) -> bytes:
    return b"".join(encode_cell(c) for c in cells)


def _destroy() -> Cell:
    return Cell(CIRC_ID, Command.DESTROY, Destroy(DestroyReason.FINISHED).encode())


# --- RelayCircuit.receive_forward: a relay at the end of a fresh circuit


def _relay_forward_seeds(*, fast: bool = False) -> tuple[bytes, ...]:
    def early(cell: Cell) -> Cell:
        return Cell(cell.circ_id, Command.RELAY_EARLY, cell.payload)

    seeds = []
    scripts = [
        lambda o: [early(o._seal(0, 0, relay.Extend2(SPEC.link_specs(), 2, bytes(84))))],
        lambda o: [o._seal(0, 2, relay.BeginDir()), o._seal(0, 2, relay.Data(bytes(498)))],
        lambda o: [o.send_relay(relay.EstablishIntro(2, bytes(32), (), bytes(32), bytes(64)))],
        lambda o: [o.send_relay(relay.Rendezvous1(bytes(20), bytes(64)))],
        lambda o: [o.send_relay(relay.Drop()), o._seal(0, 0, relay.Truncate()), _destroy()],
    ]
    if not fast:  # a CREATE_FAST circuit refuses these (RELAY_TRANSITIONS_CREATE_FAST)
        scripts += [
            lambda o: [o._seal(0, 1, relay.Begin("example.com", 80)),
                       o._seal(0, 1, relay.Data(b"optimistic")), o._seal(0, 1, relay.End(6))],
            lambda o: [o.send_relay(relay.Introduce1(bytes(20), 2, bytes(32), (), bytes(100)))],
            lambda o: [o.send_relay(relay.EstablishRendezvous(bytes(20)))],
        ]
    for script in scripts:
        origin, _ = _pair(fast=fast)
        seeds.append(_wire(*script(origin)))
    return tuple(seeds)


def relay_forward(data: bytes) -> None:
    circ, _ = _relay(_origin()[1])
    _feed(data, CIRC_ID, circ.receive_forward)


def relay_forward_fast(data: bytes) -> None:
    """The same on a circuit created with CREATE_FAST (a first hop, with its own transition table)."""
    circ, _ = _relay(_fast_origin()[1])
    _feed(data, CIRC_ID, circ.receive_forward)


# --- RelayCircuit.accept: the cell that opens a circuit (CREATE2, CREATE_FAST, anything else)


def relay_accept(data: bytes) -> None:
    for cell in CellFramer().feed(data):
        _relay(cell)


# --- RelayCircuit.receive_backward: a middle relay that has extended


def _extended_relay() -> tuple[OriginCircuit, RelayCircuit]:
    origin, circ = _pair()
    cell = origin._seal(0, 0, relay.Extend2(SPEC.link_specs(), 2, bytes(84)))
    circ.receive_forward(Cell(cell.circ_id, Command.RELAY_EARLY, cell.payload))
    circ.create_next(NEXT_CIRC_ID)
    circ.extended(Cell(NEXT_CIRC_ID, Command.CREATED2, Created2(bytes(64)).encode()))
    return origin, circ


def relay_backward(data: bytes) -> None:
    _, circ = _extended_relay()
    _feed(data, NEXT_CIRC_ID, circ.receive_backward)


RELAY_BACKWARD_SEEDS = (
    _wire(Cell(NEXT_CIRC_ID, Command.RELAY, bytes(range(256)) + bytes(253))),
    _wire(Cell(NEXT_CIRC_ID, Command.RELAY, bytes(509)), Cell(NEXT_CIRC_ID, Command.DESTROY, b"\x01")),
)


# --- OriginCircuit.receive_cell


def origin_building(data: bytes) -> None:
    origin, _ = _origin()
    _feed(data, CIRC_ID, origin.receive_cell)


def origin_building_fast(data: bytes) -> None:
    origin, _ = _fast_origin()
    _feed(data, CIRC_ID, origin.receive_cell)


def _origin_with_stream() -> tuple[OriginCircuit, RelayCircuit, int]:
    origin, circ = _pair()
    sid, begin = origin.open_stream(relay.Begin("example.com", 443))
    circ.receive_forward(begin)
    return origin, circ, sid


def _origin_open_seeds() -> tuple[bytes, ...]:
    scripts = [
        lambda c, sid: [c.accept_stream(sid), *c.send_data(sid, bytes(range(256)) * 3), c.end_stream(sid)],
        lambda c, sid: [c.end_stream(sid, relay.EndReason.EXITPOLICY)],
        lambda c, sid: [c.originate(relay.Drop()), c._send_back(relay.Truncated(DestroyReason.HIBERNATING))],
        lambda c, sid: [_destroy()],
    ]
    seeds = []
    for script in scripts:
        _, circ, sid = _origin_with_stream()
        seeds.append(_wire(*script(circ, sid)))
    return tuple(seeds)


def origin_open(data: bytes) -> None:
    origin, _, _ = _origin_with_stream()
    _feed(data, CIRC_ID, origin.receive_cell)


TARGETS = [
    Target("circuit_relay_forward", relay_forward, _relay_forward_seeds()),
    Target("circuit_relay_forward_fast", relay_forward_fast, _relay_forward_seeds(fast=True)),
    Target("circuit_relay_accept", relay_accept, (_wire(_origin()[1]), _wire(_fast_origin()[1]))),
    Target("circuit_relay_backward", relay_backward, RELAY_BACKWARD_SEEDS),
    Target("circuit_origin_building", origin_building, (_wire(_relay(_origin()[1])[1]),)),
    Target("circuit_origin_building_fast", origin_building_fast, (_wire(_relay(_fast_origin()[1])[1]),)),
    Target("circuit_origin_open", origin_open, _origin_open_seeds()),
]
