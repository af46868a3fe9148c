"""Links over real TLS on loopback: Tor's link handshake (CERTS checked against the TLS certificate, the
identity the initiator meant), cell exchange, typed errors on junk, timeouts."""

import functools
import hashlib
import os
import time

import pytest
import trio

from nodes.core.cells import (
    Authenticate,
    Cell,
    Certs,
    Command,
    Create2,
    Netinfo,
    Versions,
    encode_cell,
    encode_cells,
)
from nodes.core.errors import DecodeError, IdentityMismatch, SignatureError, UnexpectedMessage
from nodes.core.link_auth import TLS_EXPORTER_LABEL, make_auth_challenge, verify_authenticate
from nodes.core.link_certs import responder_certs, verify_initiator_certs
from nodes.net import tls
from nodes.net.link import Link, LinkClosed
from tests.net.helpers import make_keys

_, KEYS, IDENTITY = make_keys()


async def _pair(nursery, server_fn, server_cert=None):
    """Start a TLS server running server_fn(link, cert_der) and return a connected client Link, the server
    port and the certificate the client saw. `server_cert` replaces what the server claims as its own."""
    ctx, cert = tls.server_context()

    async def handler(transport):
        stream = tls.TLSStream(transport, ctx, server_side=True)
        await stream.do_handshake()
        await server_fn(Link(stream, initiator=False), server_cert or cert)

    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    stream = await tls.open_tls_stream("127.0.0.1", port, tls.client_context())
    return Link(stream, initiator=True), port, stream.peer_cert_der()


def _respond(**kwargs):
    async def server(link, cert):
        await link.handshake(now=int(time.time()), identity=IDENTITY, tls_cert_der=cert, **kwargs)
        await trio.sleep_forever()
    return server


async def test_handshake_proves_the_responder_and_carries_cells_both_ways():
    got = []

    async def server(link, cert):
        await link.handshake(now=int(time.time()), peer_address="127.0.0.1", my_addresses=["127.0.0.1"],
                             identity=IDENTITY, tls_cert_der=cert)
        got.append(link.peer_netinfo)
        cells = []
        while len(cells) < 100:
            cells += await link.receive_cells()
        got.append(cells)
        await link.send_cells([Cell(c.circ_id, Command.CREATED2, b"\x00\x00") for c in cells])

    async with trio.open_nursery() as nursery:
        client, _, cert = await _pair(nursery, server)
        await client.handshake(now=int(time.time()), peer_address="127.0.0.1", my_addresses=["127.0.0.1"],
                               peer_tls_cert_der=cert, expected_node_id=KEYS.node_id)
        assert client.protocol == 5
        assert client.peer.node_id == KEYS.node_id and client.peer.ed25519_identity == KEYS.identity
        assert abs(client.peer_netinfo.timestamp - time.time()) < 60
        sent = [Cell(0x80000000 + i, Command.CREATE2, Create2(2, bytes([i]) * 84).encode())
                for i in range(100)]
        await client.send_cells(sent)
        replies = []
        while len(replies) < 100:
            replies += await client.receive_cells()
        assert [r.circ_id for r in replies] == [c.circ_id for c in sent]
        nursery.cancel_scope.cancel()
    assert got[0].my_addresses == ("127.0.0.1",)
    assert [Create2.decode(c.payload).hdata for c in got[1]] == [bytes([i]) * 84 for i in range(100)]


async def test_a_link_to_another_node_is_refused():
    async with trio.open_nursery() as nursery:
        client, _, cert = await _pair(nursery, _respond())
        with pytest.raises(IdentityMismatch):
            await client.handshake(now=int(time.time()), peer_tls_cert_der=cert, expected_node_id=bytes(20))
        nursery.cancel_scope.cancel()


async def test_certs_for_another_tls_certificate_are_refused():
    """A responder that replays another link's CERTS (certifying another TLS certificate) is caught."""
    _, other = tls.server_context()
    async with trio.open_nursery() as nursery:
        client, _, cert = await _pair(nursery, _respond(), server_cert=other)
        with pytest.raises(SignatureError, match="TLS certificate"):
            await client.handshake(now=int(time.time()), peer_tls_cert_der=cert)
        nursery.cancel_scope.cancel()


