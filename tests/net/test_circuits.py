"""Circuits over real TLS on loopback: relays (ChannelManager + RelayEngine) and clients in one trio test."""

import dataclasses
import os
import socket

import pytest
import trio

from nodes.core import circuit as circ
from nodes.core import ed25519
from nodes.core.cells import Cell, Command, Create2
from nodes.core.hs_intro import (
    IntroducePlaintext,
    build_establish_intro,
    client_handle_rendezvous2,
    decrypt_introduce2,
    encrypt_introduce1,
    service_rendezvous1,
)
from nodes.core.hs_ntor import public_key
from nodes.core.relay import Drop, EndReason, EstablishRendezvous, IntroduceAckStatus, Rendezvous1, Truncate
from nodes.core.relay_crypto import HopCrypto
from nodes.net.circuits import CircuitBuildError, CircuitClosed, hop_spec
from nodes.net.link import Link, LinkClosed
from nodes.net.streams import StreamRefused
from tests.net.helpers import HOST, echo, exchange, open_link, start_client, start_hostile_relay, start_relay


async def test_three_hop_circuit_echoes_one_megabyte():
    async with trio.open_nursery() as nursery:
        relays = [await start_relay(nursery, f"relay{i}", dir_handler=echo) for i in range(4)]
        client = await start_client(nursery)
        with trio.fail_after(20):
            circuit = await client.circuits.build([r.status for r in relays[:3]])
            assert circuit.hop_count == 3
            stream = await circuit.open_dir_stream()
            payload = os.urandom(1_000_000)
            started = trio.current_time()
            received = await exchange(stream, payload)
            seconds = trio.current_time() - started
            assert received == payload
            print(f"1 MB echo through 3 hops: {seconds:.2f} s, {len(payload) / seconds / 1e6:.2f} MB/s")
            await stream.aclose()
            await circuit.aclose()
        assert client.metrics.value("circuits_built_total") == 1
        nursery.cancel_scope.cancel()


async def test_circuits_share_one_link_per_peer_pair():
    async with trio.open_nursery() as nursery:
        r = [await start_relay(nursery, f"relay{i}", dir_handler=echo) for i in range(4)]
        client = await start_client(nursery)
        with trio.fail_after(20):
            # Built at the same time: both wait for the one connection attempt to relay0.
            circuits = []
            async with trio.open_nursery() as builds:
                for path in ([r[0], r[1], r[2]], [r[0], r[1], r[3]]):
                    builds.start_soon(lambda p=path: _append_built(client, p, circuits))
            assert len(client.channels.channels) == 1
            assert len(client.channels.channels[0].circuit_ids) == 2
            assert [len(x.outbound()) for x in r] == [1, 2, 0, 0]
            assert len(r[0].outbound()[0].circuit_ids) == 2  # relay0 -> relay1 carries both
            assert [len(x.channels.channels) for x in r] == [2, 3, 1, 1]
            for circuit in circuits:
                stream = await circuit.open_dir_stream()
                assert await exchange(stream, b"hello" * 1000) == b"hello" * 1000
        assert client.metrics.value("links_open") == 1
        nursery.cancel_scope.cancel()


async def test_links_come_from_the_node_own_address_and_say_both_ends():
    """A node on its own loopback address (the local backend's 127.0.0.x) dials from it, so the relay sees
    who connected (the chaos anonymity checker relies on it); link_up names both ends."""
    async with trio.open_nursery() as nursery:
        relay = await start_relay(nursery, "relay0", dir_handler=echo)
        client = await start_client(nursery)
        client.channels.source_address = "127.0.0.3"
        with trio.fail_after(20):
            await client.channels.get_channel(HOST, relay.status.or_port)
            while not relay.events.records("link_up"):
                await trio.sleep(0.01)
        inbound, = relay.events.records("link_up")
        assert (inbound["peer"], inbound["local"], inbound["direction"]) == ("127.0.0.3", HOST, "in")
        outbound, = client.events.records("link_up")
        assert (outbound["peer"], outbound["local"], outbound["direction"]) == (HOST, "127.0.0.3", "out")
        nursery.cancel_scope.cancel()


