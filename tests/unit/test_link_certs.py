"""Link certificates and link authentication (tor-spec 4.2-4.4, cert-spec 2.3): round trips, a real C tor
relay's CERTS cell, and every way a peer's certificates can be wrong."""

import datetime
import hashlib
import json
import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from nodes.core import ed25519, link_auth, link_certs, tor_rsa
from nodes.core.cells import AuthChallenge, Authenticate, Certs
from nodes.core.certs import CertType, Ed25519Cert, ExtType, KeyType, make_cert
from nodes.core.errors import (
    DecodeError,
    ExpiredError,
    IdentityMismatch,
    LocalProtocolError,
    RemoteProtocolError,
    SignatureError,
)
from nodes.core.link_certs import DAY, HOUR, LinkIdentity, RsaCrossCert
from tests.fuzz.targets_link_certs import (
    AUTHENTICATE,
    CLOG,
    INITIATOR,
    INITIATOR_CERTS,
    NOW,
    RESPONDER,
    RESPONDER_CERTS,
    SLOG,
    TLS_CERT,
    TLS_SECRETS,
    VERIFIED_INITIATOR,
    seeded_rng,
)

KEY_2048 = rsa.generate_private_key(65537, 2048)
KEY_1536 = rsa.generate_private_key(65537, 1536)  # its signature still fits the cross-cert's one-byte SIGLEN
OTHER_RSA = rsa.generate_private_key(65537, 1024)

# Captured from a real C tor 0.4.9.11 relay (Debian's package) on a loopback link: its CERTS and
# AUTH_CHALLENGE bodies, the TLS certificate it showed, its fingerprint and Ed25519 identity
# (keys/ed25519_master_id_public_key).
CTOR = json.loads((Path(__file__).parent / "ctor-link-certs.json").read_text())


def _with(certs: Certs, cert_type: int, body: bytes) -> Certs:
    return Certs(tuple((t, body if t == cert_type else c) for t, c in certs.certs))


def _without(certs: Certs, cert_type: int) -> Certs:
    return Certs(tuple((t, c) for t, c in certs.certs if t != cert_type))


def _verify(certs: Certs, **kw):
    return link_certs.verify_responder_certs(certs, TLS_CERT, NOW, **kw)


def _x509(key, now: int, *, signer=None, lifetime=365 * DAY) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "www.example.com")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(7).not_valid_before(datetime.datetime.fromtimestamp(now - DAY, datetime.UTC))
            .not_valid_after(datetime.datetime.fromtimestamp(now - DAY + lifetime, datetime.UTC))
            .sign(signer or key, hashes.SHA256()))
    return cert.public_bytes(Encoding.DER)


# --- type 2: the RSA identity X.509 certificate


@pytest.mark.parametrize("seed", range(8))
def test_identity_x509_is_shaped_like_c_tors(seed):
    der = link_certs.rsa_identity_x509(RESPONDER.rsa_identity, NOW, seeded_rng(seed))
    cert = x509.load_der_x509_certificate(der)
    assert cert.version == x509.Version.v3
    assert cert.subject == cert.issuer
    (cn,) = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert re.fullmatch(r"www\.[a-z2-7]{8,20}\.com", cn.value)
    assert len(cert.subject) == 1 and len(cert.extensions) == 0
    assert cert.signature_hash_algorithm.name == "sha256"
    assert 0 < cert.serial_number < 2**64
    start, end = (int(t.timestamp()) for t in (cert.not_valid_before_utc, cert.not_valid_after_utc))
    assert start % DAY == 0 and end - start == 365 * DAY
    assert start <= NOW and end > NOW + DAY  # starts in the past, still more than a day to run
    assert link_certs.check_rsa_identity_x509(der, NOW).public_numbers() == \
        RESPONDER.rsa_identity.public_key().public_numbers()


def test_identity_x509_start_dates_spread_over_the_year():
    starts = {x509.load_der_x509_certificate(
        link_certs.rsa_identity_x509(RESPONDER.rsa_identity, NOW, seeded_rng(s))).not_valid_before_utc
        for s in range(20)}
    assert len(starts) > 10


def test_identity_x509_valid_for_is_kept():
    for s in range(10):
        der = link_certs.rsa_identity_x509(RESPONDER.rsa_identity, NOW, seeded_rng(s), valid_for=300 * DAY)
        assert link_certs.x509_not_after(der) > NOW + 300 * DAY


