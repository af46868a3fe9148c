"""Many streams on one rendezvous circuit, through the real client and service roles on loopback: a burst of
concurrent SOCKS connections with the same credentials (one rendezvous circuit) all get in, as with tor,
where a service has no per-circuit stream limit unless one is set; when one is set, the streams past it are
refused with an END the client replies as GENERAL_FAILURE (not 0xF3: the rendezvous worked), and the
service counts them."""

from __future__ import annotations

import dataclasses

import trio

from nodes.config import ServicePort
from nodes.core.relay import Begin
from nodes.core.socks5 import ReplyCode
from nodes.roles import authority, client, onion_service, relay
from tests.net.test_network import CLIENT_ADDRESS, HS_ADDRESS, _service_and_client, _until_ready
from tests.net.test_relay_role import _authority_configs, _relay_config, _until
from tests.net.test_socks import _receive_exactly, socks_open

CREDENTIALS = (b"alice", b"x")  # one isolation key: every connection shares one rendezvous circuit


async def _network(nursery, tmp_path, **service_options):
    """Authorities, relays, an onion service with echo on port 7 and a client: (service, client, onion,
    SOCKS port), once all are ready."""
    auth_configs = _authority_configs(tmp_path, 3)
    refs = auth_configs[0].authorities
    hs_config, client_config = _service_and_client(tmp_path, refs, intro_points=2,
                                                   services=(ServicePort(7, "echo"),))
    for c in auth_configs:
        await nursery.start(authority.serve, c)
    relays = [await nursery.start(relay.serve, _relay_config(tmp_path, i, refs)) for i in range(5)]
    service = await nursery.start(onion_service.serve, dataclasses.replace(hs_config, **service_options))
    user = await nursery.start(client.serve, client_config)
    with trio.fail_after(40):
        for r in relays:
            await _until(r)
        hs_state = await _until_ready(HS_ADDRESS, service.control_port)
        client_state = await _until_ready(CLIENT_ADDRESS, user.control_port)
    return service, user, hs_state["onion"], int(client_state["socks"].rpartition(":")[2])


async def _echo_open(socks_port: int, onion: str) -> tuple[trio.SocketStream, int]:
    stream, code, early = await socks_open(socks_port, onion, 7, credentials=CREDENTIALS)
    assert early == b""
    return stream, code


async def _echoes(stream: trio.SocketStream, payload: bytes) -> None:
    await stream.send_all(payload)
    assert await _receive_exactly(stream, len(payload)) == payload


async def test_fifty_concurrent_streams_on_one_rendezvous_circuit_all_succeed(tmp_path):
    async with trio.open_nursery() as nursery:
        service, user, onion, socks_port = await _network(nursery, tmp_path)
        codes: list[int] = []

        async def through_socks(i: int) -> None:
            stream, code = await _echo_open(socks_port, onion)
            codes.append(code)
            async with stream:
                if code == ReplyCode.SUCCEEDED:
                    await _echoes(stream, b"socks %d " % i * 100)

        # 50 applications at once through SOCKS with the same credentials: one rendezvous circuit.
        with trio.fail_after(60):
            async with trio.open_nursery() as burst:
                for i in range(50):
                    burst.start_soon(through_socks, i)
        assert [ReplyCode(c).name for c in codes if c != ReplyCode.SUCCEEDED] == []
        assert user.metrics.value("rendezvous_total", result="joined") == 1
        assert service.metrics.value("streams_total", port="7", result="opened") == 50

        # Our SOCKS front end opens one stream per scheduling round (its per-credentials lock), so on
        # loopback the service keeps up. A client without that lock (tor, or ours across real links) puts
        # many BEGINs in one batch of cells: 50 queued in one go must all be served too.
        (circuit,) = user.rendezvous.values()

        async def on_the_circuit(i: int) -> None:
            async with await circuit.open_stream("", 7) as stream:
                await _echoes(stream, b"burst %d " % i * 100)

        with trio.fail_after(60):
            async with trio.open_nursery() as burst:
                for i in range(50):
                    burst.start_soon(on_the_circuit, i)
        assert service.metrics.value("streams_total", port="7", result="opened") == 100
        assert service.metrics.value("streams_refused_total", reason="RESOURCELIMIT") == 0
        nursery.cancel_scope.cancel()


async def test_streams_past_the_configured_limit_are_refused_and_counted(tmp_path):
    async with trio.open_nursery() as nursery:
        service, user, onion, socks_port = await _network(nursery, tmp_path)
        service.circuits.max_incoming_streams = 3  # tor's HiddenServiceMaxStreams 3
        with trio.fail_after(60):
            held = []
            for _ in range(3):
                stream, code = await _echo_open(socks_port, onion)
                assert code == ReplyCode.SUCCEEDED
                held.append(stream)
            refused, code = await _echo_open(socks_port, onion)
            await refused.aclose()
            # what tor's client replies to END RESOURCELIMIT; the rendezvous itself worked
            assert code == ReplyCode.GENERAL_FAILURE
            assert service.metrics.value("streams_refused_total", reason="RESOURCELIMIT") == 1
            # the circuit and the streams on it live on
            for i, stream in enumerate(held):
                await _echoes(stream, b"still here %d" % i)
                await stream.aclose()
        assert user.metrics.value("rendezvous_total", result="joined") == 1
        assert service.metrics.value("streams_total", port="7", result="opened") == 3
        nursery.cancel_scope.cancel()


async def test_a_stream_id_reused_while_its_begin_waits_is_served_once_on_its_own_port(tmp_path):
    """A hostile client sends BEGIN, END and BEGIN again with the same stream id in one batch, so the
    service still has the first BEGIN waiting when the second arrives. The first must not be answered for
    the second (nor the second twice): the service serves the one live stream, on its port, and lives on."""
    async with trio.open_nursery() as nursery:
        service, user, onion, socks_port = await _network(nursery, tmp_path, services=(
            ServicePort(7, "echo"), ServicePort(8, "echo")))
        with trio.fail_after(60):
            stream, code = await _echo_open(socks_port, onion)
            assert code == ReplyCode.SUCCEEDED
            await stream.aclose()
            (circuit,) = user.rendezvous.values()
            streams = circuit.core._streams  # the client's stream layer: we bend its rules here
            stream_id, begin = streams.open(Begin("", 8))
            end = streams.end(stream_id)
            del streams._streams[stream_id]  # as if the service had answered: the id is free again
            streams._next_id = stream_id
            reused = circuit._open(Begin("", 7), 10)  # the same id, the BEGIN queued behind the others
            circuit.channel.send_nowait([begin, end])
            again = await reused
            assert again.stream_id == stream_id
            await _echoes(again, b"on port 7")
            await again.aclose()
            # and the service goes on serving
            stream, code = await _echo_open(socks_port, onion)
            assert code == ReplyCode.SUCCEEDED
            await _echoes(stream, b"still serving")
            await stream.aclose()
        assert service.metrics.value("streams_total", port="8", result="opened") == 0
        assert service.metrics.value("streams_total", port="7", result="opened") == 3
        nursery.cancel_scope.cancel()
