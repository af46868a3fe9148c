"""Tor's link certificates: what a relay proves in a CERTS cell (tor-spec 4.2, cert-spec 2.3), and checks.

A relay (or authority) has two identities: the legacy RSA-1024 key, whose SHA-1 is the 20-byte node ID,
and the Ed25519 identity. Its CERTS cell ties both to the TLS link:

    type 2  X.509, self-signed by the RSA identity key (DER)
    type 4  Ed25519 identity -> medium-term signing key (carries the identity in signed-with-ed25519-key)
    type 5  signing key -> SHA-256 of the responder's TLS certificate (responder only)
    type 6  signing key -> link authentication key, which signs AUTHENTICATE (initiator only; link_auth.py)
    type 7  RSA identity -> Ed25519 identity cross-certificate (cert-spec 2.3, its own format)

Types 1 and 3 (RSA-signed X.509 link and auth certificates) are only read by peers that have no Ed25519
certificates to check; when type 4 is present C tor looks at neither, so we neither send nor read them.
Making certificates needs randomness (key seeds, X.509 serials and names): it comes in as `rng`.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from . import tor_rsa
from .cells import Certs
from .certs import CertType, Ed25519Cert, KeyType, make_cert
from .ed25519 import Signer
from .errors import DecodeError, ExpiredError, IdentityMismatch, LocalProtocolError, SignatureError
from .wire import Reader, u8, u32

Rng = Callable[[int], bytes]  # the shape of os.urandom

HOUR = 3600
DAY = 24 * HOUR
# Lifetimes C tor uses by default (its SigningKeyLifetime, TestingLinkCertLifetime, the identity X.509
# lifetime, and "six months" for the cross-certificate). Only the checks below matter to a peer.
SIGNING_KEY_LIFETIME = 30 * DAY
LINK_CERT_LIFETIME = 2 * DAY
IDENTITY_X509_LIFETIME = 365 * DAY
CROSSCERT_LIFETIME = 180 * DAY
# C tor accepts an X.509 certificate that expired up to 2 days ago or starts up to 30 days from now.
X509_PAST_SLOP = 2 * DAY
X509_FUTURE_SLOP = 30 * DAY

CROSSCERT_PREFIX = b"Tor TLS RSA/Ed25519 cross-certificate"

# The X.509 signature algorithms we check a type-2 certificate with: PKCS#1 v1.5 (C tor signs with SHA-256).
_X509_RSA_ALGORITHMS = frozenset({
    SignatureAlgorithmOID.RSA_WITH_SHA1, SignatureAlgorithmOID.RSA_WITH_SHA224,
    SignatureAlgorithmOID.RSA_WITH_SHA256, SignatureAlgorithmOID.RSA_WITH_SHA384,
    SignatureAlgorithmOID.RSA_WITH_SHA512,
})


def _uniform(rng: Rng, n: int) -> int:
    """A number in [0, n) from 8 random bytes (the bias is below 2**-40 for the ranges used here)."""
    return int.from_bytes(rng(8), "big") % n


def _random_hostname(rng: Rng, suffix: str) -> str:
    """www.<8 to 20 base32 characters><suffix>, the shape of the names C tor puts in its TLS certificates."""
    length = 8 + _uniform(rng, 13)
    label = base64.b32encode(rng(15)).decode("ascii").lower()[:length]
    return f"www.{label}{suffix}"


def _utc(unix: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(unix, datetime.UTC)


# ------------------------------------------------------------------------------------------------------------
# Type 2: the self-signed X.509 certificate of the RSA identity key


def rsa_identity_x509(rsa_identity: RSAPrivateKey, now: int, rng: Rng, *,
                      lifetime: int = IDENTITY_X509_LIFETIME, valid_for: int = DAY) -> bytes:
    """The CERTS type-2 certificate: X.509 v3 (DER), self-signed with SHA-256, random 64-bit serial.

    Subject and issuer are the same random www.<base32>.com commonName, as C tor makes them. As C tor does,
    the validity starts on a day boundary chosen at random in the past, lasts `lifetime` seconds, and still
    has more than `valid_for` seconds to run at `now` (so the start date does not tell when the key was made).
    The key size is not checked here; `make_link_identity` insists on 1024 bits.
    """
    if lifetime <= 0 or valid_for < 0:
        raise LocalProtocolError("X.509 lifetime must be positive and valid_for not negative")
    earliest = min(now, now + valid_for + DAY - lifetime)
    start = earliest + _uniform(rng, now - earliest + 1)
    start -= start % DAY
    serial = int.from_bytes(rng(8), "big") or 1
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _random_hostname(rng, ".com"))])
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(rsa_identity.public_key())
            .serial_number(serial)
            .not_valid_before(_utc(start)).not_valid_after(_utc(start + lifetime))
            .sign(rsa_identity, hashes.SHA256()))
    return cert.public_bytes(Encoding.DER)


def _x509_times(cert: x509.Certificate) -> tuple[int, int]:
    return int(cert.not_valid_before_utc.timestamp()), int(cert.not_valid_after_utc.timestamp())


def check_rsa_identity_x509(der: bytes, now: int) -> RSAPublicKey:
    """The RSA identity key of a CERTS type-2 certificate, after C tor's checks.

    DecodeError: not a DER X.509 certificate, not an RSA key, or not 1024 bits. SignatureError: not correctly
    self-signed (PKCS#1 v1.5). ExpiredError: outside its validity, give or take C tor's slop (2 days after
    notAfter, 30 days before notBefore). Names, serial and extensions are not looked at (nor does C tor).
    """
    try:
        cert = x509.load_der_x509_certificate(der)
        key = cert.public_key()
        algorithm = cert.signature_algorithm_oid
        hash_algorithm = cert.signature_hash_algorithm
        not_before, not_after = _x509_times(cert)
        signature, tbs = cert.signature, cert.tbs_certificate_bytes
    except (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion) as exc:
        raise DecodeError(f"RSA identity certificate (type 2): not a DER X.509 certificate: {exc}") from None
    if not isinstance(key, RSAPublicKey):
        raise DecodeError("RSA identity certificate (type 2): its key is not an RSA key")
    if key.key_size != tor_rsa.IDENTITY_BITS:
        raise DecodeError(f"RSA identity certificate (type 2): the key has {key.key_size} bits, "
                          f"not {tor_rsa.IDENTITY_BITS}")
    if algorithm not in _X509_RSA_ALGORITHMS or hash_algorithm is None:
        raise SignatureError("RSA identity certificate (type 2): signature algorithm "
                             f"{algorithm.dotted_string} is not RSA PKCS#1 v1.5")
    try:
        key.verify(signature, tbs, padding.PKCS1v15(), hash_algorithm)
    except (InvalidSignature, ValueError, UnsupportedAlgorithm):
        raise SignatureError("RSA identity certificate (type 2): not correctly self-signed") from None
    if not_before > now + X509_FUTURE_SLOP:
        raise ExpiredError(f"RSA identity certificate (type 2): not valid before {not_before} (now {now})")
    if not_after < now - X509_PAST_SLOP:
        raise ExpiredError(f"RSA identity certificate (type 2): expired at {not_after} (now {now})")
    return key


def x509_not_after(der: bytes) -> int:
    """Unix time of a (trusted, well-formed) X.509 certificate's notAfter."""
    try:
        return _x509_times(x509.load_der_x509_certificate(der))[1]
    except (ValueError, TypeError) as exc:
        raise LocalProtocolError(f"not a DER X.509 certificate: {exc}") from None


