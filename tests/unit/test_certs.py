"""Tor Ed25519 certificates: a real certificate from a published descriptor, round trips, forgeries."""

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from nodes.core import ed25519
from nodes.core.certs import (
    AFFECTS_VALIDATION,
    CertExtension,
    CertType,
    Ed25519Cert,
    ExtType,
    KeyType,
    armor,
    dearmor,
    make_cert,
)
from nodes.core.errors import (
    DecodeError,
    ExpiredError,
    LocalProtocolError,
    RemoteProtocolError,
    SignatureError,
)

# Source: arti crates/tor-netdoc/testdata/hsdesc1.txt, the descriptor-signing-key-cert of a descriptor made by
# C tor: type 08, certifying the descriptor signing key, signed by (and embedding) the blinded key.
ARTI_HSDESC1_SIGNING_KEY_CERT = """\
-----BEGIN ED25519 CERT-----
AQgABxkrAQrYrm6iwT9TAr4kfUsQFvW64zCkoLkBRP7x5Lt5BOF6AQAgBABDzA1i
/GJS9XhwXKZFpGEJ4mUpA0OxE36QGJdEsgs/LfW41RhfJSpAwk/1k++LkJOolfaR
nfuvBUh6eXyCVDtziY3eI1xzDhsHfAdvZhWbE+5yNlVQ3+N7fiRvfdk6jA4=
-----END ED25519 CERT-----
"""
ARTI_EXPIRATION_HOURS = 0x0007192B

BLINDED = ed25519.Signer.from_seed(bytes(range(32)))
DESC_SIGNING = ed25519.Signer.from_seed(bytes(range(1, 33)))
NOW = 1_700_000_000


def test_cert_types_are_cert_spec_a1():
    assert (CertType.HS_DESC_SIGNING, CertType.HS_INTRO_AUTH, CertType.HS_NTOR_ENC) == (0x08, 0x09, 0x0B)
    assert [int(t) for t in CertType] == list(range(1, 0x0C))
    assert ExtType.SIGNED_WITH_ED25519_KEY == 0x04 and KeyType.ED25519 == 1


def test_published_descriptor_signing_key_cert():
    data = dearmor(ARTI_HSDESC1_SIGNING_KEY_CERT)
    cert = Ed25519Cert.decode(data)
    assert cert.cert_type is CertType.HS_DESC_SIGNING
    assert cert.key_type is KeyType.ED25519
    assert cert.expiration_hours == ARTI_EXPIRATION_HOURS
    assert cert.signing_key is not None and len(cert.extensions) == 1
    assert cert.extensions[0].flags == 0
    assert cert.check(cert.expires - 1) is cert
    assert cert.check(cert.expires - 1, signing_key=cert.signing_key) is cert
    with pytest.raises(ExpiredError):
        cert.check(cert.expires)
    with pytest.raises(SignatureError):
        cert.check(cert.expires - 1, signing_key=BLINDED.public_key)
    assert cert.encode() == data
    assert armor(cert) == ARTI_HSDESC1_SIGNING_KEY_CERT


@pytest.mark.parametrize("cert_type",
                         [CertType.HS_DESC_SIGNING, CertType.HS_INTRO_AUTH, CertType.HS_NTOR_ENC])
def test_make_and_check(cert_type):
    cert = make_cert(cert_type, DESC_SIGNING.public_key, BLINDED, NOW + 3 * 3600)
    decoded = Ed25519Cert.decode(cert.encode())
    assert decoded == cert and decoded.cert_type is cert_type
    assert decoded.signing_key == BLINDED.public_key
    assert decoded.check(NOW) == cert
    assert decoded.check(NOW, signing_key=BLINDED.public_key) == cert


def test_enc_key_cross_cert_certifies_the_ed25519_form_of_the_ntor_key():
    # Cert type 0B: the descriptor signing key certifies the intro encryption key in Ed25519 form, sign bit 0.
    enc = X25519PrivateKey.from_private_bytes(bytes(range(5, 37))).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)
    certified = ed25519.curve25519_to_ed25519_public(enc, 0)
    cert = make_cert(CertType.HS_NTOR_ENC, certified, DESC_SIGNING, NOW + 3600)
    checked = Ed25519Cert.decode(cert.encode()).check(NOW, signing_key=DESC_SIGNING.public_key)
    assert checked.certified_key == certified