async def _append_built(client, path, out):
    out.append(await client.circuits.build([x.status for x in path]))


async def test_killing_a_link_destroys_the_circuits_through_it():
    async with trio.open_nursery() as nursery:
        r = [await start_relay(nursery, f"relay{i}", dir_handler=echo) for i in range(3)]
        client = await start_client(nursery)
        with trio.fail_after(20):
            first = await client.circuits.build([x.status for x in r])
            second = await client.circuits.build([x.status for x in r])
            stream = await first.open_dir_stream()
            assert await exchange(stream, b"x" * 5000) == b"x" * 5000
            relay_circuits = [c for x in r for c in x.engine.circuits]
            assert len(relay_circuits) == 6
            link = r[1].channels.channel_to(HOST, r[2].status.or_port)
            await link.aclose()
            # The client hears of it as a typed error, on the stream and on the circuit; nothing hangs.
            with pytest.raises(CircuitClosed) as caught:
                await stream.receive_some()
            assert caught.value.kind == "destroyed"
            await second.closed.wait()
            assert second.error.kind == "destroyed"
            with pytest.raises(CircuitClosed):
                await second.open_dir_stream()
            for c in relay_circuits:  # both sides of the dead link tore their circuits down
                await c.closed.wait()
        assert not client.circuits.circuits
        assert r[1].events.records("link_down")[0]["circuits"] == 2
        nursery.cancel_scope.cancel()


async def test_destroy_and_truncate_travel_along_the_circuit():
    async with trio.open_nursery() as nursery:
        r = [await start_relay(nursery, f"relay{i}", dir_handler=echo) for i in range(3)]
        client = await start_client(nursery)
        with trio.fail_after(20):
            circuit = await client.circuits.build([x.status for x in r])
            with pytest.raises(StreamRefused) as refused:  # relays are not exits
                await circuit.open_stream("example.com", 80)
            assert refused.value.reason == EndReason.EXITPOLICY
            relay_circuits = [c for x in r for c in x.engine.circuits]
            await circuit.aclose()
            await circuit.aclose()  # idempotent
            for c in relay_circuits:
                await c.closed.wait()

            circuit = await client.circuits.build([x.status for x in r])
            relay_circuits = [c for x in r[1:] for c in x.engine.circuits]
            await circuit.send(Truncate(), hop=0)
            await circuit.closed.wait()
            assert circuit.error.kind == "truncated"
            for c in relay_circuits:
                await c.closed.wait()
        assert not any(x.engine.circuits for x in r)
        assert sum(x.metrics.value("relay_circuits_open") for x in r) == 0
        nursery.cancel_scope.cancel()


async def test_build_failures_are_typed_and_timed():
    async with trio.open_nursery() as nursery:
        relay = await start_relay(nursery, "relay0")
        silent = await start_hostile_relay(nursery, "silent", forge=False)
        client = await start_client(nursery, step_timeout=0.5)
        with trio.fail_after(20):
            with pytest.raises(CircuitBuildError) as caught:
                await client.circuits.build([relay.status, silent.status])
            assert (caught.value.kind, caught.value.hop) == ("timeout", 1)
            with socket.socket() as s:  # a port nobody listens on
                s.bind((HOST, 0))
                closed_port = s.getsockname()[1]
            nowhere = dataclasses.replace(relay.status, or_port=closed_port)
            with pytest.raises(CircuitBuildError) as caught:
                await client.circuits.build([nowhere, relay.status])
            assert (caught.value.kind, caught.value.hop) == ("connect", 0)
            await client.circuits.build([relay.status])
        assert client.metrics.value("circuit_build_failures_total", kind="timeout") == 1
        assert client.metrics.value("circuit_build_failures_total", kind="connect") == 1
        assert client.metrics.value("circuit_build_seconds_count") == 1
        assert client.metrics.value("link_handshake_seconds_count") == 1  # one link made, then reused
        assert relay.metrics.value("link_handshake_seconds_count") == 1  # relay0's link to the silent one
        assert [e["kind"] for e in client.events.records("circuit_build_failed")] == ["timeout", "connect"]
        nursery.cancel_scope.cancel()


