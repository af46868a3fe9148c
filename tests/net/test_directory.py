"""The directory system on loopback, in Tor's documents (dir-spec): authorities with RSA key certificates
voting and signing the microdesc consensus over real HTTP, serving what a C tor client asks on the dir port
and on BEGIN_DIR through the OR port, testing relays over real TLS links (Tor's link handshake, CREATE2 with
ntor), refusing bad documents; and the directory client verifying what it downloads.

Authorities vote on wall-clock rounds of C tor's minimum length (INTERVAL = 10 s, vote and distribution
delays 2 s), so each round costs real seconds: the tests keep the rounds they wait for few."""

import dataclasses
import functools
import io
import json
import os
import time
import types
import zlib

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nodes.config import AuthorityRef, ConfigError, NodeConfig
from nodes.core import tor_rsa
from nodes.core.authcert import make_authority_cert, parse_authority_certs
from nodes.core.consensus import (
    Consensus,
    DirectorySignature,
    SignedConsensus,
    encode_consensus,
    parse_consensus,
    sign_consensus,
)
from nodes.core.errors import ExpiredError, IdentityMismatch, SignatureError
from nodes.core.microdesc import microdescriptor_for, parse_microdescriptors
from nodes.core.netdoc import b64encode_unpadded
from nodes.core.netview import Flag, Relay
from nodes.core.server_descriptor import ServerDescriptor, make_server_descriptor
from nodes.core.vote import DirAuthority, VoteRouter, compute_consensus, make_vote, parse_vote
from nodes.net import dircache
from nodes.net.circuits import CircuitBuildError
from nodes.net.dirclient import (
    CONSENSUS_PATH,
    LIVE_TOLERANCE,
    MICRODESC_PATH,
    DirectoryClient,
    NoConsensusError,
)
from nodes.net.events import EventLog
from nodes.net.httpio import HttpError, request, request_tcp, serve_http, serve_http_tcp
from nodes.net.metrics import Metrics
from nodes.net.node_keys import load_or_create_authority_keys
from nodes.roles import authority, relay, serve_for
from tests.net.helpers import TestRelay, open_link, start_client, start_hostile_relay, start_relay
from tests.net.test_relay_role import INTERVAL, _authority_configs, _unused_port

HOST = "127.0.0.1"
# What our authorities give a relay they reached, with a fast descriptor that says hidden-service-dir and
# tunnelled-dir-server, in a small network (authority.assign_flags).
RELAY_FLAGS = frozenset(str(f) for f in Flag)  # Fast Guard HSDir Running Stable V2Dir Valid
TIMEOUT = 5


def _rsa_key():
    return rsa.generate_private_key(tor_rsa.PUBLIC_EXPONENT, tor_rsa.IDENTITY_BITS)


def _descriptor(nickname: str, *, address: str = HOST, or_port: int = 9001, published: int | None = None,
                rsa_identity=None, ed25519_identity=None,
                ntor_secret: bytes | None = None) -> ServerDescriptor:
    """A relay's server descriptor, signed as our relays sign theirs (dummy TAP key included)."""
    now = int(time.time())
    return make_server_descriptor(
        nickname=nickname, address=address, or_port=or_port, dir_port=0,
        rsa_identity=rsa_identity or _rsa_key(),
        ed25519_identity=ed25519_identity or Ed25519PrivateKey.generate(),
        signing_key=Ed25519PrivateKey.generate(), signing_cert_expires=now + 86400,
        ntor_secret=ntor_secret or os.urandom(32), bandwidth=1_000_000, platform=relay.PLATFORM,
        proto=relay.PROTO, published=now if published is None else published, tap_onion_key=_rsa_key())


def _descriptor_of(r: TestRelay, **changes) -> ServerDescriptor:
    """The descriptor of a running test relay (tests/net/helpers), with its real keys and OR port."""
    fields = dict(or_port=r.status.or_port, rsa_identity=r.link.rsa_identity,
                  ed25519_identity=r.signer._openssl,  # the key of its identity seed
                  ntor_secret=r.keys.ntor_secret)
    return _descriptor(r.name, **{**fields, **changes})


def _reachable(node_ids: set[bytes]):
    """A reachability test that passes for these relays only (for tests not about reachability)."""
    async def reachable(desc: ServerDescriptor) -> bool:
        await trio.lowlevel.checkpoint()
        return desc.node_id in node_ids
    return reachable


async def _always_reachable(desc: ServerDescriptor) -> bool:
    return True


def _client(refs) -> DirectoryClient:
    return DirectoryClient(refs, Metrics(), EventLog("client", "client", io.StringIO()))


async def _start_authority(nursery, config: NodeConfig, reachable):
    """Start an authority that can be stopped: (the Authority, an async function that stops it and returns
    once its ports are closed)."""
    scope, done = trio.CancelScope(), trio.Event()

    async def run(task_status=trio.TASK_STATUS_IGNORED):
        try:
            with scope:
                await authority.serve(config, reachable=reachable, task_status=task_status)
        finally:
            done.set()

    async def stop():
        scope.cancel()
        await done.wait()

    return await nursery.start(run), stop


