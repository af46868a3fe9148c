"""nodes.core.consensus: the microdesc consensus (dir-spec 3.4.1, 3.9.2), signatures, bandwidth weights."""

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st

from nodes.core import netdoc, tor_rsa
from nodes.core.authcert import make_authority_cert, parse_authority_certs
from nodes.core.consensus import (
    Consensus,
    ConsensusRouter,
    DirectorySignature,
    DirSource,
    SignedConsensus,
    bandwidth_totals,
    bandwidth_weights,
    compute_bandwidth_weights,
    encode_consensus,
    parse_consensus,
    parse_detached_signature,
    sign_consensus,
)
from nodes.core.errors import (
    DecodeError,
    ExpiredError,
    LocalProtocolError,
    RemoteProtocolError,
    SignatureError,
)
from tests.unit.dirspec_fixtures import AUTHS, CERTS, FU, PROTO, T0, VA, VU, ids, resign, signed_by

VECTORS = Path(__file__).with_name("dirspec_vectors")
# A microdesc consensus made by three C tor 0.4.9.11 authorities (TestingTorNetwork) and their certificates.
CTOR_CONSENSUS = (VECTORS / "ctor-3auth-microdesc-consensus").read_bytes()
CTOR_CERTS = {u.v3ident: u.check(1796627780) for u in parse_authority_certs((VECTORS / "ctor-3auth-certs")
                                                                              .read_bytes())}
CTOR_VA = 1796627780  # 2026-12-07 07:16:20
# bandwidth-weights lines C tor authorities computed (dirvote.c), with the totals of their consensus
CTOR_WEIGHTS = json.loads((VECTORS / "ctor-bandwidth-weights.json").read_text())


def router(i: int, flags=("Running", "Valid"), **kw) -> ConsensusRouter:
    fields = dict(nickname=f"relay{i}", node_id=hashlib.sha1(b"%d" % i).digest(), address=f"10.0.0.{i}",
                  or_port=9001, dir_port=0, flags=frozenset(flags), version="Tor 0.4.9.11", proto=PROTO,
                  bandwidth=100 * i, md_digest=hashlib.sha256(b"%d" % i).digest())
    fields.update(kw)
    return ConsensusRouter(**fields)


def sources(n: int) -> tuple[DirSource, ...]:
    return tuple(DirSource(a.config.nickname, a.v3ident, a.config.address, a.config.dir_port,
                           a.config.or_port, a.config.contact, hashlib.sha1(a.v3ident).digest())
                 for a in AUTHS[:n])


def consensus(n_sources: int = 5, **kw) -> Consensus:
    fields = dict(valid_after=VA, fresh_until=FU, valid_until=VU, vote_delay=20, dist_delay=20,
                  dir_sources=sources(n_sources),
                  routers=(router(1, ("Guard", "Running", "Valid")), router(2)),
                  known_flags=frozenset({"Guard", "Running", "Valid"}), params={"hsdir_interval": 60},
                  recommended_client_protocols=PROTO, required_client_protocols="Cons=2 Link=4",
                  shared_rand_current=b"c" * 32)
    fields.update(kw)
    return Consensus(**fields)


# ---------------------------------------------------------------------------------------------------------
# a consensus made by C tor


def test_c_tor_consensus_parses_and_checks():
    u = parse_consensus(CTOR_CONSENSUS)
    c = u.unchecked
    assert (c.valid_after, c.fresh_until - c.valid_after, c.valid_until - c.valid_after) == (CTOR_VA, 20, 60)
    assert (c.vote_delay, c.dist_delay, c.consensus_method) == (4, 4, 35)
    assert [r.nickname for r in c.routers] == ["auth2", "auth3", "auth1"]  # sorted by identity digest
    assert c.routers[0].flags == {"Authority", "Fast", "Guard", "HSDir", "Running", "Stable", "V2Dir",
                                  "Valid"}
    assert c.routers[0].version == "Tor 0.4.9.11" and c.routers[0].proto.startswith("Conflux=1 Cons=1-2")
    assert [d.nickname for d in c.dir_sources] == ["auth2", "auth3", "auth1"]
    assert c.required_client_protocols == "Cons=2 Desc=2 FlowCtrl=1 Link=4 Microdesc=2 Relay=2"
    assert c.params == {} and c.hs_period_minutes == 1440
    signed = u.check(CTOR_CERTS, CTOR_CERTS.keys(), CTOR_VA)
    assert len(signed.signatures) == 3 and signed.encode() == CTOR_CONSENSUS
    assert signed.digest == hashlib.sha256(CTOR_CONSENSUS[: CTOR_CONSENSUS.index(b"directory-signature ")]
                                           + b"directory-signature ").digest()


