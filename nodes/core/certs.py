"""Tor Ed25519 certificates (cert-spec 2.1) and their PEM-like armor in onion-service descriptors.

    VERSION(1)=1 CERT_TYPE(1) EXPIRATION_DATE(4, hours since the epoch) CERT_KEY_TYPE(1) CERTIFIED_KEY(32)
    N_EXTENSIONS(1) N_EXTENSIONS * [ExtLength(2) ExtType(1) ExtFlags(1) ExtData] SIGNATURE(64)

The signature is a plain Ed25519 signature of every byte before it (no personalization prefix). `decode`
returns an unchecked certificate; nothing may trust it before `check` has verified key, signature and time.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from enum import IntEnum

from . import ed25519
from .ed25519 import Signer
from .errors import DecodeError, ExpiredError, LocalProtocolError, SignatureError
from .wire import Reader, u8, u16, u32

CERT_VERSION = 1
SIGNATURE_LEN = 64
AFFECTS_VALIDATION = 0x01  # ExtFlags: refuse the certificate unless the extension is understood


class CertType(IntEnum):
    """cert-spec A.1. Types 1-3 (X.509, in CERTS cells) and 7 (RSA cross-cert) use other formats."""

    RSA_LINK = 0x01
    RSA_IDENTITY = 0x02
    RSA_AUTH = 0x03
    IDENTITY_V_SIGNING = 0x04
    SIGNING_V_TLS_CERT = 0x05
    SIGNING_V_LINK_AUTH = 0x06
    RSA_ID_V_IDENTITY = 0x07
    HS_DESC_SIGNING = 0x08  # descriptor signing key, signed by the blinded key
    HS_INTRO_AUTH = 0x09  # intro point auth key, signed by the descriptor signing key
    NTOR_CC_IDENTITY = 0x0A  # relay ntor onion key cross-certifying the identity key
    HS_NTOR_ENC = 0x0B  # intro point encryption key (Ed25519 form), signed by the descriptor signing key


class KeyType(IntEnum):
    """cert-spec A.4. Tor before 0.4.5.1-alpha wrote 1 for every type, so readers must not insist."""

    ED25519 = 0x01
    SHA256_OF_RSA = 0x02
    SHA256_OF_X509 = 0x03


class ExtType(IntEnum):
    SIGNED_WITH_ED25519_KEY = 0x04  # cert-spec 2.2.1: the 32-byte key that signed the certificate


_KNOWN_EXTENSIONS = frozenset(ExtType)


@dataclass(frozen=True, slots=True)
class CertExtension:
    ext_type: int
    flags: int
    data: bytes

    def __post_init__(self) -> None:
        if not (0 <= self.ext_type <= 0xFF and 0 <= self.flags <= 0xFF and len(self.data) <= 0xFFFF):
            raise LocalProtocolError("certificate extension: type/flags must be one byte, data under 64 KiB")

    def encode(self) -> bytes:
        return u16(len(self.data)) + u8(self.ext_type) + u8(self.flags) + self.data


def _signed_with_problem(extensions: tuple[CertExtension, ...]) -> str | None:
    """Why the signed-with-ed25519-key extensions are malformed, or None if they are fine."""
    found = [ext for ext in extensions if ext.ext_type == ExtType.SIGNED_WITH_ED25519_KEY]
    if len(found) > 1:
        return "certificate has more than one signed-with-ed25519-key extension"
    if found and len(found[0].data) != 32:
        return f"signed-with-ed25519-key extension holds {len(found[0].data)} bytes, not 32"
    return None


def _known(enum: type[IntEnum], value: int) -> int:
    try:
        return enum(value)
    except ValueError:
        return value


@dataclass(frozen=True, slots=True)
class Ed25519Cert:
    cert_type: int
    expiration_hours: int
    key_type: int
    certified_key: bytes
    extensions: tuple[CertExtension, ...]
    signature: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "extensions", tuple(self.extensions))
        if not (0 <= self.cert_type <= 0xFF and 0 <= self.key_type <= 0xFF):
            raise LocalProtocolError("certificate: cert_type and key_type must fit in one byte")
        if not 0 <= self.expiration_hours <= 0xFFFFFFFF:
            raise LocalProtocolError("certificate: expiration_hours must fit in four bytes")
        if len(self.certified_key) != 32 or len(self.signature) != SIGNATURE_LEN:
            raise LocalProtocolError("certificate: certified_key must be 32 bytes and signature 64")
        if len(self.extensions) > 0xFF:
            raise LocalProtocolError("certificate: at most 255 extensions")
        problem = _signed_with_problem(self.extensions)
        if problem:
            raise LocalProtocolError(problem)

    def signed_part(self) -> bytes:
        """Everything before SIGNATURE: the bytes the signature covers."""
        return (u8(CERT_VERSION) + u8(self.cert_type) + u32(self.expiration_hours) + u8(self.key_type)
                + self.certified_key + u8(len(self.extensions))
                + b"".join(ext.encode() for ext in self.extensions))

    def encode(self) -> bytes:
        return self.signed_part() + self.signature

    @classmethod
    def decode(cls, data: bytes) -> Ed25519Cert:
        """Parse without checking anything cryptographic (see `check`)."""
        r = Reader(data, "Ed25519 certificate")
        version = r.u8()
        if version != CERT_VERSION:
            raise DecodeError(f"Ed25519 certificate: version {version}, only {CERT_VERSION} is known")
        cert_type, expiration, key_type, certified_key = r.u8(), r.u32(), r.u8(), r.bytes(32)
        extensions = []
        for _ in range(r.u8()):
            length = r.u16()
            ext_type, flags = r.u8(), r.u8()
            extensions.append(CertExtension(_known(ExtType, ext_type), flags, r.bytes(length)))
        signature = r.bytes(SIGNATURE_LEN)
        r.expect_end()
        problem = _signed_with_problem(tuple(extensions))
        if problem:
            raise DecodeError(problem)
        return cls(_known(CertType, cert_type), expiration, _known(KeyType, key_type), certified_key,
                   tuple(extensions), signature)

    @property
    def signing_key(self) -> bytes | None:
        """The key carried in the signed-with-ed25519-key extension, if any (untrusted until `check`)."""
        for ext in self.extensions:
            if ext.ext_type == ExtType.SIGNED_WITH_ED25519_KEY:
                return ext.data
        return None

    @property
    def expires(self) -> int:
        """Unix time (seconds) from which the certificate is no longer valid."""
        return self.expiration_hours * 3600

    def check(self, now: int, signing_key: bytes | None = None) -> Ed25519Cert:
        """Verify and return self. `signing_key` is the key the caller expects; if omitted, the embedded one.

        DecodeError: an extension we do not understand has AFFECTS_VALIDATION. SignatureError: no key known,
        the embedded key differs from the expected one, or the signature is bad. ExpiredError: now >= expiry.
        """
        for ext in self.extensions:
            if ext.flags & AFFECTS_VALIDATION and ext.ext_type not in _KNOWN_EXTENSIONS:
                raise DecodeError(f"certificate extension {ext.ext_type} is unknown and AFFECTS_VALIDATION")
        embedded = self.signing_key
        key = signing_key if signing_key is not None else embedded
        if key is None:
            raise SignatureError("certificate names no signing key and none was given")
        if embedded is not None and embedded != key:
            raise SignatureError("certificate's embedded signing key is not the expected key")
        ed25519.verify(key, self.signed_part(), self.signature)
        if now >= self.expires:
            raise ExpiredError(f"certificate expired at {self.expires} (now {now})")
        return self


def make_cert(cert_type: int, certified_key: bytes, signer: Signer, expires: int, *,
              include_signing_key: bool = True, key_type: int = KeyType.ED25519) -> Ed25519Cert:
    """Certify `certified_key` with `signer` until `expires` (Unix seconds, rounded up to a whole hour)."""
    if expires < 0:
        raise LocalProtocolError("certificate expiry must not be before the epoch")
    extensions = ((CertExtension(ExtType.SIGNED_WITH_ED25519_KEY, 0, signer.public_key),)
                  if include_signing_key else ())
    unsigned = Ed25519Cert(cert_type, -(-expires // 3600), key_type, certified_key, extensions,
                           bytes(SIGNATURE_LEN))
    signature = signer.sign(unsigned.signed_part())
    return Ed25519Cert(cert_type, unsigned.expiration_hours, key_type, certified_key, extensions, signature)


ARMOR_BEGIN = "-----BEGIN ED25519 CERT-----"
ARMOR_END = "-----END ED25519 CERT-----"
_ARMOR_LINE = 64


def armor(cert: Ed25519Cert | bytes) -> str:
    """The certificate as an HS descriptor object: BEGIN line, base64 in 64-character lines, END line."""
    data = cert.encode() if isinstance(cert, Ed25519Cert) else bytes(cert)
    text = base64.b64encode(data).decode("ascii")
    lines = [text[i:i + _ARMOR_LINE] for i in range(0, len(text), _ARMOR_LINE)]
    return "\n".join([ARMOR_BEGIN, *lines, ARMOR_END]) + "\n"


def dearmor(text: str) -> bytes:
    """The bytes inside one ED25519 CERT object; DecodeError for wrong markers or bad base64."""
    lines = text.strip().splitlines()
    if len(lines) < 2 or lines[0] != ARMOR_BEGIN or lines[-1] != ARMOR_END:
        raise DecodeError(f"expected an object between {ARMOR_BEGIN!r} and {ARMOR_END!r}")
    body = "".join(lines[1:-1])
    if not body.isascii():
        raise DecodeError("ED25519 CERT object: base64 body has non-ASCII characters")
    try:
        return base64.b64decode(body, validate=True)
    except binascii.Error as exc:
        raise DecodeError(f"ED25519 CERT object: bad base64 ({exc})") from exc
