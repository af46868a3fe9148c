"""Time periods, key blinding, subcredential, HSDir ring indexes and selection, disaster SRV."""

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodes.core import ed25519, hs_common

VECTORS = json.loads(Path(__file__).with_name("tor-vectors.json").read_text())
h = bytes.fromhex

ids32 = st.binary(min_size=32, max_size=32)


# Source: rend-spec-v3 2.2.1 example; tor test_hs_common.c test_time_period and
# test_start_time_of_next_time_period; arti tor-hscrypto time.rs check_testvec; arti tor-netdir hsdir_ring.rs
# and hsdir_params.rs.
@pytest.mark.parametrize("case", VECTORS["time_period"]["cases"],
                         ids=lambda c: f"{c['kind_ascii']}-{c.get('unix_time', c.get('period_num'))}")
def test_time_period_vectors(case):
    length, offset = case["period_length_minutes"], case["rotation_offset_minutes"]
    kind = case["kind_ascii"]
    if kind == "period_of_time":
        assert hs_common.time_period_num(case["unix_time"], length, offset) == case["period_num"]
    elif kind == "start_of_period":
        assert hs_common.time_period_start(case["period_num"], length, offset) == case["start_unix_time"]
    elif kind == "start_of_next_period":
        current = hs_common.time_period_num(case["unix_time"], length, offset)
        assert hs_common.time_period_start(current + 1, length, offset) == case["next_period_start_unix_time"]
    else:
        pytest.fail(f"unknown time_period kind {kind}")


def test_time_period_defaults_are_tors():
    # rend-spec-v3 2.2.1 example: 2016-04-13 11:15:01 UTC is in period 16903 of 1440 minutes, offset 720.
    assert hs_common.time_period_num(1460546101) == 16903
    assert hs_common.time_period_start(16903) == 1460462400  # 2016-04-12 12:00 UTC


@given(st.integers(0, 2**40), st.integers(1, 14400), st.integers(0, 1440))
def test_time_is_inside_its_period(now, length, offset):
    num = hs_common.time_period_num(now, length, offset)
    assert hs_common.time_period_start(num, length, offset) <= now < hs_common.time_period_start(
        num + 1, length, offset)


# Source: tor src/test/test_hs_common.c test_blinding_basics (period 1234 of 1440 minutes: blinding param,
# blinded public and secret keys, subcredential); the same values in arti crates/tor-hscrypto/src/pk.rs
# key_blinding_testvec.
@pytest.mark.parametrize("case", VECTORS["key_blinding"]["cases"], ids=lambda c: str(c["period_num"]))
def test_key_blinding_and_subcredential_vector(case):
    public, length = h(case["public_key"]), case["period_length_minutes"]
    num = hs_common.time_period_num(case["unix_time"], length, case["rotation_offset_minutes"])
    assert num == case["period_num"]
    assert hs_common.blinding_param(public, num, length) == h(case["blinding_factor"])
    assert hs_common.blinded_public_key(public, num, length) == h(case["blinded_public_key"])
    identity = ed25519.Signer.from_expanded(h(case["expanded_secret_key"]))
    signer = hs_common.blinded_signer(identity, num, length)
    assert signer.expanded_secret == h(case["blinded_expanded_secret_key"])
    assert signer.public_key == h(case["blinded_public_key"])
    assert hs_common.subcredential(public, signer.public_key) == h(case["subcredential"])
    message = case["message_ascii"].encode()
    ed25519.verify(signer.public_key, message, signer.sign(message))


@settings(max_examples=20)
@given(ids32, st.integers(0, 2**32), st.sampled_from([24, 1440]))
def test_blinded_signer_matches_blinded_public_key(seed, num, length):
    identity = ed25519.Signer.from_seed(seed)
    signer = hs_common.blinded_signer(identity, num, length)
    assert signer.public_key == hs_common.blinded_public_key(identity.public_key, num, length)
    assert signer.public_key != identity.public_key


