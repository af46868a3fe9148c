"""AUTH_CHALLENGE and AUTHENTICATE (tor-spec 4.3, 4.4.2): an initiating relay proves its identity.

Only method 3, Ed25519-SHA256-RFC5705, exists in C tor 0.4.9 (it offers nothing else and accepts nothing
else). Its authenticator is

    TYPE "AUTH0003"(8) CID(32) SID(32) CID_ED(32) SID_ED(32) SLOG(32) CLOG(32) SCERT(32) TLSSECRETS(32)
    RAND(24) SIG(64): Ed25519 signature of every byte before it by the initiator's link authentication key

CID/SID: SHA-256 of the initiator's/responder's RSA identity DER; CID_ED/SID_ED: their Ed25519 identities.
SLOG: SHA-256 of every byte the responder sent on the link from its VERSIONS cell up to and including
AUTH_CHALLENGE (VERSIONS, CERTS, AUTH_CHALLENGE and any padding cells, as encoded on the wire: VERSIONS
with its 2-byte circuit ID). CLOG: SHA-256 of every byte the initiator sent before AUTHENTICATE (VERSIONS,
CERTS, padding). SCERT: SHA-256 of the responder's TLS certificate (DER). TLSSECRETS: the TLS
keying-material exporter (RFC 5705, RFC 8446 7.5) with label TLS_EXPORTER_LABEL, context CID and length
32. (The tor-spec text names the initiator's Ed25519 key as the context; C tor 0.4.9 and arti pass CID,
and C tor refuses an authenticator made with the Ed25519 key: checked against a real relay.)

The net layer hashes the transcripts and asks TLS for the exporter value; these functions take them as bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from . import ed25519
from .cells import AuthChallenge, Authenticate
from .errors import DecodeError, LocalProtocolError, SignatureError
from .link_certs import LinkIdentity, PeerIdentity, VerifiedInitiator
from .wire import Reader

Rng = Callable[[int], bytes]  # the shape of os.urandom

AUTH_ED25519_SHA256_RFC5705 = 3
AUTH3_TYPE = b"AUTH0003"
TLS_EXPORTER_LABEL = b"EXPORTER FOR TOR TLS CLIENT BINDING AUTH0003"
TLS_EXPORTER_LENGTH = 32
RAND_LEN = 24
AUTH3_SIGNED_LEN = 8 + 8 * 32 + RAND_LEN  # 288
AUTH3_LEN = AUTH3_SIGNED_LEN + 64  # 352: C tor accepts no other length

_FIELDS = ("cid", "sid", "cid_ed", "sid_ed", "slog", "clog", "scert", "tls_secrets")


def make_auth_challenge(rng: Rng) -> AuthChallenge:
    """A responder's AUTH_CHALLENGE: a fresh 32-byte challenge offering method 3 only (as C tor 0.4.9)."""
    return AuthChallenge(rng(32), (AUTH_ED25519_SHA256_RFC5705,))


def choose_auth_method(challenge: AuthChallenge) -> int | None:
    """The method an initiator uses to answer `challenge`: 3 if offered, else None (then it does not
    authenticate and just sends NETINFO)."""
    return AUTH_ED25519_SHA256_RFC5705 if AUTH_ED25519_SHA256_RFC5705 in challenge.methods else None


@dataclass(frozen=True, slots=True)
class Auth3:
    """The method-3 authenticator (the `auth` bytes of an AUTHENTICATE cell of type 3)."""

    cid: bytes
    sid: bytes
    cid_ed: bytes
    sid_ed: bytes
    slog: bytes
    clog: bytes
    scert: bytes
    tls_secrets: bytes
    rand: bytes
    signature: bytes

    def __post_init__(self) -> None:
        for name in _FIELDS:
            if len(getattr(self, name)) != 32:
                raise LocalProtocolError(f"AUTH0003 {name} must be 32 bytes")
        if len(self.rand) != RAND_LEN or len(self.signature) != 64:
            raise LocalProtocolError("AUTH0003 rand must be 24 bytes and the signature 64")

    def signed_part(self) -> bytes:
        return AUTH3_TYPE + b"".join(getattr(self, name) for name in _FIELDS) + self.rand

    def encode(self) -> bytes:
        return self.signed_part() + self.signature

    @classmethod
    def decode(cls, data: bytes) -> Auth3:
        """Parse an authenticator of exactly AUTH3_LEN bytes (C tor's rule); nothing is checked."""
        if len(data) != AUTH3_LEN:
            raise DecodeError(f"AUTH0003 authenticator is {len(data)} bytes, not {AUTH3_LEN}")
        r = Reader(data, "AUTH0003 authenticator")
        if r.bytes(8) != AUTH3_TYPE:
            raise DecodeError("AUTH0003 authenticator does not start with 'AUTH0003'")
        fields = [r.bytes(32) for _ in _FIELDS]
        return cls(*fields, r.bytes(RAND_LEN), r.bytes(64))


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _check32(name: str, value: bytes) -> None:
    if len(value) != 32:
        raise LocalProtocolError(f"{name} must be 32 bytes, not {len(value)}")


