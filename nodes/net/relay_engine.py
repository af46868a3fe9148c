"""The relay side of circuits: the Trio driver of nodes.core.circuit.RelayCircuit.

Each circuit through this relay runs two tasks: one for cells from the origin's side (in the previous link's
nursery) and, once extended, one for cells from the next hop (in the next link's nursery). Keeping the two
directions in separate tasks means a stalled direction never blocks the other, so echo traffic cannot
deadlock on full buffers. Both tasks queue the cells the core returns at once, in the order it made them.

While a direction's task is idle, the link's reader passes that direction's cells on itself (`inbox.fast`,
nodes/net/channels.py): no task switch per hop for a quiet circuit's cells.

Relay messages addressed to this relay go to pluggable handlers keyed by relay command: BEGIN_DIR opens a
local stream for `dir_handler`; ESTABLISH_INTRO, INTRODUCE1, ESTABLISH_RENDEZVOUS and RENDEZVOUS1 go to
`MessageHandler` objects (IntroPoint and RendezvousPoint below are the standard ones).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import trio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from nodes.core import circuit as core
from nodes.core.cells import Cell, Command, DestroyReason
from nodes.core.circuit import RelayCircuit, RelayState
from nodes.core.errors import LocalProtocolError, RemoteProtocolError
from nodes.core.hs_intro import verify_establish_intro
from nodes.core.relay import (
    BeginDir,
    EndReason,
    EstablishIntro,
    EstablishRendezvous,
    Introduce1,
    Introduce2,
    IntroduceAck,
    IntroduceAckStatus,
    IntroEstablished,
    LinkSpecEd25519,
    LinkSpecIPv4,
    LinkSpecIPv6,
    LinkSpecRsaId,
    RelayCommand,
    Rendezvous1,
    Rendezvous2,
    RendezvousEstablished,
)

from .channels import Channel, ChannelError, ChannelManager, Inbox, destroy_cell
from .events import EventLog
from .metrics import Metrics
from .streams import CircuitStream

EXTEND_TIMEOUT = 10.0  # opening the link to the next hop

StreamHandler = Callable[[CircuitStream], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RelayKeys:
    """The relay's identities (Ed25519 public key, 20-byte node ID from its RSA key) and its ntor key pair."""

    identity: bytes
    ntor_secret: bytes = field(repr=False)
    ntor_public: bytes
    node_id: bytes

    def __post_init__(self) -> None:
        if len(self.identity) != 32:
            raise ValueError("the Ed25519 identity key is 32 bytes")
        public = X25519PrivateKey.from_private_bytes(self.ntor_secret).public_key().public_bytes_raw()
        if public != self.ntor_public:
            raise ValueError("the ntor onion public key does not match its secret")
        if len(self.node_id) != 20:
            raise ValueError("the node ID is 20 bytes")


class MessageHandler(Protocol):
    """Acts on an onion-service message a circuit delivered to this relay."""

    async def handle(self, circuit: RelayCircuitRef, message: object) -> None:
        """Raise a RemoteProtocolError to have the circuit destroyed (and the error counted)."""

    def circuit_closed(self, circuit: RelayCircuitRef) -> None:
        """Forget whatever refers to `circuit` (it delivered a message to this handler earlier)."""


class CircuitObserver(Protocol):
    """Watches circuits through this relay from the outside, as a relay operator could (an adversary's relay:
    nodes/net/adversary.py): when they open, the RELAY cells that travel back to their origin, their end."""

    def opened(self, circuit: RelayCircuitRef) -> None: ...

    def backward(self, circuit: RelayCircuitRef, cells: int) -> None: ...

    def closed(self, circuit: RelayCircuitRef) -> None: ...


class CircuitGone(trio.BrokenResourceError):
    """The relay circuit a stream or handler used is gone."""


