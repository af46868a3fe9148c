"""Circuit state machines (tor-spec 5-7, rend-spec-v3 3-4), sans-I/O in the shape of h11.

Feed a cell in, get a list of events (origin) or actions (relay) out; every cell to send comes back as a value
and nothing here touches a socket or a clock. Each state accepts only the messages legal in it (the tables
below). Any other cell raises a RemoteProtocolError subclass and leaves the circuit FAILED: the caller then
calls destroy() to get the DESTROY cell(s) to send. Calls our own code makes at the wrong time raise
LocalProtocolError and change nothing.

OriginCircuit   the circuit builder: a client, or an onion service (intro and rendezvous circuits).
RelayCircuit    one relay's view of one circuit (one per (link, circ_id)): a middle hop, or the exit,
                directory, intro point or rendezvous point at its end.
Hops are built with ntor (CREATE2 / EXTEND2 handshake type 2); the first hop may instead use CREATE_FAST
(tor-spec 5.1.5), as a C tor client does while it knows no onion key for that relay.
Streams and the circuit-level flow-control windows live in nodes.core.stream.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from . import relay
from .cells import Cell, Command, Create2, Created2, CreatedFast, CreateFast, Destroy, DestroyReason
from .create_fast import (
    HASH_LEN,
    FastClientState,
    fast_client_finish,
    fast_client_start,
    fast_server_handshake,
)
from .errors import CryptoError, DecodeError, LocalProtocolError, RemoteProtocolError, UnexpectedMessage
from .ntor import NtorClientState, ntor_client_finish, ntor_client_start, ntor_server_handshake
from .relay import (
    RELAY_DATA_MAX,
    RELAY_HEADER_LEN,
    EndReason,
    RelayCommand,
    decode_data_body,
    decode_msg,
    decode_relay_body,
    encode_relay_body,
)
from .relay_crypto import BODY_LEN, SENDME_DIGEST_LEN, HopCrypto, OriginCrypto, RelayLayer
from .stream import (
    CircuitWindow,
    Stream,
    StreamConnected,
    StreamData,
    StreamEnd,
    StreamEvent,
    StreamRequested,
    Streams,
)

__all__ = [
    "MAX_RELAY_EARLY", "NTOR_HTYPE", "RELAY_ORIGINATES", "RELAY_TRANSITIONS", "RELAY_TRANSITIONS_CREATE_FAST",
    "CircuitReady", "CircuitState", "Deliver", "Destroyed", "ExtendRequest", "HopAdded", "HopSpec",
    "IntroEstablished", "Introduce2", "IntroduceAck", "OriginCircuit", "OriginEvent", "RelayAction",
    "RelayCircuit", "RelayState", "Rendezvous2", "RendezvousEstablished", "SendBackward", "SendCell",
    "SendForward", "SendJoined", "StreamConnected", "StreamData", "StreamEnd", "StreamRequested", "Truncated",
]

Rng = Callable[[int], bytes]

NTOR_HTYPE = 2
# Handshake types an EXTEND2 must not carry: TAP (retired) and the number C tor gives CREATE_FAST, which
# tor-spec 5.1.5 allows for the first hop only, in a CREATE_FAST cell.
_EXTEND2_REFUSED_HTYPES = {0: "TAP", 1: "CREATE_FAST"}
# Key material Df Db Kf Kb | KH, from ntor or CREATE_FAST: KH keys ESTABLISH_INTRO's HANDSHAKE_AUTH
_KH = slice(72, 92)
MAX_RELAY_EARLY = 8  # tor-spec 5.6: per circuit, counted by every relay; EXTEND2 must travel in one
_RELAY_COMMANDS = frozenset((Command.RELAY, Command.RELAY_EARLY))
_C = RelayCommand


def _destroy_cell(circ_id: int, reason: int) -> Cell:
    return Cell(circ_id, Command.DESTROY, Destroy(reason).encode())


def _check_circ_id(circ_id: int) -> None:
    if not 0 < circ_id <= 0xFFFFFFFF:
        raise LocalProtocolError(f"circuit id {circ_id} must be 1..2**32-1 (0 is reserved)")


# --- events (origin) and actions (relay)


@dataclass(frozen=True, slots=True)
class HopAdded:
    hop_index: int


@dataclass(frozen=True, slots=True)
class CircuitReady:
    hop_count: int


@dataclass(frozen=True, slots=True)
class IntroEstablished:
    message: relay.IntroEstablished


@dataclass(frozen=True, slots=True)
class IntroduceAck:
    message: relay.IntroduceAck


@dataclass(frozen=True, slots=True)
class RendezvousEstablished:
    message: relay.RendezvousEstablished


@dataclass(frozen=True, slots=True)
class Rendezvous2:
    message: relay.Rendezvous2


@dataclass(frozen=True, slots=True)
class Introduce2:
    message: relay.Introduce2


@dataclass(frozen=True, slots=True)
class Truncated:
    """Hops after `hop_index` are gone. Tor does not reuse truncated circuits: destroy() it."""

    hop_index: int
    reason: int


@dataclass(frozen=True, slots=True)
class Destroyed:
    """The peer destroyed the circuit; send nothing more on it (not even a DESTROY)."""

    reason: int


@dataclass(frozen=True, slots=True)
class SendCell:
    """A cell the origin must send on its link as a result of receiving (a SENDME)."""

    cell: Cell


@dataclass(frozen=True, slots=True)
class Deliver:
    """A recognized onion-service request for this relay to act on (ESTABLISH_INTRO, INTRODUCE1, ...)."""

    message: object


@dataclass(frozen=True, slots=True)
class ExtendRequest:
    """EXTEND2: connect to the relay the link specifiers name (checking its identities), pick a circuit id
    there and send `create_next(circ_id)`; or destroy() with CONNECTFAILED / OR_IDENTITY."""

    link_specs: tuple[relay.LinkSpec, ...]
    create2: Create2


@dataclass(frozen=True, slots=True)
class SendForward:
    """Send on the link to the next hop."""

    cell: Cell


@dataclass(frozen=True, slots=True)
class SendBackward:
    """Send on the link towards the origin."""

    cell: Cell


@dataclass(frozen=True, slots=True)
class SendJoined:
    """Send on the link towards the origin of the joined rendezvous circuit (`RelayCircuit.joined`)."""

    cell: Cell


OriginEvent = (HopAdded | CircuitReady | StreamEvent | IntroEstablished | IntroduceAck | RendezvousEstablished
               | Rendezvous2 | Introduce2 | Truncated | Destroyed | SendCell)
RelayAction = Deliver | ExtendRequest | StreamEvent | SendForward | SendBackward | SendJoined | Destroyed


# --- the origin


@dataclass(frozen=True, slots=True)
class HopSpec:
    """What the origin needs to know about a relay to add it to a circuit."""

    address: str
    port: int
    node_id: bytes  # RSA identity digest: the ntor ID and the legacy link specifier
    ed25519_id: bytes | None
    ntor_onion_key: bytes

    def link_specs(self) -> tuple[relay.LinkSpec, ...]:
        """In the order tor-spec 5.1.2 recommends: [00] IPv4, [02] legacy id, [03] Ed25519 id, [01] IPv6."""
        try:
            version = ipaddress.ip_address(self.address).version
        except ValueError as e:
            raise LocalProtocolError(f"hop address {self.address!r} is not an IP address") from e
        addr = relay.LinkSpecIPv4 if version == 4 else relay.LinkSpecIPv6
        specs = [relay.LinkSpecRsaId(self.node_id)]
        if self.ed25519_id is not None:
            specs.append(relay.LinkSpecEd25519(self.ed25519_id))
        if version == 4:
            return (addr(self.address, self.port), *specs)
        return (*specs, addr(self.address, self.port))


class CircuitState(Enum):
    BUILDING = "building"
    OPEN = "open"
    FAILED = "failed"  # a remote protocol error or a TRUNCATED: only destroy() is left
    DESTROYED = "destroyed"


# Onion-service messages the origin may receive from its last hop. Sending one of these makes its reply legal;
# receiving a reply makes the next one legal. INTRODUCE2 repeats; the rest come once.
_HS_REPLY_TO = {
    _C.ESTABLISH_INTRO: frozenset({_C.INTRO_ESTABLISHED}),
    _C.INTRODUCE1: frozenset({_C.INTRODUCE_ACK}),
    _C.ESTABLISH_RENDEZVOUS: frozenset({_C.RENDEZVOUS_ESTABLISHED}),
    _C.RENDEZVOUS1: frozenset(),
}
_HS_NEXT = {
    _C.INTRO_ESTABLISHED: frozenset({_C.INTRODUCE2}),
    _C.INTRODUCE2: frozenset({_C.INTRODUCE2}),
    _C.RENDEZVOUS_ESTABLISHED: frozenset({_C.RENDEZVOUS2}),
}
_HS_EVENT = {
    _C.INTRO_ESTABLISHED: IntroEstablished,
    _C.INTRODUCE2: Introduce2,
    _C.INTRODUCE_ACK: IntroduceAck,
    _C.RENDEZVOUS_ESTABLISHED: RendezvousEstablished,
    _C.RENDEZVOUS2: Rendezvous2,
}


class _StreamEnds:
    """Stream calls shared by both circuit ends; each end has its own `_require_streams` and END reason."""

    __slots__ = ()
    _DEFAULT_END_REASON: int

    def accept_stream(self, stream_id: int, connected: relay.Connected | None = None) -> Cell:
        """CONNECTED for a StreamRequested."""
        return self._require_streams().accept(stream_id, connected or relay.Connected())

    def send_data(self, stream_id: int, data: bytes) -> list[Cell]:
        """DATA cells for `data`; LocalProtocolError if it needs more than send_capacity() allows."""
        return self._require_streams().send(stream_id, data)

    def send_capacity(self, stream_id: int) -> int:
        """Bytes send_data() takes now: both package windows (stream and circuit) bound it."""
        return self._require_streams().capacity(stream_id)

    def end_stream(self, stream_id: int, reason: int | None = None) -> Cell:
        """END, with the end's default reason unless one is given."""
        return self._require_streams().end(stream_id, self._DEFAULT_END_REASON if reason is None else reason)

    def stream(self, stream_id: int) -> Stream:
        """The stream's state and windows (read them; do not change them)."""
        return self._require_streams().get(stream_id)


