"""Pure-Python Ed25519: RFC 8032 and Tor's expanded-key and blinding vectors, cross-checked with OpenSSL."""

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from nodes.core import ed25519
from nodes.core.errors import CryptoError, LocalProtocolError, SignatureError

VECTORS = json.loads(Path(__file__).with_name("tor-vectors.json").read_text())
RFC8032 = VECTORS["ed25519_rfc8032"]["cases"]
TOR = VECTORS["ed25519_tor"]["cases"]
BLIND = VECTORS["key_blinding"]["cases"]
h = bytes.fromhex

seeds = st.binary(min_size=32, max_size=32)
messages = st.binary(max_size=200)


# Source: RFC 8032 7.1 tests 1 and 2, as used by tor src/test/test_crypto.c test_crypto_ed25519_test_vectors.
@pytest.mark.parametrize("case", RFC8032, ids=lambda c: c["name_ascii"])
def test_rfc8032_vectors(case):
    signer = ed25519.Signer.from_seed(h(case["secret_key"]))
    assert signer.public_key == h(case["public_key"])
    assert signer.sign(h(case["message"])) == h(case["signature"])
    # The pure-Python path from the expanded secret must agree with OpenSSL byte for byte.
    esk = ed25519.expand_seed(h(case["secret_key"]))
    assert ed25519.public_from_expanded(esk) == h(case["public_key"])
    assert ed25519.sign_expanded(esk, h(case["message"])) == h(case["signature"])
    ed25519.verify(h(case["public_key"]), h(case["message"]), h(case["signature"]))


# Source: tor src/test/ed25519_vectors.inc (test_crypto.c test_crypto_ed25519_testvectors): expansion,
# expanded-key self-signature and blinding with the raw blinding parameter.
@pytest.mark.parametrize("case", TOR, ids=lambda c: c["public_key"][:8])
def test_tor_expanded_key_and_blinding_vectors(case):
    esk = h(case["expanded_secret_key"])
    assert ed25519.expand_seed(h(case["seed"])) == esk
    assert ed25519.public_from_expanded(esk) == h(case["public_key"])
    assert ed25519.sign_expanded(esk, h(case["public_key"])) == h(case["self_signature"])
    assert ed25519.Signer.from_expanded(esk).sign(h(case["public_key"])) == h(case["self_signature"])
    blinded = ed25519.blind_expanded_secret(esk, h(case["blinding_param"]))
    assert blinded == h(case["blinded_expanded_secret_key"])
    assert ed25519.blind_public_key(h(case["public_key"]), h(case["blinding_param"])) == h(
        case["blinded_public_key"])
    assert ed25519.public_from_expanded(blinded) == h(case["blinded_public_key"])


# Source: arti crates/tor-hscrypto/src/pk.rs key_blinding_testvec (generated with C tor); blinding_factor is
# the unclamped SHA3 output, and no fixed signature is published, so the signature is checked by verifying.
@pytest.mark.parametrize("case", BLIND, ids=lambda c: str(c["period_num"]))
def test_arti_key_blinding_vector(case):
    esk, param = h(case["expanded_secret_key"]), h(case["blinding_factor"])
    blinded = ed25519.blind_expanded_secret(esk, param)
    assert blinded == h(case["blinded_expanded_secret_key"])
    assert ed25519.blind_public_key(h(case["public_key"]), param) == h(case["blinded_public_key"])
    signer = ed25519.Signer.from_expanded(blinded)
    assert signer.public_key == h(case["blinded_public_key"])
    message = case["message_ascii"].encode()
    ed25519.verify(signer.public_key, message, signer.sign(message))


@settings(max_examples=40)
@given(seeds, messages)
def test_expanded_signing_matches_openssl(seed, message):
    openssl = ed25519.Signer.from_seed(seed)
    pure = ed25519.Signer.from_expanded(openssl.expanded_secret)
    assert pure.public_key == openssl.public_key
    assert pure.sign(message) == openssl.sign(message)


@settings(max_examples=25)
@given(seeds, st.binary(min_size=32, max_size=32), messages)
def test_blinding_commutes_and_blinded_signatures_verify(seed, param, message):
    esk = ed25519.expand_seed(seed)
    blinded = ed25519.blind_expanded_secret(esk, param)
    blinded_public = ed25519.blind_public_key(ed25519.public_from_expanded(esk), param)
    assert ed25519.public_from_expanded(blinded) == blinded_public
    ed25519.verify(blinded_public, message, ed25519.sign_expanded(blinded, message))


