"""nodes.core.vote: our signed internal vote and the consensus computation (rules ported from dirdocs)."""

import dataclasses
import hashlib
import itertools
import re

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st

from nodes.core import netdoc
from nodes.core.authcert import make_authority_cert
from nodes.core.consensus import Consensus, encode_consensus, parse_consensus
from nodes.core.errors import (
    DecodeError,
    ExpiredError,
    LocalProtocolError,
    RemoteProtocolError,
    SignatureError,
)
from nodes.core.vote import (
    RECOMMENDED_PROTOCOLS,
    REQUIRED_PROTOCOLS,
    VOTE_FLAGS,
    DirAuthority,
    Vote,
    compute_consensus,
    make_vote,
    parse_vote,
)
from tests.unit.dirspec_fixtures import (
    AUTHS,
    CERTS,
    FU,
    T0,
    UP,
    VA,
    VU,
    configs,
    ids,
    node_id,
    relay,
    signed_by,
    vote,
)


def listed(c: Consensus) -> dict[int, object]:
    """Consensus routers by relay number (relay i is nicknamed relayi)."""
    return {int(r.nickname[5:]): r for r in c.routers}


# ---------------------------------------------------------------------------------------------------------
# the vote document


def test_vote_round_trip_and_check():
    v = vote(0, [relay(2, UP | {"HSDir"}), relay(1)], shared_rand_previous=b"p" * 32, params={"x": -3},
             hs_period_minutes=30)
    assert [r.node_id for r in v.routers] == sorted(node_id(i) for i in (1, 2))
    data = v.encode()
    assert parse_vote(data).check(ids(3), T0) == v
    text = data.decode()
    assert text.startswith("onionlab-vote 1\npublished 2027-01-15 08:00:00\n"
                           "valid-after 2027-01-15 08:01:40\n")
    assert "\nparams hsdir_interval=30 x=-3\n" in text
    assert "\ndir-key-certificate-version 3\n" in text and AUTHS[0].cert.raw.decode() in text
    assert re.search(r"\nr relay1 \S{27} 2027-01-15 08:00:00 10\.0\.0\.1 9001 0\n"
                     r"id ed25519 \S{43}\nm \S{43}\ns Running Valid\nv onionlab 0\.1\.0\n"
                     r"pr Cons=2 .*\nw Bandwidth=100\n", text)
    assert "\ndirectory-signature sha256 " + AUTHS[0].v3ident.hex().upper() in text
    assert v.authority == AUTHS[0].v3ident
    assert v.digest == hashlib.sha1(v.body() + b"directory-signature ").digest()


def test_vote_checks():
    v = vote(0, [relay(1)])
    data = v.encode()
    with pytest.raises(SignatureError, match="unknown authority"):
        parse_vote(data).check(ids(3)[1:], T0)
    with pytest.raises(SignatureError, match="does not verify"):
        parse_vote(data.replace(b"Bandwidth=100", b"Bandwidth=101")).check(ids(3), T0)
    with pytest.raises(ExpiredError, match="valid until"):
        parse_vote(data).check(ids(3), VU + 1)
    assert parse_vote(data).check(ids(3), VU)
    with pytest.raises(ExpiredError, match="future"):
        parse_vote(data).check(ids(3), T0 - 61)
    with pytest.raises(ExpiredError, match="certificate"):  # the certificate expired
        parse_vote(vote(0, [], valid_until=T0 + 40 * 86400).encode()).check(ids(3), T0 + 31 * 86400)


def test_vote_signed_by_another_signing_key_fails():
    a = AUTHS[0]
    other = rsa.generate_private_key(65537, 1024)
    cert = make_authority_cert(a.identity, other, T0 - 10, T0 + 86400)
    v = make_vote(cert, other, published=T0, valid_after=VA, fresh_until=FU, valid_until=VU, vote_delay=20,
                  dist_delay=20, routers=[])
    assert parse_vote(v.encode()).check(ids(1), T0).cert == cert  # a new signing key, certified: fine
    mixed = v.encode().replace(cert.raw, a.cert.raw)  # the old certificate with the new key's signature
    with pytest.raises(DecodeError):  # names another signing key digest than the certificate's
        parse_vote(mixed)
    with pytest.raises(LocalProtocolError, match="not the one"):
        make_vote(a.cert, other, published=T0, valid_after=VA, fresh_until=FU, valid_until=VU, vote_delay=20,
                  dist_delay=20, routers=[])