def test_expiry_is_rounded_up_to_whole_hours():
    assert make_cert(CertType.HS_INTRO_AUTH, bytes(32), BLINDED, 3600).expiration_hours == 1
    assert make_cert(CertType.HS_INTRO_AUTH, bytes(32), BLINDED, 3601).expiration_hours == 2
    cert = make_cert(CertType.HS_INTRO_AUTH, bytes(32), BLINDED, NOW)
    assert cert.expires >= NOW > cert.expires - 3600
    with pytest.raises(LocalProtocolError):
        make_cert(CertType.HS_INTRO_AUTH, bytes(32), BLINDED, -1)


def test_expired():
    cert = make_cert(CertType.HS_DESC_SIGNING, DESC_SIGNING.public_key, BLINDED, NOW + 7200)
    cert.check(cert.expires - 1)
    for now in (cert.expires, cert.expires + 1):
        with pytest.raises(ExpiredError):
            cert.check(now)


def test_every_single_bit_flip_is_refused():
    data = make_cert(CertType.HS_DESC_SIGNING, DESC_SIGNING.public_key, BLINDED, NOW + 3600).encode()
    for bit in range(len(data) * 8):
        forged = bytearray(data)
        forged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(RemoteProtocolError):
            Ed25519Cert.decode(bytes(forged)).check(NOW, signing_key=BLINDED.public_key)


def test_forged_signature_and_certified_key():
    cert = make_cert(CertType.HS_INTRO_AUTH, DESC_SIGNING.public_key, BLINDED, NOW + 3600)
    sig, key = bytearray(cert.signature), bytearray(cert.certified_key)
    sig[10] ^= 4
    key[0] ^= 1
    bad_sig = Ed25519Cert(cert.cert_type, cert.expiration_hours, cert.key_type, cert.certified_key,
                          cert.extensions, bytes(sig))
    bad_key = Ed25519Cert(cert.cert_type, cert.expiration_hours, cert.key_type, bytes(key), cert.extensions,
                          cert.signature)
    for forged in (bad_sig, bad_key):
        with pytest.raises(SignatureError):
            forged.check(NOW)


def test_signing_key_rules():
    embedded = make_cert(CertType.HS_INTRO_AUTH, DESC_SIGNING.public_key, BLINDED, NOW + 3600)
    with pytest.raises(SignatureError, match="expected"):
        embedded.check(NOW, signing_key=DESC_SIGNING.public_key)  # the wrong key, whatever the signature
    bare = make_cert(CertType.HS_INTRO_AUTH, DESC_SIGNING.public_key, BLINDED, NOW + 3600,
                     include_signing_key=False)
    assert bare.signing_key is None and bare.extensions == ()
    with pytest.raises(SignatureError, match="no signing key"):
        bare.check(NOW)
    with pytest.raises(SignatureError):
        bare.check(NOW, signing_key=DESC_SIGNING.public_key)
    assert bare.check(NOW, signing_key=BLINDED.public_key) == bare
    # An embedded key that signed the cert but is not the expected key is refused too.
    impostor = make_cert(CertType.HS_INTRO_AUTH, DESC_SIGNING.public_key, DESC_SIGNING, NOW + 3600)
    with pytest.raises(SignatureError):
        impostor.check(NOW, signing_key=BLINDED.public_key)


def _signed_with_extensions(extensions):
    unsigned = Ed25519Cert(CertType.HS_INTRO_AUTH, NOW // 3600 + 2, KeyType.ED25519, DESC_SIGNING.public_key,
                           extensions, bytes(64))
    signature = BLINDED.sign(unsigned.signed_part())
    return Ed25519Cert.decode(unsigned.signed_part() + signature)


