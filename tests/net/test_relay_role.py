"""The relay role on loopback: real authorities voting, relays joining the consensus, a client publishing and
fetching an onion-service descriptor over BEGIN_DIR through a 3-hop circuit, and the HSDir refusing what it
must refuse while it keeps serving."""

import base64
import dataclasses
import io
import json
import os
import socket
import stat
import time

import pytest
import trio
import trio.testing

from nodes.config import AuthorityRef, ConfigError, NodeConfig, Timing
from nodes.core import circuit as circ
from nodes.core.ed25519 import Signer
from nodes.core.hs_common import blinded_signer, subcredential, time_period_num
from nodes.core.hs_descriptor import CERT_LIFETIME, MAX_DESCRIPTOR_SIZE, build_descriptor
from nodes.core.hs_intro import IntroducePlaintext, build_establish_intro, encrypt_introduce1
from nodes.core.hs_ntor import public_key
from nodes.core.netview import join
from nodes.core.relay import EstablishRendezvous, IntroduceAckStatus, Rendezvous1
from nodes.init import make_authority_keys
from nodes.net.circuits import hop_spec
from nodes.net.dirclient import DirectoryClient
from nodes.net.events import EventLog
from nodes.net.hsdir import ALREADY_STORED, HsDirStore
from nodes.net.httpio import request, request_tcp
from nodes.net.metrics import Metrics
from nodes.net.node_keys import load_or_create_node_keys
from nodes.roles import authority, relay
from tests.net.helpers import Events, start_client

HOST = "127.0.0.1"
INTERVAL = 10  # C tor's floor, which our consensus keeps
PERIOD_MINUTES = 24


def _now() -> int:
    return int(time.time())


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _authority_configs(tmp_path, n: int) -> list[NodeConfig]:
    """n authority configs with their keys in their data dirs, as `nodes init` makes them."""
    refs = tuple(AuthorityRef(f"auth{i}", HOST, _unused_port(), _unused_port(),
                              *make_authority_keys(tmp_path / f"auth{i}")) for i in range(n))
    return [NodeConfig(name=ref.name, role="authority", address=HOST, data_dir=str(tmp_path / ref.name),
                       control_port=0, authorities=refs, dir_port=ref.dir_port, or_port=ref.or_port,
                       timing=Timing(voting_interval=INTERVAL)) for ref in refs]


def _relay_config(tmp_path, i: int, authorities) -> NodeConfig:
    return NodeConfig(name=f"relay-{i}", role="relay", address=f"127.0.0.{10 + i}",
                      data_dir=str(tmp_path / f"relay{i}"), control_port=0, authorities=authorities,
                      timing=Timing(voting_interval=INTERVAL, descriptor_refresh=30))


async def _start_stoppable(nursery, serve, config):
    """Start a node in its own cancel scope: (what it started, the scope that stops it)."""
    scope = trio.CancelScope()

    async def run(task_status=trio.TASK_STATUS_IGNORED):
        with scope:
            await serve(config, task_status=task_status)

    return await nursery.start(run), scope


async def _get(host: str, port: int, path: str) -> bytes:
    status, _, body = await request_tcp(host, port, "GET", path, timeout=5)
    assert status == 200
    return body


async def _status(node: relay.Relay) -> dict:
    return json.loads(await _get(node.config.address, node.control_port, "/status"))


async def _until(node: relay.Relay, *conditions: str) -> dict:
    """Poll /status, as the orchestrator does, until the named conditions (all if none named) are true."""
    while True:
        state = await _status(node)
        wanted = conditions or tuple(state["conditions"])
        if all(state["conditions"][c] for c in wanted):
            return state
        await trio.sleep(0.1)


def _hs_descriptor(identity: Signer, revision: int, now: int, lifetime: int = 180) -> tuple[bytes, bytes]:
    """(blinded key, signed descriptor) for the current time period of `identity`."""
    blinded = blinded_signer(identity, time_period_num(now, PERIOD_MINUTES, 12), PERIOD_MINUTES)
    document = build_descriptor(identity=identity, blinded=blinded, signing=Signer.from_seed(os.urandom(32)),
                                subcredential=subcredential(identity.public_key, blinded.public_key),
                                revision_counter=revision, intro_points=[], now=now,
                                lifetime_minutes=lifetime, rng=os.urandom)
    return blinded.public_key, document