def test_we_encode_a_c_tor_consensus_as_c_tor_does():
    u = parse_consensus(CTOR_CONSENSUS)
    # C tor always writes client-versions and server-versions, empty here; both are "at most once" and we
    # write neither. Every other byte is the same.
    assert encode_consensus(u.unchecked) == u.body.replace(b"client-versions \nserver-versions \n", b"")


def test_c_tor_consensus_bandwidth_weights():
    c = parse_consensus(CTOR_CONSENSUS).unchecked
    assert bandwidth_totals(c.routers) == (1, 1, 1, 1, 4)  # all three relays at Bandwidth=0
    assert bandwidth_weights(c.routers) == c.bandwidth_weights


def test_c_tor_consensus_needs_a_majority_of_our_configured_authorities():
    u = parse_consensus(CTOR_CONSENSUS)
    assert u.check(CTOR_CERTS, [*CTOR_CERTS, *ids(2)], CTOR_VA)  # 3 of 5
    with pytest.raises(SignatureError, match="3 of the 6 configured authorities, needs 4"):
        u.check(CTOR_CERTS, [*CTOR_CERTS, *ids(3)], CTOR_VA)
    one = next(iter(CTOR_CERTS))
    assert u.check({one: CTOR_CERTS[one]}, [one], CTOR_VA).signers == {one}
    with pytest.raises(SignatureError, match="no certificate"):
        u.check({}, CTOR_CERTS.keys(), CTOR_VA)


# ---------------------------------------------------------------------------------------------------------
# ours: encoding, signing, checking


def test_round_trip_sign_parse_check():
    c = consensus()
    s = signed_by(c, 0, 2, 4)
    doc = s.encode()
    u = parse_consensus(doc)
    assert u.unchecked == c and u.body == encode_consensus(c) and u.raw == doc
    assert u.check(CERTS, ids(5), VA) == s
    assert s.digest == c.digest == hashlib.sha256(encode_consensus(c) + b"directory-signature ").digest()
    text = doc.decode()
    assert text.startswith("network-status-version 3 microdesc\nvote-status consensus\nconsensus-method 35\n")
    assert "\nr relay1 " in text and " 2038-01-01 00:00:00 10.0.0.1 9001 0\nm " in text
    assert "\nw Bandwidth=100 Unmeasured=1\n" in text
    assert "\ndirectory-footer\ndirectory-signature sha256 " in text  # no weights were given
    sigs = re.findall(r"directory-signature sha256 ([0-9A-F]{40}) ([0-9A-F]{40})\n", text)
    assert sigs == [(a.v3ident.hex().upper(), a.cert.signing_key_digest.hex().upper()) for a in
                    (AUTHS[0], AUTHS[2], AUTHS[4])]


def test_line_order_is_c_tors():
    c = consensus(bandwidth_weights={"Wgg": 10000, "Wbd": 0}, shared_rand_previous=b"p" * 32,
                  recommended_relay_protocols=PROTO, required_relay_protocols="Link=4",
                  params={"hsdir_interval": 60, "bwweightscale": 10000})
    keywords = [it.keyword for it in netdoc.parse_items(encode_consensus(c), "c")]
    head = ["network-status-version", "vote-status", "consensus-method", "valid-after", "fresh-until",
            "valid-until", "voting-delay", "known-flags", "recommended-client-protocols",
            "recommended-relay-protocols", "required-client-protocols", "required-relay-protocols", "params",
            "shared-rand-previous-value", "shared-rand-current-value"]
    assert keywords[: len(head)] == head
    assert keywords[len(head):len(head) + 3] == ["dir-source", "contact", "vote-digest"]
    assert keywords[-8:] == ["r", "m", "s", "v", "pr", "w", "directory-footer", "bandwidth-weights"]
    text = encode_consensus(c).decode()
    assert "\nparams bwweightscale=10000 hsdir_interval=60\n" in text
    assert "\nbandwidth-weights Wbd=0 Wgg=10000\n" in text
    assert f"\nshared-rand-current-value 0 {'Y2Nj' * 10}Y2M=\n" in text  # padded base64, as C tor