def test_unknown_extensions():
    ignorable = _signed_with_extensions((CertExtension(0x77, 0, b"later"),))
    assert ignorable.check(NOW, signing_key=BLINDED.public_key) == ignorable
    critical = _signed_with_extensions((CertExtension(0x77, AFFECTS_VALIDATION, b"later"),))
    with pytest.raises(DecodeError, match="AFFECTS_VALIDATION"):
        critical.check(NOW, signing_key=BLINDED.public_key)
    # The known extension may carry the flag.
    flagged = _signed_with_extensions((CertExtension(ExtType.SIGNED_WITH_ED25519_KEY, AFFECTS_VALIDATION,
                                                     BLINDED.public_key),))
    assert flagged.check(NOW) == flagged


def test_decode_errors():
    good = make_cert(CertType.HS_DESC_SIGNING, DESC_SIGNING.public_key, BLINDED, NOW + 3600).encode()
    ext04 = bytes([0, 32, 4, 0]) + BLINDED.public_key
    cases = {
        "version": b"\x02" + good[1:],
        "truncated": good[:-1],
        "trailing": good + b"\x00",
        "empty": b"",
        "short ext04": good[:39] + b"\x01" + bytes([0, 31, 4, 0]) + bytes(31) + bytes(64),
        "two ext04": good[:39] + b"\x02" + ext04 + ext04 + bytes(64),
        "extension past the end": good[:39] + b"\x01" + bytes([0xFF, 0xFF, 9, 0]) + bytes(64),
    }
    for name, data in cases.items():
        with pytest.raises(DecodeError):
            Ed25519Cert.decode(data)
            pytest.fail(name)


def test_impossible_values_are_local_errors():
    key, sig = bytes(32), bytes(64)
    for args in [(0x100, 1, 1, key, (), sig), (8, 2**32, 1, key, (), sig), (8, 1, 1, key[:31], (), sig),
                 (8, 1, 1, key, (), sig[:63]), (8, 1, 1, key, (CertExtension(4, 0, b"short"),), sig),
                 (8, 1, 1, key, (CertExtension(9, 0, b""),) * 256, sig)]:
        with pytest.raises(LocalProtocolError):
            Ed25519Cert(*args)
    with pytest.raises(LocalProtocolError):
        CertExtension(0x100, 0, b"")
    with pytest.raises(LocalProtocolError):
        CertExtension(1, 0, bytes(0x10000))


key32 = st.binary(min_size=32, max_size=32)
extensions = st.lists(st.builds(CertExtension, st.integers(0, 255).filter(lambda t: t != 4),
                                st.integers(0, 255), st.binary(max_size=40)), max_size=4)
certs = st.builds(
    lambda t, exp, kt, key, exts, embed, sig: Ed25519Cert(
        t, exp, kt, key, tuple(exts) + ((CertExtension(4, 0, embed),) if embed else ()), sig),
    st.integers(0, 255), st.integers(0, 2**32 - 1), st.integers(0, 255), key32, extensions,
    st.one_of(st.none(), key32), st.binary(min_size=64, max_size=64))


@given(certs)
def test_codec_round_trip(cert):
    data = cert.encode()
    decoded = Ed25519Cert.decode(data)
    assert decoded == cert and decoded.encode() == data
    assert dearmor(armor(cert)) == data
    assert all(len(line) <= 64 for line in armor(cert).splitlines())


@given(st.binary(min_size=32, max_size=32), st.integers(0, 2**31))
def test_made_certs_round_trip_through_armor(certified, expires):
    cert = make_cert(CertType.HS_INTRO_AUTH, certified, DESC_SIGNING, expires)
    again = Ed25519Cert.decode(dearmor(armor(cert)))
    assert again == cert
    assert again.check(cert.expires - 1, signing_key=DESC_SIGNING.public_key) == cert


def test_dearmor_errors():
    body = ARTI_HSDESC1_SIGNING_KEY_CERT
    bad_texts = ("", body.replace("BEGIN ED25519 CERT", "BEGIN MESSAGE"),
                 body.replace("-----END ED25519 CERT-----", ""), body.replace("AQgABxkr", "AQgA!xkr"),
                 body.replace("jA4=", "jA4"), body.replace("AQgA", "AQg\u00c4"),
                 "-----BEGIN ED25519 CERT-----")
    for bad in bad_texts:
        with pytest.raises(DecodeError):
            dearmor(bad)
    assert dearmor("\n  " + body + "\n\n") == dearmor(body)
    assert dearmor(body.replace("\n", "\r\n")) == dearmor(body)
