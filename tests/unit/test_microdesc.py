"""nodes.core.microdesc: microdescriptors byte for byte as a C tor 0.4.9.11 authority derives them."""

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st

from nodes.core import netdoc, tor_rsa
from nodes.core.errors import DecodeError, LocalProtocolError, RemoteProtocolError
from nodes.core.microdesc import (
    CONSENSUS_METHOD,
    Microdescriptor,
    canonical_family,
    microdescriptor_for,
    parse_microdescriptors,
)
from nodes.core.server_descriptor import parse_server_descriptor
from tests.unit.test_server_descriptor import DESC, DESC_TAP, _check, _edit

VECTORS = Path(__file__).parent / "dirspec_vectors"

# The authority's vote: descriptor file -> the microdescriptor digest(s) its "m" lines gave for it.
CTOR_M_LINES = {
    "ctor-relay.desc": "ds4eMhpeSGXQRe9qgTAovBCvreJTD0OxXXFKC2QACIM",  # m 32,33,34,35
    "ctor-authority.desc": "LxL7zLBXcu115/H01ns5gAimwZxPjJ4AYrAHP9d8EOo",  # m 32,33,34,35
    "onionlab-tap.desc": "Dh6yznV41KQfUznCWZhvQwSnOa8pDUkfBzRDSNMhR0M",  # m 32,33,34,35 (ours, with TAP)
    "ctor-relay-family.desc": "OQ+2CMsEV8pyKVcVPoa2KRYT16HwrdFxlrDQPSVx32U",  # m 35 (family-ids)
}
CTOR_FAMILY_OLD_METHODS = "5B2+NVihbzOW4ll42eJOexplzdW7szBphfzQF6jDw2U"  # m 32,33,34: no family-ids line


def _vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def _ctor_microdescs() -> dict[str, Microdescriptor]:
    mds = parse_microdescriptors(_vector("ctor-microdescs.txt"))
    mds += parse_microdescriptors(_vector("ctor-microdescs-family.txt"))
    return {md.digest_b64: md for md in mds}


def _desc(name: str):
    unchecked = parse_server_descriptor(_vector(name))
    return unchecked.check(unchecked.published, max_age=60, max_skew=60)


def test_c_tor_microdescriptors_parse_and_are_named_by_their_sha256():
    mds = _ctor_microdescs()
    assert set(mds) == set(CTOR_M_LINES.values()) | {CTOR_FAMILY_OLD_METHODS}
    raw = _vector("ctor-microdescs.txt")
    assert b"".join(md.raw for md in parse_microdescriptors(raw)) == raw
    for md in mds.values():
        assert md.digest == hashlib.sha256(md.raw).digest() and len(md.digest_b64) == 43
        assert md.tap_onion_key is not None and md.ed25519_identity is not None
        assert md.policy is None and md.policy6 is None


@pytest.mark.parametrize("name", sorted(CTOR_M_LINES))
def test_microdescriptor_for_is_what_the_c_tor_authority_made(name):
    desc = _desc(name)
    md = microdescriptor_for(desc)
    assert md.digest_b64 == CTOR_M_LINES[name]
    assert md == _ctor_microdescs()[CTOR_M_LINES[name]]  # same bytes, same fields
    assert md.ed25519_identity == desc.ed25519_identity and md.ntor_onion_key == desc.ntor_onion_key
    assert CONSENSUS_METHOD == 35


def test_family_lines_as_c_tor_writes_them():
    md = microdescriptor_for(_desc("ctor-relay-family.desc"))
    text = md.raw.decode()
    assert "\nfamily $0123456789ABCDEF0123456789ABCDEF01234567 $641CA79B66BB6C477A84D0AB46EAEE2A0315EFBE " \
           "$BD3977968CC0FDCE466F3CFBE8D545C0308160D1 somenick\n" in text
    assert "\nfamily-ids ed25519:CEon0dOEOoRcJk/dBzpiocg8T93hOas+oprSN/YR1/8\nid ed25519 " in text
    assert md.family_ids == ("ed25519:CEon0dOEOoRcJk/dBzpiocg8T93hOas+oprSN/YR1/8",)
    # the methods 32-34 microdescriptor is the same without the family-ids line
    old = _ctor_microdescs()[CTOR_FAMILY_OLD_METHODS]
    assert old.raw == md.raw.replace(b"family-ids ed25519:CEon0dOEOoRcJk/dBzpiocg8T93hOas+oprSN/YR1/8\n", b"")


def test_canonical_family():
    me = bytes(range(20))
    assert canonical_family(("Zed", "$" + "ab" * 20 + "~nick", "$" + "AB" * 20 + "=other", "zed", "alpha"),
                            me) == f"${me.hex().upper()} ${'AB' * 20} alpha zed"
    assert canonical_family((), me) == f"${me.hex().upper()}"  # (the caller writes no line for no family)


def test_our_relay_without_tap_key():
    """A bare onion-key line (dir-spec: "Optionally, a public key"), then ntor-onion-key and id ed25519."""
    md = microdescriptor_for(DESC)
    assert md.raw == (b"onion-key\n"
                      b"ntor-onion-key " + netdoc.b64encode_unpadded(DESC.ntor_onion_key).encode() + b"\n"
                      b"id ed25519 " + netdoc.b64encode_unpadded(DESC.ed25519_identity).encode() + b"\n")
    assert parse_microdescriptors(md.raw) == [md]
    assert md.digest_b64 == netdoc.b64encode_unpadded(hashlib.sha256(md.raw).digest())
    assert "=" not in md.digest_b64
    # the vector: what we derived from onionlab-notap.desc (no released C tor authority makes one)
    assert microdescriptor_for(_desc("onionlab-notap.desc")).raw == _vector("onionlab-notap.md")


