"""CREATE_FAST over real TLS on loopback: the one-hop directory circuit a C tor client builds while it
bootstraps (it knows no onion key yet), answered by our relay, with HTTP over BEGIN_DIR on it."""

import base64
import os
import time

import pytest
import trio

from nodes.core.cells import Cell, Command, CreatedFast, CreateFast
from nodes.core.create_fast import FastClientState, fast_client_finish
from nodes.core.ed25519 import Signer
from nodes.core.hs_common import blinded_signer, subcredential, time_period_num
from nodes.core.hs_descriptor import build_descriptor
from nodes.core.relay import Begin, EstablishRendezvous
from nodes.net.circuits import CircuitClosed
from nodes.net.hsdir import HsDirStore
from nodes.net.httpio import request
from nodes.net.metrics import Metrics
from tests.net.helpers import Events, echo, exchange, open_link, start_client, start_relay

PERIOD_MINUTES = 24


def _descriptor() -> tuple[bytes, bytes]:
    """(blinded key, signed descriptor) of a fresh onion service for the current time period."""
    now = int(time.time())
    identity = Signer.from_seed(os.urandom(32))
    blinded = blinded_signer(identity, time_period_num(now, PERIOD_MINUTES, 12), PERIOD_MINUTES)
    document = build_descriptor(identity=identity, blinded=blinded, signing=Signer.from_seed(os.urandom(32)),
                                subcredential=subcredential(identity.public_key, blinded.public_key),
                                revision_counter=1, intro_points=[], now=now, lifetime_minutes=180,
                                rng=os.urandom)
    return blinded.public_key, document


async def _http(circuit, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
    stream = await circuit.open_dir_stream()
    async with stream:
        status, _, reply = await request(stream, method, target, body, timeout=10)
    return status, reply


async def test_one_hop_create_fast_circuit_carries_begin_dir_http():
    async with trio.open_nursery() as nursery:
        store = HsDirStore(Metrics(), Events("hsdir", "relay"))
        relay = await start_relay(nursery, "relay0", dir_handler=store.handle_stream)
        client = await start_client(nursery)
        with trio.fail_after(20):
            circuit = await client.circuits.build([relay.status], create_fast=True)
            assert circuit.hop_count == 1
            (at_relay,) = relay.engine.circuits
            assert at_relay.core.created_fast
            assert at_relay.kh == circuit.hop_kh()  # KH from KDF-TOR, the same on both ends
            assert relay.metrics.value("create_fast_total") == 1
            assert relay.metrics.value("relay_circuits_total") == 1

            # HTTP over BEGIN_DIR: publish a descriptor, then fetch it back, each on its own stream.
            blinded_key, document = _descriptor()
            stored = await _http(circuit, "POST", "/tor/hs/3/publish", document)
            assert stored == (200, b"")  # no body: C tor warns about short ones
            key = base64.b64encode(blinded_key).decode()
            assert await _http(circuit, "GET", f"/tor/hs/3/{key}") == (200, document)
            status, _ = await _http(circuit, "GET", "/tor/hs/3/" + base64.b64encode(os.urandom(32)).decode())
            assert status == 404
            await circuit.aclose()
            await at_relay.closed.wait()
        assert client.metrics.value("circuits_built_total") == 1
        nursery.cancel_scope.cancel()


async def test_create_fast_first_hop_then_ntor_hops():
    async with trio.open_nursery() as nursery:
        relays = [await start_relay(nursery, f"relay{i}", dir_handler=echo) for i in range(3)]
        client = await start_client(nursery)
        with trio.fail_after(20):
            circuit = await client.circuits.build([r.status for r in relays], create_fast=True)
            stream = await circuit.open_dir_stream()
            payload = os.urandom(200_000)
            assert await exchange(stream, payload) == payload
        assert [r.metrics.value("create_fast_total") for r in relays] == [1, 0, 0]
        assert [r.metrics.value("relay_circuits_total") for r in relays] == [1, 1, 1]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("message", [Begin("example.com", 80), EstablishRendezvous(bytes(20))],
                         ids=["begin", "establish_rendezvous"])
async def test_create_fast_circuit_refuses_what_a_one_hop_circuit_must_not_do(message):
    async with trio.open_nursery() as nursery:
        relay = await start_relay(nursery, "relay0", dir_handler=echo)
        client = await start_client(nursery)
        with trio.fail_after(20):
            circuit = await client.circuits.build([relay.status], create_fast=True)
            if isinstance(message, Begin):
                _, cell = circuit.core.open_stream(message)
                circuit.channel.send_nowait([cell])
            else:
                await circuit.send(message)
            await circuit.closed.wait()
            assert isinstance(circuit.error, CircuitClosed) and circuit.error.kind == "destroyed"
            assert relay.errors("unexpected") == 1
            # The relay keeps serving: a new one-hop directory circuit works.
            again = await client.circuits.build([relay.status], create_fast=True)
            stream = await again.open_dir_stream()
            assert await exchange(stream, b"still here") == b"still here"
        nursery.cancel_scope.cancel()


async def test_raw_create_fast_on_a_link():
    """What a C tor client sends, cell by cell: CREATE_FAST answered by CREATED_FAST whose KH checks; CREATE
    (TAP) is refused with a DESTROY, and the link stays up for the next CREATE_FAST."""
    async with trio.open_nursery() as nursery:
        relay = await start_relay(nursery, "relay0", dir_handler=echo)
        with trio.fail_after(20):
            link = await open_link(relay.status.or_port, expected_node_id=relay.keys.node_id)
            x = os.urandom(20)
            await link.send_cells([Cell(0x80000001, Command.CREATE_FAST, CreateFast(x).encode())])
            reply = await link.receive_cell()
            assert (reply.circ_id, reply.command) == (0x80000001, Command.CREATED_FAST)
            created = CreatedFast.decode(reply.payload)
            keys = fast_client_finish(FastClientState(x), created.encode())
            assert keys[72:] == created.derivative_key  # KH
            (at_relay,) = relay.engine.circuits
            assert at_relay.kh == created.derivative_key

            await link.send_cells([Cell(0x80000002, Command.CREATE, bytes(509))])
            reply = await link.receive_cell()
            assert (reply.circ_id, reply.command) == (0x80000002, Command.DESTROY)
            assert relay.errors("unexpected") == 1
            await link._send_raw(b"\x80\x00\x00\x03\x05" + bytes(19))  # a cell cut short: the framer waits
            await link._send_raw(bytes(509 - 19))  # ... and now has a whole one: 509 zero bytes, X = 0
            reply = await link.receive_cell()
            assert (reply.circ_id, reply.command) == (0x80000003, Command.CREATED_FAST)
            assert relay.metrics.value("create_fast_total") == 2
            await link.aclose()
        nursery.cancel_scope.cancel()