async def _raw_link(relay) -> Link:
    return await open_link(relay.status.or_port)


async def test_bad_input_is_counted_and_the_relay_keeps_serving():
    async with trio.open_nursery() as nursery:
        r = [await start_relay(nursery, f"relay{i}", dir_handler=echo) for i in range(3)]
        forger = await start_hostile_relay(nursery, "forger", forge=True)
        client = await start_client(nursery)
        with trio.fail_after(20):
            good = await client.circuits.build([x.status for x in r])
            good_stream = await good.open_dir_stream()

            # A cell for a circuit that does not exist is dropped; a CREATE2 with the high bit of the wrong
            # side is refused with a DESTROY. Cells are handled in order, so the DESTROY says both were seen.
            raw = await _raw_link(r[0])
            await raw.send_cells([Cell(0x80000005, Command.RELAY, bytes(509)),
                                  Cell(0x00000007, Command.CREATE2, Create2(2, bytes(84)).encode())])
            reply = await raw.receive_cell()
            assert (reply.circ_id, reply.command) == (7, Command.DESTROY)
            assert r[0].errors("unknown_circuit") == 1 and r[0].errors("circ_id") == 1
            # A CREATE2 whose onionskin names another relay: DESTROY, counted as a crypto error.
            await raw.send_cells([Cell(0x80000009, Command.CREATE2, Create2(2, bytes(84)).encode())])
            reply = await raw.receive_cell()
            assert (reply.circ_id, reply.command) == (0x80000009, Command.DESTROY)
            assert r[0].errors("crypto") == 1
            # Junk (an unknown cell command) closes that link only.
            await raw._send_raw(b"\x80\x00\x00\x01\xfe" + bytes(600))
            with pytest.raises(LinkClosed):
                await raw.receive_cell()
            assert r[0].errors("decode") == 1
            assert r[0].metrics.value("link_errors_total", kind="decode") == 1

            # A forged EXTENDED2 (the next hop's ntor AUTH does not verify): a typed build error.
            with pytest.raises(CircuitBuildError) as caught:
                await client.circuits.build([r[0].status, forger.status])
            assert (caught.value.kind, caught.value.hop) == ("crypto", 1)
            assert client.errors("crypto") == 1
            assert client.metrics.value("circuit_build_failures_total", kind="crypto") == 1

            # An EXTEND2 back to the relay itself is refused.
            with pytest.raises(CircuitBuildError) as caught:
                await client.circuits.build([r[0].status, r[0].status])
            assert (caught.value.kind, caught.value.hop) == ("destroyed", 1)
            assert r[0].errors("extend_to_self") == 1

            # A ninth RELAY_EARLY cell on one circuit: the relay destroys that circuit.
            early = await client.circuits.build([r[1].status])
            for _ in range(9):
                cell = early.core.send_relay(Drop())
                early.channel.send_nowait([Cell(cell.circ_id, Command.RELAY_EARLY, cell.payload)])
            await early.closed.wait()
            assert early.error.kind == "destroyed"
            assert r[1].errors("unexpected") == 1
            assert "RELAY_EARLY" in r[1].events.records("error")[0]["error"]

            # Through all this the first circuit kept working.
            assert await exchange(good_stream, b"still here" * 3000) == b"still here" * 3000
        nursery.cancel_scope.cancel()