def test_identity_x509_lifetime_slop_as_c_tor():
    der = _x509(RESPONDER.rsa_identity, NOW, lifetime=10 * DAY)  # valid NOW-1d .. NOW+9d
    not_after = NOW + 9 * DAY
    link_certs.check_rsa_identity_x509(der, not_after + 2 * DAY)
    with pytest.raises(ExpiredError):
        link_certs.check_rsa_identity_x509(der, not_after + 2 * DAY + 1)
    link_certs.check_rsa_identity_x509(der, NOW - DAY - 30 * DAY)
    with pytest.raises(ExpiredError):
        link_certs.check_rsa_identity_x509(der, NOW - DAY - 30 * DAY - 1)


def test_identity_x509_refusals():
    with pytest.raises(DecodeError, match="2048 bits"):
        link_certs.check_rsa_identity_x509(_x509(KEY_2048, NOW), NOW)
    with pytest.raises(SignatureError, match="self-signed"):
        link_certs.check_rsa_identity_x509(_x509(RESPONDER.rsa_identity, NOW, signer=OTHER_RSA), NOW)
    with pytest.raises(DecodeError, match="not an RSA key"):
        link_certs.check_rsa_identity_x509(_x509(ec.generate_private_key(ec.SECP256R1()), NOW), NOW)
    with pytest.raises(DecodeError):
        link_certs.check_rsa_identity_x509(RESPONDER.rsa_id_cert + b"\0", NOW)
    with pytest.raises(DecodeError):
        link_certs.check_rsa_identity_x509(b"\x30\x03\x02\x01\x01", NOW)
    tampered = bytearray(RESPONDER.rsa_id_cert)
    tampered[-5] ^= 1
    with pytest.raises(SignatureError):
        link_certs.check_rsa_identity_x509(bytes(tampered), NOW)


# --- type 7: the RSA->Ed25519 cross-certificate


def test_crosscert_layout_and_signature():
    ed = bytes(range(32))
    data = link_certs.rsa_ed25519_crosscert(OTHER_RSA, ed, 500_000)
    assert len(data) == 32 + 4 + 1 + 128
    assert data[:32] == ed and data[32:36] == (500_000).to_bytes(4, "big") and data[36] == 128
    digest = hashlib.sha256(b"Tor TLS RSA/Ed25519 cross-certificate" + data[:36]).digest()
    # PKCS#1 v1.5 over the bare digest: cryptography recovers exactly the 32 bytes, no DigestInfo
    assert OTHER_RSA.public_key().recover_data_from_signature(data[37:], padding.PKCS1v15(), None) == digest
    cert = RsaCrossCert.decode(data)
    assert cert.encode() == data and cert.expires == 500_000 * HOUR
    assert cert.check(OTHER_RSA.public_key(), ed, 500_000 * HOUR) is cert  # valid up to its expiry


def test_crosscert_refusals():
    ed = bytes(range(32))
    data = link_certs.rsa_ed25519_crosscert(OTHER_RSA, ed, 500_000)
    cert = RsaCrossCert.decode(data)
    with pytest.raises(SignatureError, match="another Ed25519 key"):
        cert.check(OTHER_RSA.public_key(), bytes(32), NOW)
    with pytest.raises(ExpiredError):
        cert.check(OTHER_RSA.public_key(), ed, 500_000 * HOUR + 1)
    with pytest.raises(SignatureError):
        cert.check(RESPONDER.rsa_identity.public_key(), ed, NOW)
    bad = bytearray(data)
    bad[-1] ^= 1
    with pytest.raises(SignatureError):
        RsaCrossCert.decode(bytes(bad)).check(OTHER_RSA.public_key(), ed, NOW)
    resigned_later = RsaCrossCert(ed, 600_000, cert.signature)  # the expiry is covered by the signature
    with pytest.raises(SignatureError):
        resigned_later.check(OTHER_RSA.public_key(), ed, NOW)
    with pytest.raises(DecodeError):
        RsaCrossCert.decode(data + b"\0")
    with pytest.raises(DecodeError):
        RsaCrossCert.decode(data[:-1])
    with pytest.raises(LocalProtocolError):
        link_certs.rsa_ed25519_crosscert(OTHER_RSA, ed, 2**32)
    with pytest.raises(LocalProtocolError):
        link_certs.rsa_ed25519_crosscert(OTHER_RSA, ed[:31], 1)


