"""v3 onion addresses: published valid and invalid addresses, round trips, and every kind of bad input."""

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodes.core import ed25519
from nodes.core.errors import AddressError, LocalProtocolError
from nodes.core.onion_address import decode_onion_address, encode_onion_address

SECTION = json.loads(Path(__file__).with_name("tor-vectors.json").read_text())["onion_address"]
VALID = SECTION["cases"]
INVALID = SECTION["invalid_addresses"]

# Which words the error message must contain for each published invalid address (from reason_ascii).
EXPECTED_MESSAGE = {
    "blah": "wrong length",
    "p3xnclpu4mu22dwaurjtsybyqk4xfjmcfz6z62yl24uwmhjatiwnlnadb": "wrong length",
    "l5satjgud6gucryazcyvyvhuxhr74u6ygigiuyixe3a6ysis67ororad": "checksum",
    "btojiu7nu5y5iwut64eufevogqdw4wmqzugnoluw232r4t3ecsfv37ad": "checksum",
    "?" * 56: "not base32",
    "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkenl5sie": "version",
    "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkenl5xid": "checksum",
    "www.25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkenl5sid.onion": "subdomain",
    "wrong": "wrong length",
    "@.onion": "wrong length",
    "aaaaaaaa.onion": "wrong length",
}

# Source: rend-spec-v3 section 6, the three example addresses printed there (valid v3 addresses).
SPEC_EXAMPLES = [
    "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd.onion",
    "sp3k262uwy4r2k3ycr5awluarykdpag6a7y33jxop4cs2lu5uz5sseqd.onion",
    "xa4r2iadxm55fbnqgwwi5mymqdcofiu3w6rpbtqn7b2dyn7mgwj64jyd.onion",
]


# Source: tor src/test/test_hs_common.c test_build_address; arti crates/tor-hscrypto/src/pk.rs hsid_strings.
@pytest.mark.parametrize("case", VALID, ids=lambda c: c["address_ascii"][:8])
def test_published_address(case):
    key, address = bytes.fromhex(case["public_key"]), case["address_ascii"]
    assert encode_onion_address(key) == address
    for text in (address, address + ".onion", address.upper() + ".ONION", address.upper() + ".onion"):
        assert decode_onion_address(text) == key


# Source: tor test_hs_common.c test_validate_address; arti pk.rs hsid_strings (invalid_addresses).
@pytest.mark.parametrize("case", INVALID, ids=lambda c: c["address_ascii"][:16])
def test_published_invalid_addresses(case):
    with pytest.raises(AddressError) as info:
        decode_onion_address(case["address_ascii"])
    assert EXPECTED_MESSAGE[case["address_ascii"]] in str(info.value)


def test_every_published_invalid_address_has_an_expectation():
    assert {c["address_ascii"] for c in INVALID} == set(EXPECTED_MESSAGE)


@pytest.mark.parametrize("address", SPEC_EXAMPLES)
def test_rend_spec_examples(address):
    key = decode_onion_address(address)
    assert encode_onion_address(key) + ".onion" == address


@settings(max_examples=50)
@given(st.binary(min_size=32, max_size=32), st.booleans(), st.booleans())
def test_round_trip_real_keys(seed, upper, suffix):
    key = ed25519.Signer.from_seed(seed).public_key
    address = encode_onion_address(key)
    assert len(address) == 56 and address == address.lower()
    text = (address.upper() if upper else address) + (".onion" if suffix else "")
    assert decode_onion_address(text) == key


@settings(max_examples=50)
@given(st.binary(min_size=32, max_size=32))
def test_arbitrary_32_bytes_round_trip_or_are_refused_as_bad_keys(key):
    try:
        assert decode_onion_address(encode_onion_address(key)) == key
    except AddressError as exc:
        assert "bad key" in str(exc)


@given(st.text(max_size=80))
def test_arbitrary_text_only_raises_address_error(text):
    try:
        decode_onion_address(text)
    except AddressError:
        pass


def _with_order2_torsion(key):
    x, y, _, _ = ed25519.decode_point(key)
    x, y = (-x) % ed25519.P, (-y) % ed25519.P
    return ed25519.encode_point((x, y, 1, x * y % ed25519.P))


def test_keys_outside_the_prime_order_subgroup_are_refused():
    # rend-spec-v3 2.2.7: a torsion component would give one service several addresses.
    key = bytes.fromhex(VALID[0]["public_key"])
    for bad in (_with_order2_torsion(key), (1).to_bytes(32, "little"), (2).to_bytes(32, "little")):
        with pytest.raises(AddressError, match="bad key"):
            decode_onion_address(encode_onion_address(bad))


def test_non_ascii_case_folding_is_not_accepted():
    address = VALID[0]["address_ascii"]
    assert "k" in address
    with pytest.raises(AddressError, match="not base32"):
        decode_onion_address(address.replace("k", "\u212a", 1))  # KELVIN SIGN lower-cases to "k"


def test_bad_character_names_it():
    address = VALID[0]["address_ascii"]
    with pytest.raises(AddressError, match="'1'"):
        decode_onion_address(address[:10] + "1" + address[11:])


def test_encode_rejects_wrong_key_length():
    with pytest.raises(LocalProtocolError):
        encode_onion_address(bytes(31))


def test_decoding_remembers_good_addresses_only(monkeypatch):
    """A client decodes its onion on every SOCKS connect: a good address is decoded once; a bad one is
    refused every time."""
    from nodes.core import onion_address

    key = ed25519.public_from_expanded(ed25519.expand_seed(bytes(range(32))))
    good = encode_onion_address(key) + ".onion"
    decode_onion_address.cache_clear()
    first = decode_onion_address(good)
    checks = []
    monkeypatch.setattr(onion_address, "_checksum", lambda *a: checks.append(a) or b"")
    assert decode_onion_address(good) == first and checks == []
    bad = good[:10] + ("a" if good[10] != "a" else "b") + good[11:]
    for _ in range(2):
        with pytest.raises(AddressError):
            decode_onion_address(bad)
    assert len(checks) == 2