class OriginCircuit(_StreamEnds):
    """A circuit we build: create(), then extend() until `path_len` hops answer (CircuitReady).

    Streams run with the last hop at the time the first stream opens (the exit, a directory, or the virtual
    hop of a rendezvous circuit). A circuit used for an onion-service message carries nothing else, except
    that a rendezvous circuit carries streams once its virtual hop is added.
    """

    _DEFAULT_END_REASON = EndReason.MISC  # tor-spec 6.3: on streams it opened, an origin says only MISC

    def __init__(self, circ_id: int, rng: Rng, *, path_len: int = 3) -> None:
        _check_circ_id(circ_id)
        if not 1 <= path_len <= MAX_RELAY_EARLY + 1:
            raise LocalProtocolError(f"path length {path_len} outside 1..{MAX_RELAY_EARLY + 1}")
        self.circ_id = circ_id
        self.path_len = path_len
        self._rng = rng
        self._state = CircuitState.BUILDING
        self._crypto = OriginCrypto()
        self._kh: list[bytes] = []  # per hop built with ntor or CREATE_FAST; a virtual hop comes after them
        self._sent_create = False
        self._pending: NtorClientState | FastClientState | None = None
        self._early_left = MAX_RELAY_EARLY
        self._hs_sent: RelayCommand | None = None
        self._hs_expect: frozenset[RelayCommand] = frozenset()
        self._rendezvous2_seen = False
        self._virtual = False
        self._streams: Streams | None = None
        self._stream_hop = -1
        # decrypt_ahead's results, oldest first: (cell, hop or -1, body, that hop's digest after it, layers)
        self._ahead: deque[tuple[Cell, int, bytes, bytes, int]] = deque()
        self._digest_now: tuple[int, bytes] | None = None  # (hop, digest) after the cell being received

    @property
    def state(self) -> CircuitState:
        return self._state

    @property
    def hop_count(self) -> int:
        return self._crypto.hop_count

    @property
    def circuit_window(self) -> CircuitWindow | None:
        """Circuit-level windows with the stream hop (None before the first stream)."""
        return None if self._streams is None else self._streams.window

    def hop_kh(self, hop: int = -1) -> bytes:
        """KH of a hop built with ntor (or CREATE_FAST): the key of ESTABLISH_INTRO's HANDSHAKE_AUTH
        (rend-spec-v3 3.1.1)."""
        if not -len(self._kh) <= hop < len(self._kh):
            raise LocalProtocolError(f"no ntor hop {hop} on a circuit with {len(self._kh)}")
        return self._kh[hop]

    @property
    def _real_hops(self) -> int:
        return len(self._kh)

    # --- building

    def create(self, first_hop: HopSpec) -> Cell:
        """The CREATE2 (ntor) cell for the first hop."""
        if self._sent_create:
            raise LocalProtocolError("create() or create_fast() was already called")
        self._pending, onionskin = ntor_client_start(first_hop.node_id, first_hop.ntor_onion_key, self._rng)
        self._sent_create = True
        return Cell(self.circ_id, Command.CREATE2, Create2(NTOR_HTYPE, onionskin).encode())

    def create_fast(self) -> Cell:
        """The CREATE_FAST cell for the first hop, instead of create() (tor-spec 5.1.5).

        It needs no onion key: the link to the relay is all the authentication this hop gets. Later hops
        are still added with extend() (ntor)."""
        if self._sent_create:
            raise LocalProtocolError("create() or create_fast() was already called")
        self._pending, x = fast_client_start(self._rng)
        self._sent_create = True
        return Cell(self.circ_id, Command.CREATE_FAST, CreateFast(x).encode())

    def extend(self, hop: HopSpec) -> Cell:
        """The EXTEND2 cell (in RELAY_EARLY) asking the last hop to add `hop`."""
        if self._state is not CircuitState.BUILDING or self._real_hops == 0 or self._pending is not None:
            raise LocalProtocolError("extend() needs a building circuit whose last hop has answered")
        if self._real_hops >= self.path_len:
            raise LocalProtocolError(f"the circuit already has its {self.path_len} hops")
        specs = hop.link_specs()
        state, onionskin = ntor_client_start(hop.node_id, hop.ntor_onion_key, self._rng)
        cell = self._seal(self._real_hops - 1, 0, relay.Extend2(specs, NTOR_HTYPE, onionskin))
        self._pending = state
        return cell

    def add_virtual_hop(self, hop: HopCrypto) -> int:
        """Append the onion-service hop (hs-ntor keys) to a rendezvous circuit; returns its index.

        Legal on the client after RENDEZVOUS2, on the service after sending RENDEZVOUS1; the service then
        accepts streams (BEGIN) from the client through it.
        """
        self._require_open()
        if self._virtual or self._streams is not None:
            raise LocalProtocolError("the circuit already has a virtual hop or streams")
        service_side = self._hs_sent is _C.RENDEZVOUS1
        if not (service_side or self._rendezvous2_seen):
            raise LocalProtocolError("a virtual hop follows RENDEZVOUS2 (client) or RENDEZVOUS1 (service)")
        self._crypto.add_hop(hop)
        self._virtual = True
        self._hs_expect = frozenset()
        if service_side:
            self._streams = self._new_streams(initiator=False)
        return self.hop_count - 1

    # --- sending

    def send_relay(self, message, hop: int = -1) -> Cell:
        """A control or onion-service message for `hop`: DROP, TRUNCATE, ESTABLISH_INTRO, INTRODUCE1,
        ESTABLISH_RENDEZVOUS, RENDEZVOUS1. Stream messages use the stream methods, EXTEND2 uses extend()."""
        self._require_open()
        hop = self._hop_index(hop)
        command = getattr(message, "COMMAND", None)
        if command == _C.DROP:
            pass
        elif command == _C.TRUNCATE:
            if hop >= self._real_hops - 1:
                raise LocalProtocolError("TRUNCATE goes to a hop that has a next hop")
        elif command in _HS_REPLY_TO:
            if hop != self._real_hops - 1 or self._virtual or self._streams is not None:
                raise LocalProtocolError("onion-service messages go to the last hop of a stream-free circuit")
            if self._hs_sent is not None:
                raise LocalProtocolError(f"this circuit already sent {self._hs_sent.name}")
            self._hs_sent = RelayCommand(command)
            self._hs_expect = _HS_REPLY_TO[command]
        else:
            raise LocalProtocolError(f"send_relay does not send {type(message).__name__}")
        return self._seal(hop, 0, message)

    def open_stream(self, request: relay.Begin | relay.BeginDir) -> tuple[int, Cell]:
        """(stream id, BEGIN/BEGIN_DIR cell) to the last hop. Send no data before StreamConnected."""
        self._require_open()
        streams = self._streams
        if streams is None:
            if self._hs_sent is not None and not self._virtual:
                raise LocalProtocolError("no streams on an onion-service circuit before its virtual hop")
            streams = self._new_streams(initiator=True)
        opened = streams.open(request)
        self._streams = streams
        return opened

    def destroy(self, reason: int = DestroyReason.NONE) -> Cell:
        """The DESTROY cell to send (tor-spec 5.4: an origin always says NONE). Not after Destroyed."""
        if not self._sent_create:
            raise LocalProtocolError("cannot destroy a circuit before create()")
        if self._state is CircuitState.DESTROYED:
            raise LocalProtocolError("the circuit is already destroyed")
        self._state = CircuitState.DESTROYED
        return _destroy_cell(self.circ_id, reason)

    # --- receiving

    def decrypt_ahead(self, cells: Sequence[Cell]) -> int:
        """Remove the layers of the leading RELAY cells of `cells` now, with one keystream call per layer
        (OriginCrypto.decrypt_many), and keep the results for receive_cell, which must then get exactly
        these cells next, in order (it refuses any other cell first). Returns how many it took. Each cell
        comes out as it would cell by cell: decryption does not depend on what receiving a cell does, but
        for hops added meanwhile (a cell no hop recognized continues under them) and the running digest
        SENDME v1 reads (receive_cell gives the one right after each cell)."""
        if not self._kh or self._state is not CircuitState.OPEN:
            return 0
        circ_id = self.circ_id
        run = []
        for cell in cells:
            if cell.command != Command.RELAY or cell.circ_id != circ_id or len(cell.payload) != BODY_LEN:
                break
            run.append(cell)
        if run:
            layers = self._crypto.hop_count
            results = self._crypto.decrypt_many([cell.payload for cell in run])
            self._ahead.extend((cell, hop, body, digest, layers)
                               for cell, (hop, body, digest) in zip(run, results, strict=True))
        return len(run)

    def receive_data_run(self, cells: Sequence[Cell]) -> tuple[int, int, list[bytes], list[Cell]]:
        """The bulk path of receive_cell, for cells decrypt_ahead took: the leading DATA cells from the
        stream hop on one stream that receive_cell would deliver without an error, as (how many of `cells`,
        the stream id, their data, the SENDME cells to send), the same as receive_cell on each, without
        its event objects. Anything else ends the run: feed it to receive_cell (then call this again).

        The run is read from the bodies' headers in one pass; the windows count it at once
        (Streams.take_data_run), reading a cell's running digest only where a circuit SENDME falls."""
        ahead, streams = self._ahead, self._streams
        if not ahead or streams is None or self._state is not CircuitState.OPEN:
            return 0, 0, [], []
        hop = self._stream_hop
        stream_id, data, digests = -1, [], []
        for cell, (ahead_cell, ahead_hop, body, digest, _layers) in zip(cells, ahead, strict=False):
            # the relay header: command(1) recognized(2) stream(2) digest(4) length(2); bodies are whole
            if ahead_cell is not cell or ahead_hop != hop or body[0] != _C.DATA:
                break
            sid = body[3] << 8 | body[4]
            length = body[9] << 8 | body[10]
            if length > RELAY_DATA_MAX or sid != stream_id and data:
                break
            stream_id = sid
            data.append(body[RELAY_HEADER_LEN:RELAY_HEADER_LEN + length])
            digests.append(digest)
        if not data:
            return 0, 0, [], []

        def after(i: int) -> None:
            self._digest_now = (hop, digests[i])  # what SENDME v1 echoes: right after cell i

        replies: list[Cell] = []
        try:
            taken = streams.take_data_run(stream_id, len(data), after, replies)
        finally:
            self._digest_now = None
        for _ in range(taken):
            ahead.popleft()
        if taken < len(data):
            del data[taken:]
        return taken, stream_id if taken else 0, data, replies

    def receive_cell(self, cell: Cell) -> list[OriginEvent]:
        """Process one cell of this circuit; after it is destroyed, cells are ignored (tor-spec 5.4)."""
        if cell.circ_id != self.circ_id:
            raise LocalProtocolError(f"cell for circuit {cell.circ_id} fed to circuit {self.circ_id}")
        ahead = None
        if self._ahead:
            if self._ahead[0][0] is not cell:
                raise LocalProtocolError("receive_cell must get the cells decrypt_ahead took first, in order")
            ahead = self._ahead.popleft()
        if self._state is CircuitState.DESTROYED:
            return []
        if self._state is CircuitState.FAILED and cell.command != Command.DESTROY:
            return []
        try:
            if ahead is None:
                return self._receive(cell)
            return self._receive_ahead(*ahead[1:])
        except RemoteProtocolError:
            self._state = CircuitState.FAILED
            raise

    def _receive_ahead(self, hop: int, body: bytes, digest: bytes, layers: int) -> list[OriginEvent]:
        if hop < 0:  # no hop recognized it then: one added since may (or this raises, as decrypt does)
            return self._receive_relay(body, start=layers)
        self._digest_now = (hop, digest)
        try:
            return self._receive_plain(hop, body)
        finally:
            self._digest_now = None

    def _receive(self, cell: Cell) -> list[OriginEvent]:
        command = cell.command
        if command == Command.RELAY:
            return self._receive_relay(cell.payload)
        if command == Command.CREATED2:
            if self._real_hops or not isinstance(self._pending, NtorClientState):
                raise UnexpectedMessage("CREATED2 without a CREATE2 outstanding")
            return self._hop_done(ntor_client_finish(self._pending, Created2.decode(cell.payload).hdata))
        if command == Command.CREATED_FAST:
            if self._real_hops or not isinstance(self._pending, FastClientState):
                raise UnexpectedMessage("CREATED_FAST without a CREATE_FAST outstanding")
            created = CreatedFast.decode(cell.payload)
            return self._hop_done(fast_client_finish(self._pending, created.encode()))
        if command == Command.DESTROY:
            reason = Destroy.decode(cell.payload).reason
            self._state = CircuitState.DESTROYED
            return [Destroyed(reason)]
        if command == Command.RELAY_EARLY:
            raise UnexpectedMessage("RELAY_EARLY travelling towards the origin (tor-spec 5.6)")
        raise UnexpectedMessage(f"cell command {command} on a circuit")

    def _hop_done(self, key_material: bytes) -> list[OriginEvent]:
        self._crypto.add_hop(HopCrypto.tor1(key_material))
        self._kh.append(key_material[_KH])
        self._pending = None
        events: list[OriginEvent] = [HopAdded(self._real_hops - 1)]
        if self._real_hops == self.path_len:
            self._state = CircuitState.OPEN
            events.append(CircuitReady(self._real_hops))
        return events

    def _receivable(self, hop: int) -> frozenset[int]:
        allowed = {_C.DROP}
        last_real = self._real_hops - 1
        if hop <= last_real:
            allowed.add(_C.TRUNCATED)
        if hop == last_real:
            if self._pending is not None:
                allowed.add(_C.EXTENDED2)
            if not self._virtual:
                allowed |= self._hs_expect
        if self._streams is not None and hop == self._stream_hop:
            allowed |= self._streams.receivable
        return frozenset(allowed)

    def _receive_relay(self, payload: bytes, start: int = 0) -> list[OriginEvent]:
        if not self._kh:  # the first hop has not answered yet
            raise UnexpectedMessage("RELAY cell before the first hop answered")
        hop, body = self._crypto.decrypt(payload, start)
        return self._receive_plain(hop, body)

    def _receive_plain(self, hop: int, body: bytes) -> list[OriginEvent]:
        """A relay body `hop` recognized (its layers removed, its digest checked)."""
        streams = self._streams
        if body[0] == _C.DATA and streams is not None and hop == self._stream_hop:
            # The bulk path: DATA is always legal on the stream hop, so skip the message table and objects.
            events, replies = streams.receive_data(*decode_data_body(body))
            return [*events, *(SendCell(c) for c in replies)] if replies else events
        cell = decode_relay_body(body)
        message = decode_msg(cell.command, cell.data, self._receivable(hop))
        command = cell.command
        if streams is not None and hop == self._stream_hop and command in streams.receivable:
            events, replies = streams.receive(cell.stream_id, message)
            return [*events, *(SendCell(c) for c in replies)]
        if cell.stream_id:
            raise UnexpectedMessage(f"{RelayCommand(command).name} with stream id {cell.stream_id}")
        if command == _C.DROP:
            return []
        if command == _C.TRUNCATED:
            self._state = CircuitState.FAILED
            return [Truncated(hop, message.reason)]
        if command == _C.EXTENDED2:
            return self._hop_done(ntor_client_finish(self._pending, message.hdata))
        self._hs_expect = _HS_NEXT.get(command, frozenset())
        if command == _C.RENDEZVOUS2:
            self._rendezvous2_seen = True
        return [_HS_EVENT[command](message)]

    # --- helpers

    def _seal(self, hop: int, stream_id: int, message) -> Cell:
        """Encrypt `message` for `hop`. EXTEND2 must ride RELAY_EARLY; so do the first cells past hop 0."""
        body = encode_relay_body(message.COMMAND, stream_id, message.encode(), self._rng)
        is_extend = message.COMMAND == _C.EXTEND2
        if is_extend and not self._early_left:
            raise LocalProtocolError("no RELAY_EARLY cells left for EXTEND2")
        early = self._early_left > 0 and (is_extend or hop > 0)
        payload = self._crypto.encrypt(body, hop)
        if early:
            self._early_left -= 1
        return Cell(self.circ_id, Command.RELAY_EARLY if early else Command.RELAY, payload)

    def _seal_data(self, hop: int, stream_id: int, chunks: list[bytes],
                   account: Callable[[], None]) -> list[Cell]:
        """DATA cells for `chunks`, the same as _seal on each (account() after each), with one keystream call
        per layer; cell by cell while RELAY_EARLY cells are still due."""
        if self._early_left > 0 and hop > 0:
            cells = []
            for chunk in chunks:
                cells.append(self._seal(hop, stream_id, relay.Data(chunk)))
                account()
            return cells
        rng = self._rng
        # encode_relay_body refuses an over-long chunk (LocalProtocolError) before any crypto state moves
        bodies = [encode_relay_body(_C.DATA, stream_id, chunk, rng) for chunk in chunks]
        circ_id = self.circ_id
        return [Cell(circ_id, Command.RELAY, payload)
                for payload in self._crypto.encrypt_many(bodies, hop, account)]

    def _last_received_digest(self, hop: int) -> bytes:
        """The hop's running backward digest right after the cell being received (SENDME v1): the running
        digest itself has already moved past the rest of a decrypt_ahead run."""
        now = self._digest_now
        if now is not None and now[0] == hop:
            return now[1][:SENDME_DIGEST_LEN]
        return self._crypto.last_received_digest(hop)

    def _hop_index(self, hop: int) -> int:
        n = self.hop_count
        if not -n <= hop < n:
            raise LocalProtocolError(f"no hop {hop} on a circuit of {n} hops")
        return hop % n

    def _require_open(self) -> None:
        if self._state is not CircuitState.OPEN:
            raise LocalProtocolError(f"the circuit is {self._state.value}, not open")

    def _require_streams(self) -> Streams:
        self._require_open()
        if self._streams is None:
            raise LocalProtocolError("this circuit has no streams")
        return self._streams

    def _new_streams(self, *, initiator: bool) -> Streams:
        """The stream layer with the last hop, which stays the stream hop for the circuit's life."""
        hop = self._stream_hop = self.hop_count - 1
        crypto = self._crypto
        return Streams(lambda sid, msg: self._seal(hop, sid, msg), lambda: crypto.last_sent_digest(hop),
                       lambda: self._last_received_digest(hop), initiator=initiator,
                       seal_data=lambda sid, chunks, account: self._seal_data(hop, sid, chunks, account))