# ------------------------------------------------------------------------------------------------------------
# Type 7: the RSA -> Ed25519 cross-certificate (cert-spec 2.3)


@dataclass(frozen=True, slots=True)
class RsaCrossCert:
    """ED25519_KEY(32) EXPIRATION_DATE(4, hours since the epoch) SIGLEN(1) SIGNATURE(SIGLEN).

    SIGNATURE is the RSA identity key's PKCS#1 v1.5 signature (no DigestInfo) of
    SHA-256(CROSSCERT_PREFIX + ED25519_KEY + EXPIRATION_DATE). `decode` returns it unchecked; see `check`.
    """

    ed25519_key: bytes
    expiration_hours: int
    signature: bytes

    def __post_init__(self) -> None:
        if len(self.ed25519_key) != 32:
            raise LocalProtocolError("cross-certificate: the Ed25519 key must be 32 bytes")
        if not 0 <= self.expiration_hours <= 0xFFFFFFFF:
            raise LocalProtocolError("cross-certificate: expiration_hours must fit in four bytes")
        if len(self.signature) > 0xFF:
            raise LocalProtocolError("cross-certificate: the signature must fit a one-byte length")

    def signed_part(self) -> bytes:
        return self.ed25519_key + u32(self.expiration_hours)

    def digest(self) -> bytes:
        """The SHA-256 the RSA key signs."""
        return hashlib.sha256(CROSSCERT_PREFIX + self.signed_part()).digest()

    def encode(self) -> bytes:
        return self.signed_part() + u8(len(self.signature)) + self.signature

    @classmethod
    def decode(cls, data: bytes) -> RsaCrossCert:
        """Parse exactly one cross-certificate (trailing bytes are refused, as C tor does)."""
        r = Reader(data, "RSA->Ed25519 cross-certificate")
        ed25519_key, expiration = r.bytes(32), r.u32()
        signature = r.bytes(r.u8())
        r.expect_end()
        return cls(ed25519_key, expiration, signature)

    @property
    def expires(self) -> int:
        """Unix time after which the cross-certificate is no longer valid (C tor: expired once < now)."""
        return self.expiration_hours * HOUR

    def check(self, rsa_identity: RSAPublicKey, ed25519_identity: bytes, now: int) -> RsaCrossCert:
        """Verify and return self: certifies `ed25519_identity`, not expired, signed by `rsa_identity`.

        SignatureError: another Ed25519 key, or a bad signature. ExpiredError: expired before `now`.
        """
        if self.ed25519_key != ed25519_identity:
            raise SignatureError("RSA->Ed25519 cross-certificate certifies another Ed25519 key than the "
                                 "identity in the type-4 certificate")
        if self.expires < now:
            raise ExpiredError(f"RSA->Ed25519 cross-certificate expired at {self.expires} (now {now})")
        tor_rsa.verify_digest(rsa_identity, self.signature, self.digest(), "RSA->Ed25519 cross-certificate")
        return self