async def _published(auth: authority.Authority, predicate):
    """The first consensus `auth` publishes (or has published) that satisfies `predicate`."""
    while auth.published is None or not predicate(auth.published):
        await auth.next_published()
    return auth.published


async def _eventually(predicate) -> None:
    """Poll until predicate() holds; the caller bounds the wait."""
    while not predicate():
        await trio.sleep(0.05)


async def _get(port: int, target: str) -> tuple[int, dict[str, str], bytes]:
    return await request_tcp(HOST, port, "GET", target, timeout=TIMEOUT)


async def _post(port: int, target: str, body: bytes) -> tuple[int, bytes]:
    status, _, reply = await request_tcp(HOST, port, "POST", target, body, timeout=TIMEOUT)
    return status, reply


async def _as_tor_asks(port: int, target: str) -> tuple[bytes, bytes]:
    """GET as C tor's directory client writes it (HTTP/1.0, its Accept-Encoding); (head, raw body)."""
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        await stream.send_all(f"GET {target} HTTP/1.0\r\nHost: {HOST}\r\n"
                              "Accept-Encoding: identity, deflate, x-zstd, x-tor-lzma\r\n\r\n".encode())
        data = b""
        with trio.fail_after(TIMEOUT):
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def _certs(data: bytes, now: int) -> dict:
    return {c.v3ident: c for c in (u.check(now) for u in parse_authority_certs(data))}


def _routers(signed) -> set[bytes]:
    return {r.node_id for r in signed.consensus.routers}


# -- three authorities, what they publish and serve -------------------------------------------------------


