"""Relay descriptors, votes, consensus computation and consensus signatures (nodes/core/dirdocs.py)."""

import dataclasses
import hashlib
import itertools
import json
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from nodes.core.dirdocs import (
    MAX_DOCUMENT_BYTES,
    Consensus,
    ConsensusSignature,
    Flag,
    RelayDescriptor,
    RouterStatus,
    SignedConsensus,
    Vote,
    compute_consensus,
    make_relay_descriptor,
    make_vote,
    parse_consensus_signature,
    parse_relay_descriptor,
    parse_signed_consensus,
    parse_vote,
    relay_node_id,
    sign_consensus,
)
from nodes.core.errors import DecodeError, ExpiredError, LocalProtocolError, SignatureError

VECTORS = json.loads(Path(__file__).with_name("tor-vectors.json").read_text())
DOCS = Path(__file__).resolve().parents[2] / "docs" / "differences.md"

T0 = 1_700_000_000
VA, FU, VU = T0 + 100, T0 + 200, T0 + 300
UP = {Flag.Running, Flag.Valid}


def key(i: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([i]) * 32)


def pub(k: Ed25519PrivateKey) -> bytes:
    return k.public_key().public_bytes_raw()


AUTHS = [key(i) for i in range(1, 8)]
AUTH_IDS = [pub(k) for k in AUTHS]


def status(i: int, flags=UP, **kw) -> RouterStatus:
    fields = dict(nickname=f"relay{i}", identity=bytes([i]) * 32, ntor_onion_key=bytes([0x80 + i]) * 32,
                  address=f"10.0.0.{i}", or_port=9001, dir_port=0, bandwidth=1000 * i, published=T0,
                  flags=frozenset(flags))
    fields.update(kw)
    return RouterStatus(**fields)


def vote(auth: int, routers, **kw) -> Vote:
    times = dict(published=T0, valid_after=VA, fresh_until=FU, valid_until=VU)
    times.update(kw)
    return make_vote(AUTHS[auth], routers=routers, **times)


def descriptor(signer=None, **kw) -> RelayDescriptor:
    fields = dict(nickname="relay1", ntor_onion_key=bytes(32), address="10.0.0.3", or_port=9001, dir_port=0,
                  bandwidth=1_000_000, published=T0, platform="onionlab 0.1.0")
    fields.update(kw)
    return make_relay_descriptor(signer_private=signer or key(0x42), **fields)


def listed(c: Consensus) -> dict[bytes, RouterStatus]:
    return {r.identity[0]: r for r in c.routers}


# ---------------------------------------------------------------------------------------------------------
# published vectors


def test_identity_is_the_rfc8032_public_key():
    # RFC 8032 7.1 TEST 1 and 2 (tor-vectors.json "ed25519_rfc8032", via tor test_crypto.c): the identity a
    # descriptor carries is the Ed25519 public key of the seed that signs it, and the signature verifies.
    for case in VECTORS["ed25519_rfc8032"]["cases"]:
        signer = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(case["secret_key"]))
        d = descriptor(signer)
        assert d.identity.hex() == case["public_key"]
        assert parse_relay_descriptor(d.encode()).check(T0, 60) == d


def test_default_hs_parameters_are_tors():
    # tor-vectors.json "time_period" (rend-spec-v3 2.2.1 example): Tor's 1440-minute periods, 720 min offset.
    case = VECTORS["time_period"]["cases"][0]
    v = vote(0, [])
    assert (v.hs_period_minutes, v.hs_rotation_offset_minutes) == (
        case["period_length_minutes"], case["rotation_offset_minutes"])


def test_relay_node_id_is_sha1_of_identity():
    ident = bytes(range(32))
    assert relay_node_id(ident) == hashlib.sha1(ident).digest()
    assert len(relay_node_id(ident)) == 20
    with pytest.raises(LocalProtocolError):
        relay_node_id(bytes(20))