# --- the relay


class RelayState(Enum):
    OPEN = "open"  # we are the last hop and nothing has given us a role yet
    EXTENDING = "extending"  # EXTEND2 accepted; waiting for the next hop's CREATED2
    EXTENDED = "extended"  # a middle hop: unrecognized cells go to the next hop
    EXIT = "exit"  # streams (BEGIN / BEGIN_DIR)
    INTRO_POINT = "intro-point"  # the service's circuit, after ESTABLISH_INTRO
    INTRODUCING = "introducing"  # a client's circuit, after its INTRODUCE1
    REND_POINT = "rend-point"  # the client's circuit, after ESTABLISH_RENDEZVOUS, waiting for the service
    REND_JOINING = "rend-joining"  # the service's circuit, after RENDEZVOUS1: join() it or destroy() it
    JOINED = "joined"  # spliced to the other rendezvous circuit
    FAILED = "failed"
    DESTROYED = "destroyed"


_S = RelayState
_STREAM_COMMANDS = (_C.BEGIN, _C.BEGIN_DIR, _C.DATA, _C.END, _C.SENDME)
# The state machine: recognized relay commands legal in each state, and the state each one leads to.
RELAY_TRANSITIONS: dict[RelayState, dict[int, RelayState]] = {
    _S.OPEN: {_C.EXTEND2: _S.EXTENDING, _C.BEGIN: _S.EXIT, _C.BEGIN_DIR: _S.EXIT,
              _C.ESTABLISH_INTRO: _S.INTRO_POINT, _C.INTRODUCE1: _S.INTRODUCING,
              _C.ESTABLISH_RENDEZVOUS: _S.REND_POINT, _C.RENDEZVOUS1: _S.REND_JOINING,
              _C.DROP: _S.OPEN, _C.TRUNCATE: _S.OPEN},
    _S.EXTENDING: {_C.DROP: _S.EXTENDING, _C.TRUNCATE: _S.OPEN},
    _S.EXTENDED: {_C.DROP: _S.EXTENDED, _C.TRUNCATE: _S.OPEN},
    _S.EXIT: {**dict.fromkeys(_STREAM_COMMANDS, _S.EXIT), _C.DROP: _S.EXIT},
    _S.INTRO_POINT: {_C.DROP: _S.INTRO_POINT},
    _S.INTRODUCING: {_C.DROP: _S.INTRODUCING},
    _S.REND_POINT: {_C.DROP: _S.REND_POINT},
    _S.REND_JOINING: {_C.DROP: _S.REND_JOINING},
    _S.JOINED: {_C.DROP: _S.JOINED},
}
# A circuit created with CREATE_FAST certainly starts at this relay (tor-spec 5.4), so it is refused what a
# one-hop circuit must not do: streams to the Internet and rendezvous points (tor-spec 5.4: SHOULD tear
# down), and introductions (C tor refuses INTRODUCE1 from one-hop clients). BEGIN_DIR, EXTEND2 and the rest
# stay legal: a one-hop directory circuit is what CREATE_FAST is for.
_NOT_AT_FIRST_HOP = frozenset({_C.BEGIN, _C.ESTABLISH_RENDEZVOUS, _C.INTRODUCE1})
RELAY_TRANSITIONS_CREATE_FAST: dict[RelayState, dict[int, RelayState]] = {
    **RELAY_TRANSITIONS,
    _S.OPEN: {c: s for c, s in RELAY_TRANSITIONS[_S.OPEN].items() if c not in _NOT_AT_FIRST_HOP},
}
# What the runtime may originate towards the origin in each state (stream replies use the stream methods).
RELAY_ORIGINATES: dict[RelayState, frozenset[int]] = {
    _S.INTRO_POINT: frozenset({_C.INTRO_ESTABLISHED, _C.INTRODUCE2, _C.DROP}),
    _S.INTRODUCING: frozenset({_C.INTRODUCE_ACK, _C.DROP}),
    _S.REND_POINT: frozenset({_C.RENDEZVOUS_ESTABLISHED, _C.DROP}),
}
_DELIVERED = frozenset({_C.ESTABLISH_INTRO, _C.INTRODUCE1, _C.ESTABLISH_RENDEZVOUS, _C.RENDEZVOUS1})
_GONE = (_S.FAILED, _S.DESTROYED)