async def test_three_authorities_publish_a_majority_signed_consensus_of_tested_relays(tmp_path, capsys):
    configs = _authority_configs(tmp_path, 3)
    refs = configs[0].authorities
    configured = {bytes.fromhex(r.v3ident) for r in refs}
    live = [_descriptor(f"relay{i}") for i in range(4)]
    silent = _descriptor("silent")  # accepted, but it fails every reachability test
    live_ids = {d.node_id for d in live}
    microdescs = {d.node_id: microdescriptor_for(d) for d in live}
    async with trio.open_nursery() as nursery:
        auths = [(await _start_authority(nursery, c, _reachable(live_ids)))[0] for c in configs]
        client = _client(refs)
        for desc in [*live, silent]:
            assert await client.upload_descriptor(desc.raw) == 3
        assert client.metrics.value("descriptor_posts_total", result="accepted") == 15

        # within two rounds (the uploads may miss the first one), every authority publishes the consensus
        # of the reachable relays with the signatures of all three
        with trio.fail_after(3 * INTERVAL):
            for auth in auths:
                await _published(auth, lambda sc: _routers(sc) == live_ids and len(sc.signatures) == 3)

        # a detached signature in a configured authority's name that does not verify is refused, and the
        # genuine one stays
        peer = auths[1].cert
        forged = DirectorySignature(peer.v3ident, peer.signing_key_digest, os.urandom(128))
        status, reply = await _post(refs[0].dir_port, "/tor/post/consensus-signature", forged.encode())
        assert status == 400 and b"signature" in reply
        assert auths[0].metrics.value("errors_total", kind="signature") == 1
        assert len(auths[0].published.signatures) == 3

        # the documents, fetched and checked as a client does: certificates, then the consensus
        now = int(time.time())
        status, _, keys = await _get(refs[0].dir_port, "/tor/keys/all")
        assert status == 200
        certs = _certs(keys, now)
        assert set(certs) == configured
        status, _, raw = await _get(refs[0].dir_port, CONSENSUS_PATH)
        assert status == 200
        signed = parse_consensus(raw).check(certs, configured, now)
        assert signed.signers == configured  # a majority is enough for a client; here all three signed
        assert {ds.v3ident for ds in signed.consensus.dir_sources} == configured  # every vote was used
        assert _routers(signed) == live_ids  # the silent relay is not Running: left out
        for r in signed.consensus.routers:
            assert r.flags == RELAY_FLAGS
            assert r.md_digest == microdescs[r.node_id].digest  # the microdescriptor of its descriptor
        for ref in refs[1:]:  # every authority serves the same consensus
            status, _, other = await _get(ref.dir_port, CONSENSUS_PATH)
            assert status == 200 and parse_consensus(other).body == signed.body

        # as C tor asks: ".z" and its Accept-Encoding get deflate; the fingerprints suffix is accepted
        fps = "+".join(r.v3ident[:8] for r in refs)
        for target in (CONSENSUS_PATH + ".z", f"{CONSENSUS_PATH}/{fps}.z"):
            head, body = await _as_tor_asks(refs[1].dir_port, target)
            assert head.startswith(b"HTTP/1.1 200 ") and b"\r\nContent-Encoding: deflate\r\n" in head
            assert parse_consensus(zlib.decompress(body)).body == signed.body
        status, headers, body = await _get(refs[2].dir_port, CONSENSUS_PATH + ".z")  # our client inflates
        assert status == 200 and headers["content-encoding"] == "deflate"
        assert parse_consensus(body).body == signed.body

        # key certificates: by identity, by identity and signing key, the authority's own
        a, b = (bytes.fromhex(r.v3ident) for r in refs[:2])
        status, _, body = await _get(refs[2].dir_port, f"/tor/keys/fp/{a.hex().upper()}+{b.hex()}.z")
        assert status == 200 and set(_certs(body, now)) == {a, b}
        sk = certs[a].signing_key_digest.hex().upper()
        status, _, body = await _get(refs[2].dir_port, f"/tor/keys/fp-sk/{a.hex().upper()}-{sk}")
        assert status == 200 and set(_certs(body, now)) == {a}
        for ref in refs:
            status, _, body = await _get(ref.dir_port, "/tor/keys/authority")
            assert status == 200 and set(_certs(body, now)) == {bytes.fromhex(ref.v3ident)}
        assert (await _get(refs[0].dir_port, "/tor/keys/fp/" + "00" * 20))[0] == 404
        assert (await _get(refs[0].dir_port, "/tor/keys/fp/not-hex"))[0] == 400

        # microdescriptors by digest, as C tor batches them; unknown digests are left out
        digests = [m.digest_b64 for m in microdescs.values()]
        unknown = b64encode_unpadded(os.urandom(32))
        target = MICRODESC_PATH + "-".join([*digests, unknown]) + ".z"
        head, body = await _as_tor_asks(refs[0].dir_port, target)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert {m.digest for m in parse_microdescriptors(zlib.decompress(body))} == {
            m.digest for m in microdescs.values()}
        assert (await _get(refs[0].dir_port, MICRODESC_PATH + unknown))[0] == 404
        assert (await _get(refs[0].dir_port, MICRODESC_PATH + "!!!"))[0] == 400

        # the server descriptors the authorities hold, the silent relay's among them
        status, _, body = await _get(refs[0].dir_port, f"/tor/server/fp/{silent.node_id.hex().upper()}")
        assert (status, body) == (200, silent.raw)
        status, _, body = await _get(refs[0].dir_port, f"/tor/server/d/{live[0].digest.hex()}")
        assert (status, body) == (200, live[0].raw)
        status, _, body = await _get(refs[0].dir_port, "/tor/server/all")
        assert status == 200 and len(body) == sum(len(d.raw) for d in [*live, silent])

        # each authority's vote lists the silent relay Valid only, the others with every flag
        status, _, body = await _get(refs[1].dir_port, authority.VOTE_PATH)
        vote = parse_vote(body).check(configured, int(time.time()))
        assert vote.authority == b
        flags = {r.node_id: r.flags for r in vote.routers}
        assert flags == {silent.node_id: {"Valid"}, **{i: RELAY_FLAGS for i in live_ids}}

        # the directory client: the consensus as served, and a view whose relays carry the
        # microdescriptors' keys
        signed_c, raw_c = await client.fetch_consensus(int(time.time()))
        assert signed_c.body == signed.body and parse_consensus(raw_c).body == signed.body
        await nursery.start(client.run)
        with trio.fail_after(TIMEOUT):
            view = await client.wait_ready()
        assert view.missing == frozenset() and {r.node_id for r in view.relays} == live_ids
        for r in view.relays:
            desc = next(d for d in live if d.node_id == r.node_id)
            assert (r.identity, r.ntor_onion_key, r.address, r.or_port, r.nickname) == (
                desc.ed25519_identity, desc.ntor_onion_key, desc.address, desc.or_port, desc.nickname)
            assert r.flags == RELAY_FLAGS
        assert client.consensus_document() == client.raw  # what a relay would serve as a directory cache

        # readiness and counters as the orchestrator sees them
        status, _, body = await _get(auths[0].control_port, "/status")
        state = json.loads(body)
        assert state["conditions"] == {"consensus": True} and state["relays_known"] == 5
        assert state["v3ident"] == refs[0].v3ident and state["fingerprint"] == refs[0].fingerprint
        assert state["consensus"]["signatures"] == 3 and state["consensus"]["relays"] == 4
        for auth in auths:
            assert auth.metrics.value("descriptor_uploads_total", result="accepted") == 5
            assert auth.metrics.value("votes_received_total") >= 2
            assert auth.metrics.value("signatures_received_total") >= 2
            assert auth.metrics.value("reachability_checks_total", result="unreachable") >= 1
            assert auth.metrics.value("errors_total", kind="signature") == (auth is auths[0])
            assert auth.metrics.value("consensus_withheld_total") == 0
        nursery.cancel_scope.cancel()
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    published = [e for e in events if e["event"] == "consensus_published"]
    assert {e["node"] for e in published if e["relays"] == 4} == {"auth0", "auth1", "auth2"}
    registered = [e for e in events if e["event"] == "relay_registered"]
    assert len(registered) == 15


