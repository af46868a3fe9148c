"""nodes.core.authcert: v3 authority key certificates (dir-spec 3.1), against tor-gencert's and C tor's."""

import hashlib
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st

from nodes.core import netdoc, tor_rsa
from nodes.core.authcert import (
    AuthorityCert,
    make_authority_cert,
    parse_authority_cert,
    parse_authority_certs,
)
from nodes.core.errors import (
    DecodeError,
    ExpiredError,
    LocalProtocolError,
    RemoteProtocolError,
    SignatureError,
)

VECTORS = Path(__file__).with_name("dirspec_vectors")
# made by Debian's tor-gencert 0.4.9.11: `tor-gencert --create-identity-key -m 12 -a 127.0.0.1:7000`
GENCERT = (VECTORS / "tor-gencert-authority_certificate").read_bytes()
GENCERT_PUBLISHED = 1796627723  # 2026-12-07 07:15:23
GENCERT_EXPIRES = 1828163723  # 2027-12-07 07:15:23
# the three certificates of a C tor 0.4.9.11 test network (TestingTorNetwork, tor-gencert keys)
CTOR_CERTS = (VECTORS / "ctor-3auth-certs").read_bytes()

T0 = 1_800_000_000
IDENTITY = rsa.generate_private_key(65537, 1024)
SIGNING = rsa.generate_private_key(65537, 1024)


def cert(**kw) -> AuthorityCert:
    fields = dict(identity=IDENTITY, signing=SIGNING, published=T0, expires=T0 + 86400)
    fields.update(kw)
    return make_authority_cert(**fields)


def resign(text: bytes, identity=IDENTITY) -> bytes:
    """Replace the dir-key-certification signature after editing a certificate's body."""
    head = text[: text.index(b"dir-key-certification\n") + len(b"dir-key-certification\n")]
    sig = tor_rsa.sign_digest(identity, hashlib.sha1(head).digest())
    return head + tor_rsa.pem("SIGNATURE", sig).encode()


# ---------------------------------------------------------------------------------------------------------
# certificates made by C tor's tools


def test_tor_gencert_certificate_verifies():
    [u] = parse_authority_certs(GENCERT)
    c = u.check(GENCERT_PUBLISHED)
    assert c.raw == GENCERT
    assert c.v3ident.hex().upper() == "B6F699F644B79088BBC4F93620A88AF279FD68C9"  # its fingerprint line
    assert c.v3ident == hashlib.sha1(tor_rsa.public_der(c.identity_key)).digest()
    assert c.signing_key_digest == tor_rsa.fingerprint(c.signing_key)
    assert (c.published, c.expires) == (GENCERT_PUBLISHED, GENCERT_EXPIRES)
    assert c.address == ("127.0.0.1", 7000)
    assert (c.identity_key.key_size, c.signing_key.key_size) == (3072, 2048)  # tor-gencert's sizes
    assert c.encode() == GENCERT


def test_tor_gencert_certificate_tampering_is_caught():
    u = parse_authority_cert(GENCERT.replace(b"dir-key-expires 2027", b"dir-key-expires 2028"))
    with pytest.raises(SignatureError, match="dir-key-certification"):
        u.check(GENCERT_PUBLISHED)
    u = parse_authority_cert(GENCERT.replace(b"fingerprint B6F6", b"fingerprint B6F7"))
    with pytest.raises(SignatureError, match="fingerprint"):
        u.check(GENCERT_PUBLISHED)
    with pytest.raises(ExpiredError, match="expired"):
        parse_authority_cert(GENCERT).check(GENCERT_EXPIRES + 1)


def test_c_tor_certificate_concatenation():
    certs = [u.check(GENCERT_PUBLISHED) for u in parse_authority_certs(CTOR_CERTS)]
    assert len(certs) == 3 and b"".join(c.raw for c in certs) == CTOR_CERTS
    assert len({c.v3ident for c in certs}) == 3