@pytest.mark.parametrize("kw", [
    dict(fresh_until=VA + 9), dict(valid_until=FU + 9), dict(vote_delay=1), dict(dist_delay=1),
    dict(hs_period_minutes=0), dict(params={"hsdir_interval": 5}), dict(params={"x": 2**31}),
    dict(shared_rand_current=b"x"), dict(published=-1),
])
def test_impossible_vote_values_are_local_errors(kw):
    with pytest.raises(LocalProtocolError):
        vote(0, [], **kw)


@pytest.mark.parametrize("kw", [
    dict(flags={"Running", "MiddleOnly"}), dict(ed25519_identity=bytes(31)), dict(address="::1"),
    dict(or_port=0), dict(bandwidth=2**32), dict(proto="Relay=1-"), dict(version=" x"),
    dict(published=10**12),
])
def test_impossible_relay_values_are_local_errors(kw):
    with pytest.raises(LocalProtocolError):
        relay(1, **kw)


def test_duplicate_relays_in_a_vote_are_local_errors():
    with pytest.raises(LocalProtocolError, match="twice"):
        vote(0, [relay(1), relay(1, bandwidth=5)])
    with pytest.raises(LocalProtocolError, match="ed25519"):
        vote(0, [relay(1), relay(2, ed25519_identity=relay(1).ed25519_identity)])


def _edit(data: bytes, old: bytes, new: bytes) -> bytes:
    assert old in data, old
    return data.replace(old, new, 1)


BAD = [
    (lambda d: _edit(d, b"onionlab-vote 1", b"onionlab-vote 2"), "begin with"),
    (lambda d: _edit(d, b"voting-delay 20 20", b"voting-delay 20  20"), "canonical"),
    (lambda d: _edit(d, b"voting-delay 20 20", b"voting-delay 020 20"), "canonical"),
    (lambda d: _edit(d, b"voting-delay 20 20", b"voting-delay 20"), "2 arguments"),
    (lambda d: _edit(d, b"params hsdir_interval=1440", b"params"), "hsdir_interval"),
    (lambda d: _edit(d, b"params hsdir_interval=1440", b"params hsdir_interval=1440 a=1 a=2"), "canonical"),
    (lambda d: _edit(d, b"params hsdir_interval=1440", b"params z=1 hsdir_interval=1440"), "canonical"),
    (lambda d: re.sub(rb"(published .*\n)", rb"\1\1", d), "published must appear"),
    (lambda d: _edit(d, b"\nvalid-after", b"\nx-extra 1\nvalid-after"), "canonical"),
    (lambda d: _edit(d, b"\ns Running Valid", b"\ns Running Running Valid"), "canonical"),
    (lambda d: _edit(d, b"\ns HSDir Running Valid", b"\ns Running HSDir Valid"), "canonical"),
    (lambda d: _edit(d, b"\ns HSDir Running Valid", b"\ns Named Running Valid"), "not ones our"),
    (lambda d: re.sub(rb"\nid ed25519 ", b"\nid rsa1024 ", d, count=1), "id ed25519"),
    (lambda d: re.sub(rb"\nw Bandwidth=(\d+)", rb"\nw Bandwidth=\1 Measured=1", d, count=1), "Bandwidth=N"),
    (lambda d: re.sub(rb"(r relay\d .*\n(?:(?!r ).*\n){6})(r relay\d .*\n(?:.*\n){6})", rb"\2\1", d),
     "canonical"),
    (lambda d: re.sub(rb"\nm \S+", b"\nm AAAA", d, count=1), "microdescriptor digest"),
    (lambda d: d[: d.index(b"dir-key-certification")], "does not end"),
    (lambda d: d[: d.index(b"dir-key-certificate-version")], "no authority certificate"),
    (lambda d: d[: d.index(b"directory-signature")], "does not end with a directory-signature"),
    (lambda d: d.replace(b"directory-signature sha256", b"directory-signature sha1"), "sha256"),
    (lambda d: d.replace(b"directory-signature sha256", b"directory-signature sha3"), "algorithm"),
    (lambda d: _edit(d, b"\nr relay", b"\ns Fast\nr relay"), "before the first router"),
    (lambda d: d + d, ""),
    (lambda d: d.replace(b"\n", b"\r\n"), "CR"),
]