async def test_begin_dir_on_the_authority_or_port_serves_a_one_hop_create_fast_circuit(tmp_path):
    """C tor's bootstrap: it knows an authority by address, OR port and fingerprint only, builds a one-hop
    circuit with CREATE_FAST (no onion key needed) and fetches the directory over BEGIN_DIR."""
    (config,) = _authority_configs(tmp_path, 1)
    (ref,) = config.authorities
    desc = _descriptor("relay0")
    async with trio.open_nursery() as nursery:
        auth, _ = await _start_authority(nursery, config, _always_reachable)
        assert await _client(config.authorities).upload_descriptor(desc.raw) == 1
        with trio.fail_after(2 * INTERVAL + TIMEOUT):
            signed = await _published(auth, lambda sc: _routers(sc) == {desc.node_id})

        fingerprint = bytes.fromhex(ref.fingerprint)
        hop = Relay(ref.name, fingerprint, None, bytes(32), ref.address, ref.or_port, ref.dir_port, 0,
                    frozenset(), "")
        client = await start_client(nursery)
        with trio.fail_after(4 * TIMEOUT):
            circuit = await client.circuits.build([hop], create_fast=True)
            assert circuit.channel.link.peer.node_id == fingerprint  # the link's CERTS proved it

            async def get(target: str) -> tuple[int, dict[str, str], bytes]:
                stream = await circuit.open_dir_stream()
                async with stream:
                    return await request(stream, "GET", target, timeout=TIMEOUT)

            status, _, keys = await get("/tor/keys/all")
            assert status == 200
            status, headers, raw = await get(CONSENSUS_PATH + ".z")
            assert status == 200 and headers["content-encoding"] == "deflate"
            now = int(time.time())
            checked = parse_consensus(raw).check(_certs(keys, now), {signed.signatures[0].v3ident}, now)
            assert checked.body == signed.body and _routers(checked) == {desc.node_id}
            md = microdescriptor_for(desc)
            status, _, body = await get(MICRODESC_PATH + md.digest_b64 + ".z")
            assert status == 200 and parse_microdescriptors(body)[0].raw == md.raw

            # junk on a BEGIN_DIR stream: a 400, counted, and the authority answers the next stream
            stream = await circuit.open_dir_stream()
            await stream.send_all(b"\x16\x03\x01 not http\r\n\r\n")
            reply = b""
            while data := await stream.receive_some():
                reply += data
            await stream.aclose()
            assert reply.startswith(b"HTTP/1.1 400")
            assert auth.metrics.value("errors_total", kind="http") == 1
            assert (await get("/tor/keys/authority"))[0] == 200

            # a client that expects another fingerprint at that address does not use the link
            other = dataclasses.replace(hop, node_id=os.urandom(20))
            with pytest.raises(CircuitBuildError) as info:
                await client.circuits.build([other], create_fast=True)
            assert info.value.kind == "identity_mismatch"
        assert auth.metrics.value("create_fast_total") == 1
        nursery.cancel_scope.cancel()


# -- bad input at the authority ------------------------------------------------------------------------------


