"""Channels: one TLS link per peer, shared by every circuit to that peer (tor-spec 2, 5.1.1).

The ChannelManager listens on the OR port, opens links on demand (one per (address, port); callers asking at
the same time share one attempt) and runs, per link, a reader that hands each cell to the circuit registered
for its circ_id and a writer that sends what circuits queue.

Ordering: relay crypto is a stream cipher, so cells must leave in the order they were encrypted. Producers
queue cells synchronously (`send_nowait`) right after the core returns them, and only then wait for room
(`wait_writable`). Backpressure: each circuit's inbox is bounded, so a slow circuit stalls the link reader
(and through TCP, the peer); producers wait while a link's outbox is above its high-water mark.

Batching: Python pays per task switch, not per byte, so cells move in batches. The reader hands each circuit
every cell of its read at once (`CellInbox.put`), circuit tasks take everything queued (`receive_batch`),
and what is queued goes out in one TLS write. A task switch per cell per hop was most of the cost of a byte
through the onion.

Writing: `send_nowait` writes the cells it queues at once (one `Link.send_cells_nowait`) when no one else is
writing and the link is not shaped: no task to wake, and the cells leave now, which is latency on every hop
of a circuit (waking the writer for cells its caller then wrote itself cost a pass of the scheduler per
request at each end). Otherwise the channel's writer task writes them, with `Link.flush` under the write
timeout when the socket did not take it all at once; a circuit task that waits for room (`wait_room`)
writes what is still queued itself when no one else is writing.

Passing on without a task switch: a relay circuit's task may give its inbox a `fast` handler. While the task
is parked on its empty inbox, the link's reader hands a batch to that handler instead (the cells a relay
only passes on: its layer, then `Channel.send_nowait` onto the outgoing link, written at once when the
socket takes it); whatever the handler leaves goes to the task as before, in order. Per hop that saves
waking the circuit's task, which is latency on every cell of a quiet circuit.

Shaping (nodes/net/shaper.py): while the node has shaping rules, only the writer task writes, and it holds
each batch in a ShapedQueue until it is due; without rules it pays one attribute test per batch.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence

import trio

from nodes.core.cells import Cell, Command, Destroy, DestroyReason
from nodes.core.errors import RemoteProtocolError, UnexpectedMessage
from nodes.core.link_certs import LinkIdentity

from . import clock, tls
from .dial_names import DialNames
from .events import EventLog
from .link import Link, LinkClosed
from .metrics import Metrics
from .shaper import ShapedQueue, Shaper

CONNECT_TIMEOUT = 10.0
CIRCUIT_INBOX = 256  # cells buffered per circuit before the link reader waits for it
OUTBOX_HIGH_WATER = 512  # cells queued on a link before producers wait
WRITE_TIMEOUT = 60.0  # a peer that takes longer than this to take one batch of cells loses the link
RECENTLY_CLOSED = 256  # circuit ids remembered after removal: their late cells are dropped without a count
_HIGH_BIT = 0x80000000
_IGNORED_ON_CIRCUIT_0 = frozenset((Command.PADDING, Command.VPADDING, Command.PADDING_NEGOTIATE))
_ANSWERED_CREATES = frozenset((Command.CREATE2, Command.CREATE_FAST))


class CellInbox:
    """One circuit's cells from its link, in arrival order. The link's reader `put`s whole batches; the
    circuit's task takes one cell (`receive`, `async for`) or everything queued (`receive_batch`).

    Bounded: `put` returns once at most `limit` cells wait, so a circuit that does not keep up stalls its link
    reader (which holds at most one read's worth more). The reader's `close` ends the inbox (EndOfChannel
    after the queued cells: the link died or the circuit was removed); the task's `aclose` (or leaving
    `async with`) drops what is queued and every later cell."""

    __slots__ = ("_cells", "_limit", "_ended", "_abandoned", "_readable", "_room", "_parked", "fast")

    def __init__(self, limit: int = CIRCUIT_INBOX) -> None:
        self._cells: deque[Cell] = deque()
        self._limit = limit
        self._ended = False
        self._abandoned = False
        self._parked = False  # the circuit's task waits on the empty inbox
        # Set by the circuit's task: takes the leading cells of a batch without waiting and says how many
        # it took (module docstring). Only called while the task is parked here and nothing is queued.
        self.fast: Callable[[list[Cell]], int] | None = None
        self._readable = trio.lowlevel.ParkingLot()
        self._room = trio.lowlevel.ParkingLot()

    def __len__(self) -> int:
        return len(self._cells)

    # -- the link's side -----------------------------------------------------------------------------------
    def put_nowait(self, cells: Sequence[Cell]) -> bool:
        """Queue cells regardless of the limit; False (cells dropped) once the inbox is closed."""
        if self._ended or self._abandoned:
            return False
        self._cells.extend(cells)
        if self._readable:
            self._readable.unpark()
        return True

    async def put(self, cells: list[Cell]) -> bool:
        """Queue cells (those `fast` does not take), then wait while more than `limit` are queued. False if
        the cells were dropped."""
        fast = self.fast
        if fast is not None and self._parked and not self._cells and not (self._ended or self._abandoned):
            taken = fast(cells)
            if taken == len(cells):
                return True
            cells = cells[taken:]
        if not self.put_nowait(cells):
            return False
        while len(self._cells) > self._limit and not (self._ended or self._abandoned):
            await self._room.park()
        return True

    def close(self) -> None:
        self._ended = True
        self._readable.unpark_all()
        self._room.unpark_all()

    # -- the circuit's side --------------------------------------------------------------------------------
    async def receive_batch(self) -> list[Cell]:
        """Every queued cell (at least one, waiting for it). EndOfChannel once the link's side closed the
        inbox and everything queued was taken."""
        # No checkpoint when cells are waiting: the caller yields once per batch (wait_writable), and a
        # batch is bounded by the limit; parking in _wait_for_cells is the checkpoint otherwise.
        await self._wait_for_cells()
        cells = list(self._cells)
        self._cells.clear()
        if self._room:
            self._room.unpark_all()
        return cells

    async def receive(self) -> Cell:
        await self._wait_for_cells()
        cell = self._cells.popleft()
        if self._room and len(self._cells) <= self._limit:
            self._room.unpark_all()
        await trio.lowlevel.checkpoint()
        return cell

    async def _wait_for_cells(self) -> None:
        """Until a cell is queued; ClosedResourceError once we abandoned the inbox, EndOfChannel once the
        link's side closed it and nothing is left."""
        while not self._cells:
            if self._abandoned:
                raise trio.ClosedResourceError("the inbox is closed")
            if self._ended:
                raise trio.EndOfChannel
            self._parked = True
            try:
                await self._readable.park()
            finally:
                self._parked = False

    def __aiter__(self) -> CellInbox:
        return self

    async def __anext__(self) -> Cell:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self._abandon()
        await trio.lowlevel.checkpoint()

    def _abandon(self) -> None:
        self._abandoned = True
        self._cells.clear()
        self._readable.unpark_all()
        self._room.unpark_all()

    async def __aenter__(self) -> CellInbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._abandon()