def test_our_relay_with_tap_key():
    md = microdescriptor_for(DESC_TAP)
    assert md.raw.startswith(b"onion-key\n" + tor_rsa.public_pem(DESC_TAP.tap_onion_key).encode()
                             + b"ntor-onion-key ")
    assert tor_rsa.public_der(parse_microdescriptors(md.raw)[0].tap_onion_key) == \
        tor_rsa.public_der(DESC_TAP.tap_onion_key)


def test_concatenations_split_at_every_onion_key_line():
    mds = [microdescriptor_for(d) for d in (DESC, DESC_TAP, _desc("ctor-relay.desc"))]
    parsed = parse_microdescriptors(b"".join(md.raw for md in mds))
    assert parsed == mds
    assert parse_microdescriptors(b"") == []


def test_tolerance():
    md = microdescriptor_for(DESC)
    extra = md.raw + b"a [::1]:9001\np accept 80,443\nid rsa1024 AAAAAAAAAAAAAAAAAAAAAAAAAAA\nx-future 1\n" \
                     b"-----BEGIN X-----\nAAAA\n-----END X-----\n"
    parsed = parse_microdescriptors(extra)[0]
    assert parsed.policy == "accept 80,443" and parsed.ntor_onion_key == md.ntor_onion_key
    assert parsed.raw == extra and parsed.digest != md.digest
    # a padded ntor key (microdescriptors before consensus method 30), no id line: C tor clients take both
    no_id = b"onion-key\nntor-onion-key " + netdoc.b64encode_unpadded(DESC.ntor_onion_key).encode() + b"=\n"
    parsed = parse_microdescriptors(no_id)[0]
    assert parsed.ed25519_identity is None and parsed.ntor_onion_key == DESC.ntor_onion_key


_K = b"A" * 43  # a well-formed key in base64
_HEAD = b"onion-key\nntor-onion-key " + _K + b"\n"


@pytest.mark.parametrize("data", [
    b"ntor-onion-key " + _K + b"\n",  # does not start with onion-key
    b"onion-key\n",  # no ntor-onion-key
    b"onion-key 1\nntor-onion-key " + _K + b"\n",  # onion-key takes no argument
    b"onion-key\nntor-onion-key AAAA\n",  # a short key
    _HEAD + b"ntor-onion-key " + _K + b"\n",  # twice
    _HEAD + b"id ed25519 " + _K + b"\nid ed25519 " + _K + b"\n",  # two ed25519 ids ("Extra ed25519 key")
    _HEAD + b"id ed25519\n",  # id takes two arguments
    _HEAD + b"p accept 80\np accept 81\n",  # p at most once
    b"onion-key\n-----BEGIN CROSSCERT-----\nAAAA\n-----END CROSSCERT-----\n"
    b"ntor-onion-key " + _K + b"\n",  # not an RSA key object
    _HEAD + b"-----BEGIN X-----\nAAAA\n-----END X-----\n",  # ntor-onion-key takes no object
    b"@last-listed 2023-11-14 22:13:20\n" + _HEAD,  # no annotations in a directory answer
])
def test_malformed(data):
    with pytest.raises(DecodeError):
        parse_microdescriptors(data)


def test_a_bad_one_in_a_concatenation_fails_the_whole_answer():
    good = microdescriptor_for(DESC).raw
    with pytest.raises(DecodeError):
        parse_microdescriptors(good + b"onion-key\n" + good[len(b"onion-key\n"):].replace(b"ntor", b"xtor"))


def test_exit_policy_summaries_are_not_implemented():
    exit_relay = _check(_edit(b"reject *:*\n", b"accept *:80\nreject *:*\n"))
    with pytest.raises(LocalProtocolError):
        microdescriptor_for(exit_relay)
    six = _check(_edit(b"reject *:*\n", b"reject *:*\nipv6-policy accept 80\n"))
    with pytest.raises(LocalProtocolError):
        microdescriptor_for(six)
    no_v6_exits = _check(_edit(b"reject *:*\n", b"reject *:*\nipv6-policy reject 1-65535\n"))
    assert microdescriptor_for(no_v6_exits).raw == microdescriptor_for(DESC).raw


@given(st.binary(max_size=400))
def test_arbitrary_bytes(data):
    for prefix in (b"", b"onion-key\n"):
        try:
            parse_microdescriptors(prefix + data)
        except RemoteProtocolError:
            pass


@given(st.integers(0, 2000), st.integers(0, 30), st.binary(max_size=30))
def test_mutated(at, cut, insert):
    raw = _vector("ctor-microdescs-family.txt") + microdescriptor_for(DESC).raw
    at = min(at, len(raw))
    try:
        parse_microdescriptors(raw[:at] + insert + raw[at + cut:])
    except RemoteProtocolError:
        pass


def test_tap_key_is_held_as_der_and_loaded_when_asked():
    """Like the server descriptor's: the DER the document carries, a key object only on request."""
    for md in (microdescriptor_for(DESC_TAP), parse_microdescriptors(microdescriptor_for(DESC_TAP).raw)[0]):
        assert md.tap_onion_key_der == DESC_TAP.tap_onion_key_der
        assert not any(isinstance(getattr(md, f), rsa.RSAPublicKey) for f in md.__slots__)
        assert md.tap_onion_key.public_numbers() == DESC_TAP.tap_onion_key.public_numbers()
    md = parse_microdescriptors(microdescriptor_for(DESC).raw)[0]
    assert md.tap_onion_key_der is None and md.tap_onion_key is None