# --- LinkIdentity


def test_link_identity_parts_fit_together():
    ident = RESPONDER
    der = tor_rsa.public_der(ident.rsa_identity.public_key())
    assert ident.node_id == tor_rsa.fingerprint(ident.rsa_identity.public_key())
    assert ident.rsa_id_digest == hashlib.sha256(der).digest()
    assert ident.ed25519_public == ed25519.Signer.from_seed(bytes([1]) * 32).public_key
    assert ident.signing_cert.signing_key == ident.ed25519_public
    assert ident.public == link_certs.PeerIdentity(ident.node_id, ident.ed25519_public, ident.rsa_id_digest)
    assert ident.expires >= NOW + link_certs.SIGNING_KEY_LIFETIME
    assert RsaCrossCert.decode(ident.crosscert).expires >= NOW + link_certs.CROSSCERT_LIFETIME


def test_link_identity_refuses_what_c_tor_would():
    with pytest.raises(LocalProtocolError, match="1024"):
        link_certs.make_link_identity(KEY_2048, bytes(32), bytes(32), NOW, seeded_rng(0))
    with pytest.raises(LocalProtocolError):
        link_certs.make_link_identity(OTHER_RSA, bytes(31), bytes(32), NOW, seeded_rng(0))
    with pytest.raises(LocalProtocolError):  # crosscert for another identity
        LinkIdentity(RESPONDER.rsa_identity, RESPONDER.ed25519_identity, RESPONDER.signing_key,
                     RESPONDER.signing_cert, RESPONDER.link_auth_key, RESPONDER.link_auth_cert,
                     RESPONDER.rsa_id_cert, INITIATOR.crosscert)
    with pytest.raises(LocalProtocolError):  # type-6 cert of another key
        LinkIdentity(RESPONDER.rsa_identity, RESPONDER.ed25519_identity, RESPONDER.signing_key,
                     RESPONDER.signing_cert, RESPONDER.link_auth_key, INITIATOR.link_auth_cert,
                     RESPONDER.rsa_id_cert, RESPONDER.crosscert)
    with pytest.raises(LocalProtocolError, match="expired"):
        link_certs.responder_certs(RESPONDER, TLS_CERT, RESPONDER.expires)
    with pytest.raises(LocalProtocolError, match="expired"):
        link_certs.initiator_certs(RESPONDER, RESPONDER.expires)


# --- the responder's CERTS cell