class RelayCircuitRef:
    """One circuit at this relay, as the engine and handlers see it. Also the StreamHost of its streams."""

    def __init__(self, engine: RelayEngine, circuit: RelayCircuit, prev: Channel) -> None:
        self.engine = engine
        self.core = circuit
        self.prev = prev
        self.next: Channel | None = None
        self.next_circ_id: int | None = None
        self.joined: RelayCircuitRef | None = None
        self.error: BaseException | None = None  # set once the circuit is gone
        self.closed = trio.Event()
        self.streams: dict[int, CircuitStream] = {}
        self.handlers: set[MessageHandler] = set()
        self._changed = trio.lowlevel.ParkingLot()
        self._nursery: trio.Nursery | None = None

    def __repr__(self) -> str:
        return f"<RelayCircuit {self.prev.address}/{self.core.circ_id:#x} {self.core.state.value}>"

    @property
    def kh(self) -> bytes:
        """KH of this circuit's handshake (ntor or CREATE_FAST): ESTABLISH_INTRO's HANDSHAKE_AUTH key."""
        return self.core.kh

    async def send(self, message) -> None:
        """Originate a message to the circuit's origin (INTRO_ESTABLISHED, INTRODUCE2, ...)."""
        if self.error is not None:
            raise self.error
        self.prev.send_nowait([self.core.originate(message)])
        await self.prev.wait_writable()

    async def destroy(self, reason: int = DestroyReason.PROTOCOL) -> None:
        self.engine._teardown(self, reason)
        await trio.lowlevel.checkpoint()

    # StreamHost
    def send_capacity(self, stream_id: int) -> int:
        self._check_usable()
        return self.core.send_capacity(stream_id)

    def send_data(self, stream_id: int, data: bytes) -> None:
        self._check_usable()
        self.prev.send_nowait(self.core.send_data(stream_id, data))

    def end_stream(self, stream_id: int, reason: int) -> None:
        if self.error is None:
            self.prev.send_nowait([self.core.end_stream(stream_id, reason)])

    def forget_stream(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)

    async def wait_changed(self) -> None:
        self._check_usable()
        await self._changed.park()
        self._check_usable()

    async def wait_writable(self) -> None:
        await self.prev.wait_writable()

    def _check_usable(self) -> None:
        if self.error is not None:
            raise self.error