def rsa_ed25519_crosscert(rsa_identity: RSAPrivateKey, ed25519_identity: bytes, expires_hours: int) -> bytes:
    """The CERTS type-7 certificate: `rsa_identity` vouches for `ed25519_identity` until `expires_hours`."""
    if rsa_identity.key_size > 8 * 0xFF:
        raise LocalProtocolError(f"a {rsa_identity.key_size}-bit signature does not fit the one-byte SIGLEN")
    unsigned = RsaCrossCert(bytes(ed25519_identity), expires_hours, b"")
    return RsaCrossCert(unsigned.ed25519_key, expires_hours,
                        tor_rsa.sign_digest(rsa_identity, unsigned.digest())).encode()


# ------------------------------------------------------------------------------------------------------------
# What we prove on a link


def _as_signer(key: Signer | bytes, what: str) -> Signer:
    if isinstance(key, Signer):
        return key
    if isinstance(key, bytes | bytearray) and len(key) == 32:
        return Signer.from_seed(bytes(key))
    raise LocalProtocolError(f"{what}: expected a Signer or a 32-byte Ed25519 seed")


@dataclass(frozen=True, slots=True)
class LinkIdentity:
    """Everything a relay or authority needs to prove its identity on links, as responder and as initiator.

    `signing_cert` is type 4 (identity -> signing key, embedding the identity key); `link_auth_cert` is type 6
    (signing key -> link authentication key); `rsa_id_cert` is the type-2 X.509 DER; `crosscert` is type 7.
    The type-5 certificate depends on each TLS certificate, so `responder_certs` makes it.
    """

    rsa_identity: RSAPrivateKey
    ed25519_identity: Signer
    signing_key: Signer
    signing_cert: Ed25519Cert
    link_auth_key: Signer
    link_auth_cert: Ed25519Cert
    rsa_id_cert: bytes
    crosscert: bytes

    def __post_init__(self) -> None:
        sc, ac = self.signing_cert, self.link_auth_cert
        if (sc.cert_type != CertType.IDENTITY_V_SIGNING or sc.certified_key != self.signing_key.public_key
                or sc.signing_key != self.ed25519_identity.public_key):
            raise LocalProtocolError("signing_cert must be a type-4 certificate of signing_key by the "
                                     "identity, embedding the identity key")
        if ac.cert_type != CertType.SIGNING_V_LINK_AUTH or ac.certified_key != self.link_auth_key.public_key:
            raise LocalProtocolError("link_auth_cert must be a type-6 certificate of link_auth_key")
        try:
            cross = RsaCrossCert.decode(self.crosscert)
        except DecodeError as exc:
            raise LocalProtocolError(f"crosscert: {exc}") from None
        if cross.ed25519_key != self.ed25519_identity.public_key:
            raise LocalProtocolError("crosscert must certify ed25519_identity")

    @property
    def rsa_identity_der(self) -> bytes:
        return tor_rsa.public_der(self.rsa_identity.public_key())

    @property
    def node_id(self) -> bytes:
        """The 20-byte node ID: SHA-1 of the RSA identity key's DER."""
        return hashlib.sha1(self.rsa_identity_der).digest()

    @property
    def rsa_id_digest(self) -> bytes:
        """SHA-256 of the RSA identity key's DER: CID or SID in AUTHENTICATE."""
        return hashlib.sha256(self.rsa_identity_der).digest()

    @property
    def ed25519_public(self) -> bytes:
        return self.ed25519_identity.public_key

    @property
    def public(self) -> PeerIdentity:
        """What a peer learns from our certificates: node ID, Ed25519 identity, RSA identity SHA-256."""
        der = self.rsa_identity_der
        return PeerIdentity(hashlib.sha1(der).digest(), self.ed25519_public, hashlib.sha256(der).digest())

    @property
    def expires(self) -> int:
        """From this Unix time on, some certificate has expired: make a new LinkIdentity before then."""
        return min(self.signing_cert.expires, self.link_auth_cert.expires,
                   RsaCrossCert.decode(self.crosscert).expires, x509_not_after(self.rsa_id_cert))

    def require_live(self, now: int) -> None:
        if now >= self.expires:
            raise LocalProtocolError(f"link identity expired at {self.expires} (now {now}): make a new one")