Inbox = CellInbox  # what a CircuitTask gets: ends (EndOfChannel) when the link dies or the circuit goes

CircuitTask = Callable[[Inbox], Awaitable[None]]
# Relays answer CREATE2 and CREATE_FAST on a new circ_id: given the channel and the cell, return the task that
# will run the circuit (it receives that cell as its first), or None to refuse it.
CreateHandler = Callable[["Channel", Cell], CircuitTask | None]


class ChannelError(Exception):
    """No channel to a peer: connecting, TLS or the link handshake failed or timed out."""

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def destroy_cell(circ_id: int, reason: int) -> Cell:
    return Cell(circ_id, Command.DESTROY, Destroy(reason).encode())


class Channel:
    """One open link and the circuits on it. Created by the ChannelManager."""

    def __init__(self, manager: ChannelManager, link: Link, *, address: str, port: int | None,
                 initiator: bool, local: str = "") -> None:
        self._manager = manager
        self.link = link
        self.address = address  # the peer's address
        self.local = local  # our end's address, as the peer sees it ("" when unknown)
        self.port = port  # the peer's OR port when we connected to it; None for links the peer opened
        self.initiator = initiator  # we opened the link: our circuit ids have the high bit set
        self.closed = False
        self.close_reason = ""
        self._inboxes: dict[int, CellInbox] = {}
        self._recently_closed: deque[int] = deque(maxlen=RECENTLY_CLOSED)
        self._outbox: list[Cell] = []  # queued, not yet handed to the writer
        self._queued = 0  # cells queued or being written
        self._writing = False  # a task is in _write_queued: it writes whatever is queued meanwhile too
        self._unflushed = 0  # cells of a _write_nowait batch that the link still holds (socket was full)
        self._writer = trio.lowlevel.ParkingLot()  # the write loop, while there is nothing for it to write
        self._held: ShapedQueue | None = None  # cells the shaper holds back (None: not shaped)
        self._room = trio.lowlevel.ParkingLot()
        self._circuit_nursery: trio.Nursery | None = None
        self._io_scope = trio.CancelScope()

    def __repr__(self) -> str:
        peer = f"{self.address}:{self.port}" if self.port is not None else self.address
        return f"<Channel {'to' if self.initiator else 'from'} {peer}{' closed' if self.closed else ''}>"

    @property
    def circuit_ids(self) -> list[int]:
        return list(self._inboxes)

    # -- sending -------------------------------------------------------------------------------------------
    def send_nowait(self, cells: Sequence[Cell]) -> None:
        """Queue cells in order, and write them at once when no one is writing and the link is not shaped
        (the usual case: no task to wake, and the cells leave now); else the writer task does. On a closed
        channel they are dropped: the circuit learns of the loss from its inbox ending."""
        if self.closed or not cells:
            return
        self._queued += len(cells)
        self._outbox.extend(cells)
        if self._writing or self._shaped() or not self._write_nowait():
            if self._writer and not self._writing:
                self._writer.unpark()  # also to flush what _write_nowait left with the link

    @property
    def above_high_water(self) -> bool:
        return self._queued > OUTBOX_HIGH_WATER

    async def wait_writable(self) -> None:
        """Wait while the outbox is above its high-water mark (returns at once on a closed channel)."""
        await self.wait_room()
        await trio.lowlevel.checkpoint()

    async def wait_room(self) -> None:
        """wait_writable without its checkpoint, for circuit tasks: they park on their inbox next anyway,
        and a yield per batch per channel is a cost the data path pays per cell. Writes what is queued
        first when no one is writing (see the module docstring)."""
        if self._outbox and not self._writing and not self.closed and not self._shaped():
            if not self._write_nowait():  # the socket did not take it all: the rest waits for it
                with trio.CancelScope(shield=True):  # a circuit task cancelled midway must not cut the link
                    await self._write_queued()
        while self._queued > OUTBOX_HIGH_WATER and not self.closed:
            await self._room.park()

    async def send(self, cells: Sequence[Cell]) -> None:
        self.send_nowait(cells)
        await self.wait_writable()

    # -- circuits ------------------------------------------------------------------------------------------
    def add_circuit(self, task: CircuitTask, circ_id: int | None = None) -> int:
        """Register a circuit and start `task(inbox)` in this channel's nursery; returns its circ_id.

        Without `circ_id`, `allocate_circ_id()` chooses one."""
        if self.closed or self._circuit_nursery is None:
            raise ChannelError(f"{self!r} is closed", kind="closed")
        if circ_id is None:
            circ_id = self.allocate_circ_id()
        elif circ_id in self._inboxes:
            raise ValueError(f"circuit id {circ_id} is in use on {self!r}")
        inbox = self._inboxes[circ_id] = CellInbox()
        self._circuit_nursery.start_soon(self._run_circuit, circ_id, inbox, task)
        return circ_id

    def remove_circuit(self, circ_id: int) -> None:
        """Forget a circuit: its inbox ends after the cells already queued; later cells are dropped."""
        inbox = self._inboxes.pop(circ_id, None)
        if inbox is not None:
            inbox.close()
            self._recently_closed.append(circ_id)

    def allocate_circ_id(self) -> int:
        """A fresh circuit id: random, not live, high bit set iff we opened the link (tor-spec 5.1.1)."""
        high = _HIGH_BIT if self.initiator else 0
        while True:
            circ_id = high | (int.from_bytes(os.urandom(4), "big") & ~_HIGH_BIT)
            if circ_id & ~_HIGH_BIT and circ_id not in self._inboxes and circ_id not in self._recently_closed:
                return circ_id

    async def _run_circuit(self, circ_id: int, inbox: CellInbox, task: CircuitTask) -> None:
        try:
            async with inbox:
                await task(inbox)
        finally:
            if self._inboxes.get(circ_id) is inbox:
                self.remove_circuit(circ_id)

    # -- the link ------------------------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Close the link; every circuit on it sees its inbox end. Idempotent."""
        self._io_scope.cancel()
        await trio.lowlevel.checkpoint()

    async def _run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Run the link until it dies, then wait for its circuits to wrap up."""
        async with trio.open_nursery() as circuits:
            self._circuit_nursery = circuits
            self._manager._link_up(self)
            task_status.started(self)
            try:
                with self._io_scope:
                    async with trio.open_nursery() as io:
                        io.start_soon(self._write_loop)
                        await self._read_loop(io.cancel_scope)
            finally:
                self._shutdown(self.close_reason or "closed locally")
                await self.link.aclose()

    async def _read_loop(self, io_scope: trio.CancelScope) -> None:
        try:
            while True:
                cells = await self.link.receive_cells()
                self._manager.metrics.inc("cells_in_total", len(cells))
                await self._dispatch(cells)
        except LinkClosed as e:
            self.close_reason = f"link closed: {e}"
        except RemoteProtocolError as e:
            # Junk from the peer: this link goes, the node keeps serving the others.
            self._manager._count_error(e.kind, link=True)
            self.close_reason = f"protocol error ({e.kind}): {e}"
        io_scope.cancel()

    async def _write_loop(self) -> None:
        shaper = self._manager.shaper
        while not self.closed:
            while (not self._outbox and not self._unflushed and self._held is None) or self._writing:
                await self._writer.park()
            if self._unflushed:  # a send_nowait batch the socket did not take at once (unshaped then)
                await self._write([])
            elif shaper.active or self._held is not None:
                batch = await self._shaped_batch(shaper)
                if batch:
                    await self._write(batch)
            else:
                await self._write_queued()

    def _shaped(self) -> bool:
        return self._manager.shaper.active or self._held is not None

    async def _write_queued(self) -> None:
        """Write what is queued, a batch (everything queued) per TLS write, until nothing is (and what an
        earlier _write_nowait left with the link is out)."""
        while (self._outbox or self._unflushed) and not self.closed:
            batch, self._outbox = self._outbox, []
            if not await self._write(batch):
                return

    def _write_nowait(self) -> bool:
        """Hand everything queued to the link as one batch, without waiting (no one else may be writing).
        True when the socket took it all (or the link is gone); False when part of it waits in the link for
        `_write_queued`, which must follow before anything else awaits."""
        batch, self._outbox = self._outbox, []
        try:
            if self.link.send_cells_nowait(batch):
                self._sent(len(batch))
                return True
        except LinkClosed as e:
            self._manager.metrics.inc("link_errors_total", kind="write")
            self._close_for(f"link closed while sending: {e}")
            return True
        self._unflushed += len(batch)
        return False

    async def _write(self, batch: list[Cell]) -> bool:
        """One TLS write, one task at a time. A write the peer does not take within WRITE_TIMEOUT, or a
        broken link, closes the channel (False). An empty batch flushes what _write_nowait left."""
        self._writing = True
        try:
            # Usually the socket takes the batch at once: no timeout scope, lock or await for that.
            if not batch or not self.link.send_cells_nowait(batch):
                with trio.move_on_after(WRITE_TIMEOUT) as write:
                    await self.link.flush()
                if write.cancelled_caught:
                    self._manager.metrics.inc("link_errors_total", kind="write_timeout")
                    self._close_for(f"peer took no cells for {WRITE_TIMEOUT} s")
                    return False
            self._sent(len(batch) + self._unflushed)
            self._unflushed = 0
            return True
        except LinkClosed as e:
            self._manager.metrics.inc("link_errors_total", kind="write")
            self._close_for(f"link closed while sending: {e}")
            return False
        finally:
            self._writing = False

    def _sent(self, n: int) -> None:
        self._manager.metrics.inc("cells_out_total", n)
        self._queued -= n
        if self._queued <= OUTBOX_HIGH_WATER and self._room:
            self._room.unpark_all()

    def _close_for(self, reason: str) -> None:
        if not self.close_reason:
            self.close_reason = reason
        self._io_scope.cancel()

    async def _shaped_batch(self, shaper: Shaper) -> list[Cell]:
        """The cells due now (shaper.py); [] after waiting until one may be due or something changed."""
        now = trio.current_time()
        queue = self._held
        if queue is None:  # kept while the node has rules: its seeded draws go on from batch to batch
            queue = self._held = shaper.queue(f"{self.address}:{self.port}:{self.initiator}")
        effect = shaper.effect(self.address)
        if queue.generation != shaper.generation:  # the rules changed: a blackhole that went releases
            if effect is None or not effect.blackhole:
                queue.release_held(now)
            queue.generation = shaper.generation
        if self._outbox:
            batch, self._outbox = self._outbox, []
            if effect is None and not queue:  # no rule for this peer and nothing held: straight out
                return batch
            lost = queue.delayed_by_loss
            queue.push(batch, effect, now)
            if queue.delayed_by_loss != lost:
                self._manager.metrics.inc("shaper_retransmits_total")
        due = queue.pop_due(now)
        if due:
            return due
        if not queue and not shaper.active:
            self._held = None  # no rule and nothing held: back to the fast path
            return []
        with trio.move_on_at(queue.next_due()):  # the next due batch, new cells or new rules
            await self._writer.park()
        return []

    async def _dispatch(self, cells: list[Cell]) -> None:
        """Hand one read's cells to their circuits: each circuit's cells in one batch, in arrival order."""
        batches: dict[int, tuple[CellInbox, list[Cell]]] = {}
        for cell in cells:
            pending = batches.get(cell.circ_id)
            if pending is not None:
                pending[1].append(cell)
                continue
            inbox = self._inboxes.get(cell.circ_id)
            if inbox is not None:
                batches[cell.circ_id] = (inbox, [cell])
            else:
                self._no_circuit(cell)
        for inbox, batch in batches.values():
            # False: the circuit ended meanwhile; its late cells are dropped (its id is recently closed).
            await inbox.put(batch)

    def _no_circuit(self, cell: Cell) -> None:
        """A cell for a circuit id with no inbox: link-level, late, a new circuit, or an error."""
        if cell.circ_id == 0:
            if cell.command in _IGNORED_ON_CIRCUIT_0:
                return
            raise UnexpectedMessage(f"cell command {cell.command} on circuit 0 after the handshake")
        if cell.command == Command.DESTROY or cell.circ_id in self._recently_closed:
            return  # both ends may destroy a circuit at once; cells already in flight then arrive late
        if cell.command in (Command.CREATE2, Command.CREATE, Command.CREATE_FAST):
            self._incoming(cell)
            return
        self._manager._count_error("unknown_circuit")

    def _incoming(self, cell: Cell) -> None:
        """A circuit the peer opens here: relays answer CREATE2 and CREATE_FAST; anything else (CREATE, whose
        TAP handshake Tor retired) is refused with a DESTROY."""
        # The peer sets the high bit iff it opened the link; an id from our half of the space is an error.
        peer_high = 0 if self.initiator else _HIGH_BIT
        on_create = self._manager.on_create
        if (cell.circ_id & _HIGH_BIT) != peer_high:
            self._manager._count_error("circ_id")
        elif cell.command not in _ANSWERED_CREATES or on_create is None:
            self._manager._count_error("unexpected")
        else:
            task = on_create(self, cell)
            if task is not None:
                self.add_circuit(task, cell.circ_id)
                self._inboxes[cell.circ_id].put_nowait([cell])
                return
        self.send_nowait([destroy_cell(cell.circ_id, DestroyReason.PROTOCOL)])

    def _shutdown(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._outbox.clear()
        self._room.unpark_all()
        inboxes, self._inboxes = self._inboxes, {}
        for inbox in inboxes.values():
            inbox.close()
        self._manager._link_down(self, reason, len(inboxes))


class _Attempt:
    """One connection attempt that every concurrent caller waits for."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.channel: Channel | None = None
        self.error: ChannelError | None = None