def authenticate_body(identity: LinkIdentity, responder: PeerIdentity, *, slog: bytes, clog: bytes,
                      responder_tls_cert_der: bytes, tls_secrets: bytes, rand: bytes) -> bytes:
    """The initiator's signed AUTH0003 authenticator (AUTH3_LEN bytes) from its inputs.

    `identity` is ours (CID, CID_ED, the link authentication key that signs); `responder` is what the
    responder's CERTS cell proved (SID, SID_ED). `slog`/`clog` are the transcript digests, `tls_secrets` the
    exporter value (context: identity.rsa_id_digest), `rand` 24 random bytes.
    """
    for name, value in (("slog", slog), ("clog", clog), ("tls_secrets", tls_secrets)):
        _check32(name, value)
    unsigned = Auth3(identity.rsa_id_digest, responder.rsa_id_digest, identity.ed25519_public,
                     responder.ed25519_identity, slog, clog, _sha256(responder_tls_cert_der), tls_secrets,
                     rand, bytes(64))
    signed = unsigned.signed_part()
    return signed + identity.link_auth_key.sign(signed)


def make_authenticate(identity: LinkIdentity, responder: PeerIdentity, *, slog: bytes, clog: bytes,
                      responder_tls_cert_der: bytes, tls_secrets: bytes, rng: Rng) -> Authenticate:
    """The AUTHENTICATE cell body (method 3) an initiator sends after its CERTS cell."""
    return Authenticate(AUTH_ED25519_SHA256_RFC5705,
                        authenticate_body(identity, responder, slog=slog, clog=clog,
                                          responder_tls_cert_der=responder_tls_cert_der,
                                          tls_secrets=tls_secrets, rand=rng(RAND_LEN)))


def verify_authenticate(auth: Authenticate, initiator: VerifiedInitiator, responder: PeerIdentity, *,
                        slog: bytes, clog: bytes, responder_tls_cert_der: bytes,
                        tls_secrets: bytes) -> PeerIdentity:
    """The responder's check of an AUTHENTICATE cell; returns the initiator's now-authenticated identity.

    `initiator` is the initiator's checked CERTS cell; `responder` is us (LinkIdentity.public); `slog` is
    the digest of what we sent, `clog` of what we received (before AUTHENTICATE), `responder_tls_cert_der`
    our TLS certificate and `tls_secrets` the exporter value with context initiator.claimed.rsa_id_digest.
    As C tor: method 3 only, exactly AUTH3_LEN bytes, TYPE through TLSSECRETS equal to what we compute (RAND
    is not checked), then the signature by the initiator's type-6 key.

    DecodeError: another method or a malformed authenticator. SignatureError: a wrong field or signature.
    """
    for name, value in (("slog", slog), ("clog", clog), ("tls_secrets", tls_secrets)):
        _check32(name, value)
    if auth.auth_type != AUTH_ED25519_SHA256_RFC5705:
        raise DecodeError(f"AUTHENTICATE method {auth.auth_type} is not supported (only 3, "
                          "Ed25519-SHA256-RFC5705)")
    got = Auth3.decode(auth.auth)
    claimed = initiator.claimed
    expected = {"cid": claimed.rsa_id_digest, "sid": responder.rsa_id_digest,
                "cid_ed": claimed.ed25519_identity,
                "sid_ed": responder.ed25519_identity, "slog": slog, "clog": clog,
                "scert": _sha256(responder_tls_cert_der), "tls_secrets": tls_secrets}
    for name in _FIELDS:
        if getattr(got, name) != expected[name]:
            raise SignatureError(f"AUTHENTICATE: {name.upper()} is not what this link gives")
    try:
        ed25519.verify(initiator.link_auth_key, got.signed_part(), got.signature)
    except SignatureError:
        raise SignatureError("AUTHENTICATE: not signed by the initiator's link authentication key") from None
    return claimed