def test_majority_of_configured_signatures():
    c = consensus()
    assert parse_consensus(signed_by(c, 0, 1, 2).encode()).check(CERTS, ids(5), VA)
    assert parse_consensus(signed_by(c, 0, 1, 2).encode()).check(CERTS, ids(4), VA)  # 3 of 4
    with pytest.raises(SignatureError, match="2 of the 5 configured authorities, needs 3"):
        parse_consensus(signed_by(c, 0, 1).encode()).check(CERTS, ids(5), VA)
    with pytest.raises(SignatureError, match="2 of the 4 configured authorities, needs 3"):
        parse_consensus(signed_by(c, 0, 1).encode()).check(CERTS, ids(4), VA)  # exactly half is too few
    with pytest.raises(SignatureError, match="needs 1"):
        parse_consensus(signed_by(c, 0).encode()).check(CERTS, [], VA)


def test_forged_signature_is_not_counted():
    c = consensus()
    doc = bytearray(signed_by(c, 0, 1, 2).encode())
    at = doc.index(b"-----BEGIN SIGNATURE-----\n") + 30  # inside the first signature's base64
    doc[at] = ord("A") if doc[at] != ord("A") else ord("B")
    with pytest.raises(SignatureError, match="2 of the 5 .*does not verify"):
        parse_consensus(bytes(doc)).check(CERTS, ids(5), VA)
    moved = signed_by(c, 0, 1, 2).encode().replace(b"hsdir_interval=60", b"hsdir_interval=61")
    with pytest.raises(SignatureError, match="0 of the 5"):
        parse_consensus(moved).check(CERTS, ids(5), VA)


def test_unknown_authority_is_not_counted():
    c = consensus(n_sources=6)
    doc = signed_by(c, 0, 1, 5).encode()  # AUTHS[5] has a dir-source but is not configured
    outsider = AUTHS[5].v3ident.hex().upper()
    with pytest.raises(SignatureError, match=f"2 of the 5 .*{outsider}: not a configured"):
        parse_consensus(doc).check(CERTS, ids(5), VA)
    assert parse_consensus(signed_by(c, 0, 1, 2, 5).encode()).check(CERTS, ids(5), VA).signers == set(ids(3))


def test_signature_without_dir_source():
    c = consensus(n_sources=3)
    sig = sign_consensus(encode_consensus(c), AUTHS[4].cert, AUTHS[4].signing)
    with pytest.raises(SignatureError, match="no dir-source"):
        SignedConsensus.unsigned(c).add_signature(sig, CERTS)
    # C tor rejects the whole document when a signature names an authority it does not list
    doc = signed_by(c, 0, 1).encode() + sig.encode()
    with pytest.raises(DecodeError, match="no dir-source"):
        parse_consensus(doc)


def test_certificate_problems():
    c = consensus()
    doc = signed_by(c, 0, 1, 2).encode()
    expired = dataclasses.replace(AUTHS[0].cert, expires=VA - 1)
    with pytest.raises(SignatureError, match="no current certificate"):
        parse_consensus(doc).check({**CERTS, AUTHS[0].v3ident: expired}, ids(4), VA)
    new_key = rsa.generate_private_key(65537, 1024)
    rotated = make_authority_cert(AUTHS[0].identity, new_key, T0 - 10, T0 + 10**6)
    with pytest.raises(SignatureError, match="names signing key"):
        parse_consensus(doc).check({**CERTS, AUTHS[0].v3ident: rotated}, ids(4), VA)
    with pytest.raises(SignatureError, match="checked against the certificate of"):
        parse_consensus(doc).check({**CERTS, AUTHS[0].v3ident: AUTHS[1].cert}, ids(4), VA)


def test_validity_time():
    s = parse_consensus(signed_by(consensus(), 0, 1, 2).encode())
    assert s.check(CERTS, ids(5), VA) and s.check(CERTS, ids(5), VU)
    with pytest.raises(ExpiredError, match="not valid until"):
        s.check(CERTS, ids(5), VA - 1)
    with pytest.raises(ExpiredError, match="expired"):
        s.check(CERTS, ids(5), VU + 1)
    # a node whose clock is off by up to `tolerance` (C tor's reasonably live consensus) still takes it
    assert s.check(CERTS, ids(5), VA - 600, tolerance=600) and s.check(CERTS, ids(5), VU + 600, tolerance=600)
    with pytest.raises(ExpiredError, match="not valid until"):
        s.check(CERTS, ids(5), VA - 601, tolerance=600)
    with pytest.raises(ExpiredError, match="expired"):
        s.check(CERTS, ids(5), VU + 601, tolerance=600)