class ChannelManager:
    """Every link of one node. Run it with `await nursery.start(cm.serve, host, port)` (relays: listens on
    the OR port; started() reports the bound port) or `await nursery.start(cm.run)` (clients)."""

    def __init__(self, link_identity: LinkIdentity | None, metrics: Metrics, events: EventLog, *,
                 address: str, connect_timeout: float = CONNECT_TIMEOUT,
                 address_map: Mapping[str, str] | None = None, shaper: Shaper | None = None,
                 source_address: str | None = None, dial_names: DialNames | None = None) -> None:
        self.link_identity = link_identity  # what our OR port proves (relays, authorities); None: no OR port
        self.metrics = metrics
        self.events = events
        self.address = address
        self.address_map = dict(address_map or {})  # NodeConfig.address_map: where we dial an address
        self.dial_names = dial_names  # NodeConfig.dial_names: the same, learned when we dial (Swarm)
        self.source_address = source_address  # NodeConfig.source_address: where our links come from
        self.or_port = 0
        self.connect_timeout = connect_timeout
        self.on_create: CreateHandler | None = None
        self.shaper = shaper if shaper is not None else Shaper()
        self.shaper.on_change(self._wake_writers)
        self._outbound: dict[tuple[str, int], Channel] = {}
        self._attempts: dict[tuple[str, int], _Attempt] = {}
        self._channels: set[Channel] = set()
        self._nursery: trio.Nursery | None = None
        self._client_ctx = tls.client_context()
        self._server_ctx: ssl.SSLContext | None = None  # made when serve() starts listening
        self._server_cert = b""  # its certificate (DER), which our CERTS cell certifies
        metrics.describe("links_open", "gauge", "Open links (TLS connections to other nodes)")
        metrics.describe("cells_in_total", "counter", "Cells received on all links")
        metrics.describe("cells_out_total", "counter", "Cells sent on all links")
        metrics.describe("link_handshake_seconds", "summary",
                         "Opening a link: TCP, TLS, VERSIONS/CERTS/AUTH_CHALLENGE/NETINFO")
        metrics.describe("link_errors_total", "counter", "Links that failed or were closed for an error")
        metrics.describe("errors_total", "counter", "Protocol errors by the peer, by kind")
        metrics.describe("shaper_retransmits_total", "counter",
                         "Cell batches the link-layer shaper delayed by a retransmission timeout (loss)")

    @property
    def channels(self) -> list[Channel]:
        """Every open channel, in both directions."""
        return [c for c in self._channels if not c.closed]

    def channel_to(self, address: str, port: int) -> Channel | None:
        channel = self._outbound.get((address, port))
        return channel if channel is not None and not channel.closed else None

    # -- running -------------------------------------------------------------------------------------------
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Run without listening (clients and onion services): only outgoing links."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def serve(self, host: str, port: int, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Listen for links on (host, port) as well; started() reports the bound port (useful with 0)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            listeners = await trio.open_tcp_listeners(port, host=host)
            self.or_port = listeners[0].socket.getsockname()[1]
            if self.link_identity is None:
                raise ValueError("listening needs the LinkIdentity our OR port proves")
            self._server_ctx, self._server_cert = tls.server_context()
            task_status.started(self.or_port)
            await trio.serve_listeners(self._accept, listeners, handler_nursery=nursery)

    async def aclose(self) -> None:
        """Close every link (their circuits see their inboxes end)."""
        for channel in list(self._channels):
            await channel.aclose()

    # -- links ---------------------------------------------------------------------------------------------
    async def get_channel(self, address: str, port: int, node_id: bytes | None = None) -> Channel:
        """The open channel to (address, port), connecting if there is none; with `node_id`, only to that
        node (the link's CERTS must prove it). ChannelError on failure (kind "identity_mismatch" when
        another node answers there)."""
        address = self.address_map.get(address, address)
        if self.dial_names is not None:
            address = await self.dial_names.dial_address(address, port)
        key = (address, port)
        channel = self.channel_to(address, port)
        if channel is not None:
            return self._check_peer(channel, node_id)
        if self._nursery is None:
            raise RuntimeError("the ChannelManager is not running: start serve() or run() first")
        attempt = self._attempts.get(key)
        if attempt is None:
            attempt = self._attempts[key] = _Attempt()
            # In the manager's nursery, so one caller giving up does not cancel the others' attempt.
            self._nursery.start_soon(self._connect, key, attempt)
        await attempt.done.wait()
        if attempt.error is not None:
            raise attempt.error
        return self._check_peer(attempt.channel, node_id)

    def _check_peer(self, channel: Channel, node_id: bytes | None) -> Channel:
        peer = channel.link.peer
        if node_id is not None and peer is not None and peer.node_id != node_id:
            self._count_error("identity_mismatch", link=True)
            raise ChannelError(f"{channel.address}:{channel.port} is node {peer.node_id.hex().upper()}, not "
                               f"{node_id.hex().upper()}", kind="identity_mismatch")
        return channel

    async def _connect(self, key: tuple[str, int], attempt: _Attempt) -> None:
        address, port = key
        try:
            link, local = await self._open_link(address, port)
            channel = Channel(self, link, address=address, port=port, initiator=True, local=local)
            self._outbound[key] = channel
            await self._nursery.start(channel._run)
            attempt.channel = channel
        except ChannelError as e:
            self.metrics.inc("link_errors_total", kind=e.kind)
            self.events.emit("link_failed", peer=address, port=port, kind=e.kind, error=str(e))
            attempt.error = e
        finally:
            del self._attempts[key]
            if attempt.channel is None and attempt.error is None:
                attempt.error = ChannelError(f"connecting to {address}:{port} was cancelled",
                                             kind="cancelled")
            attempt.done.set()

    async def _open_link(self, address: str, port: int) -> tuple[Link, str]:
        """The link, handshake done, and our end's address."""
        link = None
        started = trio.current_time()
        try:
            with trio.fail_after(self.connect_timeout):
                stream = await tls.open_tls_stream(address, port, self._client_ctx,
                                                   local_address=self.source_address)
                local = _local_address(stream.transport_stream)
                link = Link(stream, initiator=True)
                await link.handshake(now=int(clock.wall()), peer_address=_ip_or_empty(address),
                                     my_addresses=self._my_addresses(), identity=self.link_identity,
                                     peer_tls_cert_der=stream.peer_cert_der())
            # TCP connect, TLS and the link handshake: what a new link costs before its first circuit
            self.metrics.observe("link_handshake_seconds", trio.current_time() - started)
            return link, local
        except trio.TooSlowError:
            error = ChannelError(f"no link to {address}:{port} within {self.connect_timeout} s",
                                 kind="timeout")
        except (OSError, trio.BrokenResourceError, LinkClosed) as e:
            error = ChannelError(f"cannot connect to {address}:{port}: {e}", kind="connect")
        except RemoteProtocolError as e:
            error = ChannelError(f"link handshake with {address}:{port} failed: {e}", kind=e.kind)
        if link is not None:
            await link.aclose()
        raise error

    async def _accept(self, transport: trio.SocketStream) -> None:
        stream = tls.TLSStream(transport, self._server_ctx, server_side=True)
        link = Link(stream, initiator=False)
        try:
            address = transport.socket.getpeername()[0]
            local = transport.socket.getsockname()[0]
        except OSError:  # gone already
            await link.aclose()
            return
        try:
            with trio.fail_after(self.connect_timeout):
                await stream.do_handshake()
                await link.handshake(now=int(clock.wall()), peer_address=address,
                                     my_addresses=self._my_addresses(), identity=self.link_identity,
                                     tls_cert_der=self._server_cert)
        except (trio.TooSlowError, trio.BrokenResourceError, LinkClosed, RemoteProtocolError) as e:
            kind = e.kind if isinstance(e, RemoteProtocolError) else "handshake"
            self.metrics.inc("link_errors_total", kind=kind)
            self.events.emit("link_failed", peer=address, direction="in", kind=kind, error=str(e))
            await link.aclose()
            return
        await Channel(self, link, address=address, port=None, initiator=False, local=local)._run()

    def _my_addresses(self) -> list[str]:
        return [self.address] if _ip_or_empty(self.address) else []

    # -- bookkeeping ---------------------------------------------------------------------------------------
    def _link_up(self, channel: Channel) -> None:
        self._channels.add(channel)
        self.metrics.set("links_open", len(self._channels))
        self.events.emit("link_up", peer=channel.address, port=channel.port, local=channel.local,
                         direction="out" if channel.initiator else "in")

    def _link_down(self, channel: Channel, reason: str, circuits: int) -> None:
        self._channels.discard(channel)
        if channel.port is not None and self._outbound.get((channel.address, channel.port)) is channel:
            del self._outbound[(channel.address, channel.port)]
        self.metrics.set("links_open", len(self._channels))
        self.events.emit("link_down", peer=channel.address, port=channel.port, reason=reason,
                         circuits=circuits)

    def _wake_writers(self) -> None:
        """The shaping rules changed: every writer looks again (a blackhole may have gone)."""
        for channel in self._channels:
            channel._writer.unpark_all()

    def _count_error(self, kind: str, *, link: bool = False) -> None:
        self.metrics.inc("errors_total", kind=kind)
        if link:
            self.metrics.inc("link_errors_total", kind=kind)


def _local_address(transport: trio.abc.Stream) -> str:
    """Our end's address of a TCP stream ("" when it is no socket or already gone)."""
    try:
        return transport.socket.getsockname()[0]  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return ""


def _ip_or_empty(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return ""