async def test_authority_refuses_bad_documents_counts_them_and_keeps_serving(tmp_path):
    (config,) = _authority_configs(tmp_path, 1)
    (ref,) = config.authorities
    port = ref.dir_port
    now = int(time.time())
    good = _descriptor("good")
    forged = good.raw.replace(b"\nbandwidth 1000000 1000000 1000000\n",
                              b"\nbandwidth 9000000 9000000 9000000\n")
    assert forged != good.raw  # a field changed after signing
    stale = _descriptor("stale", published=now - 2 * 3600)  # older than the authority keeps (an hour)
    async with trio.open_nursery() as nursery:
        auth, _ = await _start_authority(nursery, config, _always_reachable)

        # server descriptors: forged, stale, malformed
        status, reply = await _post(port, "/tor/", forged)
        assert status == 400 and b"signature" in reply
        client = _client(config.authorities)
        assert await client.upload_descriptor(stale.raw) == 0
        assert client.metrics.value("errors_total", kind="status") == 1
        status, reply = await _post(port, "/tor/", b"router not a descriptor\n")
        assert status == 400 and b"rejected" in reply
        assert auth.metrics.value("descriptor_uploads_total", result="rejected") == 3
        assert not auth.descriptors

        # votes: from an authority nobody configured; from ours, with a signature that does not verify;
        # a valid one for a round that is not this one
        round_ = now - now % INTERVAL
        stranger = load_or_create_authority_keys(tmp_path / "stranger")
        ours = load_or_create_authority_keys(tmp_path / "auth0")  # the authority's own keys

        def vote(keys, valid_after=round_):
            cert = make_authority_cert(keys.v3_identity, keys.signing, now - 60, now + 3600)
            return make_vote(cert, keys.signing, published=now, valid_after=valid_after,
                             fresh_until=valid_after + INTERVAL, valid_until=valid_after + 3 * INTERVAL,
                             vote_delay=2, dist_delay=2, routers=[])

        status, reply = await _post(port, "/tor/post/vote", vote(stranger).encode())
        assert status == 400 and b"unknown authority" in reply
        mine = vote(ours)
        bad = dataclasses.replace(mine, signature=dataclasses.replace(mine.signature,
                                                                      signature=os.urandom(128)))
        status, reply = await _post(port, "/tor/post/vote", bad.encode())
        assert status == 400 and b"signature" in reply
        status, reply = await _post(port, "/tor/post/vote", vote(ours, round_ + 100 * INTERVAL).encode())
        assert status == 400 and b"round" in reply
        status, reply = await _post(port, "/tor/post/vote", b"onionlab-vote 1\n")
        assert status == 400
        assert auth.metrics.value("votes_received_total") == 0

        # detached signatures: from an authority nobody configured; malformed
        unknown = DirectorySignature(os.urandom(20), os.urandom(20), os.urandom(128))
        status, reply = await _post(port, "/tor/post/consensus-signature", unknown.encode())
        assert status == 400 and b"unknown authority" in reply
        status, reply = await _post(port, "/tor/post/consensus-signature", b"directory-signature\n")
        assert status == 400

        assert {k: auth.metrics.value("errors_total", kind=k)
                for k in ("signature", "expired", "decode", "unexpected")} == {
            "signature": 4, "expired": 1, "decode": 3, "unexpected": 1}

        # broken HTTP is answered, counted, and the authority keeps serving
        stream = await trio.open_tcp_stream(HOST, port)
        await stream.send_all(b"\x00\x01 not http\r\n\r\n")
        with trio.fail_after(TIMEOUT):
            assert (await stream.receive_some(100)).startswith(b"HTTP/1.1 400")
        await stream.aclose()
        assert (await _get(port, "/nope"))[0] == 404
        assert (await _get(port, "/tor/"))[0] == 405
        assert (await _get(port, "/tor/post/vote"))[0] == 405
        assert (await _get(port, "/tor/keys/authority"))[0] == 200

        # a lone authority signs alone; the good relay is listed
        assert await client.upload_descriptor(good.raw) == 1
        with trio.fail_after(2 * INTERVAL + TIMEOUT):
            signed = await _published(auth, lambda sc: _routers(sc) == {good.node_id})
        assert len(signed.signatures) == 1
        assert auth.metrics.value("errors_total", kind="http") == 1
        nursery.cancel_scope.cancel()


# -- reachability --------------------------------------------------------------------------------------------


async def test_reachability_test_needs_the_relays_identity_and_its_ntor_answer(monkeypatch):
    monkeypatch.setattr(authority, "REACHABILITY_TIMEOUT", 1.0)  # for the relay that never answers
    async with trio.open_nursery() as nursery:
        honest = await start_relay(nursery, "honest")
        forger = await start_hostile_relay(nursery, "forger", forge=True)
        mute = await start_hostile_relay(nursery, "mute", forge=False)
        with trio.fail_after(6 * TIMEOUT):
            assert await authority.check_reachable(_descriptor_of(honest))
            assert honest.metrics.value("relay_circuits_total") == 1  # it answered our CREATE2

            # another relay answers at the descriptor's address: its CERTS prove another identity
            impostor = _descriptor("impostor", or_port=honest.status.or_port)
            with pytest.raises(IdentityMismatch):
                await open_link(honest.status.or_port, expected_node_id=impostor.node_id)
            assert not await authority.check_reachable(impostor)
            # the right identity, an onion key it does not hold: it refuses the onionskin (DESTROY)
            assert not await authority.check_reachable(_descriptor_of(honest, ntor_secret=os.urandom(32)))
            assert honest.errors("crypto") == 1
            # a forged CREATED2; no answer at all; nothing listening
            assert not await authority.check_reachable(_descriptor_of(forger))
            assert not await authority.check_reachable(_descriptor_of(mute))
            assert not await authority.check_reachable(_descriptor("closed", or_port=_unused_port()))

            # an address the authority reaches another way (NodeConfig.address_map)
            elsewhere = _descriptor_of(honest, address="127.0.0.2")  # the relay listens on 127.0.0.1 only
            assert not await authority.check_reachable(elsewhere)
            assert await authority.check_reachable(elsewhere, address_map={"127.0.0.2": HOST})
            # ... or by the name of its nickname (NodeConfig.dial_names: Swarm); not for another nickname
            assert await authority.check_reachable(elsewhere, dial_names={"honest": "localhost"})
            assert not await authority.check_reachable(elsewhere, dial_names={"other": "localhost"})
            unresolved = {"honest": "no-such-host.invalid"}
            assert not await authority.check_reachable(_descriptor_of(honest), dial_names=unresolved)
        assert honest.metrics.value("relay_circuits_total") == 3  # the three tests that passed
        nursery.cancel_scope.cancel()


# -- the directory client ------------------------------------------------------------------------------------