class RelayCircuit(_StreamEnds):
    """One relay's end of one circuit: `accept` a CREATE2 or CREATE_FAST, then feed cells from either side."""

    _DEFAULT_END_REASON = EndReason.DONE

    def __init__(self, circ_id: int, layer: RelayLayer, kh: bytes, rng: Rng, *,
                 created_fast: bool = False) -> None:
        _check_circ_id(circ_id)
        self.circ_id = circ_id
        self._layer = layer
        self.kh = kh  # checks the HANDSHAKE_AUTH of an ESTABLISH_INTRO on this circuit (rend-spec-v3 3.1.1)
        # Created with CREATE_FAST: this relay is the circuit's first hop, and the circuit follows
        # RELAY_TRANSITIONS_CREATE_FAST.
        self.created_fast = created_fast
        self._transitions = RELAY_TRANSITIONS_CREATE_FAST if created_fast else RELAY_TRANSITIONS
        self._rng = rng
        self._state = RelayState.OPEN
        self._early_seen = 0
        self._create_next: Create2 | None = None
        self.next_circ_id: int | None = None  # our circuit id on the link to the next hop
        self._streams: Streams | None = None
        self.joined: RelayCircuit | None = None
        # (cell, body): cells whose layer pass_on_run removed ahead, not yet passed on or received, in order
        self._unlayered: deque[tuple[Cell, bytes]] = deque()

    @classmethod
    def accept(cls, cell: Cell, *, node_id: bytes, onion_secret: bytes,
               rng: Rng) -> tuple[RelayCircuit, Cell]:
        """A new circuit from a CREATE2 (ntor) or CREATE_FAST cell, and the CREATED2 or CREATED_FAST reply.
        CryptoError if an ntor onionskin is for another relay or key: answer with a DESTROY.

        CREATE_FAST needs neither `node_id` nor `onion_secret`; a relay answers it on any link it answers
        CREATE2 on (C tor does the same), as the peer sent it to us directly."""
        if cell.command == Command.CREATE_FAST:
            return cls._accept_fast(cell, rng)
        if cell.command != Command.CREATE2:
            raise UnexpectedMessage(f"a circuit starts with CREATE2 or CREATE_FAST, not cell command "
                                    f"{cell.command}")
        if cell.circ_id == 0:
            raise DecodeError("CREATE2 on circuit id 0")
        create = Create2.decode(cell.payload)
        if create.htype != NTOR_HTYPE:
            raise UnexpectedMessage(f"unsupported handshake type {create.htype} (only ntor)")
        reply, key_material = ntor_server_handshake(create.hdata, node_id=node_id, onion_secret=onion_secret,
                                                    rng=rng)
        circuit = cls(cell.circ_id, RelayLayer.tor1(key_material), key_material[_KH], rng)
        return circuit, Cell(cell.circ_id, Command.CREATED2, Created2(reply).encode())

    @classmethod
    def _accept_fast(cls, cell: Cell, rng: Rng) -> tuple[RelayCircuit, Cell]:
        if cell.circ_id == 0:
            raise DecodeError("CREATE_FAST on circuit id 0")
        create = CreateFast.decode(cell.payload)
        reply, key_material = fast_server_handshake(create.key_material, rng=rng)
        created = CreatedFast(reply[:HASH_LEN], reply[HASH_LEN:])
        circuit = cls(cell.circ_id, RelayLayer.tor1(key_material), key_material[_KH], rng, created_fast=True)
        return circuit, Cell(cell.circ_id, Command.CREATED_FAST, created.encode())

    @property
    def state(self) -> RelayState:
        return self._state

    @property
    def circuit_window(self) -> CircuitWindow | None:
        """Circuit-level windows with the origin (None unless this is an exit)."""
        return None if self._streams is None else self._streams.window

    # --- cells from the origin's side

    def receive_forward(self, cell: Cell) -> list[RelayAction]:
        """A cell from the previous hop (towards the origin)."""
        if cell.circ_id != self.circ_id:
            raise LocalProtocolError(f"cell for circuit {cell.circ_id} fed to circuit {self.circ_id}")
        unlayered = None
        if self._unlayered:
            if self._unlayered[0][0] is not cell:
                raise LocalProtocolError("receive_forward must get the cells pass_on_run unlayered first, "
                                         "in order")
            unlayered = self._unlayered.popleft()[1]
        if self._state is _S.DESTROYED or (self._state is _S.FAILED and cell.command != Command.DESTROY):
            return []
        try:  # _guard, inlined: this runs for every cell a relay passes on
            return self._forward(cell, unlayered)
        except RemoteProtocolError:
            self._state = _S.FAILED
            raise

    def _forward(self, cell: Cell, unlayered: bytes | None) -> list[RelayAction]:
        """`unlayered`: the cell's body with this relay's layer removed already (pass_on_run), or None."""
        command = cell.command
        if command == Command.DESTROY:
            reason = Destroy.decode(cell.payload).reason
            # tor-spec 5.4: pass it on, but with DESTROYED, not the peer's reason.
            return [Destroyed(reason), *self._teardown(DestroyReason.DESTROYED, backward=False)]
        if command not in _RELAY_COMMANDS:
            raise UnexpectedMessage(f"cell command {command} on an open circuit")
        early = command == Command.RELAY_EARLY
        if early:
            self._early_seen += 1
            if self._early_seen > MAX_RELAY_EARLY:
                raise UnexpectedMessage(f"more than {MAX_RELAY_EARLY} RELAY_EARLY cells on one circuit")
        if unlayered is None:
            recognized, body = self._layer.decrypt_forward(cell.payload)
        else:
            body = unlayered
            recognized = self._layer.recognize(body)
        if not recognized:
            return self._pass_on(command, body)
        if body[0] == _C.DATA and self._state is _S.EXIT:
            # The bulk path (DATA on an exit stays EXIT), as in OriginCircuit._receive_relay.
            events, replies = self._streams.receive_data(*decode_data_body(body))
            return [*events, *(SendBackward(c) for c in replies)] if replies else events
        rc = decode_relay_body(body)
        transitions = self._transitions[self._state]
        message = decode_msg(rc.command, rc.data, transitions)
        if rc.command == _C.EXTEND2 and not early:
            raise UnexpectedMessage("EXTEND2 outside a RELAY_EARLY cell (tor-spec 5.6)")
        if rc.stream_id and rc.command not in _STREAM_COMMANDS:
            raise UnexpectedMessage(f"{RelayCommand(rc.command).name} with stream id {rc.stream_id}")
        actions = self._handle(rc.command, rc.stream_id, message)
        self._state = transitions[rc.command]
        return actions

    def pass_on_run(self, cells: Sequence[Cell]) -> tuple[list[Cell], int]:
        """The bulk path of receive_forward: the leading RELAY cells of `cells` that are only passed on (to
        the next hop while EXTENDED; to the joined circuit's origin, under its layer, while JOINED), as the
        cells to send there, and how many of `cells` that took. The same cells as receive_forward on each,
        with one keystream call for the joined circuit's layer and no action objects.

        Feed the rest to receive_forward in order. The first of them is a cell left to the full path:
        another command or state, or a body that may be for this relay (recognized 0). The layer of a run
        of RELAY cells comes off in one keystream call, so those past that cell are unlayered already and
        kept: receive_forward and the next pass_on_run take them from there (and refuse any other cell
        first; a DESTROY or RELAY_EARLY never joins a run, so it comes after all of them)."""
        state = self._state
        if state is not _S.EXTENDED and state is not _S.JOINED:
            return [], 0
        other = self.joined
        if state is _S.JOINED and other._state is not _S.JOINED:
            return [], 0
        ahead = self._unlayered
        bodies = []
        i, n = 0, len(cells)
        while i < n:
            if not ahead and not self._unlayer_run(cells, i):
                break
            cell, body = ahead[0]
            if cell is not cells[i] or body[1:3] == b"\0\0":
                break
            ahead.popleft()
            bodies.append(body)
            i += 1
        if not bodies:
            return [], 0
        if state is _S.EXTENDED:
            next_id = self.next_circ_id
            return [Cell(next_id, Command.RELAY, body) for body in bodies], len(bodies)
        other_id = other.circ_id
        layered = other._layer.encrypt_backward_relayed_many(bodies)
        return [Cell(other_id, Command.RELAY, body) for body in layered], len(bodies)

    def _unlayer_run(self, cells: Sequence[Cell], start: int) -> int:
        """Remove this relay's layer from the RELAY cells of this circuit leading cells[start:], in one
        keystream call, into _unlayered; how many."""
        circ_id = self.circ_id
        run = []
        for k in range(start, len(cells)):
            cell = cells[k]
            if cell.command != Command.RELAY or cell.circ_id != circ_id or len(cell.payload) != BODY_LEN:
                break
            run.append(cell)
        if run:
            bodies = self._layer.remove_forward_layer_many([cell.payload for cell in run])
            self._unlayered.extend(zip(run, bodies, strict=True))
        return len(run)

    def _pass_on(self, command: int, body: bytes) -> list[RelayAction]:
        if self._state is _S.EXTENDED:
            return [SendForward(Cell(self.next_circ_id, command, body))]
        if self._state is _S.JOINED:
            other = self.joined
            if other._state is not _S.JOINED:  # it failed and is being torn down
                return []
            # Always RELAY: on the other circuit the cell travels towards its origin.
            body = other._layer.encrypt_backward_relayed(body)
            return [SendJoined(Cell(other.circ_id, Command.RELAY, body))]
        # tor-spec 5.5.2.2: an unrecognized cell at the end of the circuit is an error.
        raise CryptoError("unrecognized relay cell at the end of the circuit")

    def _handle(self, command: int, stream_id: int, message) -> list[RelayAction]:
        if command == _C.DROP:
            return []
        if command == _C.TRUNCATE:
            return self._truncate()
        if command == _C.EXTEND2:
            return [self._extend_request(message)]
        if command in _DELIVERED:
            return [Deliver(message)]
        if self._streams is None:
            self._streams = Streams(lambda sid, msg: self._send_back(msg, sid), self._layer.last_sent_digest,
                                    self._layer.last_received_digest, initiator=False)
        events, replies = self._streams.receive(stream_id, message)
        return [*events, *(SendBackward(c) for c in replies)]

    def _extend_request(self, message: relay.Extend2) -> ExtendRequest:
        specs = message.link_specs
        if not any(isinstance(s, relay.LinkSpecIPv4 | relay.LinkSpecIPv6) for s in specs):
            raise DecodeError("EXTEND2 names no IPv4 or IPv6 address")
        if not any(isinstance(s, relay.LinkSpecRsaId) for s in specs):
            raise DecodeError("EXTEND2 names no legacy identity")
        refused = _EXTEND2_REFUSED_HTYPES.get(message.htype)
        if refused is not None:
            raise UnexpectedMessage(f"EXTEND2 with a {refused} handshake (type {message.htype})")
        try:
            self._create_next = Create2(message.htype, message.hdata)
        except LocalProtocolError as e:
            raise DecodeError(f"EXTEND2 handshake does not fit a CREATE2: {e}") from None
        return ExtendRequest(specs, self._create_next)

    def _truncate(self) -> list[RelayAction]:
        """tor-spec 5.4: DESTROY the next hop (if any) and answer TRUNCATED."""
        actions: list[RelayAction] = []
        if self.next_circ_id is not None:
            actions.append(SendForward(_destroy_cell(self.next_circ_id, DestroyReason.REQUESTED)))
        self.next_circ_id = None
        self._create_next = None
        actions.append(SendBackward(self._send_back(relay.Truncated(DestroyReason.REQUESTED))))
        return actions

    # --- extending

    def create_next(self, next_circ_id: int) -> Cell:
        """The CREATE2 cell for the next hop, on our circuit id `next_circ_id` on the link to it.

        LocalProtocolError if a TRUNCATE cancelled the extension meanwhile (check `state` first)."""
        if self._state is not _S.EXTENDING or self.next_circ_id is not None:
            raise LocalProtocolError(f"no extension waiting for a circuit id (state {self._state.value})")
        _check_circ_id(next_circ_id)
        self.next_circ_id = next_circ_id
        return Cell(next_circ_id, Command.CREATE2, self._create_next.encode())

    def extended(self, cell: Cell) -> Cell:
        """The next hop's CREATED2 -> the EXTENDED2 cell for the origin."""
        self._check_from_next(cell)
        return self._guard(self._extended, cell)

    def _extended(self, cell: Cell) -> Cell:
        if cell.command != Command.CREATED2 or self._state is not _S.EXTENDING:
            raise UnexpectedMessage(f"cell command {cell.command} from the next hop while "
                                    f"{self._state.value}")
        created = Created2.decode(cell.payload)
        self._create_next = None
        self._state = _S.EXTENDED
        return self._send_back(relay.Extended2(created.hdata))

    # --- cells from the next hop

    def receive_backward(self, cell: Cell) -> Cell | None:
        """A cell from the next hop -> the cell to send towards the origin (None: ignore it)."""
        self._check_from_next(cell)
        if self._state in _GONE:
            return None
        try:  # _guard, inlined: this runs for every cell a relay passes back
            return self._backward(cell)
        except RemoteProtocolError:
            self._state = _S.FAILED
            raise

    def relay_backward_run(self, cells: Sequence[Cell]) -> tuple[list[Cell], int]:
        """The bulk path of receive_backward: the leading RELAY cells of `cells` from the next hop while
        EXTENDED, under this relay's layer (one keystream call), and how many of `cells` that took. The same
        cells as receive_backward on each; feed the rest to receive_backward."""
        if self._state is not _S.EXTENDED:
            return [], 0
        next_id = self.next_circ_id
        n = 0
        for cell in cells:
            if cell.command != Command.RELAY or cell.circ_id != next_id or len(cell.payload) != BODY_LEN:
                break
            n += 1
        if not n:
            return [], 0
        circ_id = self.circ_id
        bodies = self._layer.encrypt_backward_relayed_many([cell.payload for cell in cells[:n]])
        return [Cell(circ_id, Command.RELAY, body) for body in bodies], n

    def _backward(self, cell: Cell) -> Cell:
        command = cell.command
        if command == Command.CREATED2:
            return self._extended(cell)
        if command == Command.DESTROY:
            Destroy.decode(cell.payload)
            self._state = _S.DESTROYED
            return _destroy_cell(self.circ_id, DestroyReason.DESTROYED)
        if command == Command.RELAY and self._state is _S.EXTENDED:
            return Cell(self.circ_id, Command.RELAY, self._layer.encrypt_backward_relayed(cell.payload))
        if command == Command.RELAY_EARLY:
            raise UnexpectedMessage("RELAY_EARLY travelling towards the origin (tor-spec 5.6)")
        raise UnexpectedMessage(f"cell command {command} from the next hop while {self._state.value}")

    def _check_from_next(self, cell: Cell) -> None:
        if self.next_circ_id is None or cell.circ_id != self.next_circ_id:
            raise LocalProtocolError(f"cell for circuit {cell.circ_id} is not from this circuit's next hop")

    # --- originating

    def originate(self, message) -> Cell:
        """An onion-service reply from this relay to the origin (INTRO_ESTABLISHED, INTRODUCE2, INTRODUCE_ACK,
        RENDEZVOUS_ESTABLISHED) or a DROP, as the state allows."""
        allowed = RELAY_ORIGINATES.get(self._state, frozenset({_C.DROP}))
        if self._state in _GONE or getattr(message, "COMMAND", None) not in allowed:
            raise LocalProtocolError(f"cannot originate {type(message).__name__} while {self._state.value}")
        return self._send_back(message)

    def join(self, service: RelayCircuit, rendezvous2: relay.Rendezvous2) -> Cell:
        """Rendezvous point: splice this (client, REND_POINT) circuit to `service` (REND_JOINING); returns
        the RENDEZVOUS2 cell for the client. From then on each circuit's unrecognized cells leave on the other
        as SendJoined, each under its own layer (rend-spec-v3 4.2)."""
        if self._state is not _S.REND_POINT or service._state is not _S.REND_JOINING:
            raise LocalProtocolError(f"join() needs a rend-point and a rend-joining circuit, not "
                                     f"{self._state.value} and {service._state.value}")
        cell = self._send_back(rendezvous2)
        self.joined, service.joined = service, self
        self._state = service._state = _S.JOINED
        return cell

    # --- teardown

    def destroy(self, reason: int = DestroyReason.PROTOCOL) -> list[RelayAction]:
        """DESTROY cells for both neighbours (and the joined circuit). Not after the circuit is destroyed."""
        if self._state is _S.DESTROYED:
            raise LocalProtocolError("the circuit is already destroyed")
        return self._teardown(reason, backward=True)

    def _teardown(self, reason: int, *, backward: bool) -> list[RelayAction]:
        actions: list[RelayAction] = []
        if backward:
            actions.append(SendBackward(_destroy_cell(self.circ_id, reason)))
        if self.next_circ_id is not None:
            actions.append(SendForward(_destroy_cell(self.next_circ_id, reason)))
        other = self.joined
        if other is not None and other._state is not _S.DESTROYED:
            other._state = _S.DESTROYED
            actions.append(SendJoined(_destroy_cell(other.circ_id, DestroyReason.DESTROYED)))
        self._state = _S.DESTROYED
        return actions

    # --- helpers

    def _guard(self, step, cell: Cell):
        try:
            return step(cell)
        except RemoteProtocolError:
            self._state = _S.FAILED
            raise

    def _send_back(self, message, stream_id: int = 0) -> Cell:
        body = encode_relay_body(message.COMMAND, stream_id, message.encode(), self._rng)
        return Cell(self.circ_id, Command.RELAY, self._layer.encrypt_backward_originated(body))

    def _require_streams(self) -> Streams:
        if self._state is not _S.EXIT or self._streams is None:
            raise LocalProtocolError(f"no streams on a circuit that is {self._state.value}")
        return self._streams