def test_timing_minimums_of_a_testing_network_client():
    # ns_parse.c with TestingTorNetwork: valid-after + 10 <= fresh-until, valid-after + 20 <= valid-until,
    # voting-delay at least 2 2.
    assert consensus(fresh_until=VA + 10, valid_until=VA + 20, vote_delay=2, dist_delay=2)
    for kw, message in ((dict(fresh_until=VA + 9), "freshness"), (dict(valid_until=VA + 19), "liveness"),
                        (dict(vote_delay=1), "vote_delay"), (dict(dist_delay=1), "dist_delay")):
        with pytest.raises(LocalProtocolError, match=message):
            consensus(**kw)
    doc = signed_by(consensus(), 0, 1, 2).encode()
    short = re.sub(rb"fresh-until .*", b"fresh-until " + netdoc.format_time(VA + 9).encode(), doc)
    with pytest.raises(DecodeError, match="freshness"):
        parse_consensus(short)
    with pytest.raises(DecodeError, match="vote_delay"):
        parse_consensus(doc.replace(b"voting-delay 20 20", b"voting-delay 1 20"))


def test_add_signature():
    c = consensus()
    s = SignedConsensus.unsigned(c)
    sigs = [sign_consensus(s.body, a.cert, a.signing) for a in AUTHS[:3]]
    for sig in reversed(sigs):
        s = s.add_signature(parse_detached_signature(sig.encode()), CERTS)
    assert s.signatures == tuple(sigs)  # sorted by authority
    assert s.add_signature(sigs[0], CERTS) is s
    with pytest.raises(SignatureError, match="unknown authority"):
        s.add_signature(sigs[0], {})
    other = sign_consensus(encode_consensus(dataclasses.replace(c, vote_delay=21)), AUTHS[3].cert,
                           AUTHS[3].signing)
    with pytest.raises(SignatureError, match="does not verify"):
        s.add_signature(other, CERTS)
    with pytest.raises(LocalProtocolError):
        SignedConsensus(c, s.body, (sigs[0], sigs[0]))
    with pytest.raises(LocalProtocolError, match="without signatures"):
        SignedConsensus.unsigned(c).encode()
    with pytest.raises(LocalProtocolError, match="not the one"):
        sign_consensus(s.body, AUTHS[0].cert, AUTHS[1].signing)


def test_detached_signature():
    sig = sign_consensus(encode_consensus(consensus()), AUTHS[0].cert, AUTHS[0].signing)
    data = sig.encode()
    assert data.startswith(b"directory-signature sha256 " + AUTHS[0].v3ident.hex().upper().encode() + b" ")
    assert parse_detached_signature(data) == sig
    for bad in (data + data, data.replace(b"sha256", b"sha512"), data.replace(b"directory-signature", b"x"),
                b"", data.replace(b"SIGNATURE-----", b"BLOB-----")):
        with pytest.raises(DecodeError):
            parse_detached_signature(bad)
    sha1 = DirectorySignature(sig.v3ident, sig.signing_key_digest, bytes(128), "sha1")
    assert parse_detached_signature(sha1.encode()) == sha1


def test_sha1_signatures_count_too():
    c = consensus()
    body = encode_consensus(c)
    a = AUTHS[0]
    sha1 = DirectorySignature(a.v3ident, a.cert.signing_key_digest, tor_rsa.sign_digest(
        a.signing, hashlib.sha1(body + b"directory-signature ").digest()), "sha1")
    s = signed_by(c, 1, 2).add_signature(sha1, CERTS)
    assert parse_consensus(s.encode()).check(CERTS, ids(3), VA).signers == set(ids(3))


def test_hs_time_period_parameters():
    c = consensus(fresh_until=VA + 300, valid_until=VA + 900)
    assert c.voting_interval == 300
    assert c.hs_rotation_offset_minutes == 60  # 12 voting intervals
    assert c.testing_hs_period_minutes == 120  # 24 voting intervals: what TestingTorNetwork C tor uses
    assert c.hs_period_minutes == 60
    for value, expected in ((3, 5), (20000, 14400), (1440, 1440)):
        assert consensus(params={"hsdir_interval": value}).hs_period_minutes == expected
    assert consensus(params={}).hs_period_minutes == 1440
    assert consensus(fresh_until=VA + 10, valid_until=VA + 20).hs_rotation_offset_minutes == 2


