"""A link: one TLS connection between two nodes, carrying the cells of every circuit between them.

The link handshake is Tor's (tor-spec 4, "Negotiating and initializing connections"), so a C tor peer can use
our OR ports and we can use theirs:

    initiator                                   responder
    VERSIONS             -->
                         <--   VERSIONS, CERTS (types 2, 4, 5, 7), AUTH_CHALLENGE, NETINFO
    [CERTS, AUTHENTICATE] NETINFO  -->

The initiator checks the responder's CERTS exactly as tor-spec 4.2 says (nodes/core/link_certs.py), with the
certificate the TLS handshake showed, and refuses a link to anyone but the node it meant to reach
(IdentityMismatch). An initiating relay (one with a LinkIdentity) answers AUTH_CHALLENGE with CERTS (types
2, 4, 6, 7) and AUTHENTICATE (AUTH0003, bound to the link by the RFC 5705 exporter that
nodes/net/tls_exporter.py reaches), as C tor's relays do; a client takes the client's path (NETINFO at once).
Our responders accept an initiator that authenticates as a client all the same (docs/differences.md).
Backpressure comes for free: `send_cells` waits in
`send_all` while the peer is slow, and the reader stops reading while its consumer is busy.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Sequence

import trio

from nodes.core.cells import (
    AuthChallenge,
    Cell,
    CellFramer,
    Certs,
    Command,
    Netinfo,
    Versions,
    encode_cell,
    encode_cells,
)
from nodes.core.errors import DecodeError, UnexpectedMessage
from nodes.core.link_auth import (
    TLS_EXPORTER_LABEL,
    TLS_EXPORTER_LENGTH,
    choose_auth_method,
    make_auth_challenge,
    make_authenticate,
)
from nodes.core.link_certs import (
    LinkIdentity,
    PeerIdentity,
    initiator_certs,
    responder_certs,
    verify_responder_certs,
)

from .tls_exporter import ExporterUnavailable

LINK_PROTOCOLS = (4, 5)  # C tor 0.4.9 offers 3-5; 3 lacks 4-byte circuit ids, which we always use
HANDSHAKE_TIMEOUT = 10.0
READ_SIZE = 256 * 1024  # one read takes every cell TLSStream has: bigger batches, fewer task switches
_PADDING = frozenset((Command.PADDING, Command.VPADDING))
# what an initiator may send the responder after VERSIONS: a relay's CERTS and AUTHENTICATE, then NETINFO
_INITIATOR_AUTH = frozenset((Command.CERTS, Command.AUTHENTICATE))

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
        self._unflushed = bytearray()  # cells send_cells_nowait took but could not hand to the stream yet
        self.protocol = 0
        self.peer_netinfo: Netinfo | None = None
        self.peer: PeerIdentity | None = None  # who the responder proved to be (initiators only)
        self.authenticated = False  # we sent AUTHENTICATE (an initiating relay: _authentication)
        self.cells_in = 0
        self.cells_out = 0
        self.closed = False

    # -- handshake -----------------------------------------------------------------------------------------
    async def handshake(self, *, now: int, peer_address: str = "", my_addresses: Iterable[str] = (),
                        identity: LinkIdentity | None = None, tls_cert_der: bytes = b"",
                        peer_tls_cert_der: bytes = b"", expected_node_id: bytes | None = None,
                        rng: Callable[[int], bytes] = os.urandom, timeout: float = HANDSHAKE_TIMEOUT) -> None:
        """Run Tor's link handshake. A responder proves `identity` for its TLS certificate `tls_cert_der`; an
        initiator checks the responder's certificates against `peer_tls_cert_der` and, when given,
        `expected_node_id`. Raises RemoteProtocolError (IdentityMismatch among them), LinkClosed or
        trio.TooSlowError."""
        netinfo = Cell(0, Command.NETINFO, Netinfo(now, peer_address, tuple(my_addresses)).encode())
        versions = encode_cell(Cell(0, Command.VERSIONS, Versions(LINK_PROTOCOLS).encode()), circ_id_len=2)
        with trio.fail_after(timeout):
            if self.initiator:
                await self._send_raw(versions)
            theirs = await self._receive_handshake_cell(Command.VERSIONS)
            offered = Versions.decode(theirs.payload).versions
            common = set(offered) & set(LINK_PROTOCOLS)
            if not common:
                raise UnexpectedMessage(f"no common link protocol (peer offers {sorted(offered)})")
            self.protocol = max(common)
            self._framer.circ_id_len = 4
            self._pending.extend(self._framer.feed(b""))
            if self.initiator:
                slog = hashlib.sha256(encode_cell(theirs, circ_id_len=2))  # what the responder sent ...
                certs_cell = await self._receive_handshake_cell(Command.CERTS, log=slog)
                self.peer = verify_responder_certs(Certs.decode(certs_cell.payload), peer_tls_cert_der, now,
                                                   expected_node_id=expected_node_id)
                # ... up to and including AUTH_CHALLENGE (C tor sends it right after CERTS)
                cell = await self._receive_handshake_cell(Command.AUTH_CHALLENGE, Command.NETINFO, log=slog)
                challenge = None
                if cell.command == Command.AUTH_CHALLENGE:
                    challenge = AuthChallenge.decode(cell.payload)
                    cell = await self._receive_handshake_cell(Command.NETINFO)
                self.peer_netinfo = Netinfo.decode(cell.payload)
                proof = self._authentication(identity, challenge, versions, slog.digest(), peer_tls_cert_der,
                                             now, rng)
                await self.send_cells([*proof, netinfo])
            else:
                if identity is None:
                    raise ValueError("a responder needs the LinkIdentity it proves")
                certs = responder_certs(identity, tls_cert_der, now)
                await self._send_raw(versions + encode_cells([
                    Cell(0, Command.CERTS, certs.encode()),
                    Cell(0, Command.AUTH_CHALLENGE, make_auth_challenge(rng).encode()),
                    netinfo]))
                self.peer_netinfo = Netinfo.decode(
                    (await self._receive_handshake_cell(Command.NETINFO, also=_INITIATOR_AUTH)).payload)

    async def _receive_handshake_cell(self, *want: Command, also: frozenset[int] = frozenset(),
                                      log: hashlib._Hash | None = None) -> Cell:
        """The next cell of a command in `want`, skipping padding and the commands in `also`; with `log`,
        every cell read is hashed into it as it was on the wire (an initiator's SLOG)."""
        while True:
            cell = await self.receive_cell()
            if log is not None:
                log.update(encode_cell(cell, circ_id_len=self._framer.circ_id_len))
            if cell.command in want:
                return cell
            if cell.command not in _PADDING and cell.command not in also:
                raise UnexpectedMessage(f"link handshake: expected {' or '.join(w.name for w in want)}, got "
                                        f"command {cell.command}")

    def _authentication(self, identity: LinkIdentity | None, challenge: AuthChallenge | None,
                        versions: bytes, slog: bytes, peer_tls_cert_der: bytes, now: int,
                        rng: Callable[[int], bytes]) -> list[Cell]:
        """An initiating relay's CERTS and AUTHENTICATE (tor-spec 4.4.2), or nothing: for a client (no
        `identity`), a responder that offered no method 3, or a TLS stream without the RFC 5705 exporter
        (nodes/net/tls_exporter.py). A C tor relay takes a link whose initiator did not authenticate for a
        client's, and refuses ESTABLISH_INTRO and INTRODUCE1 on circuits that arrive over it."""
        exporter = getattr(self._stream, "export_keying_material", None)
        if identity is None or challenge is None or choose_auth_method(challenge) is None or exporter is None:
            return []
        try:
            tls_secrets = exporter(TLS_EXPORTER_LABEL, identity.rsa_id_digest, TLS_EXPORTER_LENGTH)
        except ExporterUnavailable:
            return []
        certs = Cell(0, Command.CERTS, initiator_certs(identity, now).encode())
        clog = hashlib.sha256(versions + encode_cell(certs, circ_id_len=4)).digest()
        assert self.peer is not None  # verified above
        auth = make_authenticate(identity, self.peer, slog=slog, clog=clog,
                                 responder_tls_cert_der=peer_tls_cert_der, tls_secrets=tls_secrets, rng=rng)
        self.authenticated = True
        return [certs, Cell(0, Command.AUTHENTICATE, auth.encode())]

    # -- cells ---------------------------------------------------------------------------------------------
    async def send_cells(self, cells: Sequence[Cell]) -> None:
        self.cells_out += len(cells)
        await self._send_raw(encode_cells(cells))

    def send_cells_nowait(self, cells: Sequence[Cell]) -> bool:
        """Take `cells` and send what the stream takes without waiting (a TLSStream's write_nowait): True
        when all of it went out, False when `flush()` must send the rest. Cells taken go out in order before
        any later cells. LinkClosed when the link is gone."""
        self.cells_out += len(cells)
        data = encode_cells(cells)
        stream = self._stream
        if stream is None:
            raise LinkClosed("link already closed")
        write_nowait = getattr(stream, "write_nowait", None)
        if self._unflushed or write_nowait is None or self._send_lock.locked():
            self._unflushed += data
            return False
        try:
            return write_nowait(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
            self.closed = True
            raise LinkClosed(str(e) or "link closed while sending") from e

    async def flush(self) -> None:
        """Send what send_cells_nowait left, waiting for the stream."""
        data, self._unflushed = bytes(self._unflushed), bytearray()
        await self._send_raw(data)

    async def _send_raw(self, data: bytes) -> None:
        lock = self._send_lock
        try:
            lock.acquire_nowait()  # uncontended (the usual case): no pass through trio's scheduler
        except trio.WouldBlock:
            await lock.acquire()
        try:
            if self._stream is None:
                raise LinkClosed("link already closed")
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
                self.closed = True
                raise LinkClosed(str(e) or "link closed while sending") from e
        finally:
            lock.release()

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
