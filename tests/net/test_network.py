"""A whole network in one test on loopback, every node its real role with real TLS and sockets: three
authorities, six relays, an onion service (http on 80, echo on 7) and a client. Through the client's SOCKS5
port we fetch the page and a megabyte from the onion and check every byte; the nodes' events must show the
six steps of the seed in order; every circuit of the service starts at its guard; and bad input (a replayed
INTRODUCE2, a mistyped onion address) is refused and counted while the network keeps serving."""

from __future__ import annotations

import json
import random

import trio

from nodes.config import NodeConfig, ServicePort, Timing
from nodes.core import circuit as circ
from nodes.core import hs_common
from nodes.core.hs_intro import IntroducePlaintext, encrypt_introduce1
from nodes.core.onion_address import encode_onion_address
from nodes.core.relay import EstablishRendezvous, IntroduceAckStatus
from nodes.core.socks5 import ReplyCode
from nodes.net.circuits import hop_spec
from nodes.net.hs_paths import TimePeriod, find_relay
from nodes.net.targets import pattern_bytes
from nodes.roles import authority, client, onion_service, relay
from tests.net.test_relay_role import (
    INTERVAL,
    _authority_configs,
    _get,
    _relay_config,
    _start_stoppable,
    _until,
)
from tests.net.test_socks import _receive_all, socks_open

HS_ADDRESS, CLIENT_ADDRESS = "127.0.0.20", "127.0.0.21"

# The six steps of the seed (docs/events.md): the event that completes each step, and its node's role.
STEPS = [
    (1, "intro_established", "onion_service"),
    (2, "descriptor_published", "onion_service"),
    (3, "descriptor_fetched", "client"),
    (3, "rendezvous_established", "client"),
    (4, "introduce_sent", "client"),
    (4, "introduce_forwarded", "relay"),
    (5, "introduce_received", "onion_service"),
    (5, "rendezvous_sent", "onion_service"),
    (5, "rendezvous_joined", "relay"),
    (6, "rendezvous_completed", "client"),
    (6, "stream_opened", "onion_service"),
]