@pytest.mark.parametrize("kw", [
    dict(valid_after=-1), dict(valid_until=10**12), dict(consensus_method=0), dict(known_flags={"a b"}),
    dict(params={"a=b": 1}), dict(params={"x": 2**31}), dict(bandwidth_weights={"W": -(2**31) - 1}),
    dict(recommended_client_protocols="Link=4,"), dict(required_relay_protocols="Link=64"),
    dict(shared_rand_current=b"x"), dict(dir_sources=()), dict(routers=(router(1), router(1))),
    dict(routers=("r",)), dict(dir_sources=sources(2) + sources(1)),
])
def test_impossible_consensus_values_are_local_errors(kw):
    with pytest.raises(LocalProtocolError):
        consensus(**kw)


@pytest.mark.parametrize("kw", [
    dict(nickname="a" * 20), dict(nickname="bad-name"), dict(node_id=bytes(19)), dict(address="::1"),
    dict(address="10.0.0.01"), dict(or_port=0), dict(dir_port=65536), dict(flags={"Fast Guard"}),
    dict(version=""), dict(version="x" * 121), dict(version="a  b"), dict(proto="Link"),
    dict(bandwidth=2**32), dict(md_digest=bytes(31)),
])
def test_impossible_router_values_are_local_errors(kw):
    with pytest.raises(LocalProtocolError):
        router(1, **kw)


def test_encoding_needs_a_method_we_write():
    assert encode_consensus(consensus(consensus_method=33))
    with pytest.raises(LocalProtocolError, match="33-35"):
        encode_consensus(consensus(consensus_method=32))


# ---------------------------------------------------------------------------------------------------------
# parsing: C tor's tolerance and its refusals


def test_unknown_lines_are_ignored():
    doc = signed_by(consensus(), 0, 1, 2).encode()
    extended = (doc.replace(b"known-flags", b"x-new-item 1 2\nknown-flags")
                .replace(b"\nm ", b"\nx-router-thing\n-----BEGIN X-----\nAAAA\n-----END X-----\nm ", 1)
                .replace(b"directory-footer\n", b"directory-footer\nx-footer y\n")
                .replace(b"\nw Bandwidth=100 Unmeasured=1", b"\nw Bandwidth=100 Measured=7 Unmeasured=1 X=y"))
    signed = parse_consensus(resign(extended, 0, 1, 2)).check(CERTS, ids(5), VA)
    assert signed.consensus == consensus()
    # unknown signature algorithms are skipped (C tor: "Unknown digest algorithm"), known ones still count
    odd = DirectorySignature(AUTHS[3].v3ident, bytes(20), bytes(128)).encode().replace(b"sha256", b"sha512")
    assert parse_consensus(doc + odd).check(CERTS, ids(5), VA).signers == set(ids(3))
    # a router without an "m" line is useless to a microdescriptor client: skipped
    no_m = re.sub(rb"(r relay1 .*\n)m .*\n", rb"\1", doc)
    assert [r.nickname for r in parse_consensus(no_m).unchecked.routers] == ["relay2"]
    # known-flags order is not checked in a consensus (C tor reads the line as one argument there)
    assert parse_consensus(doc.replace(b"known-flags Guard Running Valid",
                                       b"known-flags Valid Guard Running"))


def test_bad_shared_random_values_are_ignored():
    doc = signed_by(consensus(), 0, 1, 2).encode()
    bad = re.sub(rb"shared-rand-current-value 0 (\S+)", rb"shared-rand-current-value 0 !!!!", doc)
    assert parse_consensus(bad).unchecked.shared_rand_current is None  # C tor: warns, carries on


def _edit(data: bytes, old: bytes, new: bytes) -> bytes:
    assert old in data, old
    return data.replace(old, new, 1)