def _forge(document: bytes) -> bytes:
    """The same descriptor with another (well-formed) signature."""
    body, _, _ = document.rpartition(b"signature ")
    return body + b"signature " + base64.b64encode(os.urandom(64)).rstrip(b"=") + b"\n"


def _key_path(blinded_key: bytes, *, padded: bool) -> str:
    text = base64.b64encode(blinded_key).decode()
    return "/tor/hs/3/" + (text if padded else text.rstrip("="))


PUBLISH = "/tor/hs/3/publish"
STORED = (200, b"")  # no body, as C tor answers (its client warns about a short one)


async def _dir_request(circuit, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
    """One HTTP request on a fresh BEGIN_DIR stream to the circuit's last hop."""
    stream = await circuit.open_dir_stream()
    async with stream:
        status, _, reply = await request(stream, method, target, body, timeout=10)
    return status, reply


async def test_relays_join_the_network_and_serve_as_hsdirs(tmp_path, capsys):
    auth_configs = _authority_configs(tmp_path, 3)
    refs = auth_configs[0].authorities
    configs = [_relay_config(tmp_path, i, refs) for i in range(4)]
    async with trio.open_nursery() as nursery:
        for c in auth_configs:
            await nursery.start(authority.serve, c)
        started = [await _start_stoppable(nursery, relay.serve, c) for c in configs]
        relays = [r for r, _ in started]

        # every relay becomes ready: descriptor uploaded, a consensus, itself listed in it
        with trio.fail_after(3 * INTERVAL + 10):
            states = [await _until(r) for r in relays]
        for r, state in zip(relays, states, strict=True):
            assert state["role"] == "relay" and state["ready"] and state["name"] == r.config.name
            assert state["identity"] == r.identity.hex() and state["or_port"] == r.or_port
            assert state["address"] == r.config.address

        # a client builds a 3-hop circuit through relays from the consensus
        directory = DirectoryClient(refs, Metrics(), EventLog("client", "client", io.StringIO()))
        with trio.fail_after(2 * INTERVAL):
            while True:  # a relay that missed one round's reachability test is left out of that consensus
                signed, _ = await directory.fetch_consensus(_now())
                by_identity = {r.identity: r for r in join(signed.consensus, directory.microdescs).relays}
                if all(r.identity in by_identity for r in relays[:3]):
                    break
                await trio.sleep(0.2)
        path = [by_identity[r.identity] for r in relays[:3]]
        assert path[2].flags >= {"HSDir", "Running", "Valid"}
        client = await start_client(nursery)
        circuit = await client.circuits.build(path)
        hsdir = relays[2]

        # publish a descriptor, fetch it back by blinded key (padded or not)
        service = Signer.from_seed(os.urandom(32))
        blinded_key, document = _hs_descriptor(service, revision=5, now=_now())
        assert await _dir_request(circuit, "POST", PUBLISH, document) == STORED
        for padded in (False, True):
            target = _key_path(blinded_key, padded=padded)
            assert await _dir_request(circuit, "GET", target) == (200, document)
        status, _ = await _dir_request(circuit, "GET", _key_path(os.urandom(32), padded=False))
        assert status == 404

        # a lower revision is refused; the stored one again is "already stored" (409, no error); the stored
        # descriptor stays
        _, older = _hs_descriptor(service, revision=4, now=_now())
        status, reply = await _dir_request(circuit, "POST", PUBLISH, older)
        assert status == 400 and b"revision" in reply
        _, again = _hs_descriptor(service, revision=5, now=_now())
        status, reply = await _dir_request(circuit, "POST", PUBLISH, again)
        assert status == ALREADY_STORED and b"stored already" in reply
        assert await _dir_request(circuit, "GET", _key_path(blinded_key, padded=False)) == (200, document)

        # a forged descriptor is refused and counted in /metrics
        _, newer = _hs_descriptor(service, revision=6, now=_now())
        status, reply = await _dir_request(circuit, "POST", PUBLISH, _forge(newer))
        assert status == 400 and b"signature" in reply
        metrics = (await _get(hsdir.config.address, hsdir.control_port, "/metrics")).decode()
        assert 'onionlab_errors_total{kind="signature"} 1' in metrics.splitlines()
        assert 'onionlab_errors_total{kind="revision"} 1' in metrics.splitlines()

        # junk on a BEGIN_DIR stream: answered 400, counted, and the relay keeps serving on the same circuit
        stream = await circuit.open_dir_stream()
        await stream.send_all(b"\x16\x03\x01 not http at all\r\n\r\n")
        reply = b""
        with trio.fail_after(10):
            while data := await stream.receive_some():
                reply += data
        await stream.aclose()
        assert reply.startswith(b"HTTP/1.1 400")
        assert hsdir.metrics.value("errors_total", kind="http") == 1
        assert await _dir_request(circuit, "POST", PUBLISH, newer) == STORED
        assert await _dir_request(circuit, "GET", _key_path(blinded_key, padded=True)) == (200, newer)
        assert (await _status(hsdir))["hsdir_descriptors"] == 1

        # the relays are intro and rendezvous points too (steps 1, 3, 4, 5 at the relay's end)
        service_client = await start_client(nursery, "service")
        auth = Signer.from_seed(os.urandom(32))
        intro = await service_client.circuits.build([path[0], path[2], path[1]])
        await intro.send(build_establish_intro(auth, intro.hop_kh()))
        await intro.receive((circ.IntroEstablished,))
        plaintext = IntroducePlaintext(os.urandom(20), (), 1, path[0].ntor_onion_key,
                                       hop_spec(path[0]).link_specs())
        introduce1, _ = encrypt_introduce1(auth_key=auth.public_key,
                                           service_enc_key=public_key(os.urandom(32)),
                                           subcredential=os.urandom(32), plaintext=plaintext, rng=os.urandom)
        to_intro = await client.circuits.build([path[2], path[0], path[1]])
        await to_intro.send(introduce1)
        assert (await to_intro.receive((circ.IntroduceAck,))).message.status == IntroduceAckStatus.SUCCESS
        await intro.receive((circ.Introduce2,))
        cookie = os.urandom(20)
        rend = await client.circuits.build([path[1], path[2], path[0]])
        await rend.send(EstablishRendezvous(cookie))
        await rend.receive((circ.RendezvousEstablished,))
        service_rend = await service_client.circuits.build([path[2], path[1], path[0]])
        await service_rend.send(Rendezvous1(cookie, os.urandom(64)))
        await rend.receive((circ.Rendezvous2,))

        # a restarted relay (same data dir) keeps its identity, and is listed again at its new port
        old_identity, old_port = relays[3].identity, relays[3].or_port
        started[3][1].cancel()
        restarted, _ = await _start_stoppable(nursery, relay.serve, configs[3])
        assert restarted.identity == old_identity and restarted.or_port != old_port
        with trio.fail_after(3 * INTERVAL + 10):
            state = await _until(restarted)
        assert state["identity"] == old_identity.hex()
        nursery.cancel_scope.cancel()

    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    stored = [e for e in events if e["event"] == "descriptor_stored"]
    assert [(e["node"], e["hsdir"], e["revision"]) for e in stored] == [("relay-2", "relay-2", 5),
                                                                         ("relay-2", "relay-2", 6)]
    assert all(e["blinded_key"] == blinded_key.hex() and e["role"] == "relay" for e in stored)
    assert any(e["event"] == "link_up" and e["node"] == "relay-0" for e in events)
    flow = [(e["event"], e["node"], e.get("intro") or e.get("rendezvous")) for e in events
            if e["event"] in ("intro_point_registered", "introduce_forwarded", "rendezvous_point_registered",
                              "rendezvous_joined")]
    assert flow == [("intro_point_registered", "relay-1", "relay-1"),
                    ("introduce_forwarded", "relay-1", "relay-1"),
                    ("rendezvous_point_registered", "relay-0", "relay-0"),
                    ("rendezvous_joined", "relay-0", "relay-0")]
    errors = [e for e in events if e["event"] == "error" and e["node"] == "relay-2"]
    assert {e["kind"] for e in errors} == {"revision", "signature", "http"}


# -- the HSDir store on its own (memory streams, a fake clock) ---------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = float(_now())

    def __call__(self) -> float:
        return self.now


async def _ask(store: HsDirStore, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.handle_stream, server)
        status, _, reply = await request(client, method, target, body, timeout=5)
    return status, reply


def _store(**kwargs) -> tuple[HsDirStore, _Clock, Events]:
    clock, events = _Clock(), Events("hsdir", "relay")
    return HsDirStore(Metrics(), events, clock=clock, **kwargs), clock, events


async def test_hsdir_drops_descriptors_after_their_lifetime():
    store, clock, _ = _store()
    service = Signer.from_seed(os.urandom(32))
    key, document = _hs_descriptor(service, revision=3, now=int(clock.now), lifetime=30)
    assert (await _ask(store, "POST", PUBLISH, document))[0] == 200
    clock.now += 30 * 60 - 1
    assert await _ask(store, "GET", _key_path(key, padded=False)) == (200, document)
    clock.now += 1
    assert (await _ask(store, "GET", _key_path(key, padded=False)))[0] == 404
    # once expired, the revision no longer binds: a service that restarted from 0 is accepted
    _, fresh = _hs_descriptor(service, revision=0, now=int(clock.now))
    assert (await _ask(store, "POST", PUBLISH, fresh))[0] == 200
    assert len(store) == 1


async def test_hsdir_refuses_what_it_must_and_keeps_serving():
    store, clock, events = _store(max_descriptors=1)
    service = Signer.from_seed(os.urandom(32))
    key, document = _hs_descriptor(service, revision=1, now=int(clock.now))
    assert (await _ask(store, "POST", PUBLISH, document))[0] == 200
    # the same revision again: already stored, which is no error (a service re-sends it to an HSDir that
    # left the consensus and came back); a lower one is refused
    status, reply = await _ask(store, "POST", PUBLISH, document)
    assert status == ALREADY_STORED and b"stored already" in reply
    _, older = _hs_descriptor(service, revision=0, now=int(clock.now))
    status, reply = await _ask(store, "POST", PUBLISH, older)
    assert status == 400 and b"revision" in reply
    # full: a new blinded key waits for room (not the sender's fault: not an error)
    _, other = _hs_descriptor(Signer.from_seed(os.urandom(32)), revision=1, now=int(clock.now))
    assert (await _ask(store, "POST", PUBLISH, other))[0] == 503
    # over the size limit: refused before the body is read to the end
    assert (await _ask(store, "POST", PUBLISH, b"x" * (MAX_DESCRIPTOR_SIZE + 1)))[0] == 413
    # not a descriptor; a key that is not 32 bytes of base64; wrong methods and paths
    assert (await _ask(store, "POST", PUBLISH, b"hs-descriptor 3\n"))[0] == 400
    assert (await _ask(store, "GET", "/tor/hs/3/not*base64"))[0] == 400
    assert (await _ask(store, "GET", "/tor/hs/3/" + base64.b64encode(bytes(31)).decode()))[0] == 400
    assert (await _ask(store, "GET", PUBLISH))[0] == 405
    assert (await _ask(store, "POST", _key_path(key, padded=True)))[0] == 405
    assert (await _ask(store, "GET", "/tor/server/all"))[0] == 404
    # a descriptor whose signing-key certificate has expired
    clock.now += CERT_LIFETIME + 3600  # certificates expire on a whole hour, rounded up
    status, reply = await _ask(store, "POST", PUBLISH, document)
    assert status == 400 and b"expired" in reply

    metrics = store.metrics
    assert {k: metrics.value("errors_total", kind=k) for k in ("revision", "http", "decode", "expired")} == {
        "revision": 1, "http": 1, "decode": 3, "expired": 1}
    assert metrics.value("hsdir_publishes_total", result="stored") == 1
    assert metrics.value("hsdir_publishes_total", result="rejected") == 3
    assert metrics.value("hsdir_publishes_total", result="full") == 1
    assert metrics.value("hsdir_publishes_total", result="already_stored") == 1
    assert len(events.records("error")) == 6 and len(events.records("descriptor_stored")) == 1


async def test_hsdir_counts_a_silent_peer_as_a_timeout(autojump_clock):
    store, _, events = _store()
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(b"POST /tor/hs/3/publish HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n")
    await store.handle_stream(server)  # the body never comes
    assert store.metrics.value("errors_total", kind="timeout") == 1
    assert events.records("error")[0]["kind"] == "timeout"


# -- keys and events -----------------------------------------------------------------------------------------


def test_relay_keys_are_made_once_private_and_reused(tmp_path):
    keys = load_or_create_node_keys(tmp_path)
    again = load_or_create_node_keys(tmp_path)
    assert again.relay_keys == keys.relay_keys and again.fingerprint == keys.fingerprint
    assert keys.relay_keys.identity == keys.ed25519_identity.public_key().public_bytes_raw()
    assert keys.relay_keys.node_id == bytes.fromhex(keys.fingerprint)
    keys_dir = tmp_path / "keys"
    assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700
    assert sorted(p.name for p in keys_dir.iterdir()) == [  # no temporary left
        "identity.key", "ntor.key", "rsa_identity.pem", "tap_onion.pem"]
    for p in keys_dir.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    (keys_dir / "ntor.key").write_bytes(b"short")
    with pytest.raises(ConfigError, match="ntor.key"):
        load_or_create_node_keys(tmp_path)
    (keys_dir / "ntor.key").unlink()
    (keys_dir / "rsa_identity.pem").write_bytes(b"not a key")
    with pytest.raises(ConfigError, match="rsa_identity.pem"):
        load_or_create_node_keys(tmp_path)


def test_nicknames_from_node_names():
    assert relay.nickname_for("relay-1") == "relay1" and relay.nickname_for("--") == "onionlab"


async def test_relay_config_errors_are_reported_before_serving(tmp_path):
    refs = (AuthorityRef("auth0", HOST, _unused_port(), _unused_port(), "00" * 20, "11" * 20),)
    config = NodeConfig(name="relay-1", role="relay", address="localhost", data_dir=str(tmp_path),
                        control_port=0, authorities=refs)
    keys = load_or_create_node_keys(tmp_path)
    with pytest.raises(ConfigError, match="'localhost' is not an IP address"):  # what it would advertise
        relay.Relay(config, keys, metrics=Metrics(), events=EventLog("relay-1", "relay"))
    with pytest.raises(ConfigError, match="at least one authority"):
        await relay.serve(dataclasses.replace(config, address=HOST, authorities=()))


async def test_relay_resolves_a_host_name_address_once_at_start(tmp_path, monkeypatch):
    refs = (AuthorityRef("auth0", HOST, _unused_port(), _unused_port(), "00" * 20, "11" * 20),)
    config = NodeConfig(name="relay-1", role="relay", address="localhost", data_dir=str(tmp_path),
                        control_port=0, authorities=refs, or_port=9001)
    assert (await relay.resolve_address(config)).address == "127.0.0.1"  # /etc/hosts; IPv4 first
    same = dataclasses.replace(config, address=HOST)
    assert await relay.resolve_address(same) is same  # an IP is not looked up

    async def no_such_name(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(trio.socket, "getaddrinfo", no_such_name)
    monkeypatch.setattr(relay, "RESOLVE_WAIT", 0.5)  # tried again for that long
    with pytest.raises(ConfigError, match=r"cannot resolve address 'relay-1.invalid' \(for 0.5 s\)"):
        await relay.serve(dataclasses.replace(config, address="relay-1.invalid"))