class _Keys:
    """An authority's keys and key certificate, without a server."""

    def __init__(self, data_dir, name: str, now: int) -> None:
        self.name = name
        self.keys = load_or_create_authority_keys(data_dir)
        self.cert = make_authority_cert(self.keys.v3_identity, self.keys.signing, now - 60, now + 86400)
        self.dir_authority = DirAuthority(name, self.cert.v3ident, HOST, 9030, 9001)


def _consensus(authorities: list[_Keys], descs: list[ServerDescriptor], valid_after: int) -> Consensus:
    """The consensus `authorities` compute from their votes, each listing `descs` as running."""
    routers = [VoteRouter(d.nickname, d.node_id, d.ed25519_identity, d.address, d.or_port, d.dir_port,
                          d.published, d.bandwidth_observed // 1000, "onionlab 0.1.0", d.proto,
                          microdescriptor_for(d).digest, RELAY_FLAGS) for d in descs]
    votes = [make_vote(a.cert, a.keys.signing, published=valid_after, valid_after=valid_after,
                       fresh_until=valid_after + INTERVAL, valid_until=valid_after + 3 * INTERVAL,
                       vote_delay=2, dist_delay=2, routers=routers) for a in authorities]
    return compute_consensus(votes, [a.dir_authority for a in authorities])


def _document(consensus: Consensus, signers: list[_Keys], extra=()) -> bytes:
    body = encode_consensus(consensus)
    sigs = [sign_consensus(body, a.cert, a.keys.signing) for a in signers]
    return SignedConsensus(consensus, body, (*sigs, *extra)).encode()


class _FakeDirectory:
    """A dir port under the test's control: the consensus it is given, the certificates it holds, and for any
    /tor/micro/d/ request every microdescriptor it holds (those not asked for too)."""

    def __init__(self, certs, microdescs) -> None:
        self.consensus: bytes | None = None
        self.certs = certs
        self.microdescs = microdescs

    async def handle(self, method: str, target: str, body: bytes) -> tuple[int, str, bytes]:
        if target.startswith(MICRODESC_PATH):
            return 200, "text/plain", b"".join(m.raw for m in self.microdescs)
        return dircache.answer(target, self) or dircache.text(404, "not found")

    def consensus_document(self) -> bytes | None:
        return self.consensus

    def microdescriptors(self):
        return {m.digest: m for m in self.microdescs}

    def authority_certs(self):
        return self.certs

    def own_cert(self) -> None:
        return None


async def test_client_refuses_a_consensus_without_a_majority_from_its_authorities_or_out_of_date(tmp_path):
    now = int(time.time())
    auths = [_Keys(tmp_path / f"auth{i}", f"auth{i}", now) for i in range(3)]
    strangers = [_Keys(tmp_path / f"stranger{i}", f"stranger{i}", now) for i in range(3)]
    descs = [_descriptor(f"relay{i}") for i in range(2)]
    extra = microdescriptor_for(_descriptor("extra"))  # a key no consensus names
    a, b, c = auths
    now = int(time.time())
    current = _consensus(auths, descs, now - 5)
    forged_b = sign_consensus(encode_consensus(_consensus(auths, descs[:1], now - 5)), b.cert, b.keys.signing)
    random_c = DirectorySignature(c.cert.v3ident, c.cert.signing_key_digest, os.urandom(128))
    refused = {  # name: (document, what each authority's answer fails with)
        "minority": (_document(current, [a]), SignatureError),
        "forged": (_document(current, [a], [forged_b, random_c]), SignatureError),
        "strangers": (_document(_consensus(strangers, descs, now - 5), strangers), SignatureError),
        # a clock that is off is tolerated up to LIVE_TOLERANCE (C tor's reasonably live consensus)
        "expired": (_document(_consensus(auths, descs, now - 3 * INTERVAL - LIVE_TOLERANCE - 5), auths),
                    ExpiredError),
        "not yet valid": (_document(_consensus(auths, descs, now + LIVE_TOLERANCE + 60), auths),
                          ExpiredError),
    }
    fake = _FakeDirectory([k.cert for k in auths + strangers], [*map(microdescriptor_for, descs), extra])
    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(serve_http_tcp, HOST, 0, fake.handle,
                                                     on_error=lambda kind: None))
        refs = [AuthorityRef(k.name, HOST, port, 0, k.cert.v3ident.hex().upper()) for k in auths]

        for name, (document, error) in refused.items():
            fake.consensus = document
            client = _client(refs)
            with pytest.raises(NoConsensusError) as info:
                await client.fetch_consensus(int(time.time()))
            assert [type(e) for _, e in info.value.errors] == [error] * 3, name
            assert client.metrics.value("consensus_fetches_total", result="rejected") == 3, name
            assert client.metrics.value("errors_total", kind=error.kind) == 3, name
            assert client.signed is None and client.current is None
            assert set(client.certs) <= {k.cert.v3ident for k in auths}  # strangers' certificates unused

        # an authority that does not answer is counted and skipped
        dead = dataclasses.replace(refs[2], dir_port=_unused_port())
        fake.consensus = refused["minority"][0]
        client = _client([refs[0], refs[1], dead])
        with pytest.raises(NoConsensusError) as info:
            await client.fetch_consensus(int(time.time()))
        assert isinstance(dict(info.value.errors)["auth2"], OSError)
        assert client.metrics.value("errors_total", kind="network") == 1

        # within the tolerance, a consensus from our clock's future or past is taken (our clock is off)
        for skewed in (now + 600, now - 3 * INTERVAL - 600):
            fake.consensus = _document(_consensus(auths, descs, skewed), auths)
            signed, _ = await _client(refs).fetch_consensus(int(time.time()))
            assert signed.consensus.valid_after == skewed

        # two valid signatures of three suffice; the bad one is dropped; only named microdescriptors kept
        fake.consensus = _document(current, [a, c], [forged_b])
        client = _client(refs)
        signed, raw = await client.fetch_consensus(int(time.time()))
        assert raw == fake.consensus and signed.consensus == current
        assert signed.signers == {a.cert.v3ident, c.cert.v3ident}
        assert set(client.microdescs) == {microdescriptor_for(d).digest for d in descs}
        assert client.metrics.value("consensus_fetches_total", result="ok") == 1

        # a consensus that lists no relay does not replace one that does, while that one is valid
        now = int(time.time())
        good = _consensus(auths, descs, now - 2 * INTERVAL)  # fresh-until passed: the client asks again soon
        empty = _consensus(auths, [], now - INTERVAL)  # newer, valid, and lists no relay
        fake.consensus = good_document = _document(good, auths)
        client = _client(refs)
        await nursery.start(client.run)
        with trio.fail_after(TIMEOUT):
            view = await client.wait_ready()
        assert {r.node_id for r in view.relays} == {d.node_id for d in descs}
        fake.consensus = _document(empty, auths)
        with trio.fail_after(INTERVAL):  # before `good` expires
            await _eventually(lambda: client.metrics.value("errors_total", kind="empty_consensus") >= 1
                              or client.current is not view)
        assert client.current is view and client.raw == good_document

        # with nothing better, an empty one is taken (a new lab's first consensus lists no relay yet)
        fresh = _client(refs)
        await nursery.start(fresh.run)
        with trio.fail_after(TIMEOUT):
            assert (await fresh.wait_ready()).relays == ()
        assert fresh.signed.consensus == empty
        nursery.cancel_scope.cancel()