async def test_responder_sends_auth_challenge_and_accepts_an_authenticating_initiator_as_a_client():
    """What a C tor relay sends when it connects to us: VERSIONS, then CERTS and AUTHENTICATE before
    NETINFO. We cannot check AUTHENTICATE (no TLS exporter in Python's ssl), so the link is a client's."""
    seen = []

    async def server(link, cert):
        await link.handshake(now=int(time.time()), identity=IDENTITY, tls_cert_der=cert)
        seen.append(link.peer_netinfo)

    async with trio.open_nursery() as nursery:
        client, _, _ = await _pair(nursery, server)
        await client._send_raw(b"\x00\x00\x07\x00\x04\x00\x04\x00\x05")  # VERSIONS 4, 5
        commands = [(await client.receive_cell()).command]
        client._framer.circ_id_len = 4  # link protocol 4+: what Link.handshake does after VERSIONS
        client._pending.extend(client._framer.feed(b""))
        while Command.NETINFO not in commands:
            commands.append((await client.receive_cell()).command)
        assert commands == [Command.VERSIONS, Command.CERTS, Command.AUTH_CHALLENGE, Command.NETINFO]
        await client.send_cells([Cell(0, Command.CERTS, b"\x00"),
                                 Cell(0, Command.AUTHENTICATE, b"\x00\x03\x00\x00"),
                                 Cell(0, Command.NETINFO, Netinfo(5, "127.0.0.1", ()).encode())])
        with trio.fail_after(5):
            while not seen:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert seen[0].timestamp == 5


async def test_junk_from_peer_is_a_typed_error():
    async def server(link, cert):
        await link._stream.send_all(b"\x00\x00\xfe" + b"junk" * 200)  # unknown command 0xfe

    async with trio.open_nursery() as nursery:
        client, _, _ = await _pair(nursery, server)
        with pytest.raises(DecodeError):
            await client.handshake(now=0)
        await client.aclose()
        await client.aclose()  # idempotent
        nursery.cancel_scope.cancel()


async def test_wrong_first_cell_is_unexpected():
    async def server(link, cert):
        await link.send_cells([Cell(1, Command.CREATE2, Create2(2, b"x" * 84).encode())])
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        client, _, _ = await _pair(nursery, server)
        client._framer.circ_id_len = 4
        with pytest.raises(UnexpectedMessage):
            await client._receive_handshake_cell(Command.VERSIONS)
        nursery.cancel_scope.cancel()


async def test_silent_peer_times_out():
    async def server(link, cert):
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        client, _, _ = await _pair(nursery, server)
        with pytest.raises(trio.TooSlowError):
            await client.handshake(now=0, timeout=0.3)
        nursery.cancel_scope.cancel()


async def test_peer_closing_raises_link_closed():
    async def server(link, cert):
        await link.aclose()

    async with trio.open_nursery() as nursery:
        client, _, _ = await _pair(nursery, server)
        with pytest.raises(LinkClosed):
            await client.handshake(now=0)
        nursery.cancel_scope.cancel()


async def test_an_initiating_relay_authenticates_and_the_responder_can_check_it():
    """An initiator with a LinkIdentity (a relay) answers AUTH_CHALLENGE with CERTS and AUTHENTICATE, as C
    tor's relays do: a C tor relay refused ESTABLISH_INTRO and INTRODUCE1 arriving over our relays' links
    ("Single hop client was rejected") while they did not. Checked here as C tor checks it: transcripts,
    the TLS exporter of the responder's side, the signature (link_auth.verify_authenticate)."""
    _, _, initiator_identity = make_keys()
    checked = []

    async def server(link, cert):
        now = int(time.time())
        theirs = await link.receive_cell()  # VERSIONS, 2-byte circuit ID
        versions = encode_cell(Cell(0, Command.VERSIONS, Versions((4, 5)).encode()), circ_id_len=2)
        sent = versions + encode_cells([
            Cell(0, Command.CERTS, responder_certs(IDENTITY, cert, now).encode()),
            Cell(0, Command.AUTH_CHALLENGE, make_auth_challenge(os.urandom).encode())])
        await link._send_raw(sent + encode_cells([Cell(0, Command.NETINFO, Netinfo(now, "", ()).encode())]))
        link._framer.circ_id_len = 4
        link._pending.extend(link._framer.feed(b""))
        certs, auth = await link.receive_cell(), await link.receive_cell()
        assert (certs.command, auth.command) == (Command.CERTS, Command.AUTHENTICATE)
        assert (await link.receive_cell()).command == Command.NETINFO
        initiator = verify_initiator_certs(Certs.decode(certs.payload), now)
        clog = hashlib.sha256(encode_cell(theirs, circ_id_len=2) + encode_cell(certs, circ_id_len=4)).digest()
        secrets = link._stream.export_keying_material(TLS_EXPORTER_LABEL, initiator.claimed.rsa_id_digest, 32)
        checked.append(verify_authenticate(Authenticate.decode(auth.payload), initiator, IDENTITY.public,
                                           slog=hashlib.sha256(sent).digest(), clog=clog,
                                           responder_tls_cert_der=cert, tls_secrets=secrets))

    async with trio.open_nursery() as nursery:
        client, _, cert = await _pair(nursery, server)
        await client.handshake(now=int(time.time()), identity=initiator_identity, peer_tls_cert_der=cert)
        assert client.authenticated
        with trio.fail_after(5):
            while not checked:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert checked == [initiator_identity.public]