def test_responder_certs_shape():
    assert [t for t, _ in RESPONDER_CERTS.certs] == [2, 4, 5, 7]
    body = dict(RESPONDER_CERTS.certs)
    assert body[2] == RESPONDER.rsa_id_cert and body[7] == RESPONDER.crosscert
    id_sign = Ed25519Cert.decode(body[4])
    assert id_sign.cert_type == CertType.IDENTITY_V_SIGNING
    assert id_sign.signing_key == RESPONDER.ed25519_public
    link = Ed25519Cert.decode(body[5])
    assert link.cert_type == CertType.SIGNING_V_TLS_CERT and link.key_type == KeyType.SHA256_OF_X509
    assert link.certified_key == hashlib.sha256(TLS_CERT).digest()
    assert link.signing_key is None  # as C tor: the signing key is known from type 4
    assert link.expires == -(-(NOW + link_certs.LINK_CERT_LIFETIME) // HOUR) * HOUR  # rounded up to an hour
    assert Certs.decode(RESPONDER_CERTS.encode()) == RESPONDER_CERTS


def test_responder_certs_round_trip():
    peer = link_certs.verify_responder_certs(Certs.decode(RESPONDER_CERTS.encode()), TLS_CERT, NOW,
                                             expected_node_id=RESPONDER.node_id,
                                             expected_ed25519=RESPONDER.ed25519_public)
    assert peer == link_certs.PeerIdentity(RESPONDER.node_id, RESPONDER.ed25519_public,
                                           RESPONDER.rsa_id_digest)


def test_order_unknown_types_and_type_1_do_not_matter():
    shuffled = Certs(tuple(reversed(RESPONDER_CERTS.certs)) + ((1, b"not even X.509"), (8, b""), (200, b"x")))
    assert _verify(shuffled).node_id == RESPONDER.node_id


def test_wrong_tls_certificate():
    with pytest.raises(SignatureError, match="TLS certificate"):
        link_certs.verify_responder_certs(RESPONDER_CERTS, TLS_CERT + b"!", NOW)


def test_wrong_identity_is_identity_mismatch():
    with pytest.raises(IdentityMismatch):
        _verify(RESPONDER_CERTS, expected_node_id=INITIATOR.node_id)
    with pytest.raises(IdentityMismatch):
        _verify(RESPONDER_CERTS, expected_ed25519=INITIATOR.ed25519_public)
    with pytest.raises(LocalProtocolError):
        _verify(RESPONDER_CERTS, expected_node_id=bytes(19))


def test_expired_certificates():
    link_expiry = Ed25519Cert.decode(dict(RESPONDER_CERTS.certs)[5]).expires
    _verify_at = link_certs.verify_responder_certs
    _verify_at(RESPONDER_CERTS, TLS_CERT, link_expiry - 1)
    with pytest.raises(ExpiredError, match="type 5"):
        _verify_at(RESPONDER_CERTS, TLS_CERT, link_expiry)
    late = link_certs.responder_certs(RESPONDER, TLS_CERT, RESPONDER.expires - 10)  # type 5 clamped to type 4
    with pytest.raises(ExpiredError, match="type 4"):
        _verify_at(late, TLS_CERT, RESPONDER.signing_cert.expires)
    short = link_certs.rsa_ed25519_crosscert(RESPONDER.rsa_identity, RESPONDER.ed25519_public, NOW // HOUR)
    with pytest.raises(ExpiredError, match="cross-certificate"):
        _verify(_with(RESPONDER_CERTS, 7, short))


def test_bad_crosscert_signature():
    bad = bytearray(RESPONDER.crosscert)
    bad[-3] ^= 0x40
    with pytest.raises(SignatureError, match="cross-certificate"):
        _verify(_with(RESPONDER_CERTS, 7, bytes(bad)))
    by_other_key = link_certs.rsa_ed25519_crosscert(OTHER_RSA, RESPONDER.ed25519_public, NOW // HOUR + 1000)
    with pytest.raises(SignatureError, match="cross-certificate"):
        _verify(_with(RESPONDER_CERTS, 7, by_other_key))


def test_crosscert_for_another_ed25519_key():
    with pytest.raises(SignatureError, match="another Ed25519 key"):
        _verify(_with(RESPONDER_CERTS, 7, INITIATOR.crosscert))
    other = link_certs.rsa_ed25519_crosscert(RESPONDER.rsa_identity, INITIATOR.ed25519_public,
                                             NOW // HOUR + 99)
    with pytest.raises(SignatureError, match="another Ed25519 key"):
        _verify(_with(RESPONDER_CERTS, 7, other))


@pytest.mark.parametrize("cert_type", [2, 4, 5, 7])
def test_missing_type(cert_type):
    with pytest.raises(DecodeError, match=f"type-{cert_type}"):
        _verify(_without(RESPONDER_CERTS, cert_type))


@pytest.mark.parametrize("cert_type", [1, 2, 3, 4, 5, 6, 7])
def test_duplicated_type(cert_type):
    extra = dict(RESPONDER_CERTS.certs).get(cert_type, b"junk")
    certs = Certs(RESPONDER_CERTS.certs + ((cert_type, extra), (cert_type, extra)))
    with pytest.raises(DecodeError, match="more than one"):
        _verify(certs)


def test_non_1024_rsa_identity():
    ed = RESPONDER.ed25519_public
    certs = _with(_with(RESPONDER_CERTS, 2, _x509(KEY_1536, NOW)), 7,
                  link_certs.rsa_ed25519_crosscert(KEY_1536, ed, NOW // HOUR + 100))
    with pytest.raises(DecodeError, match="1536 bits"):
        _verify(certs)
    with pytest.raises(DecodeError, match="2048 bits"):
        _verify(_with(RESPONDER_CERTS, 2, _x509(KEY_2048, NOW)))


def test_rsa_identity_of_another_node():
    with pytest.raises(SignatureError, match="cross-certificate"):  # type 7 was not signed by this RSA key
        _verify(_with(RESPONDER_CERTS, 2, INITIATOR.rsa_id_cert))


def test_type4_must_embed_and_be_signed_by_the_identity():
    bare = make_cert(CertType.IDENTITY_V_SIGNING, RESPONDER.signing_key.public_key,
                     RESPONDER.ed25519_identity,
                     NOW + DAY, include_signing_key=False)
    with pytest.raises(DecodeError, match="signed-with-ed25519-key"):
        _verify(_with(RESPONDER_CERTS, 4, bare.encode()))
    forged = bytearray(RESPONDER.signing_cert.encode())
    forged[-1] ^= 1
    with pytest.raises(SignatureError, match="type 4"):
        _verify(_with(RESPONDER_CERTS, 4, bytes(forged)))


def test_type4_of_another_identity_breaks_the_chain():
    # a whole valid type 4 of another node: its signing key did not sign our type 5, nor does type 7 match
    with pytest.raises(SignatureError):
        _verify(_with(RESPONDER_CERTS, 4, INITIATOR.signing_cert.encode()))


def test_type5_signed_by_another_signing_key():
    other = make_cert(CertType.SIGNING_V_TLS_CERT, hashlib.sha256(TLS_CERT).digest(), INITIATOR.signing_key,
                      NOW + DAY, include_signing_key=False, key_type=KeyType.SHA256_OF_X509)
    with pytest.raises(SignatureError, match="type 5"):
        _verify(_with(RESPONDER_CERTS, 5, other.encode()))
    embeds_other = make_cert(CertType.SIGNING_V_TLS_CERT, hashlib.sha256(TLS_CERT).digest(),
                             INITIATOR.signing_key, NOW + DAY, key_type=KeyType.SHA256_OF_X509)
    with pytest.raises(SignatureError, match="type 5"):
        _verify(_with(RESPONDER_CERTS, 5, embeds_other.encode()))


def test_type5_with_old_key_type_1_is_accepted():
    old = make_cert(CertType.SIGNING_V_TLS_CERT, hashlib.sha256(TLS_CERT).digest(), RESPONDER.signing_key,
                    NOW + DAY, include_signing_key=False, key_type=KeyType.ED25519)
    assert _verify(_with(RESPONDER_CERTS, 5, old.encode())).node_id == RESPONDER.node_id


def test_certificate_in_the_wrong_slot():
    with pytest.raises(DecodeError, match="slot"):
        _verify(_with(RESPONDER_CERTS, 5, INITIATOR.link_auth_cert.encode()))
    with pytest.raises(DecodeError, match="type-5"):
        _verify(_with(RESPONDER_CERTS, 5, b"\x01\x05garbage"))


def test_unknown_critical_extension_in_type4():
    cert = RESPONDER.signing_cert
    ext = (*cert.extensions, type(cert.extensions[0])(0x77, 0x01, b"?"))
    unsigned = Ed25519Cert(cert.cert_type, cert.expiration_hours, cert.key_type, cert.certified_key, ext,
                           bytes(64))
    signed = Ed25519Cert(cert.cert_type, cert.expiration_hours, cert.key_type, cert.certified_key, ext,
                         RESPONDER.ed25519_identity.sign(unsigned.signed_part()))
    assert signed.signing_key == RESPONDER.ed25519_public
    assert ext[0].ext_type == ExtType.SIGNED_WITH_ED25519_KEY
    with pytest.raises(DecodeError, match="AFFECTS_VALIDATION"):
        _verify(_with(RESPONDER_CERTS, 4, signed.encode()))


@given(st.binary(max_size=2000))
def test_arbitrary_certs_body_only_typed_errors(data):
    try:
        link_certs.verify_responder_certs(Certs.decode(data), TLS_CERT, NOW)
    except RemoteProtocolError:
        pass


_BODIES = (st.sampled_from([c for _, c in RESPONDER_CERTS.certs + INITIATOR_CERTS.certs])
           | st.binary(max_size=300))


@given(st.lists(st.tuples(st.integers(0, 9), _BODIES), max_size=8))
def test_arbitrary_cert_lists_only_typed_errors(certs):
    for verify in (lambda c: _verify(c), lambda c: link_certs.verify_initiator_certs(c, NOW)):
        try:
            verify(Certs(tuple(certs)))
        except RemoteProtocolError:
            pass


# --- a real C tor relay's CERTS cell


def test_c_tor_relay_certs_verify():
    certs = Certs.decode(bytes.fromhex(CTOR["certs_body"]))
    assert [t for t, _ in certs.certs] == [1, 2, 4, 5, 7]  # C tor still sends the RSA link certificate
    tls = bytes.fromhex(CTOR["tls_cert_der"])
    peer = link_certs.verify_responder_certs(certs, tls, CTOR["now"],
                                             expected_node_id=bytes.fromhex(CTOR["node_id"]),
                                             expected_ed25519=bytes.fromhex(CTOR["ed25519_identity"]))
    assert peer.node_id.hex() == CTOR["node_id"]
    link = Ed25519Cert.decode(dict(certs.certs)[5])
    assert link.key_type == KeyType.SHA256_OF_X509 and link.signing_key is None  # what we send too
    with pytest.raises(SignatureError):
        link_certs.verify_responder_certs(certs, tls + b"\0", CTOR["now"])
    with pytest.raises(ExpiredError):
        link_certs.verify_responder_certs(certs, tls, CTOR["now"] + 30 * DAY)
    with pytest.raises(IdentityMismatch):
        link_certs.verify_responder_certs(certs, tls, CTOR["now"], expected_node_id=RESPONDER.node_id)


def test_c_tor_relay_auth_challenge_offers_method_3_only():
    challenge = AuthChallenge.decode(bytes.fromhex(CTOR["auth_challenge_body"]))
    assert challenge.methods == (3,)
    ours = link_auth.make_auth_challenge(seeded_rng(1))
    assert ours.methods == challenge.methods and len(ours.encode()) == len(challenge.encode())
    assert link_auth.choose_auth_method(challenge) == 3
    assert link_auth.choose_auth_method(AuthChallenge(bytes(32), (1, 2))) is None


# --- the initiator's CERTS and AUTHENTICATE


def test_initiator_certs_shape_and_check():
    assert [t for t, _ in INITIATOR_CERTS.certs] == [2, 4, 6, 7]
    assert VERIFIED_INITIATOR.claimed == link_certs.PeerIdentity(INITIATOR.node_id, INITIATOR.ed25519_public,
                                                                 INITIATOR.rsa_id_digest)
    assert VERIFIED_INITIATOR.link_auth_key == INITIATOR.link_auth_key.public_key
    with pytest.raises(DecodeError, match="type-6"):  # a responder's cell does not authenticate an initiator
        link_certs.verify_initiator_certs(RESPONDER_CERTS, NOW)
    with pytest.raises(SignatureError):
        link_certs.verify_initiator_certs(_with(INITIATOR_CERTS, 6, RESPONDER.link_auth_cert.encode()), NOW)


def test_authenticate_body_layout_from_fixed_inputs():
    rand = bytes(range(24))
    body = link_auth.authenticate_body(INITIATOR, link_certs.verify_responder_certs(RESPONDER_CERTS, TLS_CERT,
                                                                                    NOW),
                                       slog=SLOG, clog=CLOG, responder_tls_cert_der=TLS_CERT,
                                       tls_secrets=TLS_SECRETS, rand=rand)
    assert len(body) == link_auth.AUTH3_LEN == 352
    fields = [body[0:8]] + [body[8 + 32 * i:40 + 32 * i] for i in range(8)] + [body[264:288], body[288:]]
    assert fields[:-1] == [b"AUTH0003", INITIATOR.rsa_id_digest, RESPONDER.rsa_id_digest,
                           INITIATOR.ed25519_public, RESPONDER.ed25519_public, SLOG, CLOG,
                           hashlib.sha256(TLS_CERT).digest(), TLS_SECRETS, rand]
    ed25519.verify(INITIATOR.link_auth_key.public_key, body[:288], body[288:])
    assert link_auth.Auth3.decode(body).encode() == body


def _verify_auth(auth=AUTHENTICATE, **kw):
    args = {"slog": SLOG, "clog": CLOG, "responder_tls_cert_der": TLS_CERT, "tls_secrets": TLS_SECRETS} | kw
    return link_auth.verify_authenticate(auth, VERIFIED_INITIATOR, RESPONDER.public, **args)


def test_authenticate_round_trip():
    assert AUTHENTICATE.auth_type == 3
    assert _verify_auth(Authenticate.decode(AUTHENTICATE.encode())) == VERIFIED_INITIATOR.claimed


@pytest.mark.parametrize("field", ["slog", "clog", "tls_secrets"])
def test_authenticate_wrong_transcript_or_tls_binding(field):
    with pytest.raises(SignatureError, match=field.upper()):
        _verify_auth(**{field: bytes(32)})


def test_authenticate_for_another_responder_or_tls_cert():
    with pytest.raises(SignatureError, match="SCERT"):
        _verify_auth(responder_tls_cert_der=b"another certificate")
    with pytest.raises(SignatureError, match="SID"):
        link_auth.verify_authenticate(AUTHENTICATE, VERIFIED_INITIATOR, INITIATOR.public, slog=SLOG,
                                      clog=CLOG, responder_tls_cert_der=TLS_CERT, tls_secrets=TLS_SECRETS)


def test_authenticate_refusals():
    body = bytearray(AUTHENTICATE.auth)
    body[-1] ^= 1
    with pytest.raises(SignatureError, match="link authentication key"):
        _verify_auth(Authenticate(3, bytes(body)))
    body = bytearray(AUTHENTICATE.auth)
    body[270] ^= 1  # RAND is not compared, but it is signed
    with pytest.raises(SignatureError):
        _verify_auth(Authenticate(3, bytes(body)))
    with pytest.raises(DecodeError, match="method 1"):
        _verify_auth(Authenticate(1, AUTHENTICATE.auth))
    with pytest.raises(DecodeError, match="353"):
        _verify_auth(Authenticate(3, AUTHENTICATE.auth + b"\0"))
    with pytest.raises(DecodeError):
        _verify_auth(Authenticate(3, b"AUTH0001" + AUTHENTICATE.auth[8:]))
    other_key = link_certs.VerifiedInitiator(VERIFIED_INITIATOR.claimed, RESPONDER.link_auth_key.public_key)
    with pytest.raises(SignatureError):
        link_auth.verify_authenticate(AUTHENTICATE, other_key, RESPONDER.public, slog=SLOG, clog=CLOG,
                                      responder_tls_cert_der=TLS_CERT, tls_secrets=TLS_SECRETS)
    with pytest.raises(LocalProtocolError):
        _verify_auth(slog=bytes(31))


@given(st.binary(max_size=400))
def test_arbitrary_authenticate_only_typed_errors(data):
    try:
        _verify_auth(Authenticate.decode(data))
    except RemoteProtocolError:
        pass


# --- a real C tor relay authenticating to us

# Captured by our responder when a real C tor 0.4.9.11 relay (Debian's package), asked by EXTEND2 to extend to
# us, opened a link and authenticated: its CERTS and AUTHENTICATE bodies, and what our side computed (our TLS
# certificate, SLOG, CLOG, and the TLS exporter value with context CID).
CTOR_AUTH = json.loads((Path(__file__).parent / "ctor-link-authenticate.json").read_text())


def _ctor_auth_inputs():
    v = {k: bytes.fromhex(x) if isinstance(x, str) and k != "source" else x for k, x in CTOR_AUTH.items()}
    us = link_certs.PeerIdentity(v["responder_node_id"], v["responder_ed25519"], v["responder_rsa_id_digest"])
    return v, us


def test_c_tor_relay_authenticate_verifies():
    v, us = _ctor_auth_inputs()
    certs = Certs.decode(v["initiator_certs_body"])
    assert [t for t, _ in certs.certs] == [3, 2, 4, 6, 7]  # C tor also sends the RSA auth certificate
    initiator = link_certs.verify_initiator_certs(certs, v["now"])
    auth = Authenticate.decode(v["authenticate_body"])
    assert auth.auth_type == 3 and len(auth.auth) == 352
    peer = link_auth.verify_authenticate(auth, initiator, us, slog=v["slog"], clog=v["clog"],
                                         responder_tls_cert_der=v["responder_tls_cert_der"],
                                         tls_secrets=v["tls_secrets"])
    assert (peer.node_id, peer.ed25519_identity) == (v["initiator_node_id"], v["initiator_ed25519"])
    with pytest.raises(SignatureError, match="TLS_SECRETS"):
        link_auth.verify_authenticate(auth, initiator, us, slog=v["slog"], clog=v["clog"],
                                      responder_tls_cert_der=v["responder_tls_cert_der"],
                                      tls_secrets=bytes(32))
    with pytest.raises(SignatureError, match="CLOG"):
        link_auth.verify_authenticate(auth, initiator, us, slog=v["slog"], clog=v["slog"],
                                      responder_tls_cert_der=v["responder_tls_cert_der"],
                                      tls_secrets=v["tls_secrets"])