# -- the empty-consensus rule ------------------------------------------------------------------------------


async def test_restarted_authorities_withhold_their_signature_from_a_consensus_without_relays(tmp_path,
                                                                                              capsys):
    """Regression: after two of three authorities restarted (knowing no relay yet), they signed a consensus
    that listed no relay, and nodes took it. Each vote of theirs listed nothing and the third authority's
    alone could not list a relay, so the round's consensus is empty: every authority must withhold its
    signature (the previous consensus stays valid), until the relays upload again."""
    configs = _authority_configs(tmp_path, 3)
    refs = configs[0].authorities
    descs = [_descriptor(f"relay{i}") for i in range(3)]
    ids = {d.node_id for d in descs}
    reachable = _reachable(ids)
    async with trio.open_nursery() as nursery:
        started = [await _start_authority(nursery, c, reachable) for c in configs]
        uploader = _client(refs)
        for d in descs:
            assert await uploader.upload_descriptor(d.raw) == 3
        with trio.fail_after(3 * INTERVAL):
            for auth, _ in started:
                await _published(auth, lambda sc: _routers(sc) == ids)
        node = _client(refs)
        await nursery.start(node.run)
        with trio.fail_after(TIMEOUT):
            await _eventually(lambda: node.current is not None and len(node.current.relays) == 3)
        before = node.current
        listed_round = before.valid_after

        # two authorities restart with their data dirs: the same identities, no relay known
        for i in (1, 2):
            await started[i][1]()
            started[i] = await _start_authority(nursery, configs[i], reachable)
            assert started[i][0].v3ident.hex().upper() == refs[i].v3ident and not started[i][0].descriptors
        auths = [auth for auth, _ in started]

        # the next round: none of them signs its consensus, and nothing replaces the one nodes hold
        def round_done(a: authority.Authority) -> bool:
            newer = a.published is not None and a.published.consensus.valid_after > listed_round
            return newer or a.metrics.value("consensus_withheld_total") >= 1

        with trio.fail_after(2 * INTERVAL + TIMEOUT):
            await _eventually(lambda: all(map(round_done, auths)))
        assert [a.metrics.value("consensus_withheld_total") for a in auths] == [1, 1, 1]
        assert auths[0].published.consensus.valid_after == listed_round
        assert _routers(auths[0].published) == ids
        assert auths[1].published is None and auths[2].published is None
        assert node.current is before

        # the relays upload again, as they do every descriptor_refresh: the next round lists them
        for d in descs:
            assert await uploader.upload_descriptor(d.raw) == 3
        with trio.fail_after(2 * INTERVAL + TIMEOUT):
            for auth in auths:
                await _published(auth, lambda sc: sc.consensus.valid_after > listed_round
                                 and _routers(sc) == ids)
            await _eventually(lambda: node.current.valid_after > listed_round)
        assert {r.node_id for r in node.current.relays} == ids
        assert node.metrics.value("errors_total", kind="empty_consensus") == 0
        nursery.cancel_scope.cancel()

    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    withheld = {(e["node"], e["round"]) for e in events if e["event"] == "consensus_withheld"}
    assert {(f"auth{i}", listed_round + INTERVAL) for i in range(3)} <= withheld
    later = [e for e in events if e["event"] == "consensus_published" and e["round"] > listed_round]
    assert later and all(e["relays"] == 3 for e in later)


