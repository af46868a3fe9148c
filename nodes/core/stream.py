"""Streams and flow control (tor-spec 6.2-6.3, 7.3-7.4; authenticated SENDME v1, prop 289).

A `Streams` object is the stream layer between the origin of a circuit and the ONE hop it runs streams with
(an exit, a directory, or the onion service behind the virtual hop), seen from either end. It owns that pair's
circuit-level windows (the only place they live) and every stream's windows. It does no crypto: the circuit
hands it `seal`, which encrypts one message for the peer and returns the cell, and two callables that read the
running digests SENDME v1 needs, so digests are only computed when a SENDME is due.

Windows count RELAY_DATA cells only. A deliver window that falls to START - INCREMENT sends a SENDME at
once (we have no application read-side signal to wait for); a package window at 0 refuses to send. A SENDME
the peer sends must match the digest we recorded for the DATA cell that triggered it.
"""

from __future__ import annotations

import hmac
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from .cells import Cell
from .errors import CryptoError, LocalProtocolError, UnexpectedMessage
from .relay import RELAY_DATA_MAX, Begin, BeginDir, Connected, Data, End, EndReason, RelayCommand, Sendme

CIRCWINDOW_START = 1000
CIRCWINDOW_INCREMENT = 100
STREAMWINDOW_START = 500
STREAMWINDOW_INCREMENT = 50

Seal = Callable[[int, object], Cell]  # (stream_id, message) -> the encrypted cell for the peer
Digest = Callable[[], bytes]  # running digest right after the last cell sent / received
# (stream_id, DATA payloads, account) -> their cells, the same as Seal on each in turn; account() runs right
# after each cell is sealed (its digest is then the last sent one)
SealData = Callable[[int, list[bytes], Callable[[], None]], list[Cell]]


def chunk_data(data: bytes, size: int = RELAY_DATA_MAX) -> list[bytes]:
    """Split `data` into DATA-cell payloads of at most `size` (<= 498) bytes; b"" gives no cells."""
    if not 0 < size <= RELAY_DATA_MAX:
        raise LocalProtocolError(f"DATA chunk size must be 1..{RELAY_DATA_MAX}, not {size}")
    return [data[i:i + size] for i in range(0, len(data), size)]


class CircuitWindow:
    """Circuit-level package/deliver windows for one hop pair, with SENDME v1 digest bookkeeping."""

    __slots__ = ("package", "deliver", "_expected")

    def __init__(self) -> None:
        self.package = CIRCWINDOW_START
        self.deliver = CIRCWINDOW_START
        self._expected: deque[bytes] = deque()  # digests our peer's SENDMEs must echo, oldest first

    def packaged(self, sent_digest: Digest) -> None:
        """Account one DATA cell we sent; every INCREMENT-th one is what the peer's SENDME echoes."""
        if self.package <= 0:
            raise LocalProtocolError("circuit package window is empty: wait for a SENDME")
        self.package -= 1
        if self.package % CIRCWINDOW_INCREMENT == 0:
            self._expected.append(sent_digest())

    def delivered(self, received_digest: Digest) -> bytes | None:
        """Account one DATA cell received; the digest to send in a SENDME v1 when one is due, else None."""
        self.deliver -= 1
        if self.deliver > CIRCWINDOW_START - CIRCWINDOW_INCREMENT:
            return None
        self.deliver += CIRCWINDOW_INCREMENT
        return received_digest()

    def sendme_received(self, sendme: Sendme) -> None:
        if sendme.version != 1:
            raise UnexpectedMessage(f"SENDME version {sendme.version} is below the minimum accepted (1)")
        if not self._expected:  # equivalently: package + INCREMENT would exceed START
            raise UnexpectedMessage("circuit SENDME with no DATA outstanding (window overflow)")
        if not hmac.compare_digest(self._expected.popleft(), sendme.digest):
            raise CryptoError("authenticated SENDME digest does not match the cell that triggered it")
        self.package += CIRCWINDOW_INCREMENT