BAD = [
    (lambda d: _edit(d, b"3 microdesc", b"3"), "not the microdesc flavour"),
    (lambda d: _edit(d, b"3 microdesc", b"4 microdesc"), "network-status-version"),
    (lambda d: _edit(d, b"vote-status consensus", b"vote-status vote"), "vote-status"),
    (lambda d: b"x\n" + d, "begin with"),
    (lambda d: re.sub(rb"(valid-after .*\n)", rb"\1\1", d), "valid-after must appear"),
    (lambda d: re.sub(rb"known-flags .*\n", b"", d), "known-flags must appear"),
    (lambda d: re.sub(rb"valid-after .*", b"valid-after 2027-01-15 08:01:40 x", d), "needs YYYY"),
    (lambda d: _edit(d, b"voting-delay 20 20", b"voting-delay 20"), "voting-delay needs 2"),
    (lambda d: _edit(d, b"consensus-method 35", b"consensus-method 35 36"), "consensus-method needs 1-1"),
    (lambda d: _edit(d, b"params hsdir_interval=60", b"params z=1 a=2"), "not sorted"),
    (lambda d: _edit(d, b"params hsdir_interval=60", b"params a=1 a=2"), ""),
    (lambda d: _edit(d, b"params hsdir_interval=60", b"params hsdir_interval"), "bad element"),
    (lambda d: _edit(d, b"params hsdir_interval=60", b"params hsdir_interval=2147483648"), "outside"),
    (lambda d: _edit(d, b"required-client-protocols Cons=2 ", b"required-client-protocols Cons=2, "),
     "malformed"),
    (lambda d: re.sub(rb"shared-rand-current-value 0 ", b"shared-rand-current-value ", d), "needs 2-2"),
    (lambda d: re.sub(rb"\ncontact .*\n", b"\n", d, count=1), "contact and vote-digest"),
    (lambda d: re.sub(rb"(contact .*\n)", rb"\1\1", d, count=1), "out of place"),
    (lambda d: re.sub(rb"dir-source (\S+) (\S+)", rb"dir-source \1 ZZ", d, count=1), "hex"),
    (lambda d: re.sub(rb"dir-source .*\ncontact .*\nvote-digest .*\n", b"", d), "dir-source must appear"),
    (lambda d: re.sub(rb"(\nr relay1 .*\n)", rb"\1s Fast\n", d), "s must appear"),
    (lambda d: re.sub(rb"\npr .*\n", b"\n", d, count=1), "pr must appear"),
    (lambda d: re.sub(rb"\npr .*\n", b"\npr Link=4,\n", d, count=1), "malformed pr"),
    (lambda d: _edit(d, b"w Bandwidth=100 ", b"w Bandwidth=4294967296 "), "Bandwidth"),
    (lambda d: _edit(d, b" 10.0.0.1 9001 0", b" 10.0.0.1 9001"), "r needs 7"),
    (lambda d: _edit(d, b" 10.0.0.1 9001 0", b" 10.0.0.1 0 0"), "orport"),
    (lambda d: _edit(d, b" 10.0.0.1 9001 0", b" ::1 9001 0"), "address"),
    (lambda d: _edit(d, b"r relay1 ", b"r relay-1 "), "nickname"),
    (lambda d: _edit(d, b" 2038-01-01 00:00:00 10.0.0.1", b" 2038-13-01 00:00:00 10.0.0.1"), "bad time"),
    (lambda d: re.sub(rb"(r relay1 .*\n(?:.*\n){5})(r relay2 .*\n(?:.*\n){5})", rb"\2\1", d), "not sorted"),
    (lambda d: re.sub(rb"\nm (\S+)\n", rb"\nm \1AAAA\n", d, count=1), "microdescriptor digest"),
    (lambda d: _edit(d, b"\ns Guard", b"\ns Guard\n-----BEGIN X-----\nAA==\n-----END X-----"), "object"),
    (lambda d: _edit(d, b"directory-footer\n", b"directory-footer\ndirectory-footer\n"), "0-1 times"),
    (lambda d: d + b"x-after 1\n", "extraneous"),
    (lambda d: d[: d.index(b"directory-signature")], "no directory-signature"),
    (lambda d: _edit(d, b"BEGIN SIGNATURE", b"BEGIN SIG").replace(b"END SIGNATURE", b"END SIG", 1), "object"),
    (lambda d: re.sub(rb"directory-signature sha256 \S+", b"directory-signature sha256 00", d, count=1),
     "hex"),
    (lambda d: d.replace(b"directory-signature sha256", b"directory-signature sha512"), "known digest"),
    (lambda d: _edit(d, b"known-flags", b"directory-signatures x\nknown-flags"), "begins with directory-sig"),
    (lambda d: d.replace(b"\n", b"\r\n"), "CR"),
    (lambda d: b"", "begin with"),
]