# Source: tor src/test/test_hs_common.c test_hs_indexes (same values in arti tor-netdir hsdir_ring.rs).
@pytest.mark.parametrize("case", VECTORS["hs_indexes"]["cases"], ids=lambda c: c["kind_ascii"])
def test_ring_index_vectors(case):
    if case["kind_ascii"] == "hs_service_index":
        got = hs_common.hs_service_index(h(case["blinded_public_key"]), case["replica"],
                                         case["period_length_minutes"], case["period_num"])
    else:
        got = hs_common.hs_relay_index(h(case["node_ed25519_id"]), h(case["srv"]), case["period_num"],
                                       case["period_length_minutes"])
    assert got == h(case["index"])


# Source: tor src/test/test_hs_common.c test_disaster_srv (period 1, 1440 minutes: F8A49487...); the same
# value in arti crates/tor-netdir/src/hsdir_params.rs fn disaster.
@pytest.mark.parametrize("case", VECTORS["disaster_srv"]["cases"], ids=lambda c: str(c["period_num"]))
def test_disaster_srv_vector(case):
    assert hs_common.disaster_srv(case["period_length_minutes"], case["period_num"]) == h(case["srv"])


def brute_force_hsdirs(hsdirs, blinded_key, srv, num, length, replicas, spread):
    """rend-spec-v3 2.2.3 restated: per replica, relays in order of clockwise distance from the service index
    on the 2^256 ring; take the first `spread` that no earlier replica took."""
    chosen = []
    for replica in range(1, replicas + 1):
        start = int.from_bytes(hs_common.hs_service_index(blinded_key, replica, length, num), "big")

        def distance(node, start=start):
            index = int.from_bytes(hs_common.hs_relay_index(node, srv, num, length), "big")
            return ((index - start) % 2**256, node)

        fresh = [node for node in sorted(set(hsdirs), key=distance) if node not in chosen]
        chosen += fresh[:spread]
    return chosen


@given(st.lists(ids32, max_size=14), ids32, ids32, st.integers(0, 2**20), st.sampled_from([24, 1440]),
       st.integers(1, 3), st.integers(1, 5))
def test_responsible_hsdirs_matches_brute_force(hsdirs, blinded_key, srv, num, length, replicas, spread):
    got = hs_common.responsible_hsdirs(hsdirs, blinded_key, srv, num, length,
                                       replicas=replicas, spread=spread)
    assert got == brute_force_hsdirs(hsdirs, blinded_key, srv, num, length, replicas, spread)
    assert len(got) == len(set(got)) == min(len(set(hsdirs)), replicas * spread)


def test_responsible_hsdirs_defaults_store_eight_and_fetch_six():
    relays = [bytes([i]) * 32 for i in range(20)]
    blinded, srv = b"\x42" * 32, b"\x43" * 32
    store = hs_common.responsible_hsdirs(relays, blinded, srv, 42, 1440)
    fetch = hs_common.responsible_hsdirs(relays, blinded, srv, 42, 1440, spread=hs_common.HSDIR_SPREAD_FETCH)
    assert len(store) == 8 and len(fetch) == 6
    # Replica 1's fetch set is the start of its store set (same walk, shorter spread).
    assert fetch[:3] == store[:3]
    assert hs_common.responsible_hsdirs([], blinded, srv, 42, 1440) == []


def test_responsible_hsdirs_walks_the_ring_from_the_service_index():
    relays = [bytes([i]) * 32 for i in range(10)]
    blinded, srv = b"\x01" * 32, b"\x02" * 32
    ring = sorted(relays, key=lambda n: hs_common.hs_relay_index(n, srv, 7, 1440))
    target = hs_common.hs_service_index(blinded, 1, 1440, 7)
    first = next((n for n in ring if hs_common.hs_relay_index(n, srv, 7, 1440) >= target), ring[0])
    start = ring.index(first)
    expected = [ring[(start + i) % len(ring)] for i in range(4)]
    assert hs_common.responsible_hsdirs(relays, blinded, srv, 7, 1440, replicas=1) == expected


def test_credential_formulas():
    # rend-spec-v3 2.1, restated with hashlib directly.
    key, blinded = b"\x11" * 32, b"\x22" * 32
    cred = hashlib.sha3_256(b"credential" + key).digest()
    assert hs_common.credential(key) == cred
    subcred = hashlib.sha3_256(b"subcredential" + cred + blinded).digest()
    assert hs_common.subcredential(key, blinded) == subcred