# ---------------------------------------------------------------------------------------------------------
# ours


def test_round_trip_and_fields():
    c = cert(address=("10.0.0.1", 7000))
    assert parse_authority_cert(c.raw).check(T0) == c
    assert c.v3ident == tor_rsa.fingerprint(IDENTITY.public_key())
    assert c.signing_key_digest == tor_rsa.fingerprint(SIGNING.public_key())
    text = c.raw.decode()
    # tor-gencert's item order, with our values
    assert [it.keyword for it in netdoc.parse_items(c.raw, "cert")] == [
        "dir-key-certificate-version", "dir-address", "fingerprint", "dir-key-published", "dir-key-expires",
        "dir-identity-key", "dir-signing-key", "dir-key-crosscert", "dir-key-certification"]
    assert "-----BEGIN ID SIGNATURE-----" in text
    assert "dir-address" not in cert().raw.decode()
    assert parse_authority_cert(cert().raw).check(T0).address is None


def test_validity_window():
    u = parse_authority_cert(cert().raw)
    assert u.check(T0 + 86400)
    with pytest.raises(ExpiredError, match="expired"):
        u.check(T0 + 86401)
    assert u.check(T0 - 3600)  # published up to an hour in our future is tolerated
    with pytest.raises(ExpiredError, match="future"):
        u.check(T0 - 3601)
    with pytest.raises(ExpiredError):
        u.check(T0 - 10, max_skew=5)


def test_crosscert_by_another_signing_key_fails():
    other = rsa.generate_private_key(65537, 1024)
    c = cert()
    cross = tor_rsa.pem("ID SIGNATURE", tor_rsa.sign_digest(other, c.v3ident)).encode()
    text = re.sub(rb"-----BEGIN ID SIGNATURE-----\n.*?-----END ID SIGNATURE-----\n", cross, c.raw, flags=re.S)
    with pytest.raises(SignatureError, match="crosscert"):
        parse_authority_cert(resign(text)).check(T0)
    # the crosscert object may be typed SIGNATURE (dir-spec: "MUST allow the ID portion to be omitted")
    plain = c.raw.replace(b"ID SIGNATURE-----", b"SIGNATURE-----")
    assert parse_authority_cert(resign(plain)).check(T0).v3ident == c.v3ident


def test_unknown_items_are_ignored_and_signed():
    c = cert()
    extra = c.raw.replace(b"dir-identity-key\n", b"x-extension 1 2\n-----BEGIN BLOB-----\nAAAA\n"
                          b"-----END BLOB-----\ndir-identity-key\n")
    assert parse_authority_cert(resign(extra)).check(T0).v3ident == c.v3ident
    with pytest.raises(SignatureError):  # the signature covers them
        parse_authority_cert(resign(extra)[: len(extra) - 200] + c.raw[len(c.raw) - 200:]).check(T0)


def test_identity_key_sizes():
    # C tor sets no size on dir-identity-key; dir-spec asks for at least 1024 bits; tor-gencert makes 3072.
    big = rsa.generate_private_key(65537, 2048)
    assert parse_authority_cert(cert(identity=big).raw).check(T0).identity_key.key_size == 2048
    # a 512-bit key in a document is refused when parsing
    small = rsa.RSAPublicNumbers(65537, (1 << 511) | 0xF1).public_key()
    c = cert()
    small_pem = tor_rsa.public_pem(small).encode()
    text = re.sub(rb"dir-signing-key\n-----BEGIN RSA PUBLIC KEY-----\n.*?-----END RSA PUBLIC KEY-----\n",
                  b"dir-signing-key\n" + small_pem, c.raw, flags=re.S)
    with pytest.raises(DecodeError, match="512-bit"):
        parse_authority_cert(text)