def _events(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


async def _http_get(socks_port: int, onion: str, path: str) -> bytes:
    stream, code, early = await socks_open(socks_port, onion, 80)
    assert code == ReplyCode.SUCCEEDED
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {onion}\r\nConnection: close\r\n\r\n".encode())
        response = early + await _receive_all(stream)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    assert len(body) == length
    return body


def _service_and_client(tmp_path, refs, *, intro_points: int, services: tuple[ServicePort, ...],
                        client: str = "client") -> tuple[NodeConfig, NodeConfig]:
    """The onion service `hs` (one guard) and a client (one guard, SOCKS on 127.0.0.1) of a test network."""
    timing = Timing(voting_interval=INTERVAL)
    hs_config = NodeConfig(name="hs", role="onion_service", address=HS_ADDRESS, data_dir=str(tmp_path / "hs"),
                           control_port=0, authorities=refs, timing=timing, guards=1,
                           intro_points=intro_points, services=services)
    client_config = NodeConfig(name=client, role="client", address=CLIENT_ADDRESS,
                               data_dir=str(tmp_path / client), control_port=0, authorities=refs,
                               timing=timing, guards=1, socks_address="127.0.0.1")
    return hs_config, client_config


async def test_whole_network_rendezvous(tmp_path, capsys):
    auth_configs = _authority_configs(tmp_path, 3)
    refs = auth_configs[0].authorities
    hs_config, client_config = _service_and_client(tmp_path, refs, intro_points=3,
                                                   services=(ServicePort(80, "http"), ServicePort(7, "echo")))
    async with trio.open_nursery() as nursery:
        for c in auth_configs:
            await nursery.start(authority.serve, c)
        relays = [await nursery.start(relay.serve, _relay_config(tmp_path, i, refs)) for i in range(6)]
        service = await nursery.start(onion_service.serve, hs_config)
        user = await nursery.start(client.serve, client_config)
        with trio.fail_after(6 * INTERVAL):  # two rounds to list every relay, then intro points, descriptor
            for r in relays:
                await _until(r)
            hs_state = await _until_ready(HS_ADDRESS, service.control_port)
            client_state = await _until_ready(CLIENT_ADDRESS, user.control_port)
        onion = hs_state["onion"]
        assert onion == encode_onion_address(service.identity.public_key) + ".onion"
        assert hs_state["ports"] == [7, 80]
        service_port = int(client_state["socks"].rpartition(":")[2])

        # Through SOCKS5: the page, then a megabyte of the pattern, every byte checked.
        with trio.fail_after(30):
            page = await _http_get(service_port, onion, "/")
            assert onion.encode() in page
            body = await _http_get(service_port, onion, "/bytes/1000000")
            assert body == pattern_bytes(0, 1_000_000)
        # The second fetch reused the rendezvous circuit of the first.
        assert user.metrics.value("rendezvous_total", result="joined") == 1
        assert user.metrics.value("rendezvous_reused_total") == 1

        # The six steps, in order: the first event of each step comes after the last step's first event.
        events = _events(capsys.readouterr().out)
        first: dict[str, float] = {}
        for e in events:
            key = (e["event"], e["role"])
            first.setdefault(key, e["ts"])
        times = []
        for step, event, role in STEPS:
            assert (event, role) in first, f"step {step}: no {event} event from a {role}"
            times.append((step, first[(event, role)], event))
        for (step_a, t_a, ev_a), (step_b, t_b, ev_b) in zip(times, times[1:], strict=False):
            if step_b > step_a:
                assert t_a <= t_b, f"step {step_a} ({ev_a}) came after step {step_b} ({ev_b})"

        # Seed, step five: every circuit of the service starts at its guard (or, when the guard is the
        # circuit's last hop, at the next guard of its sample: never guard == last hop).
        guard = hs_state["guards"]["primary"]
        assert len(guard) == 1
        built = [e["path"] for e in events if e["node"] == "hs" and e["event"] == "circuit_built"]
        assert len(built) >= 5  # three intro points, HSDir uploads, one rendezvous
        for path in built:
            assert len(path) == 3
            assert path[0] == guard[0] or (path[2] == guard[0] and path[0] != path[2]), path

        # A replayed INTRODUCE2: send the same INTRODUCE1 twice; the service answers once, counts the second.
        with trio.fail_after(30):
            await _replay_introduce(service, user)
        assert service.metrics.value("errors_total", kind="introduce_replay") == 1
        assert service.metrics.value("introduce2_total", result="introduce_replay") == 1

        # A mistyped onion address: SOCKS reply 0xF6 (HS_BAD_ADDRESS), counted; the client keeps serving.
        typo = ("a" if onion[0] != "a" else "b") + onion[1:]
        stream, code, _ = await socks_open(service_port, typo, 80)
        await stream.aclose()
        assert code == ReplyCode.HS_BAD_ADDRESS
        assert user.metrics.value("errors_total", kind="bad_onion_address") == 1
        metrics = (await _get(CLIENT_ADDRESS, user.control_port, "/metrics")).decode()
        assert 'onionlab_errors_total{kind="bad_onion_address"} 1' in metrics.splitlines()

        # CONNECT to port 0 (no BEGIN can carry it): SOCKS reply 0x01 as in tor, counted; the client lives on.
        stream, code, _ = await socks_open(service_port, onion, 0)
        await stream.aclose()
        assert code == ReplyCode.GENERAL_FAILURE
        assert user.metrics.value("errors_total", kind="bad_port") == 1

        # And everything still works: the echo port through a fresh connection.
        with trio.fail_after(20):
            stream, code, early = await socks_open(service_port, onion, 7)
            assert code == ReplyCode.SUCCEEDED
            async with stream:
                await stream.send_all(b"still serving")
                got = early
                while len(got) < len(b"still serving"):
                    got += await stream.receive_some(100)
            assert got == b"still serving"
        nursery.cancel_scope.cancel()


async def _until_ready(host: str, port: int) -> dict:
    while True:
        state = json.loads(await _get(host, port, "/status"))
        if state["ready"]:
            return state
        await trio.sleep(0.1)


async def _replay_introduce(service, user) -> None:
    """Build one INTRODUCE1 for one of the service's intro points, with a rendezvous point of our own, and
    send it on two circuits. The intro point relays both; the service answers the first (RENDEZVOUS2
    arrives) and refuses the second as a replay."""
    consensus = user.directory.current
    descriptor = next(iter(user.descriptors.values())).descriptor
    entry = descriptor.intro_points[0]
    intro_relay = find_relay(consensus, entry.link_specs)
    other = next(r for r in consensus.routers if r.identity != intro_relay.identity)
    rend = await user._build(consensus, other, "rendezvous")
    cookie = bytes(range(20))
    await rend.send(EstablishRendezvous(cookie))
    await rend.receive((circ.RendezvousEstablished,))
    rp = rend.path[-1]
    plaintext = IntroducePlaintext(cookie, (), 1, rp.ntor_onion_key, hop_spec(rp).link_specs())
    period = TimePeriod.of(consensus)
    blinded = hs_common.blinded_public_key(service.identity.public_key, period.num, period.length)
    subcredential = hs_common.subcredential(service.identity.public_key, blinded)
    message, _ = encrypt_introduce1(auth_key=entry.auth_key, service_enc_key=entry.enc_key,
                                    subcredential=subcredential, plaintext=plaintext, rng=user.rng)
    for _ in range(2):
        intro = await user._build(consensus, intro_relay, "intro")
        await intro.send(message)
        ack = await intro.receive((circ.IntroduceAck,))
        assert ack.message.status == IntroduceAckStatus.SUCCESS
        await intro.aclose()
    await rend.receive((circ.Rendezvous2,))
    while service.metrics.value("introduce2_total", result="introduce_replay") < 1:
        await trio.sleep(0.05)
    await rend.aclose()


async def test_a_lost_intro_point_is_replaced_and_the_descriptor_republished(tmp_path):
    """An intro point's relay goes away: the service notices (its intro circuit is destroyed), establishes
    another intro point elsewhere, publishes a new revision, and a client that arrives afterwards gets in."""
    auth_configs = _authority_configs(tmp_path, 3)
    refs = auth_configs[0].authorities
    hs_config, client_config = _service_and_client(tmp_path, refs, intro_points=2,
                                                   services=(ServicePort(80, "http"),), client="late")
    async with trio.open_nursery() as nursery:
        for c in auth_configs:
            await nursery.start(authority.serve, c)
        started = [await _start_stoppable(nursery, relay.serve, _relay_config(tmp_path, i, refs))
                   for i in range(6)]
        service = await nursery.start(onion_service.serve, hs_config)
        with trio.fail_after(40):
            for r, _ in started:
                await _until(r)
            hs_state = await _until_ready(HS_ADDRESS, service.control_port)
        revision = service._revision
        guard = hs_state["guards"]["primary"][0]
        victim_identity = next(p.relay.identity for p in service.intro_points.values()
                               if p.relay.nickname != guard)
        victim, stop = next((r, scope) for r, scope in started if r.identity == victim_identity)
        stop.cancel()

        with trio.fail_after(40):
            while not (len(service.intro_points) == 2 and service._revision > revision
                       and victim_identity not in {p.relay.identity for p in service.intro_points.values()}
                       and service.descriptor_published()):
                await trio.sleep(0.1)
        assert service.metrics.value("intro_point_failures_total", stage="lost") >= 1

        # A client that starts now fetches the new descriptor and reaches the service.
        user = await nursery.start(client.serve, client_config)
        with trio.fail_after(40):
            state = await _until_ready(CLIENT_ADDRESS, user.control_port)
            page = await _http_get(int(state["socks"].rpartition(":")[2]), hs_state["onion"], "/")
        assert hs_state["onion"].encode() in page
        assert victim.nickname not in {p.relay.nickname for p in service.intro_points.values()}
        nursery.cancel_scope.cancel()


async def test_the_onion_address_survives_a_restart(tmp_path):
    """The service's identity key is kept in its data directory: a restart serves the same onion."""
    config = NodeConfig(name="hs", role="onion_service", address=HS_ADDRESS, data_dir=str(tmp_path / "hs"),
                        control_port=0, authorities=_authority_configs(tmp_path, 1)[0].authorities,
                        services=(ServicePort(80, "http"),))
    onions = []
    for _ in range(2):
        async with trio.open_nursery() as nursery:
            service = await nursery.start(onion_service.serve, config)
            onions.append(json.loads(await _get(HS_ADDRESS, service.control_port, "/status"))["onion"])
            nursery.cancel_scope.cancel()
    assert onions[0] == onions[1] and onions[0].endswith(".onion") and len(onions[0]) == 62
    key = tmp_path / "hs" / "keys" / "hs_identity.key"
    assert key.stat().st_mode & 0o777 == 0o600


async def _introduce_through(service, user, intro_relay, avoid: bytes):
    """A rendezvous with the service introduced through `intro_relay`, whose circuits on both sides keep off
    the relay `avoid` (so that stopping it leaves the rendezvous up). Returns the client's rendezvous
    circuit, joined and open."""
    consensus = user.directory.current
    descriptor = next(iter(user.descriptors.values())).descriptor
    entry = next(p for p in descriptor.intro_points if find_relay(consensus, p.link_specs) == intro_relay)
    period = TimePeriod.of(consensus)
    blinded = hs_common.blinded_public_key(service.identity.public_key, period.num, period.length)
    subcredential = hs_common.subcredential(service.identity.public_key, blinded)
    intros = {p.relay.identity for p in service.intro_points.values()}
    while True:
        rp = random.choice([r for r in consensus.routers if r.identity not in intros | {avoid}])
        rend = await user._build(consensus, rp, "rendezvous")
        cookie = user.rng(20)
        await rend.send(EstablishRendezvous(cookie))
        await rend.receive((circ.RendezvousEstablished,))
        plaintext = IntroducePlaintext(cookie, (), 1, rp.ntor_onion_key, hop_spec(rp).link_specs())
        message, _ = encrypt_introduce1(auth_key=entry.auth_key, service_enc_key=entry.enc_key,
                                        subcredential=subcredential, plaintext=plaintext, rng=user.rng)
        intro = await user._build(consensus, intro_relay, "intro")
        await intro.send(message)
        await intro.receive((circ.IntroduceAck,))
        await intro.aclose()
        await rend.receive((circ.Rendezvous2,))
        theirs = [r for c in service.circuits.circuits if c.path[-1] == rp for r in c.path]
        if avoid not in {r.identity for r in [*rend.path, *theirs]}:
            return rend
        await rend.aclose()  # the relay we are going to stop is on this rendezvous: another one


async def test_an_intro_point_is_replaced_at_once_while_a_rendezvous_it_introduced_lives_on(tmp_path):
    """Defect: the service noticed a dead intro circuit only once every rendezvous introduced through it had
    ended, so it kept advertising the intro point (a restarted relay then NACKs every client). Now the slot
    replaces it at once, and the rendezvous it introduced stays up."""
    auth_configs = _authority_configs(tmp_path, 3)
    refs = auth_configs[0].authorities
    hs_config, client_config = _service_and_client(tmp_path, refs, intro_points=2,
                                                   services=(ServicePort(7, "echo"),))
    async with trio.open_nursery() as nursery:
        for c in auth_configs:
            await nursery.start(authority.serve, c)
        started = [await _start_stoppable(nursery, relay.serve, _relay_config(tmp_path, i, refs))
                   for i in range(6)]
        service = await nursery.start(onion_service.serve, hs_config)
        user = await nursery.start(client.serve, client_config)
        with trio.fail_after(40):
            for r, _ in started:
                await _until(r)
            hs_state = await _until_ready(HS_ADDRESS, service.control_port)
            client_state = await _until_ready(CLIENT_ADDRESS, user.control_port)
            # the client's descriptor (and a stream over the rendezvous, to show it lives)
            stream, code, _ = await socks_open(int(client_state["socks"].rpartition(":")[2]),
                                               hs_state["onion"], 7)
            assert code == ReplyCode.SUCCEEDED
            await stream.aclose()
            # an intro point that is not the client's guard (every circuit of the client starts there)
            guard = {g.identity for g in user.guards.primary()}
            point = next(p for p in service.intro_points.values() if p.relay.identity not in guard)
            victim = point.relay
            rend = await _introduce_through(service, user, victim, avoid=victim.identity)
        stop = next(scope for r, scope in started if r.identity == victim.identity)
        stop.cancel()

        with trio.fail_after(10):
            while victim.nickname in service.status()["intro_points"]:
                await trio.sleep(0.05)
        assert point.circuit.error is not None
        assert service.metrics.value("intro_point_failures_total", stage="lost") >= 1
        assert rend.error is None  # the rendezvous it introduced lives on
        nursery.cancel_scope.cancel()