@pytest.mark.parametrize(("mangle", "message"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_consensus_documents(mangle, message):
    data = mangle(signed_by(consensus(), 0, 1, 2).encode())
    with pytest.raises(DecodeError, match=re.escape(message) if message else None):
        parse_consensus(data)


TOLERATED = [
    lambda d: _edit(d, b"directory-footer\n", b""),  # optional
    lambda d: _edit(d, b"directory-footer\n", b"directory-footer\nx-directory-signature 1\n"),
    lambda d: _edit(d, b"known-flags", b"published 2027-01-01 00:00:00\nknown-flags"),  # a vote-only item
    lambda d: _edit(d, b"\nr relay1", b"\nx-header-end\nr relay1"),
]


@pytest.mark.parametrize("mangle", TOLERATED, ids=[str(i) for i in range(len(TOLERATED))])
def test_tolerated_changes_parse_and_only_the_signatures_fail(mangle):
    data = mangle(signed_by(consensus(), 0, 1, 2).encode())
    with pytest.raises(SignatureError):
        parse_consensus(data).check(CERTS, ids(5), VA)
    assert parse_consensus(resign(data, 0, 1, 2)).check(CERTS, ids(5), VA)


# ---------------------------------------------------------------------------------------------------------
# bandwidth weights (dir-spec 3.8.3, consensus method 26 and later)


@pytest.mark.parametrize("case", CTOR_WEIGHTS, ids=lambda c: f"{c['case']} G={c['G']} M={c['M']}")
def test_weights_computed_by_c_tor(case):
    expected = dict(kv.split("=") for kv in case["bandwidth-weights"].split())
    got = compute_bandwidth_weights(case["G"], case["M"], case["E"], case["D"], case["T"])
    assert got == {k: int(v) for k, v in expected.items()}


def test_weights_no_exits_no_guards():
    # Our testbed: every relay a middle. T = 4 + M' with E = G = D = 1: both classes scarce, and no solution
    # balances, so C tor writes no bandwidth-weights line (clients then weigh by bandwidth alone).
    routers = [router(i) for i in (1, 2, 3)]
    assert bandwidth_totals(routers) == (1, 601, 1, 1, 604)
    assert bandwidth_weights(routers) == {}
    # ... unless every bandwidth is 0: the C tor vector case (2b1)
    assert bandwidth_weights([router(i, bandwidth=0) for i in (1, 2)])["Wgd"] == 3333


def test_weights_no_exits_with_a_plentiful_guard():
    # G >= T/3, E < T/3, S + D < T/3: case 3a with exits scarce. Exit and guard+exit weights are 10000 (they
    # do not matter without exits); Wmg = 10000 (G - M) / 2G moves guard bandwidth to the middle.
    routers = [router(1, ("Guard", "Running", "Valid"), bandwidth=1000), router(2, bandwidth=100)]
    assert bandwidth_totals(routers) == (1001, 101, 1, 1, 1104)
    w = bandwidth_weights(routers)
    assert (w["Wee"], w["Wed"], w["Wmd"], w["Wgd"], w["Wme"]) == (10000, 10000, 0, 0, 0)
    assert (w["Wmg"], w["Wgg"]) == (4495, 5505)  # 9000000 // 2002 = 4495 (C integer division)
    assert (w["Wbg"], w["Wgm"], w["Wmm"], w["Wbm"]) == (w["Wmg"], w["Wgg"], 10000, 10000)


def test_weights_no_exits_with_a_scarce_guard():
    # G < T/3 and E < T/3, R + D < S: case 2a, all of D to the rarer class (exits).
    routers = [router(1, ("Guard", "Running", "Valid"), bandwidth=100), router(2, bandwidth=1000)]
    w = bandwidth_weights(routers)
    assert (w["Wgg"], w["Wee"], w["Wmg"], w["Wme"], w["Wmd"], w["Wed"], w["Wgd"]) == (
        10000, 10000, 0, 0, 0, 10000, 0)


def test_weights_scale_and_badexit():
    routers = [router(1, ("Guard", "Running", "Valid"), bandwidth=1000), router(2, bandwidth=100)]
    assert bandwidth_weights(routers, {"bwweightscale": 100})["Wgg"] == 56  # 100 - 90000 // 2002
    assert bandwidth_weights(routers, {"bwweightscale": 0})["Wmm"] == 1  # at least 1
    bad = router(3, ("BadExit", "Exit", "Running", "Valid"), bandwidth=500)
    assert bandwidth_totals([*routers, bad])[2] == 1  # a bad exit is no exit (method 11)
    assert bandwidth_totals([router(4, ("Exit", "Guard", "Running", "Valid"), bandwidth=7)])[3] == 8


# ---------------------------------------------------------------------------------------------------------
# hypothesis

_router = st.builds(
    ConsensusRouter, nickname=st.from_regex(r"[A-Za-z0-9]{1,19}", fullmatch=True),
    node_id=st.binary(min_size=20, max_size=20), address=st.ip_addresses(v=4).map(str),
    or_port=st.integers(1, 65535), dir_port=st.integers(0, 65535),
    flags=st.frozensets(st.sampled_from(["Exit", "Fast", "Guard", "HSDir", "Running", "Stable", "Valid"])),
    version=st.none() | st.from_regex(r"[!-~]{1,10}( [!-~]{1,10})?", fullmatch=True),
    proto=st.sampled_from(["", PROTO, "Link=1-5,7 X-y=", "A=0-63"]), bandwidth=st.integers(0, 2**32 - 1),
    md_digest=st.binary(min_size=32, max_size=32))


@given(routers=st.lists(_router, max_size=5, unique_by=lambda r: r.node_id),
       va=st.integers(0, 2**34) | st.integers(T0 - 80000, T0 + 10**6), fresh=st.integers(10, 10**6),
       valid=st.integers(20, 10**6),
       delays=st.tuples(st.integers(2, 10**6), st.integers(2, 10**6)),
       params=st.dictionaries(st.from_regex(r"[a-z_]{1,10}", fullmatch=True),
                              st.integers(-(2**31), 2**31 - 1), max_size=3),
       srv=st.none() | st.binary(min_size=32, max_size=32), n_sigs=st.integers(1, 3),
       method=st.integers(33, 35))
def test_round_trip_property(routers, va, fresh, valid, delays, params, srv, n_sigs, method):
    c = Consensus(va, va + fresh, va + max(fresh, valid), delays[0], delays[1], sources(3), tuple(routers),
                  method, frozenset({"Guard", "Valid"}), params, shared_rand_previous=srv,
                  bandwidth_weights=bandwidth_weights(routers, params))
    s = signed_by(c, *range(n_sigs))
    u = parse_consensus(s.encode())
    assert u.unchecked == c
    if n_sigs >= 2 and AUTHS[0].cert.published <= va <= AUTHS[0].cert.expires:
        assert u.check(CERTS, ids(3), va) == s


@given(st.binary(max_size=600))
def test_arbitrary_bytes_only_typed_errors(data):
    for parse in (parse_consensus, parse_detached_signature):
        try:
            parse(data)
        except RemoteProtocolError:
            pass


_SAMPLE = signed_by(consensus(), 0, 1, 2).encode()


@given(st.data())
def test_mutated_documents_only_typed_errors(data):
    raw = bytearray(CTOR_CONSENSUS if data.draw(st.booleans()) else _SAMPLE)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.sampled_from(b"\n -:=/+,A0a9\x00\xff"))
    try:
        parse_consensus(bytes(raw)).check({**CERTS, **CTOR_CERTS}, [*ids(3), *CTOR_CERTS], CTOR_VA)
    except RemoteProtocolError:
        pass


def test_fixture_time_is_inside_the_certificates():
    assert AUTHS[0].cert.published < T0 < AUTHS[0].cert.expires


def test_weights_case_1_neither_scarce():
    # dir-spec 3.8.3 case 1 by hand: Wgd = Wed = Wmd = 1/3, Wee = (E+G+M)/3E, Wmg = (2G-E-M)/3G.
    w = compute_bandwidth_weights(1000, 100, 1000, 100, 2200)
    assert (w["Wgd"], w["Wed"], w["Wmd"], w["Wee"], w["Wme"], w["Wmg"], w["Wgg"]) == (
        3333, 3333, 3333, 7000, 3000, 3000, 7000)
    assert compute_bandwidth_weights(0, 1, 1, 1, 3) == {}  # a class without bandwidth: no weights
