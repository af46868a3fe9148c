"""Circuits we build (clients, onion services): the Trio driver of nodes.core.circuit.OriginCircuit.

`CircuitManager.build(path)` sends CREATE2 (or, with `create_fast=True`, CREATE_FAST) to the first hop and
EXTEND2 hop by hop, each step under a timeout. The returned handle runs one task (in its channel's nursery)
that feeds the circuit's cells to the core and routes the events: stream data to streams, onion-service
messages to `receive`, incoming BEGINs to `accept_stream`. Failures surface as typed errors
(CircuitBuildError, CircuitClosed, StreamRefused).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

import trio

from nodes.core import circuit as core
from nodes.core.circuit import CircuitState, HopSpec, OriginCircuit
from nodes.core.errors import RemoteProtocolError, UnexpectedMessage
from nodes.core.netview import Relay
from nodes.core.relay import Begin, BeginDir, EndReason
from nodes.core.relay_crypto import HopCrypto

from .channels import Channel, ChannelError, ChannelManager, Inbox
from .events import EventLog
from .metrics import Metrics
from .streams import CircuitStream

STEP_TIMEOUT = 10.0  # per hop of a build: CREATE2 -> CREATED2 (or CREATE_FAST), EXTEND2 -> EXTENDED2
STREAM_TIMEOUT = 10.0  # BEGIN -> CONNECTED
RECEIVE_TIMEOUT = 30.0  # default wait for an onion-service message
PENDING_MESSAGES = 64  # onion-service messages waiting for receive() before the circuit waits

_HS_EVENTS = (core.IntroEstablished, core.IntroduceAck, core.RendezvousEstablished, core.Rendezvous2,
              core.Introduce2)


class CircuitError(Exception):
    """Base of the circuit errors; `kind` is a short label (metrics key)."""

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class CircuitBuildError(CircuitError):
    """A build failed at hop `hop` (0-based): no link, a timeout, a DESTROY, or a bad handshake reply."""

    def __init__(self, message: str, *, kind: str, hop: int) -> None:
        super().__init__(message, kind=kind)
        self.hop = hop


class CircuitClosed(CircuitError, trio.BrokenResourceError):
    """The circuit is gone: destroyed by a relay, its link died, a protocol error, or closed by us."""


def hop_spec(router: Relay) -> HopSpec:
    return HopSpec(router.address, router.or_port, router.node_id, router.identity, router.ntor_onion_key)


class OriginCircuitHandle:
    """A built circuit. Also the StreamHost of its streams."""

    def __init__(self, manager: CircuitManager, channel: Channel, path: Sequence[Relay]) -> None:
        self._manager = manager
        self.channel = channel
        self.path = tuple(path)
        self.purpose = "general"  # what its builder uses it for (hsdir, intro, rendezvous): shown in /status
        self.error: CircuitClosed | None = None
        self.closed = trio.Event()
        self._changed = trio.lowlevel.ParkingLot()
        self._streams: dict[int, CircuitStream] = {}
        self._messages_send, self._messages = trio.open_memory_channel(PENDING_MESSAGES)
        # BEGINs waiting for accept_stream(). Not bounded here: a burst of them arrives in one batch of cells,
        # and the streams open at once are bounded by the manager's max_incoming_streams (and the stream ids).
        self._requests_send, self._requests = trio.open_memory_channel(math.inf)
        self.circ_id = channel.add_circuit(self._run)
        self.core = OriginCircuit(self.circ_id, manager.rng, path_len=len(path))

    def __repr__(self) -> str:
        names = ",".join(r.nickname for r in self.path)
        return f"<OriginCircuit {self.circ_id:#x} [{names}] {self.core.state.value}>"

    @property
    def hop_count(self) -> int:
        return self.core.hop_count

    def hop_kh(self, hop: int = -1) -> bytes:
        """KH of an ntor hop: what ESTABLISH_INTRO's HANDSHAKE_AUTH is keyed with."""
        return self.core.hop_kh(hop)

    # -- messages ------------------------------------------------------------------------------------------
    async def send(self, message, hop: int = -1) -> None:
        """A control or onion-service message (DROP, TRUNCATE, ESTABLISH_INTRO, INTRODUCE1, ...)."""
        self._check_usable()
        self.channel.send_nowait([self.core.send_relay(message, hop)])
        await self.channel.wait_writable()

    async def receive(self, allowed: tuple[type, ...] = (), *, timeout: float = RECEIVE_TIMEOUT):
        """The next onion-service event (nodes.core.circuit.IntroEstablished, Rendezvous2, Introduce2, ...).

        With `allowed`, any other event is the peer's protocol error: the circuit is destroyed."""
        with trio.fail_after(timeout):
            try:
                event = await self._messages.receive()
            except trio.EndOfChannel:
                raise self.error from None
        if allowed and not isinstance(event, allowed):
            error = UnexpectedMessage(f"{type(event).__name__} where {[t.__name__ for t in allowed]} "
                                      "was expected")
            self._protocol_error(error)
            raise self.error from error
        return event

    def add_virtual_hop(self, hop_crypto: HopCrypto) -> int:
        """Append the onion-service hop (after RENDEZVOUS2 on the client, RENDEZVOUS1 on the service)."""
        self._check_usable()
        return self.core.add_virtual_hop(hop_crypto)

    # -- streams -------------------------------------------------------------------------------------------
    async def open_stream(self, target: str, port: int, *, timeout: float = STREAM_TIMEOUT) -> CircuitStream:
        """BEGIN target:port ("" for an onion service) on the last hop; StreamRefused if it answers END."""
        return await self._open(Begin(target, port), timeout)

    async def open_dir_stream(self, *, timeout: float = STREAM_TIMEOUT) -> CircuitStream:
        """BEGIN_DIR to the last hop's directory."""
        return await self._open(BeginDir(), timeout)

    async def _open(self, request: Begin | BeginDir, timeout: float) -> CircuitStream:
        self._check_usable()
        stream_id, cell = self.core.open_stream(request)
        stream = self._streams[stream_id] = CircuitStream(self, stream_id)
        self.channel.send_nowait([cell])
        try:
            with trio.fail_after(timeout):
                await self.channel.wait_room()  # writes the BEGIN now when the link is idle
                await stream._wait_connected()
        except BaseException:
            if stream.end_reason is None:  # timed out or cancelled: tell the other end
                self.end_stream(stream_id, EndReason.MISC)
            self.forget_stream(stream_id)
            raise
        return stream

    async def accept_stream(self) -> tuple[CircuitStream, int]:
        """The next stream the other end opens on this circuit (an onion service's rendezvous circuit):
        CONNECTED is sent; returns (stream, port). Close unwanted ones with `aclose()`."""
        while True:
            try:
                stream, port = await self._requests.receive()
            except trio.EndOfChannel:
                raise self.error from None
            if self._streams.get(stream.stream_id) is not stream:
                continue  # the client ended it meanwhile (and may have reused its id for a later BEGIN)
            self.channel.send_nowait([self.core.accept_stream(stream.stream_id)])
            stream._set_connected()
            await self.channel.wait_room()  # writes the CONNECTED now when the link is idle
            return stream, port

    # StreamHost: each call makes the cells and queues them at once (encryption order is sending order).
    def send_capacity(self, stream_id: int) -> int:
        self._check_usable()
        return self.core.send_capacity(stream_id)

    def send_data(self, stream_id: int, data: bytes) -> None:
        self._check_usable()
        self.channel.send_nowait(self.core.send_data(stream_id, data))

    def end_stream(self, stream_id: int, reason: int) -> None:
        if self.error is None:
            self.channel.send_nowait([self.core.end_stream(stream_id, reason)])

    def forget_stream(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)

    async def wait_changed(self) -> None:
        self._check_usable()
        await self._changed.park()
        self._check_usable()

    async def wait_writable(self) -> None:
        await self.channel.wait_writable()

    @property
    def stream_count(self) -> int:
        """Streams open on this circuit."""
        return len(self._streams)

    # -- closing -------------------------------------------------------------------------------------------
    async def aclose(self) -> None:
        """DESTROY the circuit (unless a relay already did); idempotent."""
        self.close_nowait()
        await trio.lowlevel.checkpoint()

    def close_nowait(self) -> None:
        """aclose without its checkpoint."""
        if self.core.state is not CircuitState.DESTROYED:
            self.channel.send_nowait([self.core.destroy()])
        self._fail(CircuitClosed("circuit closed by us", kind="closed"))

    def _check_usable(self) -> None:
        if self.error is not None:
            raise self.error

    def _fail(self, error: CircuitClosed) -> None:
        """Mark the circuit gone (first reason wins) and wake everyone waiting on it."""
        if self.error is not None:
            return
        self.error = error
        self.channel.remove_circuit(self.circ_id)
        for stream in self._streams.values():
            stream._fail(error)
        self._messages_send.close()
        self._requests_send.close()
        self._changed.unpark_all()
        self.closed.set()
        self._manager._forget(self)

    def _protocol_error(self, error: RemoteProtocolError) -> None:
        self._manager.metrics.inc("errors_total", kind=error.kind)
        self._manager.events.emit("circuit_protocol_error", circ_id=self.circ_id, kind=error.kind,
                                  error=str(error))
        if self.core.state is not CircuitState.DESTROYED:
            self.channel.send_nowait([self.core.destroy()])
        self._fail(CircuitClosed(f"protocol error on the circuit: {error}", kind=error.kind))

    # -- the circuit's task --------------------------------------------------------------------------------
    async def _run(self, inbox: Inbox) -> None:
        while True:
            try:
                cells = await inbox.receive_batch()
            except trio.EndOfChannel:
                break
            queued = False
            core_circuit = self.core
            core_circuit.decrypt_ahead(cells)  # the RELAY cells' layers off with one keystream call per layer
            receive, data_run = core_circuit.receive_cell, core_circuit.receive_data_run
            # The bulk of the cells: DATA alone. Consecutive DATA of one stream reaches it in one delivery;
            # anything else first delivers what was collected, so the stream sees everything in order.
            data_stream, data = 0, []
            i, n = 0, len(cells)
            while i < n:
                if self.error is not None:
                    return
                taken, stream_id, run, replies = data_run(cells[i:] if i else cells)
                if taken:
                    if replies:
                        self.channel.send_nowait(replies)  # SENDMEs: queued before anything else is encrypted
                        queued = True
                    if stream_id != data_stream:
                        await self._deliver_data(data_stream, data)
                        data_stream, data = stream_id, []
                    data += run
                    i += taken
                    continue
                cell = cells[i]
                i += 1
                try:
                    events = receive(cell)
                except RemoteProtocolError as e:
                    await self._deliver_data(data_stream, data)
                    self._protocol_error(e)
                    return
                if len(events) == 1 and type(events[0]) is core.StreamData:
                    if events[0].stream_id != data_stream:
                        await self._deliver_data(data_stream, data)
                        data_stream, data = events[0].stream_id, []
                    data.append(events[0].data)
                elif events:
                    await self._deliver_data(data_stream, data)
                    data_stream, data = 0, []
                    queued = await self._handle(events) or queued
            await self._deliver_data(data_stream, data)
            # Once per batch: whoever waits for a window or a hop re-checks after all of it.
            self._changed.unpark_all()
            if queued:
                await self.channel.wait_room()
        # The inbox ends when the link dies (or after _fail removed the circuit: then this does nothing).
        self._fail(CircuitClosed(f"link to {self.channel.address} closed", kind="link_closed"))

    async def _deliver_data(self, stream_id: int, data: list[bytes]) -> None:
        if data and (stream := self._streams.get(stream_id)) is not None:
            await stream._deliver(data[0] if len(data) == 1 else b"".join(data))

    async def _handle(self, events: list) -> bool:
        """Act on one cell's events; True if it queued cells (the caller then waits for the link)."""
        replies = [e.cell for e in events if type(e) is core.SendCell]
        if replies:
            self.channel.send_nowait(replies)  # SENDMEs: queued before anything else is encrypted
        for event in events:
            if isinstance(event, core.StreamData):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    await stream._deliver(event.data)
            elif isinstance(event, core.StreamConnected):
                if (stream := self._streams.get(event.stream_id)) is not None:
                    stream._set_connected()
            elif isinstance(event, core.StreamEnd):
                if (stream := self._streams.pop(event.stream_id, None)) is not None:
                    stream._finish(event.reason)
            elif isinstance(event, core.StreamRequested):
                self._stream_requested(event)
            elif isinstance(event, _HS_EVENTS):
                try:
                    await self._messages_send.send(event)
                except trio.ClosedResourceError:
                    break
            elif isinstance(event, core.Destroyed):
                self._fail(CircuitClosed(f"destroyed by a relay (reason {event.reason})", kind="destroyed"))
            elif isinstance(event, core.Truncated):
                self.channel.send_nowait([self.core.destroy()])
                self._fail(CircuitClosed(f"truncated after hop {event.hop_index} (reason {event.reason})",
                                         kind="truncated"))
        return bool(replies)

    def _stream_requested(self, event: core.StreamRequested) -> None:
        port = event.request.port if isinstance(event.request, Begin) else 0
        limit = self._manager.max_incoming_streams
        if limit and len(self._streams) >= limit:
            # Tor ignores the BEGIN or closes the circuit; an END tells the client now, and its reply to
            # RESOURCELIMIT is GENERAL_FAILURE, as in tor.
            self.channel.send_nowait([self.core.end_stream(event.stream_id, EndReason.RESOURCELIMIT)])
            self._manager.metrics.inc("streams_refused_total", reason=EndReason.RESOURCELIMIT.name)
            self._manager.events.emit("stream_refused", circ_id=self.circ_id, port=port,
                                      reason=f"{limit} streams open on the circuit")
            return
        stream = self._streams[event.stream_id] = CircuitStream(self, event.stream_id)
        self._requests_send.send_nowait((stream, port))