async def test_rendezvous_through_intro_and_rendezvous_points():
    async with trio.open_nursery() as nursery:
        r = [await start_relay(nursery, f"relay{i}") for i in range(4)]
        client = await start_client(nursery, "client")
        service = await start_client(nursery, "service")
        intro_point, rend_point = r[2], r[3]
        auth = ed25519.Signer.from_seed(os.urandom(32))  # the service's intro auth key at relay2
        enc_secret = os.urandom(32)  # the service's introduction encryption key pair (b, B)
        enc_key, subcredential = public_key(enc_secret), os.urandom(32)
        with trio.fail_after(20):
            # Step 1: the service establishes an intro point; HANDSHAKE_AUTH is keyed with the hop's KH.
            intro = await service.circuits.build([r[0].status, r[1].status, intro_point.status])
            await intro.send(build_establish_intro(auth, intro.hop_kh()))
            await intro.receive((circ.IntroEstablished,))

            # Step 3: the client sets up a rendezvous point with a one-time cookie.
            rend = await client.circuits.build([r[0].status, r[1].status, rend_point.status])
            cookie = os.urandom(20)
            await rend.send(EstablishRendezvous(cookie))
            await rend.receive((circ.RendezvousEstablished,))

            # Step 4: INTRODUCE1 to the intro point, which relays it to the service as INTRODUCE2.
            plaintext = IntroducePlaintext(cookie, (), 1, rend_point.keys.ntor_public,
                                           hop_spec(rend_point.status).link_specs())
            introduce1, intro_state = encrypt_introduce1(auth_key=auth.public_key, service_enc_key=enc_key,
                                                         subcredential=subcredential, plaintext=plaintext,
                                                         rng=os.urandom)
            wrong_intro = await client.circuits.build([r[0].status, r[1].status])  # no service there
            await wrong_intro.send(introduce1)
            ack = await wrong_intro.receive((circ.IntroduceAck,))
            assert ack.message.status == IntroduceAckStatus.UNKNOWN_ID
            client_intro = await client.circuits.build([r[1].status, r[0].status, intro_point.status])
            await client_intro.send(introduce1)
            ack = await client_intro.receive((circ.IntroduceAck,))
            assert ack.message.status == IntroduceAckStatus.SUCCESS
            introduce2 = (await intro.receive((circ.Introduce2,))).message
            opened, client_x = decrypt_introduce2(introduce2, service_enc_secret=enc_secret,
                                                  service_enc_key=enc_key, subcredential=subcredential)
            assert opened.rendezvous_cookie == cookie

            # Step 5: the service answers at the rendezvous point; each end adds the hs-ntor virtual hop.
            service_rend = await service.circuits.build([r[2].status, r[1].status, rend_point.status])
            rendezvous1, keys = service_rendezvous1(cookie, X=client_x, service_enc_secret=enc_secret,
                                                    service_enc_key=enc_key, auth_key=auth.public_key,
                                                    rng=os.urandom)
            await service_rend.send(rendezvous1)
            service_rend.add_virtual_hop(HopCrypto.hs_virtual(keys, service_side=True))
            rendezvous2 = (await rend.receive((circ.Rendezvous2,))).message
            client_keys = client_handle_rendezvous2(intro_state, rendezvous2)
            rend.add_virtual_hop(HopCrypto.hs_virtual(client_keys, service_side=False))
            assert rend_point.metrics.value("rendezvous_joined_total") == 1

            # Step 6: a stream from the client to the service through the splice, data both ways.
            async def serve_one():
                stream, port = await service_rend.accept_stream()
                assert port == 80
                await echo(stream)

            nursery.start_soon(serve_one)
            stream = await rend.open_stream("", 80)
            payload = os.urandom(300_000)
            assert await exchange(stream, payload) == payload

            # Forged onion-service cells are refused and counted; the relays keep serving.
            forged = await service.circuits.build([r[0].status, intro_point.status])
            await forged.send(build_establish_intro(auth, os.urandom(20)))  # HANDSHAKE_AUTH with a wrong KH
            await forged.closed.wait()
            assert intro_point.errors("crypto") == 1
            stray = await service.circuits.build([r[0].status, rend_point.status])
            await stray.send(Rendezvous1(os.urandom(20), bytes(64)))  # a cookie nobody established
            await stray.closed.wait()
            assert rend_point.errors("unknown_cookie") == 1
            assert await exchange(stream, b"after" * 100) == b"after" * 100
            await stream.aclose()
        nursery.cancel_scope.cancel()