def make_link_identity(rsa_identity: RSAPrivateKey, ed25519_identity_private: Signer | bytes,
                       signing_private: Signer | bytes, now: int, rng: Rng, *,
                       lifetime: int = SIGNING_KEY_LIFETIME) -> LinkIdentity:
    """Certify a signing key and a fresh link authentication key for `lifetime` seconds from `now`.

    The Ed25519 keys are Signers or 32-byte seeds. `rng` gives the link authentication key's seed and the
    X.509 certificate's serial, names and start date. Every certificate is valid at least until now + lifetime
    (the type-6 certificate as long as the type-4 one; C tor rotates its own every 2 days, peers do not care).
    """
    if rsa_identity.key_size != tor_rsa.IDENTITY_BITS:
        raise LocalProtocolError(f"the RSA identity must have {tor_rsa.IDENTITY_BITS} bits, "
                                 f"not {rsa_identity.key_size}: C tor refuses any other size")
    if lifetime <= 0:
        raise LocalProtocolError("lifetime must be positive")
    identity = _as_signer(ed25519_identity_private, "ed25519_identity_private")
    signing = _as_signer(signing_private, "signing_private")
    auth = Signer.from_seed(rng(32))
    expires = now + lifetime
    signing_cert = make_cert(CertType.IDENTITY_V_SIGNING, signing.public_key, identity, expires)
    auth_cert = make_cert(CertType.SIGNING_V_LINK_AUTH, auth.public_key, signing, expires,
                          include_signing_key=False)
    id_x509 = rsa_identity_x509(rsa_identity, now, rng, valid_for=lifetime,
                                lifetime=max(IDENTITY_X509_LIFETIME, lifetime + 2 * DAY))
    cross_expires = now + max(CROSSCERT_LIFETIME, lifetime)
    crosscert = rsa_ed25519_crosscert(rsa_identity, identity.public_key, -(-cross_expires // HOUR))
    return LinkIdentity(rsa_identity, identity, signing, signing_cert, auth, auth_cert, id_x509, crosscert)


def responder_certs(identity: LinkIdentity, tls_cert_der: bytes, now: int) -> Certs:
    """The CERTS cell a responder sends: types 2, 4, 5 (certifying SHA-256 of OUR TLS certificate), 7.

    The type-5 certificate is signed now and lasts LINK_CERT_LIFETIME (no longer than the signing key's).
    """
    identity.require_live(now)
    link_cert = make_cert(CertType.SIGNING_V_TLS_CERT, hashlib.sha256(tls_cert_der).digest(),
                          identity.signing_key, min(now + LINK_CERT_LIFETIME, identity.signing_cert.expires),
                          include_signing_key=False, key_type=KeyType.SHA256_OF_X509)
    return Certs(((CertType.RSA_IDENTITY, identity.rsa_id_cert),
                  (CertType.IDENTITY_V_SIGNING, identity.signing_cert.encode()),
                  (CertType.SIGNING_V_TLS_CERT, link_cert.encode()),
                  (CertType.RSA_ID_V_IDENTITY, identity.crosscert)))


def initiator_certs(identity: LinkIdentity, now: int) -> Certs:
    """The CERTS cell an initiator sends before AUTHENTICATE: types 2, 4, 6, 7."""
    identity.require_live(now)
    return Certs(((CertType.RSA_IDENTITY, identity.rsa_id_cert),
                  (CertType.IDENTITY_V_SIGNING, identity.signing_cert.encode()),
                  (CertType.SIGNING_V_LINK_AUTH, identity.link_auth_cert.encode()),
                  (CertType.RSA_ID_V_IDENTITY, identity.crosscert)))


# ------------------------------------------------------------------------------------------------------------
# Checking a peer's CERTS cell


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """Who the peer proved to be: node ID (SHA-1 of its RSA identity DER), Ed25519 identity, and the SHA-256
    of its RSA identity DER (the CID/SID of AUTHENTICATE)."""

    node_id: bytes
    ed25519_identity: bytes
    rsa_id_digest: bytes

    def __post_init__(self) -> None:
        if len(self.node_id) != 20 or len(self.ed25519_identity) != 32 or len(self.rsa_id_digest) != 32:
            raise LocalProtocolError("PeerIdentity: node_id must be 20 bytes, ed25519_identity and "
                                     "rsa_id_digest 32")


@dataclass(frozen=True, slots=True)
class VerifiedInitiator:
    """An initiator's checked CERTS cell (types 2, 4, 6, 7): who it claims to be and the key that must sign
    its AUTHENTICATE cell. Not authenticated until `link_auth.verify_authenticate` has checked that cell."""

    claimed: PeerIdentity
    link_auth_key: bytes


# The cert types whose duplicates we refuse; C tor ignores types above 7 altogether.
_KNOWN_CERT_TYPES = range(CertType.RSA_LINK, CertType.RSA_ID_V_IDENTITY + 1)
_NAMES = {
    CertType.RSA_IDENTITY: "RSA identity X.509",
    CertType.IDENTITY_V_SIGNING: "Ed25519 identity->signing",
    CertType.SIGNING_V_TLS_CERT: "signing->TLS link",
    CertType.SIGNING_V_LINK_AUTH: "signing->link authentication",
    CertType.RSA_ID_V_IDENTITY: "RSA->Ed25519 cross",
}


def _collect(certs: Certs, required: tuple[int, ...]) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    for cert_type, body in certs.certs:
        if cert_type not in _KNOWN_CERT_TYPES:
            continue
        if cert_type in found:
            raise DecodeError(f"CERTS cell holds more than one type-{cert_type} certificate")
        found[cert_type] = body
    for cert_type in required:
        if cert_type not in found:
            raise DecodeError(f"CERTS cell lacks the type-{cert_type} ({_NAMES[cert_type]}) certificate")
    return found


def _decode_ed(data: bytes, cert_type: int, key_types: tuple[int, ...]) -> Ed25519Cert:
    try:
        cert = Ed25519Cert.decode(data)
    except DecodeError as exc:
        raise DecodeError(f"type-{cert_type} certificate: {exc}") from None
    if cert.cert_type != cert_type:
        raise DecodeError(f"CERTS type-{cert_type} slot holds an Ed25519 certificate of type "
                          f"{cert.cert_type}")
    if cert.key_type not in key_types:
        raise DecodeError(f"type-{cert_type} certificate certifies key type {cert.key_type}")
    return cert


def _check_ed(cert: Ed25519Cert, now: int, signing_key: bytes) -> Ed25519Cert:
    try:
        return cert.check(now, signing_key)
    except (SignatureError, ExpiredError, DecodeError) as exc:
        raise type(exc)(f"{_NAMES[cert.cert_type]} certificate (type {cert.cert_type}): {exc}") from None


def _check_chain(certs: Certs, link_type: int, now: int) -> tuple[PeerIdentity, Ed25519Cert]:
    """Types 2, 4, 7 and `link_type` (5 or 6), checked against each other: (who, the checked link cert)."""
    found = _collect(certs, (CertType.RSA_IDENTITY, CertType.IDENTITY_V_SIGNING, link_type,
                             CertType.RSA_ID_V_IDENTITY))
    id_sign = _decode_ed(found[CertType.IDENTITY_V_SIGNING], CertType.IDENTITY_V_SIGNING, (KeyType.ED25519,))
    identity = id_sign.signing_key
    if identity is None:
        raise DecodeError("identity->signing certificate (type 4) does not carry the Ed25519 identity key "
                          "(signed-with-ed25519-key extension)")
    _check_ed(id_sign, now, identity)
    # Tor before 0.4.5.1-alpha wrote key type 1 for every certificate (cert-spec A.4): accept it for type 5.
    link_key_types = ((KeyType.SHA256_OF_X509, KeyType.ED25519) if link_type == CertType.SIGNING_V_TLS_CERT
                      else (KeyType.ED25519,))
    link = _check_ed(_decode_ed(found[link_type], link_type, link_key_types), now, id_sign.certified_key)
    rsa_key = check_rsa_identity_x509(found[CertType.RSA_IDENTITY], now)
    RsaCrossCert.decode(found[CertType.RSA_ID_V_IDENTITY]).check(rsa_key, identity, now)
    der = tor_rsa.public_der(rsa_key)
    peer = PeerIdentity(hashlib.sha1(der).digest(), identity, hashlib.sha256(der).digest())
    return peer, link


def verify_responder_certs(certs: Certs, peer_tls_cert_der: bytes, now: int, *,
                           expected_node_id: bytes | None = None,
                           expected_ed25519: bytes | None = None) -> PeerIdentity:
    """What an initiator checks in the responder's CERTS cell (tor-spec 4.2, the Ed25519 case).

    Exactly one each of types 2, 4, 5, 7 (a duplicate of any type 1-7 is refused; types above 7 are
    ignored); type 4 embeds and is signed by the Ed25519 identity; type 5 is signed by the type-4 signing key
    and certifies SHA-256 of `peer_tls_cert_der` (the certificate the TLS handshake showed); no Ed25519
    certificate has expired; type 2 is a valid self-signed RSA-1024 certificate; type 7 is signed by that RSA
    key, unexpired, and certifies the same Ed25519 identity. Then the node ID (SHA-1 of the RSA key's DER)
    and the Ed25519 identity must be the expected ones, when given.

    IdentityMismatch: a valid chain for another node. DecodeError, SignatureError, ExpiredError: the rest.
    """
    if expected_node_id is not None and len(expected_node_id) != 20:
        raise LocalProtocolError("expected_node_id must be 20 bytes")
    if expected_ed25519 is not None and len(expected_ed25519) != 32:
        raise LocalProtocolError("expected_ed25519 must be 32 bytes")
    peer, link = _check_chain(certs, CertType.SIGNING_V_TLS_CERT, now)
    if link.certified_key != hashlib.sha256(peer_tls_cert_der).digest():
        raise SignatureError("signing->TLS link certificate (type 5) does not certify this link's TLS "
                             "certificate")
    if expected_node_id is not None and peer.node_id != expected_node_id:
        raise IdentityMismatch(f"peer is node {peer.node_id.hex().upper()}, "
                               f"expected {expected_node_id.hex().upper()}")
    if expected_ed25519 is not None and peer.ed25519_identity != expected_ed25519:
        raise IdentityMismatch(f"peer's Ed25519 identity is {peer.ed25519_identity.hex()}, "
                               f"expected {expected_ed25519.hex()}")
    return peer


def verify_initiator_certs(certs: Certs, now: int) -> VerifiedInitiator:
    """What a responder checks in an initiator's CERTS cell (tor-spec 4.2): types 2, 4, 6, 7, as for a
    responder but with the type-6 link authentication certificate in place of type 5. The result is a claim
    until the AUTHENTICATE cell is checked with it."""
    peer, link = _check_chain(certs, CertType.SIGNING_V_LINK_AUTH, now)
    return VerifiedInitiator(peer, link.certified_key)