class StreamState(Enum):
    OPENING = "opening"  # BEGIN sent (initiator) or received and not yet answered (acceptor)
    OPEN = "open"
    HALF_CLOSED = "half-closed"  # we sent END; the peer may still have cells in flight (tor-spec 6.3)
    CLOSED = "closed"  # the peer sent END; the stream id is forgotten


@dataclass(slots=True)
class Stream:
    stream_id: int
    state: StreamState
    connected: bool = False
    package_window: int = STREAMWINDOW_START
    deliver_window: int = STREAMWINDOW_START


# Events the stream layer reports; the circuit passes them on unchanged.


@dataclass(frozen=True, slots=True)
class StreamRequested:
    """The peer sent BEGIN or BEGIN_DIR (acceptor side): answer with accept_stream or end_stream."""

    stream_id: int
    request: Begin | BeginDir


@dataclass(frozen=True, slots=True)
class StreamConnected:
    stream_id: int
    message: Connected


@dataclass(frozen=True, slots=True)
class StreamData:
    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The peer closed the stream; nothing more is sent or accepted on it."""

    stream_id: int
    reason: int


StreamEvent = StreamRequested | StreamConnected | StreamData | StreamEnd

# What each side may receive: streams are initiated by the origin only (tor-spec 6.1).
_C = RelayCommand
INITIATOR_RECEIVES = frozenset({_C.CONNECTED, _C.DATA, _C.END, _C.SENDME})
ACCEPTOR_RECEIVES = frozenset({_C.BEGIN, _C.BEGIN_DIR, _C.DATA, _C.END, _C.SENDME})


class Streams:
    """The stream layer of one hop pair. The initiator picks stream ids: non-zero, unique per circuit."""

    __slots__ = ("_seal", "_seal_data", "_sent_digest", "_received_digest", "initiator", "window", "_streams",
                 "_next_id")

    def __init__(self, seal: Seal, sent_digest: Digest, received_digest: Digest, *, initiator: bool,
                 seal_data: SealData | None = None) -> None:
        self._seal = seal
        self._seal_data = seal_data  # a batch of DATA at once (OriginCircuit: one keystream call per layer)
        self._sent_digest = sent_digest
        self._received_digest = received_digest
        self.initiator = initiator
        self.window = CircuitWindow()
        self._streams: dict[int, Stream] = {}
        self._next_id = 1

    @property
    def receivable(self) -> frozenset[RelayCommand]:
        return INITIATOR_RECEIVES if self.initiator else ACCEPTOR_RECEIVES

    def __contains__(self, stream_id: int) -> bool:
        return stream_id in self._streams

    def get(self, stream_id: int) -> Stream:
        try:
            return self._streams[stream_id]
        except KeyError:
            raise LocalProtocolError(f"no stream {stream_id} on this circuit") from None

    # --- local operations

    def open(self, request: Begin | BeginDir) -> tuple[int, Cell]:
        if not self.initiator:
            raise LocalProtocolError("only the origin of a circuit opens streams")
        if not isinstance(request, Begin | BeginDir):
            raise LocalProtocolError(f"streams open with BEGIN or BEGIN_DIR, not {type(request).__name__}")
        stream_id = self._allocate_id()
        self._streams[stream_id] = Stream(stream_id, StreamState.OPENING)
        return stream_id, self._seal(stream_id, request)

    def accept(self, stream_id: int, connected: Connected) -> Cell:
        stream = self.get(stream_id)
        if self.initiator or stream.state is not StreamState.OPENING:
            raise LocalProtocolError(f"stream {stream_id} is not a request waiting for an answer")
        stream.state = StreamState.OPEN
        stream.connected = True
        return self._seal(stream_id, connected)

    def capacity(self, stream_id: int) -> int:
        """How many bytes send() takes right now without exceeding either package window."""
        stream = self.get(stream_id)
        if stream.state is not StreamState.OPEN:
            return 0
        return min(stream.package_window, self.window.package) * RELAY_DATA_MAX

    def send(self, stream_id: int, data: bytes) -> list[Cell]:
        stream = self.get(stream_id)
        if stream.state is not StreamState.OPEN:
            raise LocalProtocolError(f"stream {stream_id} is {stream.state.value}: cannot send data")
        chunks = chunk_data(data)
        if len(chunks) > min(stream.package_window, self.window.package):
            raise LocalProtocolError(f"{len(chunks)} DATA cells exceed the package windows (stream "
                                     f"{stream.package_window}, circuit {self.window.package}): "
                                     "check capacity()")
        if self._seal_data is not None:
            window, sent_digest = self.window, self._sent_digest

            def account() -> None:
                stream.package_window -= 1
                window.packaged(sent_digest)

            return self._seal_data(stream_id, chunks, account)
        cells = []
        for chunk in chunks:
            cells.append(self._seal(stream_id, Data(chunk)))
            stream.package_window -= 1
            self.window.packaged(self._sent_digest)
        return cells

    def end(self, stream_id: int, reason: int = EndReason.DONE) -> Cell:
        stream = self.get(stream_id)
        if stream.state not in (StreamState.OPENING, StreamState.OPEN):
            raise LocalProtocolError(f"stream {stream_id} is {stream.state.value}: cannot end it")
        stream.state = StreamState.HALF_CLOSED
        return self._seal(stream_id, End(reason))

    def _allocate_id(self) -> int:
        for _ in range(0xFFFF):
            stream_id = self._next_id
            self._next_id = self._next_id % 0xFFFF + 1  # 1..65535, never 0
            if stream_id not in self._streams:
                return stream_id
        raise LocalProtocolError("all 65535 stream ids are in use on this circuit")

    # --- what the peer sent

    def receive(self, stream_id: int, message: object) -> tuple[list[StreamEvent], list[Cell]]:
        """One parsed stream-layer message from the peer: (events, SENDME cells to send back)."""
        if getattr(message, "COMMAND", None) not in self.receivable:
            raise UnexpectedMessage(f"{type(message).__name__} is not for this end of a stream")
        if stream_id == 0:
            if not isinstance(message, Sendme):
                raise UnexpectedMessage(f"{type(message).__name__} needs a stream id")
            self.window.sendme_received(message)
            return [], []
        if isinstance(message, Begin | BeginDir):
            return self._begin(stream_id, message), []
        stream = self._streams.get(stream_id)
        if stream is None:
            raise UnexpectedMessage(f"{type(message).__name__} for unknown stream {stream_id}")
        if isinstance(message, Data):
            return self._data(stream, message.data)
        if isinstance(message, End):
            del self._streams[stream_id]
            was_half_closed = stream.state is StreamState.HALF_CLOSED
            stream.state = StreamState.CLOSED
            return ([] if was_half_closed else [StreamEnd(stream_id, message.reason)]), []
        if isinstance(message, Connected):
            return self._connected(stream, message), []
        self._stream_sendme(stream)
        return [], []

    def receive_data(self, stream_id: int, data: bytes) -> tuple[list[StreamEvent], list[Cell]]:
        """receive(stream_id, Data(data)), the same checks without the message object: the bulk path."""
        if stream_id == 0:
            raise UnexpectedMessage("Data needs a stream id")
        stream = self._streams.get(stream_id)
        if stream is None:
            raise UnexpectedMessage(f"Data for unknown stream {stream_id}")
        return self._data(stream, data)

    def _begin(self, stream_id: int, request: Begin | BeginDir) -> list[StreamEvent]:
        if stream_id in self._streams:
            raise UnexpectedMessage(f"BEGIN on stream id {stream_id}, which is in use")
        self._streams[stream_id] = Stream(stream_id, StreamState.OPENING)
        return [StreamRequested(stream_id, request)]

    def _connected(self, stream: Stream, message: Connected) -> list[StreamEvent]:
        if stream.connected:
            raise UnexpectedMessage(f"second CONNECTED on stream {stream.stream_id}")
        stream.connected = True
        if stream.state is StreamState.HALF_CLOSED:
            return []
        stream.state = StreamState.OPEN
        return [StreamConnected(stream.stream_id, message)]

    def take_data_run(self, stream_id: int, count: int, after: Callable[[int], None],
                      replies: list[Cell]) -> int:
        """The bulk path of receive_data: `count` DATA cells on `stream_id`, counted in the windows at once.
        How many it took (the leading ones that receive_data would deliver without an error); the SENDMEs
        they make are appended to `replies`, the same cells in the same order as cell by cell. `after(i)`
        runs right before the SENDMEs that cell i (0-based) makes: the received digest is then that cell's.
        It takes nothing from an unknown, half-closed or (at the initiator) not yet connected stream: give
        those cells to receive_data.

        Between SENDMEs the windows only count down, so a stretch of cells is one subtraction; the stretch
        ends at the next cell whose count makes either window send one (_count_data's thresholds)."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.state is StreamState.HALF_CLOSED or (
                self.initiator and not stream.connected):
            return 0
        window = self.window
        circuit_due = CIRCWINDOW_START - CIRCWINDOW_INCREMENT
        stream_due = STREAMWINDOW_START - STREAMWINDOW_INCREMENT
        taken = 0
        while taken < count and stream.deliver_window > 0:
            # cells up to and including the one that brings each window to its threshold
            to_circuit = window.deliver - circuit_due
            to_stream = stream.deliver_window - stream_due
            if to_circuit < 1 or to_stream < 1:  # already at a threshold: one cell the ordinary way
                after(taken)
                self._count_data(stream, replies)
                taken += 1
                continue
            step = min(count - taken, to_circuit, to_stream)
            window.deliver -= step
            stream.deliver_window -= step
            taken += step
            if step == to_circuit or step == to_stream:
                after(taken - 1)
                if step == to_circuit:
                    window.deliver += CIRCWINDOW_INCREMENT
                    replies.append(self._seal(0, Sendme(1, self._received_digest())))
                if step == to_stream:
                    stream.deliver_window += STREAMWINDOW_INCREMENT
                    replies.append(self._seal(stream.stream_id, Sendme(0)))
        return taken

    def _data(self, stream: Stream, data: bytes) -> tuple[list[StreamEvent], list[Cell]]:
        # An initiator gets no DATA before CONNECTED; an acceptor may (optimistic data, tor-spec 6.2).
        if self.initiator and not stream.connected:
            raise UnexpectedMessage(f"DATA on stream {stream.stream_id} before CONNECTED")
        cells: list[Cell] = []
        if stream.deliver_window > 0 and stream.state is not StreamState.HALF_CLOSED:
            return [StreamData(stream.stream_id, data)], self._count_data(stream, cells)
        circuit_sendme = self.window.delivered(self._received_digest)
        if circuit_sendme is not None:
            cells.append(self._seal(0, Sendme(1, circuit_sendme)))
        stream.deliver_window -= 1
        if stream.deliver_window < 0:
            raise UnexpectedMessage(f"stream {stream.stream_id} sent DATA past its window")
        return [], cells  # half-closed: counted against the windows, not delivered

    def _count_data(self, stream: Stream, cells: list[Cell]) -> list[Cell]:
        """One DATA cell delivered on `stream` (deliver window above 0): both windows counted, the SENDMEs
        due appended to `cells`, circuit-level first."""
        circuit_sendme = self.window.delivered(self._received_digest)
        if circuit_sendme is not None:
            cells.append(self._seal(0, Sendme(1, circuit_sendme)))
        stream.deliver_window -= 1
        if stream.deliver_window <= STREAMWINDOW_START - STREAMWINDOW_INCREMENT:
            stream.deliver_window += STREAMWINDOW_INCREMENT
            cells.append(self._seal(stream.stream_id, Sendme(0)))
        return cells

    def _stream_sendme(self, stream: Stream) -> None:
        if stream.package_window + STREAMWINDOW_INCREMENT > STREAMWINDOW_START:
            raise UnexpectedMessage(f"stream {stream.stream_id} SENDME overflows its package window")
        stream.package_window += STREAMWINDOW_INCREMENT