@pytest.mark.parametrize("kw", [
    dict(expires=T0), dict(published=-1), dict(expires=10**12), dict(address=("10.0.0.1", 0)),
    dict(address=("::1", 7000)), dict(address=("10.0.0.01", 7000)), dict(signing="key"),
])
def test_impossible_values_are_local_errors(kw):
    with pytest.raises(LocalProtocolError):
        cert(**kw)


def _edit(data: bytes, old: bytes, new: bytes) -> bytes:
    assert old in data
    return data.replace(old, new, 1)


BAD = [
    (lambda d: _edit(d, b"dir-key-certificate-version 3", b"dir-key-certificate-version 4"), "begin with"),
    (lambda d: _edit(d, b"fingerprint ", b"fingerprint 00"), "40 hex"),
    (lambda d: _edit(d, b"fingerprint ", b"fingerprint AB CD"), "40 hex"),
    (lambda d: re.sub(rb"(fingerprint .*\n)", rb"\1\1", d), "fingerprint must appear"),
    (lambda d: re.sub(rb"dir-key-expires .*\n", b"", d), "dir-key-expires must appear"),
    (lambda d: _edit(d, b"dir-identity-key\n", b"dir-identity-key x\n"), "no arguments"),
    (lambda d: _edit(d, b"dir-key-crosscert\n", b"dir-key-crosscert 1\n"), "no arguments"),
    (lambda d: re.sub(rb"dir-key-published .*", b"dir-key-published 2023-13-01 00:00:00", d), "bad time"),
    (lambda d: re.sub(rb"dir-key-published .*", b"dir-key-published 1969-12-31 23:59:59", d), "1970"),
    (lambda d: re.sub(rb"dir-key-published .*", b"dir-key-published 2023-11-01 00:00:00 x", d), "needs"),
    (lambda d: _edit(d, b"ID SIGNATURE", b"BLOB").replace(b"END ID SIGNATURE", b"END BLOB"), "crosscert"),
    (lambda d: _edit(d, b"-----BEGIN SIGNATURE-----", b"-----BEGIN ID SIGNATURE-----").replace(
        b"-----END SIGNATURE-----", b"-----END ID SIGNATURE-----"), "SIGNATURE object"),
    (lambda d: _edit(d, b"dir-key-pub", b"dir-address 1.2.3.4:99999\ndir-key-pub"), "dir-address"),
    (lambda d: _edit(d, b"dir-key-pub", b"dir-address 1.2.3.4\ndir-key-pub"), "dir-address"),
    (lambda d: d + b"fingerprint x\n", "begin with"),
    (lambda d: d[: d.index(b"dir-key-certification")], "dir-key-certification"),
    (lambda d: _edit(d, b"\ndir-key-expires", b"\nfingerprint\n-----BEGIN X-----\nAA==\n-----END X-----\n"
                                            b"dir-key-expires"), ""),
    (lambda d: d.replace(b"\n", b"\r\n"), "CR"),
]


@pytest.mark.parametrize(("mangle", "message"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_certificates_are_decode_errors(mangle, message):
    with pytest.raises(DecodeError, match=re.escape(message) if message else None):
        parse_authority_certs(mangle(cert().raw))


def test_empty_input_is_no_certificates():
    assert parse_authority_certs(b"") == []
    with pytest.raises(DecodeError):
        parse_authority_cert(b"")
    with pytest.raises(DecodeError):
        parse_authority_cert(cert().raw * 2)


@given(st.binary(max_size=400))
def test_arbitrary_bytes_only_typed_errors(data):
    try:
        for u in parse_authority_certs(data):
            u.check(T0)
    except RemoteProtocolError:
        pass


@given(st.data())
def test_mutated_certificates_only_typed_errors(data):
    raw = bytearray(GENCERT if data.draw(st.booleans()) else cert().raw)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.sampled_from(b"\n -:=/+A0a\x00\xff"))
    try:
        for u in parse_authority_certs(bytes(raw)):
            u.check(GENCERT_PUBLISHED)
    except RemoteProtocolError:
        pass
