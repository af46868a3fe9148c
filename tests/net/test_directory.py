"""The directory system on loopback: authorities voting and signing over real HTTP, relays reached over real
TLS links with CREATE2/ntor, and the directory client verifying what it downloads."""

import dataclasses
import functools
import io
import json
import os
import socket
import time
import zlib

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from nodes.core.dirdocs import (
    Consensus,
    ConsensusSignature,
    Flag,
    SignedConsensus,
    make_relay_descriptor,
    parse_signed_consensus,
    parse_vote,
    relay_node_id,
    sign_consensus,
)

from nodes.config import AuthorityRef, NodeConfig, Timing
from nodes.core.cells import Cell, Command, Create2, Created2
from nodes.core.errors import SignatureError
from nodes.core.ntor import ntor_server_handshake
from nodes.net import tls
from nodes.net.dirclient import DirectoryClient, NoConsensusError
from nodes.net.events import EventLog
from nodes.net.httpio import HttpError, request, request_tcp, serve_http, serve_http_tcp
from nodes.net.link import Link, LinkClosed
from nodes.net.metrics import Metrics
from nodes.roles import authority, serve_for

HOST = "127.0.0.1"
ALL_FLAGS = {Flag.Running, Flag.Valid, Flag.Fast, Flag.Stable, Flag.Guard, Flag.HSDir}