def test_docs_examples_are_what_the_code_produces():
    blocks = re.findall(r"```\n(onionlab-.*?)```", DOCS.read_text(), re.S)
    d = descriptor(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
    rs = RouterStatus.from_descriptor(d, {"Running", "Valid", "HSDir"})
    votes = [make_vote(k, published=T0, valid_after=VA, fresh_until=FU, valid_until=VU, routers=[rs],
                       shared_rand_current=b"C" * 32) for k in AUTHS[:3]]
    c = compute_consensus(votes, 3)
    signed = SignedConsensus(c, tuple(sign_consensus(c, k) for k in AUTHS[:2]))
    assert [b.encode() for b in blocks] == [d.encode(), votes[0].encode(), signed.encode()]


# ---------------------------------------------------------------------------------------------------------
# relay descriptors


def test_descriptor_round_trip_and_check():
    d = descriptor()
    assert d.identity == pub(key(0x42))
    assert parse_relay_descriptor(d.encode()).check(T0 + 10, 3600) == d
    assert d.encode().startswith(b"onionlab-relay-descriptor 1\nnickname relay1\n")


def test_descriptor_forgery_is_rejected():
    d = descriptor()
    flipped = bytearray(d.signature)
    flipped[5] ^= 1
    for forged in (dataclasses.replace(d, signature=bytes(flipped)),
                   dataclasses.replace(d, bandwidth=d.bandwidth + 1),
                   dataclasses.replace(d, identity=pub(key(0x43)))):  # someone else's identity
        with pytest.raises(SignatureError):
            parse_relay_descriptor(forged.encode()).check(T0, 3600)


def test_descriptor_staleness():
    u = parse_relay_descriptor(descriptor().encode())
    assert u.check(T0 + 3600, 3600)  # exactly max_age old is still fine
    with pytest.raises(ExpiredError, match="ago"):
        u.check(T0 + 3601, 3600)
    assert u.check(T0 - 60, 3600)  # the default skew allows 60 s in the future
    with pytest.raises(ExpiredError, match="future"):
        u.check(T0 - 61, 3600)
    with pytest.raises(ExpiredError):
        u.check(T0 - 10, 3600, max_skew=5)


@pytest.mark.parametrize("kw", [
    dict(nickname="a" * 20), dict(nickname="bad-name"), dict(nickname=""), dict(address="10.0.0.256"),
    dict(address="010.0.0.1"), dict(address="relay.example"), dict(address="::0:1"), dict(or_port=0),
    dict(or_port=65536), dict(dir_port=-1), dict(bandwidth=-1), dict(published=True), dict(platform=""),
    dict(platform="x" * 129), dict(platform="caf\u00e9"), dict(platform="a\nb"),
    dict(ntor_onion_key=bytes(31)),
])
def test_impossible_descriptor_values_are_local_errors(kw):
    with pytest.raises(LocalProtocolError):
        descriptor(**kw)


def test_ipv6_addresses_work():
    d = descriptor(address="2001:db8::1")
    assert parse_relay_descriptor(d.encode()).check(T0, 60).address == "2001:db8::1"


# ---------------------------------------------------------------------------------------------------------
# votes


def test_vote_round_trip_and_check():
    v = vote(0, [status(2, UP | {Flag.HSDir}), status(1)], shared_rand_previous=b"p" * 32)
    assert [r.identity[0] for r in v.routers] == [1, 2]  # kept sorted by identity
    assert parse_vote(v.encode()).check(AUTH_IDS, T0) == v
    assert parse_vote(v.encode()).check({AUTH_IDS[0]: "moria"}, VU) == v  # a Mapping keyed by id works


def test_vote_checks():
    v = vote(0, [status(1)])
    with pytest.raises(SignatureError, match="unknown authority"):
        parse_vote(v.encode()).check(AUTH_IDS[1:], T0)
    with pytest.raises(SignatureError):
        parse_vote(dataclasses.replace(v, valid_until=VU + 1).encode()).check(AUTH_IDS, T0)
    with pytest.raises(ExpiredError):
        parse_vote(v.encode()).check(AUTH_IDS, VU + 1)
    with pytest.raises(ExpiredError, match="future"):
        parse_vote(v.encode()).check(AUTH_IDS, T0 - 61)


@pytest.mark.parametrize("kw", [
    dict(valid_after=FU), dict(fresh_until=VU), dict(published=-1), dict(hs_period_minutes=0),
    dict(hs_rotation_offset_minutes=-1), dict(shared_rand_current=bytes(31)),
])
def test_impossible_vote_values_are_local_errors(kw):
    with pytest.raises(LocalProtocolError):
        vote(0, [], **kw)


def test_duplicate_relay_in_a_vote_is_a_local_error():
    with pytest.raises(LocalProtocolError):
        vote(0, [status(1), status(1, bandwidth=5)])
    with pytest.raises(LocalProtocolError):
        status(1, flags={"Exit"})


def test_oversize_document_is_a_local_error():
    many = [status(1, identity=i.to_bytes(32, "big")) for i in range(2000)]
    with pytest.raises(LocalProtocolError, match="limit"):
        vote(0, many)


# ---------------------------------------------------------------------------------------------------------
# consensus computation


def test_consensus_from_three_votes_listing_and_flags():
    # n = 3: a relay needs 2 listings; a flag needs more than half of the listing votes.
    votes = [
        vote(0, [status(1, UP | {Flag.Guard, Flag.HSDir}), status(2, UP | {Flag.Fast, Flag.Stable}),
                 status(3)]),
        vote(1, [status(1, UP | {Flag.Guard}), status(2, UP | {Flag.Fast})]),
        vote(2, [status(1, UP), status(4)]),
    ]
    c = compute_consensus(votes, 3)
    got = listed(c)
    assert set(got) == {1, 2}  # relay 3 and 4: one listing each
    assert got[1].flags == UP | {Flag.Guard}  # Guard 2 of 3; HSDir 1 of 3
    assert got[2].flags == UP | {Flag.Fast}  # Fast 2 of 2; Stable 1 of 2 is exactly half: not set


def test_consensus_from_five_votes_listing_and_flags():
    def r(i, *extra):
        return status(i, UP | set(extra))

    votes = [
        vote(0, [r(1, Flag.HSDir, Flag.Stable), r(2, Flag.HSDir), r(3), r(4, Flag.Fast)]),
        vote(1, [r(1, Flag.HSDir, Flag.Stable), r(2, Flag.HSDir), r(3), r(4, Flag.Fast)]),
        vote(2, [r(1, Flag.HSDir), r(2, Flag.HSDir), r(3)]),
        vote(3, [r(1), r(2), r(4, Flag.Fast)]),
        vote(4, [r(1, Flag.Stable)]),
    ]
    got = listed(compute_consensus(votes, 5))
    assert set(got) == {1, 2, 3, 4}
    assert got[1].flags == UP | {Flag.HSDir, Flag.Stable}  # each set by 3 of 5
    assert got[2].flags == UP | {Flag.HSDir}  # 3 of 4 listing votes
    assert got[4].flags == UP | {Flag.Fast}  # 3 of 3
    # With 6 configured authorities and the same 5 votes, 3 listings is exactly half: relays 3 and 4 drop out.
    assert set(listed(compute_consensus(votes, 6))) == {1, 2}
    # Relay 2 is listed by 4; drop HSDir from one vote: 2 of 4 is exactly half, not set.
    votes[0] = vote(0, [r(1), r(2), r(3), r(4, Flag.Fast)])
    assert Flag.HSDir not in listed(compute_consensus(votes, 5))[2].flags


def test_relays_without_running_and_valid_are_left_out():
    votes = [vote(0, [status(1), status(2)]),
             vote(1, [status(1, {Flag.Valid}), status(2, {Flag.Running})]),
             vote(2, [status(1, {Flag.Valid}), status(2)])]
    # relay 1: Running 1 of 3; relay 2: Valid 2 of 3, Running 3 of 3.
    assert set(listed(compute_consensus(votes, 3))) == {2}


def test_descriptor_fields_majority_then_newest_then_smallest():
    a = dict(address="10.0.0.1")
    b = dict(address="10.0.0.2")
    newer = dict(address="10.0.0.3", published=T0 + 50)
    # most common wins even when older
    votes = [vote(0, [status(1, **a)]), vote(1, [status(1, **a)]), vote(2, [status(1, **newer)])]
    assert listed(compute_consensus(votes, 3))[1].address == "10.0.0.1"
    # a tie goes to the most recently published
    votes = [vote(0, [status(1, **a)]), vote(1, [status(1, **newer)])]
    assert listed(compute_consensus(votes, 3))[1].published == T0 + 50
    # same published time: the smallest router line ("10.0.0.1" < "10.0.0.2")
    votes = [vote(0, [status(1, **b)]), vote(1, [status(1, **a)])]
    assert listed(compute_consensus(votes, 3))[1].address == "10.0.0.1"


def test_bandwidth_and_times_are_low_medians():
    bws = [40, 10, 30, 20]
    votes = [vote(i, [status(1, bandwidth=bw)], valid_after=VA + i, fresh_until=FU + 10 * i,
                  valid_until=VU + 100 * i) for i, bw in enumerate(bws)]
    votes[3] = make_vote(AUTHS[3], published=T0, valid_after=VA + 3, fresh_until=FU + 30,
                         valid_until=VU + 300, routers=[status(1, bandwidth=20)], hs_period_minutes=5,
                         hs_rotation_offset_minutes=1)
    c = compute_consensus(votes, 4)
    assert c.routers[0].bandwidth == 20  # sorted 10 20 30 40: the low median
    assert (c.valid_after, c.fresh_until, c.valid_until) == (VA + 1, FU + 10, VU + 100)
    assert (c.hs_period_minutes, c.hs_rotation_offset_minutes) == (1440, 720)  # low medians: 5 is one of 4


def test_shared_random_value_needs_a_majority_of_all_authorities():
    s1, s2 = b"1" * 32, b"2" * 32
    votes = [vote(0, [], shared_rand_current=s1), vote(1, [], shared_rand_current=s1),
             vote(2, [], shared_rand_current=s2, shared_rand_previous=s2)]
    c = compute_consensus(votes, 3)
    assert (c.shared_rand_current, c.shared_rand_previous) == (s1, None)
    assert compute_consensus(votes, 4).shared_rand_current is None  # 2 of 4 is not a majority


def test_consensus_rejects_impossible_vote_sets():
    v0, v1 = vote(0, []), vote(1, [])
    for votes, n in (([], 3), ([v0, v0], 3), ([v0, v1], 1), ([v0], 0)):
        with pytest.raises(LocalProtocolError):
            compute_consensus(votes, n)


def _disagreeing_votes():
    return [
        vote(0, [status(1, UP | {Flag.Guard}, bandwidth=5), status(2), status(3, address="10.9.9.9")]),
        vote(1, [status(1, bandwidth=7), status(3, UP | {Flag.HSDir}), status(4)]),
        vote(2, [status(1, UP | {Flag.Guard, Flag.Fast}), status(2, published=T0 + 1), status(4)],
             valid_after=VA + 5, shared_rand_current=b"s" * 32),
        vote(3, [status(2, UP | {Flag.Stable}), status(3), status(4, UP | {Flag.HSDir})],
             valid_until=VU + 9, shared_rand_current=b"s" * 32),
        vote(4, [status(1), status(2, published=T0 + 1), status(3, UP | {Flag.HSDir})],
             shared_rand_current=b"s" * 32),
    ]


def test_consensus_is_independent_of_vote_order_and_deterministic():
    votes = _disagreeing_votes()
    expected = compute_consensus(votes, 5).signing_bytes()
    assert compute_consensus(votes, 5).signing_bytes() == expected
    assert compute_consensus(votes, 5).digest() == hashlib.sha256(expected).digest()
    for perm in itertools.islice(itertools.permutations(votes), 0, None, 7):
        assert compute_consensus(perm, 5).signing_bytes() == expected
    got = listed(compute_consensus(votes, 5))
    assert set(got) == {1, 2, 3, 4}
    assert got[2].published == T0 + 1  # 2 listings at T0 + 1 against 2 at T0: newest wins the tie
    assert got[3].address == "10.0.0.3"  # 3 of 4 listings
    assert Flag.HSDir not in got[3].flags  # 2 of 4 listings: exactly half


# ---------------------------------------------------------------------------------------------------------
# consensus signatures


@pytest.fixture(scope="module")
def consensus() -> Consensus:
    return compute_consensus(_disagreeing_votes(), 5)


def signed_by(c: Consensus, *auths: int, extra=()) -> SignedConsensus:
    return SignedConsensus(c, tuple(sign_consensus(c, AUTHS[i]) for i in auths) + tuple(extra))


def test_majority_of_signatures_is_accepted(consensus):
    keys = AUTH_IDS[:5]
    assert parse_signed_consensus(signed_by(consensus, 0, 2, 4).encode()).check(keys, VA) == consensus
    assert signed_by(consensus, 0, 1, 2, 3, 4).check(keys, VU) == consensus
    assert signed_by(consensus, 0, 1, 2).check(AUTH_IDS[:4], VA)  # n = 4 needs 3


def test_too_few_signatures_are_rejected(consensus):
    with pytest.raises(SignatureError, match="2 valid signatures of 5 authorities, needs 3"):
        signed_by(consensus, 0, 1).check(AUTH_IDS[:5], VA)
    with pytest.raises(SignatureError, match="2 valid signatures of 4 authorities, needs 3"):
        signed_by(consensus, 0, 1).check(AUTH_IDS[:4], VA)  # exactly half is not enough
    with pytest.raises(SignatureError):
        signed_by(consensus, 0).check([], VA)


def test_forged_signature_is_not_counted(consensus):
    good = signed_by(consensus, 0, 1, 2)
    bad = bytearray(good.signatures[1].signature)
    bad[0] ^= 1
    forged = (good.signatures[0], ConsensusSignature(good.signatures[1].authority_id, bytes(bad)),
              good.signatures[2])
    with pytest.raises(SignatureError, match="2 valid signatures of 5"):
        parse_signed_consensus(SignedConsensus(consensus, forged).encode()).check(AUTH_IDS[:5], VA)
    other = dataclasses.replace(consensus, fresh_until=consensus.fresh_until + 1)
    moved = SignedConsensus(other, good.signatures)  # signatures over a different consensus
    with pytest.raises(SignatureError, match="0 valid"):
        moved.check(AUTH_IDS[:5], VA)


def test_unknown_authority_signature_is_not_counted(consensus):
    outsider = sign_consensus(consensus, key(0x99))
    with pytest.raises(SignatureError, match="2 valid signatures of 5"):
        signed_by(consensus, 0, 1, extra=[outsider]).check(AUTH_IDS[:5], VA)
    assert signed_by(consensus, 0, 1, 2, extra=[outsider]).check(AUTH_IDS[:5], VA)


def test_consensus_validity_time(consensus):
    s = signed_by(consensus, 0, 1, 2)
    assert s.check(AUTH_IDS[:5], consensus.valid_after) and s.check(AUTH_IDS[:5], consensus.valid_until)
    with pytest.raises(ExpiredError, match="not valid until"):
        s.check(AUTH_IDS[:5], consensus.valid_after - 1)
    with pytest.raises(ExpiredError, match="expired"):
        s.check(AUTH_IDS[:5], consensus.valid_until + 1)


def test_signatures_added_after_the_fact(consensus):
    keys = AUTH_IDS[:5]
    s = signed_by(consensus, 3)
    for i in (1, 0):
        detached = parse_consensus_signature(sign_consensus(consensus, AUTHS[i]).encode())
        s = s.add_signature(detached, keys)
    assert [x.authority_id for x in s.signatures] == sorted(AUTH_IDS[i] for i in (0, 1, 3))
    assert s.add_signature(sign_consensus(consensus, AUTHS[0]), keys) == s  # idempotent
    assert s.check(keys, VA) == consensus
    with pytest.raises(SignatureError, match="unknown authority"):
        s.add_signature(sign_consensus(consensus, key(0x99)), keys)
    wrong = sign_consensus(dataclasses.replace(consensus, valid_until=consensus.valid_until + 1), AUTHS[2])
    with pytest.raises(SignatureError):
        s.add_signature(wrong, keys)


def test_duplicate_signatures_are_local_errors(consensus):
    sig = sign_consensus(consensus, AUTHS[0])
    with pytest.raises(LocalProtocolError):
        SignedConsensus(consensus, (sig, sig))


# ---------------------------------------------------------------------------------------------------------
# round trips (hypothesis)

_nickname = st.from_regex(r"[A-Za-z0-9]{1,19}", fullmatch=True)
_address = st.ip_addresses().map(str).filter(lambda a: "%" not in a)
_u63 = st.integers(0, 2**63 - 1)
_b32 = st.binary(min_size=32, max_size=32)
_seed = st.binary(min_size=32, max_size=32).map(Ed25519PrivateKey.from_private_bytes)
_router = st.builds(RouterStatus, nickname=_nickname, identity=_b32, ntor_onion_key=_b32, address=_address,
                    or_port=st.integers(1, 65535), dir_port=st.integers(0, 65535), bandwidth=_u63,
                    published=_u63, flags=st.frozensets(st.sampled_from(list(Flag))))
_routers = st.lists(_router, max_size=6, unique_by=lambda r: r.identity)
_period = st.tuples(st.integers(0, 2**62), st.integers(1, 2**20), st.integers(1, 2**20)).map(
    lambda t: (t[0], t[0] + t[1], t[0] + t[1] + t[2]))
_hs = dict(hs_period_minutes=st.integers(1, 2**31 - 1), hs_rotation_offset_minutes=st.integers(0, 2**31 - 1),
           shared_rand_previous=st.none() | _b32, shared_rand_current=st.none() | _b32)


@given(signer=_seed, nickname=_nickname, ntor=_b32, address=_address, or_port=st.integers(1, 65535),
       dir_port=st.integers(0, 65535), bandwidth=_u63, published=st.integers(0, 2**62),
       platform=st.from_regex(r"[\x20-\x7e]{1,128}", fullmatch=True))
def test_descriptor_round_trip(signer, nickname, ntor, address, or_port, dir_port, bandwidth, published,
                               platform):
    d = make_relay_descriptor(nickname=nickname, ntor_onion_key=ntor, address=address, or_port=or_port,
                              dir_port=dir_port, bandwidth=bandwidth, published=published, platform=platform,
                              signer_private=signer)
    data = d.encode()
    assert parse_relay_descriptor(data).check(published, 0, max_skew=0) == d
    assert parse_relay_descriptor(data).unchecked.encode() == data


@given(signer=_seed, routers=_routers, published=_u63, period=_period, hs=st.fixed_dictionaries(_hs))
def test_vote_round_trip(signer, routers, published, period, hs):
    va, fu, vu = period
    v = make_vote(signer, published=published, valid_after=va, fresh_until=fu, valid_until=vu,
                  routers=routers, **hs)
    assert parse_vote(v.encode()).check([v.authority_id], vu, max_skew=max(0, published - vu)) == v


@given(routers=_routers, period=_period, hs=st.fixed_dictionaries(_hs), n_sigs=st.integers(0, 3))
def test_signed_consensus_round_trip(routers, period, hs, n_sigs):
    va, fu, vu = period
    c = Consensus(va, fu, vu, tuple(routers), **hs)
    s = signed_by(c, *range(n_sigs))
    data = s.encode()
    assert parse_signed_consensus(data) == s
    assert parse_signed_consensus(data).encode() == data
    if n_sigs >= 2:
        assert s.check(AUTH_IDS[:3], va) == c


@given(authority=_b32, sig=st.binary(min_size=64, max_size=64))
def test_consensus_signature_round_trip(authority, sig):
    s = ConsensusSignature(authority, sig)
    assert parse_consensus_signature(s.encode()) == s


@given(votes=st.lists(st.builds(lambda k, routers: (k, routers), st.integers(0, 4), _routers), min_size=1,
                      max_size=5, unique_by=lambda kv: kv[0]),
       order=st.randoms(use_true_random=False))
def test_consensus_order_independence_property(votes, order):
    built = [vote(k, [dataclasses.replace(r, flags=r.flags | UP) if r.bandwidth % 2 else r for r in rs])
             for k, rs in votes]
    shuffled = list(built)
    order.shuffle(shuffled)
    assert compute_consensus(shuffled, 5).signing_bytes() == compute_consensus(built, 5).signing_bytes()


# ---------------------------------------------------------------------------------------------------------
# parse errors are typed


def _edit(data: bytes, old: bytes, new: bytes) -> bytes:
    assert old in data
    return data.replace(old, new, 1)


@pytest.fixture(scope="module")
def samples(consensus):
    return {
        "descriptor": descriptor().encode(),
        "vote": vote(0, [status(1, UP | {Flag.HSDir}), status(2)], shared_rand_current=b"c" * 32).encode(),
        "consensus": signed_by(consensus, 0, 1).encode(),
        "signature": sign_consensus(consensus, AUTHS[0]).encode(),
    }


PARSERS = {"descriptor": parse_relay_descriptor, "vote": parse_vote, "consensus": parse_signed_consensus,
           "signature": parse_consensus_signature}

BAD = [
    ("descriptor", lambda d: d + b"contact me\n", "unknown keyword"),
    ("descriptor", lambda d: _edit(d, b"dir-port 0\n", b"dir-port 0\ndir-port 0\n"), "duplicate"),
    ("descriptor", lambda d: _edit(d, b"dir-port 0\n", b""), "expected 'dir-port'"),
    ("descriptor", lambda d: _edit(d, b"or-port 9001\ndir-port 0\n", b"dir-port 0\nor-port 9001\n"), ""),
    ("descriptor", lambda d: _edit(d, b"onionlab-relay-descriptor 1", b"onionlab-relay-descriptor 2"),
     "version"),
    ("descriptor", lambda d: re.sub(rb"identity .", b"identity !", d), "base64"),
    ("descriptor", lambda d: _edit(d, b"identity ", b"identity A"), "base64"),
    ("descriptor", lambda d: re.sub(rb"ntor-onion-key (\S+)A\n", rb"ntor-onion-key \1B\n", d),
     "non-canonical"),
    ("descriptor", lambda d: _edit(d, b"relay1", b"r\xc3\xa9lay1"), "ASCII"),
    ("descriptor", lambda d: _edit(d, b"relay1\n", b"relay1\r\n"), "ASCII"),
    ("descriptor", lambda d: d[:-1], "newline"),
    ("descriptor", lambda d: d + b"\n", "keyword"),
    ("descriptor", lambda d: _edit(d, b"or-port 9001", b"or-port 09001"), "decimal"),
    ("descriptor", lambda d: _edit(d, b"or-port 9001", b"or-port +9001"), "decimal"),
    ("descriptor", lambda d: _edit(d, b"or-port 9001", b"or-port 99999"), "or_port"),
    ("descriptor", lambda d: _edit(d, b"published 1700000000", b"published 99999999999999999999"), "decimal"),
    ("descriptor", lambda d: _edit(d, b"address 10.0.0.3", b"address 10.0.0.03"), "address"),
    ("descriptor", lambda d: _edit(d, b"nickname relay1", b"nickname  relay1"), "nickname"),
    ("descriptor", lambda d: _edit(d, b"platform onionlab 0.1.0", b"platform "), "platform"),
    ("descriptor", lambda d: d[: d.index(b"signature")], "missing 'signature'"),
    ("descriptor", lambda d: b"", "newline"),
    ("descriptor", lambda d: d + b"x" * MAX_DOCUMENT_BYTES, "limit"),
    ("vote", lambda d: _edit(d, b"flags HSDir Running Valid", b"flags Running HSDir Valid"), "canonical"),
    ("vote", lambda d: _edit(d, b"flags HSDir", b"flags Exit"), "unknown flag"),
    ("vote", lambda d: _edit(d, b"flags HSDir", b"flags Valid"), "duplicate flag"),
    ("vote", lambda d: _edit(d, b"flags HSDir ", b"flags  "), "unknown flag"),
    ("vote", lambda d: _edit(d, b"\nflags ", b"\n"), ""),
    ("vote", lambda d: _edit(d, b"valid-after ", b"valid-after 1"), "valid_after < fresh_until"),
    ("vote", lambda d: re.sub(rb"(shared-rand-current .*\n)", rb"\1\1", d), "duplicate"),
    ("vote", lambda d: re.sub(rb"shared-rand-current (.*\n)", rb"\g<0>shared-rand-previous \1", d),
     "found 'shared-rand-previous'"),
    ("vote", lambda d: _edit(d, b" 9001 ", b" 9001 0 "), "arguments"),
    ("vote", lambda d: re.sub(rb"(router .*\nflags .*\n)(router .*\nflags .*\n)", rb"\2\1", d), "canonical"),
    ("vote", lambda d: re.sub(rb"(router .*\nflags .*\n)", rb"\1\1", d), "twice"),
    ("consensus", lambda d: re.sub(rb"(directory-signature .*\n)(directory-signature .*\n)", rb"\2\1", d),
     "canonical"),
    ("consensus", lambda d: re.sub(rb"(directory-signature .*\n)", rb"\1\1", d), "two signatures"),
    ("consensus", lambda d: d + b"router x\n", "misplaced"),
    ("consensus", lambda d: _edit(d, b"onionlab-consensus 1\n", b"onionlab-vote 1\n"), "unknown keyword"),
    ("signature", lambda d: d + d[d.index(b"\n") + 1:], "misplaced"),
    ("signature", lambda d: _edit(d, b"directory-signature ", b"directory-signature x"), ""),
]


@pytest.mark.parametrize(("doc", "mangle", "message"), BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_documents_are_decode_errors(samples, doc, mangle, message):
    with pytest.raises(DecodeError, match=re.escape(message) if message else None):
        PARSERS[doc](mangle(samples[doc]))


def test_every_sample_parses(samples):
    for name, data in samples.items():
        PARSERS[name](data)