# -- flags and configuration -------------------------------------------------------------------------------


def test_flag_rules():
    descs = [_descriptor(f"r{i}") for i in range(3)]
    slow = dataclasses.replace(descs[2], bandwidth_observed=10)
    no_dir = dataclasses.replace(descs[1], tunnelled_dir_server=False, hidden_service_dir=False)
    flags = authority.assign_flags([descs[0], no_dir, slow], {descs[0].node_id, descs[1].node_id,
                                                              slow.node_id})
    assert flags[descs[0].node_id] == RELAY_FLAGS
    assert flags[descs[1].node_id] == RELAY_FLAGS - {"V2Dir", "HSDir"}
    # a C tor relay with DirCache 0 says hidden-service-dir but refuses BEGIN_DIR: no HSDir (voteflags.c)
    dircache0 = dataclasses.replace(descs[1], tunnelled_dir_server=False)
    assert authority.assign_flags([dircache0], {dircache0.node_id})[dircache0.node_id] \
        == RELAY_FLAGS - {"V2Dir", "HSDir"}
    # Fast as C tor votes it under TestingTorNetwork: the 12.5th percentile (here the slowest of three)
    assert flags[slow.node_id] == RELAY_FLAGS  # small network: every running relay guards
    assert authority.fast_threshold([10, 10**6, 10**6]) == 10
    # the 12.5th percentile of nine relays is the second slowest; 25th when that is under 37.5 KiB/s
    assert authority.fast_threshold([10, 50_000] + [10**6] * 7) == 50_000
    assert authority.fast_threshold([10, 20] + [10**6] * 7) == authority.FAST_GUARANTEE  # the 3rd: 10**6
    assert authority.fast_threshold([10**6] * 9) == authority.FAST_GUARANTEE
    nine = [types.SimpleNamespace(node_id=os.urandom(20), bandwidth_observed=bw, tunnelled_dir_server=True,
                                  hidden_service_dir=True) for bw in [10, 50_000] + [10**6] * 7]
    flags = authority.assign_flags(nine, {d.node_id for d in nine})
    assert [("Fast" in flags[d.node_id]) for d in nine] == [False] + [True] * 8
    assert authority.assign_flags(descs, set()) == {d.node_id: {"Valid"} for d in descs}
    # beyond SMALL_NETWORK running relays, Guard wants Fast and at least the (low) median bandwidth; only
    # these fields matter to the rules
    many = [types.SimpleNamespace(node_id=os.urandom(20), bandwidth_observed=100_000 * (i + 1),
                                  tunnelled_dir_server=True, hidden_service_dir=True)
            for i in range(authority.SMALL_NETWORK + 1)]
    flags = authority.assign_flags(many, {d.node_id for d in many})
    guards = [d.bandwidth_observed for d in many if "Guard" in flags[d.node_id]]
    assert len(guards) == 26 and min(guards) == 2_600_000
    assert serve_for("authority") is authority.serve


async def test_an_authority_whose_key_is_not_configured_does_not_start(tmp_path):
    configs = _authority_configs(tmp_path, 2)
    wrong = dataclasses.replace(configs[0], authorities=configs[1].authorities[1:])
    with pytest.raises(ConfigError, match="not one of the configured authorities"):
        await authority.serve(wrong)


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


async def test_error_answers_have_their_reason_in_the_status_line_and_no_body():
    """C tor's client warns about any body under 32 bytes that is not a document ("labeled as uncompressed,
    but it seems to be confusing binary junk"): our 404 "no such microdescriptor\\n" drew that warning from a
    C tor relay. Error answers carry their text in the status line, as C tor's, and request() returns it."""

    async def handler(method, target, body):
        return 404, "text/plain", b"no such microdescriptor\n"

    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_http, server, handler)
        await client.send_all(b"GET /tor/micro/d/x HTTP/1.0\r\n\r\n")
        raw = b""
        while b"\r\n\r\n" not in raw:
            raw += await client.receive_some()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 no such microdescriptor\r\n") and b"Content-Length: 0" in head
    assert body == b""

    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_http, server, handler)
        assert await request(client, "GET", "/tor/micro/d/x", timeout=5) == (
            404, {"content-type": "text/plain", "connection": "close", "content-length": "0"},
            b"no such microdescriptor")