@settings(max_examples=25)
@given(seeds)
def test_curve25519_to_ed25519_matches_the_same_scalar(seed):
    # X25519 with the clamped Ed25519 scalar gives the Montgomery form of the same point, so converting it
    # back with the right sign bit must give the Ed25519 public key.
    esk = ed25519.expand_seed(seed)
    x25519 = X25519PrivateKey.from_private_bytes(esk[:32])
    u = x25519.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    public = ed25519.public_from_expanded(esk)
    assert ed25519.curve25519_to_ed25519_public(u, public[31] >> 7) == public
    assert ed25519.curve25519_to_ed25519_public(u, 1 - (public[31] >> 7)) == public[:31] + bytes(
        [public[31] ^ 0x80])


def test_curve25519_minus_one_has_no_equivalent():
    with pytest.raises(CryptoError):
        ed25519.curve25519_to_ed25519_public((ed25519.P - 1).to_bytes(32, "little"), 0)
    with pytest.raises(LocalProtocolError):
        ed25519.curve25519_to_ed25519_public(bytes(32), 2)


def test_verify_rejects_forgeries_and_malformed_keys():
    case = RFC8032[1]
    key, msg, sig = h(case["public_key"]), h(case["message"]), h(case["signature"])
    for bad_sig in (sig[:-1] + bytes([sig[-1] ^ 1]), bytes([sig[0] ^ 0x80]) + sig[1:], sig[:63]):
        with pytest.raises(SignatureError):
            ed25519.verify(key, msg, bad_sig)
    with pytest.raises(SignatureError):
        ed25519.verify(key, msg + b"!", sig)
    for bad_key in (key[:31], bytes([2]) + bytes(31), b"\xff" * 32):  # short, not on the curve, y >= p
        with pytest.raises(SignatureError):
            ed25519.verify(bad_key, msg, sig)


def _negate_and_add_order2(public_key):
    """public_key plus the point (0, -1) of order 2: a key with a torsion component."""
    x, y, _, _ = ed25519.decode_point(public_key)
    x, y = (-x) % ed25519.P, (-y) % ed25519.P
    return ed25519.encode_point((x, y, 1, x * y % ed25519.P))


def test_subgroup_check_remembers_only_good_keys(monkeypatch):
    """The check is cached for speed (a client decodes its onion address on every connect): a key that
    passed is not multiplied again, and a refused key is refused every time."""
    good = h(RFC8032[0]["public_key"])
    bad = _negate_and_add_order2(good)
    ed25519._checked_public_key.cache_clear()
    ed25519.check_public_key(good)
    multiplied = []
    real_mul = ed25519._mul
    monkeypatch.setattr(ed25519, "_mul", lambda k, p: multiplied.append(k) or real_mul(k, p))
    ed25519.check_public_key(bytearray(good))
    assert multiplied == []
    for _ in range(2):
        with pytest.raises(CryptoError, match="torsion"):
            ed25519.check_public_key(bad)
    assert len(multiplied) == 2


def test_point_decoding_and_subgroup_check():
    good = h(RFC8032[0]["public_key"])
    ed25519.check_public_key(good)
    assert ed25519.encode_point(ed25519.decode_point(good)) == good
    with pytest.raises(CryptoError, match="torsion"):
        ed25519.check_public_key(_negate_and_add_order2(good))
    with pytest.raises(CryptoError, match="identity"):
        ed25519.check_public_key((1).to_bytes(32, "little"))
    with pytest.raises(CryptoError, match="non-canonical"):
        ed25519.decode_point(ed25519.P.to_bytes(32, "little"))
    with pytest.raises(CryptoError, match="x = 0"):
        ed25519.decode_point((1 | 1 << 255).to_bytes(32, "little"))
    with pytest.raises(CryptoError, match="not a point"):
        ed25519.decode_point((2).to_bytes(32, "little"))
    with pytest.raises(CryptoError):
        ed25519.blind_public_key((2).to_bytes(32, "little"), bytes(32))


def test_wrong_lengths_are_local_errors():
    with pytest.raises(LocalProtocolError):
        ed25519.expand_seed(bytes(31))
    with pytest.raises(LocalProtocolError):
        ed25519.Signer.from_seed(bytes(33))
    with pytest.raises(LocalProtocolError):
        ed25519.Signer.from_expanded(bytes(63))
    with pytest.raises(LocalProtocolError):
        ed25519.blind_expanded_secret(bytes(64), bytes(31))


def test_signer_repr_hides_the_secret():
    signer = ed25519.Signer.from_seed(h(RFC8032[0]["secret_key"]))
    assert RFC8032[0]["secret_key"] not in repr(signer)
    assert signer.expanded_secret.hex() not in repr(signer)
