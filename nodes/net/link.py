"""A link: one TLS connection between two nodes, carrying the cells of every circuit between them.

The link handshake is VERSIONS then NETINFO (tor-spec 4), without CERTS/AUTH_CHALLENGE/AUTHENTICATE: the
ntor handshake authenticates each hop (see docs/differences.md). Backpressure comes for free: `send_cells`
waits in `send_all` while the peer is slow, and the reader stops reading while its consumer is busy.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

import trio

from nodes.core.cells import Cell, CellFramer, Command, Netinfo, Versions, encode_cell, encode_cells
from nodes.core.errors import DecodeError, UnexpectedMessage

LINK_PROTOCOLS = (4, 5)
HANDSHAKE_TIMEOUT = 10.0
READ_SIZE = 256 * 1024  # one read takes every cell TLSStream has: bigger batches, fewer task switches
# cells the peer may send during the handshake that we accept and ignore
_IGNORED_IN_HANDSHAKE = frozenset((Command.PADDING, Command.VPADDING, Command.CERTS, Command.AUTH_CHALLENGE,
                                   Command.AUTHENTICATE))


class LinkClosed(Exception):
    """The peer closed the connection (or it broke) while we wanted to read or write."""


class Link:
    """Framed cell I/O over a byte stream. `handshake` must complete before circuit cells flow."""

    def __init__(self, stream: trio.abc.Stream, *, initiator: bool) -> None:
        self._stream: trio.abc.Stream | None = stream
        self.initiator = initiator
        self._framer = CellFramer(circ_id_len=2)
        self._pending: deque[Cell] = deque()
        self._send_lock = trio.StrictFIFOLock()
        self.protocol = 0
        self.peer_netinfo: Netinfo | None = None
        self.cells_in = 0
        self.cells_out = 0
        self.closed = False

    # -- handshake -----------------------------------------------------------------------------------------
    async def handshake(self, *, now: int, peer_address: str = "", my_addresses: Iterable[str] = (),
                        timeout: float = HANDSHAKE_TIMEOUT) -> None:
        """VERSIONS, then NETINFO both ways. Raises RemoteProtocolError, LinkClosed or trio.TooSlowError."""
        netinfo = Netinfo(now, peer_address, tuple(my_addresses))
        versions = Cell(0, Command.VERSIONS, Versions(LINK_PROTOCOLS).encode())
        with trio.fail_after(timeout):
            if self.initiator:
                await self._send_raw(encode_cell(versions, circ_id_len=2))
            theirs = await self._receive_handshake_cell(Command.VERSIONS)
            common = set(Versions.decode(theirs.payload).versions) & set(LINK_PROTOCOLS)
            if not common:
                raise UnexpectedMessage(f"no common link protocol (peer offers {sorted(common)})")
            self.protocol = max(common)
            self._framer.circ_id_len = 4
            self._pending.extend(self._framer.feed(b""))
            if not self.initiator:
                await self._send_raw(encode_cell(versions, circ_id_len=2)
                                     + encode_cell(Cell(0, Command.NETINFO, netinfo.encode())))
            self.peer_netinfo = Netinfo.decode((await self._receive_handshake_cell(Command.NETINFO)).payload)
            if self.initiator:
                await self.send_cells([Cell(0, Command.NETINFO, netinfo.encode())])

    async def _receive_handshake_cell(self, want: Command) -> Cell:
        while True:
            cell = await self.receive_cell()
            if cell.command == want:
                return cell
            if cell.command not in _IGNORED_IN_HANDSHAKE:
                raise UnexpectedMessage(f"link handshake: expected {want.name}, got command {cell.command}")

    # -- cells ---------------------------------------------------------------------------------------------
    async def send_cells(self, cells: Sequence[Cell]) -> None:
        self.cells_out += len(cells)
        await self._send_raw(encode_cells(cells))

    async def _send_raw(self, data: bytes) -> None:
        async with self._send_lock:
            if self._stream is None:
                raise LinkClosed("link already closed")
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
                self.closed = True
                raise LinkClosed(str(e) or "link closed while sending") from e

    async def receive_cell(self) -> Cell:
        while not self._pending:
            await self._fill()
        return self._pending.popleft()

    async def receive_cells(self) -> list[Cell]:
        """Every cell that has arrived, waiting for at least one."""
        while not self._pending:
            await self._fill()
        cells = list(self._pending)
        self._pending.clear()
        return cells

    async def _fill(self) -> None:
        if self._stream is None:
            raise LinkClosed("link already closed")
        try:
            data = await self._stream.receive_some(READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
            self.closed = True
            raise LinkClosed(str(e) or "link closed while receiving") from e
        if not data:
            self.closed = True
            raise LinkClosed("peer closed the link")
        cells = self._framer.feed(data)
        if self._framer.buffered > 2 * READ_SIZE:
            raise DecodeError("peer sent an over-long partial cell")
        self.cells_in += len(cells)
        self._pending.extend(cells)

    async def aclose(self) -> None:
        """Idempotent; never raises on an already broken stream."""
        self.closed = True
        stream, self._stream = self._stream, None
        if stream is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                try:
                    await stream.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
