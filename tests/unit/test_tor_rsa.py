"""nodes.core.tor_rsa: Tor's raw-digest PKCS#1 v1.5 signatures, checked against cryptography."""

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from nodes.core import tor_rsa
from nodes.core.errors import DecodeError, SignatureError

KEY = rsa.generate_private_key(65537, 1024)


def test_signature_is_pkcs1_type1_over_the_raw_digest():
    digest = hashlib.sha256(b"document").digest()
    sig = tor_rsa.sign_digest(KEY, digest)
    assert len(sig) == 128
    # cryptography recovers the padded data with no DigestInfo: exactly the digest
    assert KEY.public_key().recover_data_from_signature(sig, padding.PKCS1v15(), None) == digest
    tor_rsa.verify_digest(KEY.public_key(), sig, digest)


def test_wrong_digest_key_or_length_is_a_signature_error():
    digest = hashlib.sha1(b"a").digest()
    sig = tor_rsa.sign_digest(KEY, digest)
    with pytest.raises(SignatureError):
        tor_rsa.verify_digest(KEY.public_key(), sig, hashlib.sha1(b"b").digest())
    with pytest.raises(SignatureError):
        tor_rsa.verify_digest(rsa.generate_private_key(65537, 1024).public_key(), sig, digest)
    with pytest.raises(SignatureError):
        tor_rsa.verify_digest(KEY.public_key(), sig[1:], digest)
    with pytest.raises(SignatureError):
        tor_rsa.verify_digest(KEY.public_key(), b"\xff" * 128, digest)


def test_fingerprint_is_sha1_of_pkcs1_der():
    der = tor_rsa.public_der(KEY.public_key())
    assert der[0] == 0x30
    assert tor_rsa.fingerprint(KEY.public_key()) == hashlib.sha1(der).digest()
    assert tor_rsa.load_public_der(der).public_numbers() == KEY.public_key().public_numbers()
    with pytest.raises(DecodeError):
        tor_rsa.load_public_der(der[:-1])


def test_recover_signed_data_allows_any_length_and_checks_the_padding():
    for data in (b"", b"x" * 52, b"y" * 117):
        sig = tor_rsa.sign_digest(KEY, data)
        assert tor_rsa.recover_signed_data(KEY.public_key(), sig) == data
    with pytest.raises(SignatureError):
        tor_rsa.recover_signed_data(KEY.public_key(), tor_rsa.sign_digest(KEY, b"x")[1:])
    with pytest.raises(SignatureError):  # a random block is not PKCS#1 type 1
        tor_rsa.recover_signed_data(KEY.public_key(), b"\x01" * 128)
    n = KEY.public_key().public_numbers().n
    d = KEY.private_numbers().d
    short_padding = b"\x00\x01" + b"\xff" * 7 + b"\x00" + b"z" * 119  # RFC 8017: at least eight FF bytes
    with pytest.raises(SignatureError):
        tor_rsa.recover_signed_data(KEY.public_key(),
                                    pow(int.from_bytes(short_padding, "big"), d, n).to_bytes(128, "big"))