@pytest.mark.parametrize(("mangle", "message"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_votes_are_decode_errors(mangle, message):
    data = vote(0, [relay(1), relay(2, UP | {"HSDir"})], shared_rand_current=b"c" * 32).encode()
    with pytest.raises(DecodeError, match=re.escape(message) if message else None):
        parse_vote(mangle(data))


# ---------------------------------------------------------------------------------------------------------
# the consensus computation (dirdocs' rules, ported)


def test_consensus_from_three_votes_listing_and_flags():
    # n = 3: a relay needs 2 listings; a flag needs more than half of the listing votes.
    votes = [
        vote(0, [relay(1, UP | {"Guard", "HSDir"}), relay(2, UP | {"Fast", "Stable"}), relay(3)]),
        vote(1, [relay(1, UP | {"Guard"}), relay(2, UP | {"Fast"})]),
        vote(2, [relay(1, UP), relay(4)]),
    ]
    c = compute_consensus(votes, configs(3))
    got = listed(c)
    assert set(got) == {1, 2}  # relay 3 and 4: one listing each
    assert got[1].flags == UP | {"Guard"}  # Guard 2 of 3; HSDir 1 of 3
    assert got[2].flags == UP | {"Fast"}  # Fast 2 of 2; Stable 1 of 2 is exactly half: not set
    assert [d.v3ident for d in c.dir_sources] == ids(3)
    assert [d.vote_digest for d in c.dir_sources] == [v.digest for v in votes]
    assert c.known_flags == VOTE_FLAGS | {"NoEdConsensus"}
    assert (c.required_client_protocols, c.recommended_relay_protocols) == (REQUIRED_PROTOCOLS,
                                                                           RECOMMENDED_PROTOCOLS)


def test_consensus_from_five_votes_listing_and_flags():
    def r(i, *extra):
        return relay(i, UP | set(extra))

    votes = [
        vote(0, [r(1, "HSDir", "Stable"), r(2, "HSDir"), r(3), r(4, "Fast")]),
        vote(1, [r(1, "HSDir", "Stable"), r(2, "HSDir"), r(3), r(4, "Fast")]),
        vote(2, [r(1, "HSDir"), r(2, "HSDir"), r(3)]),
        vote(3, [r(1), r(2), r(4, "Fast")]),
        vote(4, [r(1, "Stable")]),
    ]
    got = listed(compute_consensus(votes, configs(5)))
    assert set(got) == {1, 2, 3, 4}
    assert got[1].flags == UP | {"HSDir", "Stable"}  # each set by 3 of 5
    assert got[2].flags == UP | {"HSDir"}  # 3 of 4 listing votes
    assert got[4].flags == UP | {"Fast"}  # 3 of 3
    # With 6 configured authorities and the same 5 votes, 3 listings is exactly half: relays 3 and 4 drop out.
    assert set(listed(compute_consensus(votes, configs(6)))) == {1, 2}
    # Relay 2 is listed by 4; drop HSDir from one vote: 2 of 4 is exactly half, not set.
    votes[0] = vote(0, [r(1), r(2), r(3), r(4, "Fast")])
    assert "HSDir" not in listed(compute_consensus(votes, configs(5)))[2].flags


def test_relays_without_running_and_valid_are_left_out():
    votes = [vote(0, [relay(1), relay(2)]),
             vote(1, [relay(1, {"Valid"}), relay(2, {"Running"})]),
             vote(2, [relay(1, {"Valid"}), relay(2)])]
    # relay 1: Running 1 of 3; relay 2: Valid 2 of 3, Running 3 of 3.
    assert set(listed(compute_consensus(votes, configs(3)))) == {2}


def test_descriptor_fields_majority_then_newest_then_smallest():
    a = dict(address="10.0.0.1")
    b = dict(address="10.0.0.2", md_digest=b"\x00" * 32)
    newer = dict(address="10.0.0.3", published=T0 + 50)
    votes = [vote(0, [relay(1, **a)]), vote(1, [relay(1, **a)]), vote(2, [relay(1, **newer)])]
    assert listed(compute_consensus(votes, configs(3)))[1].address == "10.0.0.1"  # most common, though older
    votes = [vote(0, [relay(1, **a)]), vote(1, [relay(1, **newer)])]
    assert listed(compute_consensus(votes, configs(3)))[1].address == "10.0.0.3"  # a tie: the newest
    votes = [vote(0, [relay(1, **a)]), vote(1, [relay(1, **b)])]
    assert listed(compute_consensus(votes, configs(3)))[1].address == "10.0.0.2"  # then the smaller md digest


def test_version_protocols_and_ed25519_consensus():
    votes = [vote(0, [relay(1, version="Tor 0.4.9.11", proto="Link=4")]),
             vote(1, [relay(1, version="Tor 0.4.10.1", proto="Link=5")]),
             vote(2, [relay(1, version="Tor 0.4.9.11", proto="Link=5", ed25519_identity=b"e" * 32)])]
    r = compute_consensus(votes, configs(3)).routers[0]
    assert (r.version, r.proto) == ("Tor 0.4.9.11", "Link=5")
    assert "NoEdConsensus" not in r.flags  # 2 of 3 authorities agree on the ed25519 identity
    votes = [vote(0, [relay(1, version="Tor 0.4.9.11")]), vote(1, [relay(1, version="Tor 0.4.10.1")])]
    assert compute_consensus(votes, configs(3)).routers[0].version == "Tor 0.4.10.1"  # tie: the later version
    votes = [vote(0, [relay(1)]), vote(1, [relay(1, ed25519_identity=b"e" * 32)])]
    assert "NoEdConsensus" in compute_consensus(votes, configs(3)).routers[0].flags  # 1 of 3


def test_bandwidth_times_delays_and_params_are_low_medians():
    bws = [40, 10, 30, 20]
    votes = [vote(i, [relay(1, bandwidth=bw)], valid_after=VA + i, fresh_until=FU + 10 * i,
                  valid_until=VU + 100 * i, vote_delay=2 + i, dist_delay=9 - i, hs_period_minutes=60 + i)
             for i, bw in enumerate(bws)]
    c = compute_consensus(votes, configs(4))
    assert c.routers[0].bandwidth == 20  # 10 20 30 40: the low median
    assert (c.valid_after, c.fresh_until, c.valid_until) == (VA + 1, FU + 10, VU + 100)
    assert (c.vote_delay, c.dist_delay) == (3, 7)
    assert c.params == {"hsdir_interval": 61} and c.hs_period_minutes == 61


def test_params_need_a_majority_of_authorities_or_three_votes():
    def with_params(i, **p):
        return vote(i, [], params=p)

    votes = [with_params(0, a=1, b=5), with_params(1, a=2, b=6), with_params(2, a=3, c=1), with_params(3),
             with_params(4), with_params(5), with_params(6)]
    c = compute_consensus(votes, configs(7))
    assert c.params == {"a": 2, "hsdir_interval": 1440}  # a: 3 votes; b: 2 of 7; c: 1
    c = compute_consensus(votes[:2], configs(3))
    assert c.params == {"a": 1, "b": 5, "hsdir_interval": 1440}  # 2 of 3 is a majority


def test_shared_random_value_needs_a_majority_of_all_authorities():
    s1, s2 = b"1" * 32, b"2" * 32
    votes = [vote(0, [], shared_rand_current=s1), vote(1, [], shared_rand_current=s1),
             vote(2, [], shared_rand_current=s2, shared_rand_previous=s2)]
    c = compute_consensus(votes, configs(3))
    assert (c.shared_rand_current, c.shared_rand_previous) == (s1, None)
    assert compute_consensus(votes, configs(4)).shared_rand_current is None  # 2 of 4 is not a majority


def test_bandwidth_weights_are_included():
    votes = [vote(i, [relay(1, UP | {"Guard"}, bandwidth=1000), relay(2, bandwidth=100)]) for i in range(3)]
    c = compute_consensus(votes, configs(3))
    assert c.bandwidth_weights["Wmg"] == 4495  # case 3a, see test_consensus
    middles = [vote(i, [relay(1), relay(2)]) for i in range(3)]
    assert compute_consensus(middles, configs(3)).bandwidth_weights == {}  # no guards, no exits: none


def test_a_consensus_can_list_no_relay_and_the_caller_must_not_publish_it():
    # After a restart, authorities that have not heard from relays yet vote empty: the computation still
    # returns a consensus (so the caller can log it), but it has no routers, and the authority must refuse
    # to sign it. Likewise when no relay reaches a majority.
    empty = compute_consensus([vote(i, []) for i in range(3)], configs(3))
    assert empty.routers == ()
    split = compute_consensus([vote(0, [relay(1)]), vote(1, [relay(2)]), vote(2, [relay(3)])], configs(3))
    assert split.routers == ()


def test_consensus_rejects_impossible_vote_sets():
    v0, v1 = vote(0, []), vote(1, [])
    for votes, auths in (([], configs(3)), ([v0, v0], configs(3)), ([v0, v1], configs(1)), ([v0], []),
                         ([v1], configs(1)), ([v0], configs(1) * 2)):
        with pytest.raises(LocalProtocolError):
            compute_consensus(votes, auths)
    with pytest.raises(LocalProtocolError, match="33-35"):
        compute_consensus([v0], configs(1), 32)
    assert compute_consensus([v0], configs(1), 33).consensus_method == 33


def _disagreeing_votes():
    return [
        vote(0, [relay(1, UP | {"Guard"}, bandwidth=5), relay(2), relay(3, address="10.9.9.9")]),
        vote(1, [relay(1, bandwidth=7), relay(3, UP | {"HSDir"}), relay(4)]),
        vote(2, [relay(1, UP | {"Guard", "Fast"}), relay(2, published=T0 + 1), relay(4)],
             valid_after=VA + 5, shared_rand_current=b"s" * 32),
        vote(3, [relay(2, UP | {"Stable"}), relay(3), relay(4, UP | {"HSDir"})],
             valid_until=VU + 9, shared_rand_current=b"s" * 32),
        vote(4, [relay(1), relay(2, published=T0 + 1), relay(3, UP | {"HSDir"})],
             shared_rand_current=b"s" * 32),
    ]


def test_consensus_is_independent_of_vote_order_and_deterministic():
    votes = _disagreeing_votes()
    expected = encode_consensus(compute_consensus(votes, configs(5)))
    for perm in itertools.islice(itertools.permutations(votes), 0, None, 7):
        assert encode_consensus(compute_consensus(perm, configs(5))) == expected
    assert encode_consensus(compute_consensus(votes, list(reversed(configs(5))))) == expected
    got = listed(compute_consensus(votes, configs(5)))
    assert set(got) == {1, 2, 3, 4}
    assert got[3].address == "10.0.0.3"  # 3 of 4 listings
    assert "HSDir" not in got[3].flags  # 2 of 4 listings: exactly half


@pytest.mark.parametrize("n", [3, 5])
def test_end_to_end_votes_to_a_checked_consensus(n):
    votes = [parse_vote(v.encode()).check(ids(n), T0) for v in _disagreeing_votes()[:n]]
    c = compute_consensus(votes, configs(n))
    assert c.routers
    majority = n // 2 + 1
    doc = signed_by(c, *range(majority)).encode()
    assert parse_consensus(doc).check(CERTS, ids(n), VA + 5).consensus == c
    with pytest.raises(SignatureError):
        parse_consensus(signed_by(c, *range(majority - 1)).encode()).check(CERTS, ids(n), VA + 5)


def test_dir_source_for_each_used_vote_only():
    votes = [vote(0, [relay(1)]), vote(2, [relay(1)])]
    c = compute_consensus(votes, configs(3))
    assert [d.nickname for d in c.dir_sources] == [AUTHS[0].config.nickname, AUTHS[2].config.nickname]
    d = c.dir_sources[1]
    conf = AUTHS[2].config
    assert (d.address, d.dir_port, d.or_port, d.contact) == (conf.address, conf.dir_port, conf.or_port,
                                                             conf.contact)
    with pytest.raises(LocalProtocolError):
        DirAuthority("auth", bytes(20), "10.0.0.1", 1, 1, contact="")


# ---------------------------------------------------------------------------------------------------------
# hypothesis

_relays = st.lists(st.builds(lambda i, bw, extra: relay(i, UP | extra if bw % 3 else extra, bandwidth=bw),
                             st.integers(1, 8), st.integers(0, 10**6),
                             st.frozensets(st.sampled_from(sorted(VOTE_FLAGS)))),
                   max_size=6, unique_by=lambda r: r.nickname)


@given(votes=st.lists(st.tuples(st.integers(0, 4), _relays), min_size=1, max_size=5,
                      unique_by=lambda t: t[0]),
       order=st.randoms(use_true_random=False))
def test_consensus_order_independence_property(votes, order):
    built = [vote(k, rs) for k, rs in votes]
    shuffled = list(built)
    order.shuffle(shuffled)
    assert encode_consensus(compute_consensus(shuffled, configs(5))) == encode_consensus(
        compute_consensus(built, configs(5)))


@given(relays=_relays, srv=st.none() | st.binary(min_size=32, max_size=32), hs=st.integers(1, 2**31 - 1),
       published=st.integers(0, 253402300799))
def test_vote_round_trip_property(relays, srv, hs, published):
    v = vote(1, relays, shared_rand_current=srv, hs_period_minutes=hs, published=published)
    u = parse_vote(v.encode())
    assert u.unchecked == v
    if published <= T0 + 60:
        assert u.check(ids(3), T0) == v


_SAMPLE = vote(0, [relay(1), relay(2, UP | {"HSDir"})], shared_rand_current=b"c" * 32).encode()


@given(st.data())
def test_mutated_votes_only_typed_errors(data):
    raw = bytearray(_SAMPLE)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.sampled_from(b"\n -:=/+A0a9\x00"))
    try:
        parse_vote(bytes(raw)).check(ids(3), T0)
    except RemoteProtocolError:
        pass


def test_vote_dataclass_is_frozen_and_typed():
    v = vote(0, [relay(1)])
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.published = 1  # type: ignore[misc]
    with pytest.raises(LocalProtocolError):
        Vote(v.cert, T0, VA, FU, VU, 20, 20, ("x",), v.signature)
    assert netdoc.format_time(v.valid_after) == "2027-01-15 08:01:40"


def test_parsed_votes_share_the_values_every_vote_repeats():
    """An authority holds the parsed votes of every authority about every relay: at 280 relays each parsed
    copy of a relay's flags (a frozenset and its strings), nickname, address, version and protocol line was
    its own object, 1.9 KB a relay a vote (docs/scale.md). Equal values are now one object."""
    routers = [relay(i, UP | {"Fast"}) for i in (1, 2, 3)]
    first, second = (parse_vote(vote(a, routers).encode()).unchecked for a in (0, 1))
    assert first.routers[0].flags is first.routers[1].flags is second.routers[2].flags
    for a, b in zip(first.routers, second.routers, strict=True):
        assert a.nickname is b.nickname and a.address is b.address
        assert a.version is b.version and a.proto is b.proto
    consensus = parse_consensus(signed_by(compute_consensus([first, second], configs(2)), 0, 1).encode())
    listed = consensus.unchecked.routers
    assert listed[0].flags is listed[1].flags and listed[0].proto is first.routers[0].proto


def test_the_table_of_shared_flag_sets_is_bounded(monkeypatch):
    monkeypatch.setattr(netdoc, "MAX_SHARED_FLAG_SETS", len(netdoc._shared_flag_sets) + 1)
    kept = netdoc.shared_flags(["A-new-one"])
    assert netdoc.shared_flags(["A-new-one"]) is kept
    other = netdoc.shared_flags(["Another-new-one"])
    assert other == {"Another-new-one"} and netdoc.shared_flags(["Another-new-one"]) is not other