def _unused_port() -> int:
    """A port nothing listens on right now (authorities must know each other's ports before they start)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _authorities(tmp_path, n: int, interval: int) -> tuple[tuple[AuthorityRef, ...], list[NodeConfig]]:
    """Configs for n authorities, with identity keys written to their data dirs as the orchestrator does."""
    keys = [Ed25519PrivateKey.generate() for _ in range(n)]
    refs = tuple(AuthorityRef(f"auth{i}", HOST, _unused_port(), k.public_key().public_bytes_raw().hex())
                 for i, k in enumerate(keys))
    configs = []
    for i, key in enumerate(keys):
        keys_dir = tmp_path / f"auth{i}" / "keys"
        keys_dir.mkdir(parents=True)
        (keys_dir / "identity.key").touch(mode=0o600)
        (keys_dir / "identity.key").write_bytes(key.private_bytes_raw())
        configs.append(NodeConfig(name=f"auth{i}", role="authority", address=HOST,
                                  data_dir=str(tmp_path / f"auth{i}"), control_port=0, authorities=refs,
                                  dir_port=refs[i].dir_port, timing=Timing(voting_interval=interval)))
    return refs, configs


def _descriptor(nickname: str, or_port: int, onion_key: bytes, identity: Ed25519PrivateKey, published=None):
    return make_relay_descriptor(nickname=nickname, ntor_onion_key=onion_key, address=HOST, or_port=or_port,
                                 dir_port=0, bandwidth=1_000_000, published=published or int(time.time()),
                                 platform="onionlab test", signer_private=identity)


async def _fake_relay(nursery, nickname: str, *, liar: bool = False):
    """A TLS listener that does the link handshake and answers CREATE2 with the ntor server (a liar answers
    with random bytes instead); returns its descriptor."""
    identity = Ed25519PrivateKey.generate()
    onion_secret = os.urandom(32)
    onion_key = X25519PrivateKey.from_private_bytes(onion_secret).public_key().public_bytes_raw()
    node_id = relay_node_id(identity.public_key().public_bytes_raw())

    async def handler(stream):
        link = Link(stream, initiator=False)
        try:
            await link.handshake(now=int(time.time()))
            while True:
                cell = await link.receive_cell()
                if cell.command == Command.CREATE2:
                    onionskin = Create2.decode(cell.payload).hdata
                    reply = os.urandom(64) if liar else ntor_server_handshake(
                        onionskin, node_id=node_id, onion_secret=onion_secret, rng=os.urandom)[0]
                    await link.send_cells([Cell(cell.circ_id, Command.CREATED2, Created2(reply).encode())])
        except LinkClosed:
            pass
        finally:
            await link.aclose()

    serve = functools.partial(trio.serve_ssl_over_tcp, handler, 0, tls.server_context(), host=HOST)
    listeners = await nursery.start(serve)
    port = listeners[0].transport_listener.socket.getsockname()[1]
    return _descriptor(nickname, port, onion_key, identity)


def _client(refs) -> DirectoryClient:
    return DirectoryClient(refs, Metrics(), EventLog("client", "client", io.StringIO()))


async def _published(auth, predicate):
    """The first consensus `auth` publishes (or has published) that satisfies `predicate`."""
    while auth.published is None or not predicate(auth.published):
        await auth.next_published()
    return auth.published


async def test_three_authorities_publish_a_consensus_of_reachable_relays(tmp_path, capsys):
    refs, configs = _authorities(tmp_path, 3, interval=2)
    async with trio.open_nursery() as nursery:
        auths = [await nursery.start(authority.serve, c) for c in configs]
        relays = [await _fake_relay(nursery, f"relay{i}") for i in range(4)]
        silent = _descriptor("silent", _unused_port(), os.urandom(32), Ed25519PrivateKey.generate())
        client = _client(refs)
        for desc in [*relays, silent]:
            assert await client.upload_descriptor(desc.encode()) == 3
        assert client.metrics.value("descriptor_posts_total", result="accepted") == 15

        live = {d.identity for d in relays}
        with trio.fail_after(20):  # the first full consensus comes within about 2 voting intervals
            for auth in auths:
                await _published(auth, lambda sc: {r.identity for r in sc.consensus.routers} == live)

        consensus = await client.fetch_consensus(int(time.time()))
        assert {r.identity for r in consensus.routers} == live  # the silent relay is not Running: left out
        for r in consensus.routers:
            assert r.flags == ALL_FLAGS
        # the served document carries signatures of at least a majority, all of which verify
        status, _, body = await request_tcp(HOST, refs[0].dir_port, "GET", authority.CONSENSUS_PATH,
                                            timeout=5)
        signed = parse_signed_consensus(body)
        assert status == 200 and len(signed.signatures) >= 2
        assert signed.check({bytes.fromhex(r.identity) for r in refs}, int(time.time())) == consensus

        # each authority's vote lists the silent relay, Valid but not Running
        status, _, body = await request_tcp(HOST, refs[1].dir_port, "GET", authority.VOTE_PATH, timeout=5)
        vote = parse_vote(body).check({bytes.fromhex(r.identity) for r in refs}, int(time.time()))
        flags = {r.identity: r.flags for r in vote.routers}
        assert flags[silent.identity] == {Flag.Valid}
        assert all(flags[i] == ALL_FLAGS for i in live)

        # a client that keeps the consensus fresh becomes ready with a verified one
        await nursery.start(client.run)
        with trio.fail_after(10):
            assert (await client.wait_ready()).valid_after > 0

        # readiness and counters as the orchestrator sees them
        status, _, body = await request_tcp(HOST, auths[0].control_port, "GET", "/status", timeout=5)
        state = json.loads(body)
        assert state["conditions"] == {"consensus": True} and state["relays_known"] == 5
        assert state["identity"] == refs[0].identity and state["consensus"]["signatures"] >= 2
        for auth in auths:
            assert auth.metrics.value("descriptor_uploads_total", result="accepted") == 5
            assert auth.metrics.value("votes_received_total") >= 2
            assert auth.metrics.value("errors_total", kind="signature") == 0
        nursery.cancel_scope.cancel()
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    published = [e for e in events if e["event"] == "consensus_published"]
    assert any(e["relays"] == 4 and e["signatures"] >= 2 for e in published)


async def _always_reachable(desc) -> bool:
    return True


async def test_bad_descriptors_are_rejected_and_counted(tmp_path):
    refs, configs = _authorities(tmp_path, 1, interval=1)
    async with trio.open_nursery() as nursery:
        auth = await nursery.start(functools.partial(authority.serve, configs[0],
                                                     reachable=_always_reachable))
        identity = Ed25519PrivateKey.generate()
        good = _descriptor("good", 9001, os.urandom(32), identity)
        forged = dataclasses.replace(good, signature=bytes(64))
        stale = _descriptor("stale", 9001, os.urandom(32), identity, published=int(time.time()) - 10 * 86400)

        status, _, body = await request_tcp(HOST, refs[0].dir_port, "POST", "/tor/", forged.encode(),
                                            timeout=5)
        assert status == 400 and b"signature" in body
        client = _client(refs)
        assert await client.upload_descriptor(stale.encode()) == 0
        assert client.metrics.value("errors_total", kind="status") == 1
        await request_tcp(HOST, refs[0].dir_port, "POST", "/tor/", b"not a descriptor\n", timeout=5)
        assert auth.metrics.value("descriptor_uploads_total", result="rejected") == 3
        assert auth.metrics.value("errors_total", kind="signature") == 1
        assert auth.metrics.value("errors_total", kind="expired") == 1
        assert auth.metrics.value("errors_total", kind="decode") == 1

        # broken HTTP is answered, counted, and the authority keeps serving
        stream = await trio.open_tcp_stream(HOST, refs[0].dir_port)
        await stream.send_all(b"\x00\x01 not http\r\n\r\n")
        with trio.fail_after(5):
            assert (await stream.receive_some(100)).startswith(b"HTTP/1.1 400")
        await stream.aclose()
        assert (await request_tcp(HOST, refs[0].dir_port, "GET", "/nope", timeout=5))[0] == 404
        assert (await request_tcp(HOST, refs[0].dir_port, "GET", "/tor/", timeout=5))[0] == 405

        # a lone authority signs alone; the good relay (reachable by injection) is listed
        assert await client.upload_descriptor(good.encode()) == 1
        with trio.fail_after(10):
            signed = await _published(auth, lambda sc: len(sc.consensus.routers) == 1)
        assert signed.consensus.routers[0].identity == good.identity
        assert len(signed.signatures) == 1
        assert auth.metrics.value("errors_total", kind="http") == 1
        nursery.cancel_scope.cancel()


async def _fake_authority(nursery, document: bytes) -> int:
    async def handler(method, target, body):
        return 200, "text/plain", document

    return await nursery.start(functools.partial(serve_http_tcp, HOST, 0, handler,
                                                 on_error=lambda kind: None))


async def test_client_rejects_minority_signed_and_forged_consensus():
    keys = [Ed25519PrivateKey.generate() for _ in range(3)]
    ids = [k.public_key().public_bytes_raw() for k in keys]
    now = int(time.time())
    consensus = Consensus(valid_after=now - 10, fresh_until=now + 60, valid_until=now + 120, routers=())
    other = dataclasses.replace(consensus, fresh_until=now + 61)
    sigs = [sign_consensus(consensus, k) for k in keys]
    minority = SignedConsensus(consensus, (sigs[0],)).encode()
    forged = SignedConsensus(consensus, (sigs[0], sign_consensus(other, keys[1]),
                                         ConsensusSignature(ids[2], os.urandom(64)))).encode()
    majority = SignedConsensus(consensus, (sigs[0], sigs[2])).encode()

    async with trio.open_nursery() as nursery:
        ports = [await _fake_authority(nursery, doc) for doc in (minority, forged, majority)]
        refs = [AuthorityRef(f"fake{i}", HOST, port, ids[i].hex()) for i, port in enumerate(ports)]
        dead = AuthorityRef("dead", HOST, _unused_port(), ids[2].hex())

        client = _client([refs[0], refs[1], dead])
        with pytest.raises(NoConsensusError) as info:
            await client.fetch_consensus(now)
        errors = dict(info.value.errors)
        assert isinstance(errors["dead"], OSError)
        assert isinstance(errors["fake0"], SignatureError) and isinstance(errors["fake1"], SignatureError)
        assert client.metrics.value("consensus_fetches_total", result="rejected") == 2
        assert client.metrics.value("errors_total", kind="signature") == 2
        assert client.metrics.value("errors_total", kind="network") == 1

        client = _client([refs[0], refs[2]])  # one honest authority is enough, whatever the order
        assert await client.fetch_consensus(now) == consensus
        assert client.metrics.value("errors_total", kind="signature") <= 1
        assert client.metrics.value("consensus_fetches_total", result="ok") == 1
        nursery.cancel_scope.cancel()
    with pytest.raises(SignatureError):
        parse_signed_consensus(minority).check(ids, now)


async def test_reachability_needs_the_right_ntor_answer():
    async with trio.open_nursery() as nursery:
        honest = await _fake_relay(nursery, "honest")
        liar = await _fake_relay(nursery, "liar", liar=True)
        silent = _descriptor("silent", _unused_port(), os.urandom(32), Ed25519PrivateKey.generate())
        assert await authority.check_reachable(honest)
        assert not await authority.check_reachable(liar)
        assert not await authority.check_reachable(silent)
        nursery.cancel_scope.cancel()


def test_flag_rules():
    key = Ed25519PrivateKey.generate()
    descs = [_descriptor(f"r{i}", 9001, os.urandom(32), Ed25519PrivateKey.generate()) for i in range(3)]
    descs[2] = dataclasses.replace(_descriptor("slow", 9001, os.urandom(32), key), bandwidth=10)
    flags = authority.assign_flags(descs, {descs[0].identity, descs[2].identity})
    assert flags[descs[0].identity] == ALL_FLAGS
    assert flags[descs[1].identity] == {Flag.Valid}
    assert flags[descs[2].identity] == ALL_FLAGS - {Flag.Fast}  # small network: every running relay guards
    many = [dataclasses.replace(descs[0], identity=os.urandom(32), bandwidth=100_000 * (i + 1))
            for i in range(authority.SMALL_NETWORK + 1)]
    flags = authority.assign_flags(many, {d.identity for d in many})
    guards = [d.bandwidth for d in many if Flag.Guard in flags[d.identity]]
    assert len(guards) == 26 and min(guards) == 2_600_000  # at least the (low) median bandwidth
    assert serve_for("authority") is authority.serve


def test_missing_identity_key_is_created_private(tmp_path):
    key = authority.load_identity(tmp_path)
    path = tmp_path / "keys" / "identity.key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert authority.load_identity(tmp_path).private_bytes_raw() == key.private_bytes_raw()


# -- httpio over an in-memory stream (any trio Stream works, as a circuit stream will later) ----------------

async def _echo(method, target, body):
    return 200, "application/octet-stream", f"{method} {target} ".encode() + body


async def test_http_round_trip_over_memory_streams():
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_http, server, _echo)
        status, headers, body = await request(client, "POST", "/x?y", b"z" * 100_000, timeout=5)
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    assert body == b"POST /x?y " + b"z" * 100_000


async def test_http_limits(autojump_clock):
    client, server = trio.testing.memory_stream_pair()
    answers = []

    async def oversized():
        answers.append(await request(client, "POST", "/", b"x" * 2000, timeout=5))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(oversized)
        with pytest.raises(HttpError) as info:
            await serve_http(server, _echo, max_body=1000)
        assert info.value.status == 413
    assert answers[0][0] == 413

    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_http, server, _echo)
        with pytest.raises(HttpError):
            await request(client, "POST", "/", b"x" * 2000, timeout=5, max_body=1000)

    client, server = trio.testing.memory_stream_pair()
    await client.send_all(b"GET / HTTP/1.1\r\n")  # and then nothing: a slowloris
    with pytest.raises(trio.TooSlowError):
        await serve_http(server, _echo, timeout=3)


async def test_http_deflate_for_dot_z_targets_and_accept_encoding():
    """dir-spec 6.1: ".z" asks for deflate (the handler sees the target without it); so does
    Accept-Encoding: deflate, which tor sends on BEGIN_DIR. Our client inflates, bounded."""
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_http, server, _echo)
        status, headers, body = await request(client, "GET", "/tor/micro/d/abc.z", timeout=5)
    assert status == 200 and headers["content-encoding"] == "deflate"
    assert body == b"GET /tor/micro/d/abc "

    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_http, server, _echo)
        # as C tor asks on a BEGIN_DIR stream: HTTP/1.0, its Accept-Encoding list
        await client.send_all(b"GET /tor/keys/all HTTP/1.0\r\nHost: 127.0.0.1\r\n"
                              b"Accept-Encoding: identity, deflate, x-zstd, x-tor-lzma\r\n\r\n")
        raw = b""
        while b"\r\n\r\n" not in raw or len(raw.partition(b"\r\n\r\n")[2]) < zlib_len(raw):
            raw += await client.receive_some(65536)
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert b"\r\nContent-Encoding: deflate\r\n" in head  # C tor matches the header case-sensitively
    assert zlib.decompress(payload) == b"GET /tor/keys/all "

    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_http, server, _echo)
        with pytest.raises(HttpError):
            await request(client, "GET", "/big.z", timeout=5, max_body=10)


def zlib_len(raw: bytes) -> int:
    head = raw.partition(b"\r\n\r\n")[0].lower()
    return int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