class RelayEngine:
    """Answers CREATE2 and CREATE_FAST on `channels`, forwards cells both ways, extends circuits, runs this
    relay's end of circuits (directory streams, intro and rendezvous points)."""

    def __init__(self, channels: ChannelManager, keys: RelayKeys, metrics: Metrics, events: EventLog, *,
                 handlers: Mapping[int, MessageHandler] | None = None,
                 dir_handler: StreamHandler | None = None, rng: Callable[[int], bytes] = os.urandom,
                 observer: CircuitObserver | None = None) -> None:
        self.channels = channels
        self.observer = observer
        self.keys = keys
        self.metrics = metrics
        self.events = events
        self.handlers = dict(handlers or {})
        self.dir_handler = dir_handler
        self.rng = rng
        self.circuits: set[RelayCircuitRef] = set()
        channels.on_create = self._on_create
        metrics.describe("relay_circuits_open", "gauge", "Circuits through or ending at this relay")
        metrics.describe("relay_circuits_total", "counter", "CREATE2 and CREATE_FAST cells answered")
        metrics.describe("create_fast_total", "counter",
                         "CREATE_FAST cells answered (first hops of clients that know no onion key yet)")
        metrics.describe("extends_total", "counter", "EXTEND2 requests, by result")

    # -- a new circuit -------------------------------------------------------------------------------------
    def _on_create(self, channel: Channel, cell: Cell):
        return functools.partial(self._run_circuit, channel)

    async def _run_circuit(self, prev: Channel, inbox: Inbox) -> None:
        create = await inbox.receive()
        try:
            circuit, created = RelayCircuit.accept(create, node_id=self.keys.node_id,
                                                   onion_secret=self.keys.ntor_secret, rng=self.rng)
        except RemoteProtocolError as e:
            self._count_error(e.kind, f"{Command(create.command).name} refused", prev=prev.address,
                              error=str(e))
            prev.send_nowait([destroy_cell(create.circ_id, DestroyReason.PROTOCOL)])
            return
        ref = RelayCircuitRef(self, circuit, prev)
        prev.send_nowait([created])
        self.circuits.add(ref)
        if self.observer is not None:
            self.observer.opened(ref)
        self.metrics.inc("relay_circuits_total")
        if circuit.created_fast:
            self.metrics.inc("create_fast_total")
        self.metrics.set("relay_circuits_open", len(self.circuits))
        try:
            async with trio.open_nursery() as streams:
                ref._nursery = streams
                await self._forward_loop(ref, inbox)
                streams.cancel_scope.cancel()
        finally:
            self._teardown(ref, DestroyReason.INTERNAL)

    async def _forward_loop(self, ref: RelayCircuitRef, inbox: Inbox) -> None:
        inbox.fast = functools.partial(self._forward_nowait, ref)
        while True:
            try:
                cells = await inbox.receive_batch()
            except trio.EndOfChannel:
                break
            if not await self._forward_batch(ref, cells):
                return
            ref._changed.unpark_all()  # once per batch: stream senders re-check their windows
            await ref.prev.wait_room()
            if ref.next is not None:
                await ref.next.wait_room()
            if ref.joined is not None:
                await ref.joined.prev.wait_room()
        self._teardown(ref, DestroyReason.CHANNEL_CLOSED)  # the previous link died (no-op if we ended it)

    async def _forward_batch(self, ref: RelayCircuitRef, cells: list[Cell]) -> bool:
        """Feed a batch of cells from the origin's side to the core; False once the circuit is gone.

        Runs of cells that are only passed on (the bulk of the data) go through the core's pass_on_run; the
        others, one by one, through receive_forward. What they make for the next hop or the joined circuit
        is collected and queued before anything that may wait and at the end, so cells still leave in the
        order they were encrypted. The circuit can only go away in _execute or while we wait."""
        if ref.error is not None:
            return False
        core_circuit = ref.core
        receive, pass_on = core_circuit.receive_forward, core_circuit.pass_on_run
        onward: list[Cell] = []  # to ref.next
        joined: list[Cell] = []  # to ref.joined's previous hop
        i, n = 0, len(cells)
        while i < n:
            passed, taken = pass_on(cells[i:] if i else cells)
            if taken:
                (joined if core_circuit.state is RelayState.JOINED else onward).extend(passed)
                i += taken
                if i == n:
                    break
            cell = cells[i]
            i += 1
            try:
                actions = receive(cell)
            except RemoteProtocolError as e:
                self._queue_onward(ref, onward, joined)
                self._count_error(e.kind, "circuit destroyed", circuit=repr(ref), error=str(e))
                self._teardown(ref, DestroyReason.PROTOCOL)
                return False
            if len(actions) == 1:
                kind = type(actions[0])
                if kind is core.SendForward:
                    onward.append(actions[0].cell)
                    continue
                if kind is core.SendJoined:
                    joined.append(actions[0].cell)
                    continue
            elif not actions:
                continue
            self._queue_onward(ref, onward, joined)
            onward, joined = [], []
            await self._execute(ref, actions)
            if ref.error is not None:
                return False
        self._queue_onward(ref, onward, joined)
        return True

    @staticmethod
    def _forward_nowait(ref: RelayCircuitRef, cells: list[Cell]) -> int:
        """The link reader's shortcut while the forward task is idle (channels.py): the leading cells that
        are only passed on go out now; how many it took. Nothing when the link onward is above its
        high-water mark: the task then waits for room as usual."""
        if ref.error is not None:
            return 0
        core_circuit = ref.core
        if core_circuit.state is RelayState.JOINED:
            onward = ref.joined.prev if ref.joined is not None else None
        else:
            onward = ref.next
        if onward is None or onward.above_high_water:
            return 0
        passed, taken = core_circuit.pass_on_run(cells)
        onward.send_nowait(passed)
        return taken

    def _backward_nowait(self, ref: RelayCircuitRef, next_circ_id: int, cells: list[Cell]) -> int:
        """_forward_nowait for cells from the next hop: the leading RELAY cells, under our layer. The
        observer sees them as it sees the task's: an adversary relay must not miss what the shortcut takes."""
        if ref.error is not None or ref.next_circ_id != next_circ_id or ref.prev.above_high_water:
            return 0
        passed, taken = ref.core.relay_backward_run(cells)
        ref.prev.send_nowait(passed)
        if self.observer is not None and taken:
            self.observer.backward(ref, taken)
        return taken

    @staticmethod
    def _queue_onward(ref: RelayCircuitRef, onward: list[Cell], joined: list[Cell]) -> None:
        if onward and ref.next is not None:
            ref.next.send_nowait(onward)
        if joined and ref.joined is not None:
            ref.joined.prev.send_nowait(joined)

    async def _backward_loop(self, ref: RelayCircuitRef, next_circ_id: int, inbox: Inbox) -> None:
        inbox.fast = functools.partial(self._backward_nowait, ref, next_circ_id)
        while True:
            try:
                cells = await inbox.receive_batch()
            except trio.EndOfChannel:
                break
            if ref.error is not None or ref.next_circ_id != next_circ_id:
                return
            if self.observer is not None:
                self.observer.backward(ref, sum(1 for c in cells if c.command == Command.RELAY))
            # Nothing here waits, so the batch's cells are queued together, in the order they were made. Runs
            # of RELAY cells take the core's bulk path (relay_backward_run); the others go one by one.
            out: list[Cell] = []
            run = ref.core.relay_backward_run
            i, n = 0, len(cells)
            while i < n:
                passed, taken = run(cells[i:] if i else cells)
                if taken:
                    out += passed
                    i += taken
                    continue
                cell = cells[i]
                i += 1
                try:
                    cell_out = ref.core.receive_backward(cell)
                except RemoteProtocolError as e:
                    ref.prev.send_nowait(out)
                    self._count_error(e.kind, "circuit destroyed", circuit=repr(ref), error=str(e))
                    self._teardown(ref, DestroyReason.PROTOCOL)
                    return
                if cell_out is not None:
                    out.append(cell_out)
                if ref.core.state is RelayState.DESTROYED:  # the next hop destroyed it; the DESTROY goes back
                    ref.prev.send_nowait(out)
                    self._teardown(ref, DestroyReason.DESTROYED)
                    return
            ref.prev.send_nowait(out)
            ref._changed.unpark_all()
            await ref.prev.wait_room()
        if ref.next_circ_id == next_circ_id:
            self._teardown(ref, DestroyReason.CHANNEL_CLOSED)  # the next link died

    # -- what the core asked for ---------------------------------------------------------------------------
    def _queue(self, ref: RelayCircuitRef, actions: list) -> None:
        """Queue every cell of `actions` at once: they were encrypted in this order."""
        if not actions:
            return
        forward = [a.cell for a in actions if type(a) is core.SendForward]
        backward = [a.cell for a in actions if type(a) is core.SendBackward]
        joined = [a.cell for a in actions if type(a) is core.SendJoined]
        if backward:
            ref.prev.send_nowait(backward)
        if forward and ref.next is not None:
            ref.next.send_nowait(forward)
        if joined and ref.joined is not None:
            ref.joined.prev.send_nowait(joined)

    async def _execute(self, ref: RelayCircuitRef, actions: list) -> None:
        self._queue(ref, actions)
        if ref.next is not None and ref.core.next_circ_id != ref.next_circ_id:
            self._drop_next(ref)  # a TRUNCATE cut the next hop off
        for action in actions:
            if ref.error is not None:
                return
            if isinstance(action, core.Destroyed):
                self._finish(ref, CircuitGone(f"destroyed by the origin's side (reason {action.reason})"))
            elif isinstance(action, core.ExtendRequest):
                await self._extend(ref, action)
            elif isinstance(action, core.Deliver):
                await self._deliver(ref, action.message)
            elif isinstance(action, core.StreamRequested):
                self._stream_requested(ref, action)
            elif isinstance(action, core.StreamData):
                if (stream := ref.streams.get(action.stream_id)) is not None:
                    await stream._deliver(action.data)
            elif isinstance(action, core.StreamEnd):
                if (stream := ref.streams.pop(action.stream_id, None)) is not None:
                    stream._finish(action.reason)

    async def _extend(self, ref: RelayCircuitRef, request: core.ExtendRequest) -> None:
        specs = request.link_specs
        addr = next(s for s in specs if isinstance(s, LinkSpecIPv4 | LinkSpecIPv6))
        rsa = next(s for s in specs if isinstance(s, LinkSpecRsaId))
        ed = next((s for s in specs if isinstance(s, LinkSpecEd25519)), None)
        to_self = (rsa.identity == self.keys.node_id or (ed is not None and ed.identity == self.keys.identity)
                   or (addr.address, addr.port) == (self.channels.address, self.channels.or_port))
        if to_self:
            self.metrics.inc("extends_total", result="to_self")
            self._count_error("extend_to_self", "EXTEND2 to this relay refused", circuit=repr(ref))
            self._teardown(ref, DestroyReason.PROTOCOL)
            return
        try:
            with trio.fail_after(EXTEND_TIMEOUT):
                channel = await self.channels.get_channel(addr.address, addr.port, rsa.identity)
        except (ChannelError, trio.TooSlowError) as e:
            self.metrics.inc("extends_total", result="connect_failed")
            self.events.emit("extend_failed", circuit=repr(ref), peer=addr.address, port=addr.port,
                             error=str(e))
            self._teardown(ref, DestroyReason.CONNECTFAILED)
            return
        if ref.error is not None or ref.core.state is not RelayState.EXTENDING:
            return
        try:
            next_circ_id = channel.allocate_circ_id()
            channel.add_circuit(functools.partial(self._backward_loop, ref, next_circ_id), next_circ_id)
        except ChannelError:
            self._teardown(ref, DestroyReason.CONNECTFAILED)
            return
        ref.next, ref.next_circ_id = channel, next_circ_id
        channel.send_nowait([ref.core.create_next(next_circ_id)])
        self.metrics.inc("extends_total", result="sent")

    async def _deliver(self, ref: RelayCircuitRef, message) -> None:
        handler = self.handlers.get(message.COMMAND)
        if handler is None:
            self._count_error("unhandled", "no handler for a relay message", circuit=repr(ref),
                              command=RelayCommand(message.COMMAND).name)
            self._teardown(ref, DestroyReason.PROTOCOL)
            return
        ref.handlers.add(handler)
        try:
            await handler.handle(ref, message)
        except RemoteProtocolError as e:
            self._count_error(e.kind, "handler refused a message", circuit=repr(ref), error=str(e))
            self._teardown(ref, DestroyReason.PROTOCOL)
        except CircuitGone:
            pass  # a circuit the handler answered on went away meanwhile: nothing left to do

    def _stream_requested(self, ref: RelayCircuitRef, event: core.StreamRequested) -> None:
        if not isinstance(event.request, BeginDir) or self.dir_handler is None:
            reason = EndReason.NOTDIRECTORY if isinstance(event.request, BeginDir) else EndReason.EXITPOLICY
            ref.prev.send_nowait([ref.core.end_stream(event.stream_id, reason)])
            return
        ref.prev.send_nowait([ref.core.accept_stream(event.stream_id)])
        stream = ref.streams[event.stream_id] = CircuitStream(ref, event.stream_id, connected=True)
        ref._nursery.start_soon(self._run_dir_stream, stream)

    async def _run_dir_stream(self, stream: CircuitStream) -> None:
        try:
            async with stream:
                await self.dir_handler(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as e:
            self.metrics.inc("dir_streams_failed_total")
            self.events.emit("dir_stream_failed", error=str(e) or type(e).__name__)

    # -- rendezvous ----------------------------------------------------------------------------------------
    def splice(self, client: RelayCircuitRef, service: RelayCircuitRef, rendezvous2: Rendezvous2) -> None:
        """Join the client's rendezvous circuit to the service's: RENDEZVOUS2 goes to the client, and from
        now on each circuit's cells leave on the other, each under its own layer (rend-spec-v3 4.2)."""
        client.prev.send_nowait([client.core.join(service.core, rendezvous2)])
        client.joined, service.joined = service, client
        self.events.emit("rendezvous_joined", rendezvous=self.events.node, client=repr(client),
                         service=repr(service))

    # -- teardown ------------------------------------------------------------------------------------------
    def _teardown(self, ref: RelayCircuitRef, reason: int) -> None:
        """Destroy the circuit (DESTROY to both neighbours and the joined circuit) unless it is gone."""
        if ref.error is not None:
            return
        if ref.core.state is not RelayState.DESTROYED:
            self._queue(ref, ref.core.destroy(reason))
        self._finish(ref, CircuitGone(f"circuit destroyed (reason {reason})"))

    def _finish(self, ref: RelayCircuitRef, error: BaseException) -> None:
        """Forget a circuit the core has destroyed; end its tasks and streams."""
        if ref.error is not None:
            return
        ref.error = error
        ref.prev.remove_circuit(ref.core.circ_id)
        self._drop_next(ref)
        for stream in ref.streams.values():
            stream._fail(error)
        ref._changed.unpark_all()
        ref.closed.set()
        for handler in ref.handlers:
            handler.circuit_closed(ref)
        self.circuits.discard(ref)
        if self.observer is not None:
            self.observer.closed(ref)
        self.metrics.set("relay_circuits_open", len(self.circuits))
        joined = ref.joined
        if joined is not None:  # the core destroyed it with us (SendJoined DESTROY)
            self._finish(joined, CircuitGone("the joined rendezvous circuit was destroyed"))

    def _drop_next(self, ref: RelayCircuitRef) -> None:
        if ref.next is not None:
            ref.next.remove_circuit(ref.next_circ_id)
            ref.next = ref.next_circ_id = None

    def _count_error(self, kind: str, what: str, **fields) -> None:
        self.metrics.inc("errors_total", kind=kind)
        self.events.emit("error", kind=kind, detail=what, **fields)


# --- the standard onion-service handlers


class IntroPoint:
    """ESTABLISH_INTRO registers a service's circuit under its auth key (after checking HANDSHAKE_AUTH with
    the circuit's KH and the signature); INTRODUCE1 for that key goes to it as INTRODUCE2 (rend-spec-v3 3)."""

    COMMANDS = (RelayCommand.ESTABLISH_INTRO, RelayCommand.INTRODUCE1)

    def __init__(self, metrics: Metrics, events: EventLog) -> None:
        self.metrics = metrics
        self.events = events
        self._services: dict[bytes, RelayCircuitRef] = {}

    async def handle(self, circuit: RelayCircuitRef, message: object) -> None:
        if isinstance(message, EstablishIntro):
            verify_establish_intro(message, circuit.kh)
            old = self._services.get(message.auth_key)
            self._services[message.auth_key] = circuit
            if old is not None and old is not circuit:
                await old.destroy(DestroyReason.FINISHED)  # rend-spec-v3 3.1.3: the newest circuit wins
            await circuit.send(IntroEstablished())
            self.metrics.inc("intro_established_total")
            self.events.emit("intro_point_registered", intro=self.events.node, auth_key=message.auth_key,
                             circuit=repr(circuit))
        elif isinstance(message, Introduce1):
            service = self._services.get(message.auth_key)
            if service is None:
                self.metrics.inc("introduce1_total", result="unknown_id")
                await circuit.send(IntroduceAck(IntroduceAckStatus.UNKNOWN_ID))
                return
            await service.send(Introduce2(message.legacy_key_id, message.auth_key_type, message.auth_key,
                                          message.extensions, message.encrypted))
            await circuit.send(IntroduceAck(IntroduceAckStatus.SUCCESS))
            self.metrics.inc("introduce1_total", result="relayed")
            self.events.emit("introduce_forwarded", intro=self.events.node, auth_key=message.auth_key)
        else:
            raise LocalProtocolError(f"IntroPoint does not handle {type(message).__name__}")

    def circuit_closed(self, circuit: RelayCircuitRef) -> None:
        for key in [k for k, c in self._services.items() if c is circuit]:
            del self._services[key]

    def auth_keys(self) -> list[bytes]:
        """The auth keys of the service circuits registered here now."""
        return list(self._services)


class RendezvousPoint:
    """ESTABLISH_RENDEZVOUS stores the client's circuit under its cookie; a RENDEZVOUS1 with that cookie
    splices the service's circuit to it (rend-spec-v3 4)."""

    COMMANDS = (RelayCommand.ESTABLISH_RENDEZVOUS, RelayCommand.RENDEZVOUS1)

    def __init__(self) -> None:
        self._waiting: dict[bytes, RelayCircuitRef] = {}

    async def handle(self, circuit: RelayCircuitRef, message: object) -> None:
        if isinstance(message, EstablishRendezvous):
            if message.cookie in self._waiting:
                raise _CookieInUse("ESTABLISH_RENDEZVOUS with a cookie already in use")
            self._waiting[message.cookie] = circuit
            await circuit.send(RendezvousEstablished())
            circuit.engine.metrics.inc("rendezvous_established_total")
            circuit.engine.events.emit("rendezvous_point_registered", rendezvous=circuit.engine.events.node,
                                       circuit=repr(circuit))
        elif isinstance(message, Rendezvous1):
            client = self._waiting.pop(message.cookie, None)
            if client is None or client.error is not None:
                raise _UnknownCookie("RENDEZVOUS1 with a cookie nobody established")
            circuit.engine.splice(client, circuit, Rendezvous2(message.handshake_info))
            circuit.engine.metrics.inc("rendezvous_joined_total")
        else:
            raise LocalProtocolError(f"RendezvousPoint does not handle {type(message).__name__}")

    def circuit_closed(self, circuit: RelayCircuitRef) -> None:
        for cookie in [k for k, c in self._waiting.items() if c is circuit]:
            del self._waiting[cookie]


class _CookieInUse(RemoteProtocolError):
    kind = "cookie_in_use"


class _UnknownCookie(RemoteProtocolError):
    kind = "unknown_cookie"


def onion_service_handlers(metrics: Metrics, events: EventLog) -> dict[int, MessageHandler]:
    """The standard handlers, keyed by relay command, for RelayEngine(handlers=...)."""
    intro, rendezvous = IntroPoint(metrics, events), RendezvousPoint()
    return {**dict.fromkeys(IntroPoint.COMMANDS, intro),
            **dict.fromkeys(RendezvousPoint.COMMANDS, rendezvous)}