class CircuitManager:
    """Builds circuits for a client or an onion service and keeps the open ones (`circuits`)."""

    def __init__(self, channels: ChannelManager, metrics: Metrics, events: EventLog,
                 rng: Callable[[int], bytes] = os.urandom, *, step_timeout: float = STEP_TIMEOUT,
                 max_incoming_streams: int = 0) -> None:
        self.channels = channels
        self.metrics = metrics
        self.events = events
        self.rng = rng
        self.step_timeout = step_timeout
        # Streams the other end may have open at once on one of our circuits (an onion service's rendezvous
        # circuits); past it BEGIN gets END RESOURCELIMIT. 0: no limit but the 65535 stream ids, as in tor
        # (HiddenServiceMaxStreams 0).
        self.max_incoming_streams = max_incoming_streams
        self.circuits: set[OriginCircuitHandle] = set()
        metrics.describe("circuits_built_total", "counter", "Circuits built")
        metrics.describe("circuit_build_failures_total", "counter", "Circuit builds that failed, by kind")
        metrics.describe("circuit_build_seconds", "summary", "Time to build a circuit")
        metrics.describe("circuits_open", "gauge", "Circuits we built that are open")
        metrics.describe("streams_refused_total", "counter",
                         "BEGINs from the other end refused, by END reason")

    async def build(self, path: Sequence[Relay], *, create_fast: bool = False) -> OriginCircuitHandle:
        """A circuit through `path` (first hop first). CircuitBuildError on any failure.

        `create_fast`: open the first hop with CREATE_FAST instead of ntor (tor-spec 5.1.5), as a C tor client
        does for a relay whose onion key it does not know (its one-hop directory circuits while it
        bootstraps). The first hop's onion key is then not used; later hops use ntor as always."""
        if not path:
            raise ValueError("a circuit needs at least one hop")
        started = trio.current_time()
        hops = [hop_spec(r) for r in path]
        handle: OriginCircuitHandle | None = None
        step = 0
        try:
            with trio.fail_after(self.step_timeout):
                channel = await self.channels.get_channel(hops[0].address, hops[0].port, hops[0].node_id)
            handle = OriginCircuitHandle(self, channel, path)
            self.circuits.add(handle)
            for step, hop in enumerate(hops):
                if step:
                    cell = handle.core.extend(hop)
                else:
                    cell = handle.core.create_fast() if create_fast else handle.core.create(hop)
                handle.channel.send_nowait([cell])
                with trio.fail_after(self.step_timeout):
                    while handle.core.hop_count <= step:
                        await handle.wait_changed()
        except (ChannelError, CircuitClosed, trio.TooSlowError) as e:
            kind = "timeout" if isinstance(e, trio.TooSlowError) else e.kind
            if handle is not None:
                await handle.aclose()
            self.metrics.inc("circuit_build_failures_total", kind=kind)
            self.events.emit("circuit_build_failed", hop=step, relay=path[step].nickname, kind=kind,
                             error=str(e))
            raise CircuitBuildError(f"building through {path[step].nickname} (hop {step}) failed: {e}",
                                    kind=kind, hop=step) from e
        seconds = trio.current_time() - started
        self.metrics.inc("circuits_built_total")
        self.metrics.observe("circuit_build_seconds", seconds)
        self.metrics.set("circuits_open", len(self.circuits))
        self.events.emit("circuit_built", circ_id=handle.circ_id, path=[r.nickname for r in path],
                         seconds=round(seconds, 4))
        return handle

    def _forget(self, handle: OriginCircuitHandle) -> None:
        self.circuits.discard(handle)
        self.metrics.set("circuits_open", len(self.circuits))
