"""A small pure-Python Ed25519 for what `cryptography` cannot do: key blinding and expanded-key signing.

Onion services sign with a *blinded* key (rend-spec-v3 appendix A.2), whose secret is a scalar a' = h*a mod l
with no seed behind it, so signing must start from the 64-byte expanded secret (scalar | nonce prefix). That,
and multiplying a public point by the blinding factor, needs point arithmetic, which lives here (RFC 8032,
extended twisted Edwards coordinates). It runs once per time period, so clarity wins over speed. Ordinary
seed-based signing and all verification go through `cryptography` (OpenSSL).
"""

from __future__ import annotations

import functools
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .errors import CryptoError, LocalProtocolError, SignatureError

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493  # order of the base point
D = -121665 * pow(121666, -1, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)

# Extended coordinates (X, Y, Z, T) with x = X/Z, y = Y/Z, x*y = T/Z.
Point = tuple[int, int, int, int]
_IDENTITY: Point = (0, 1, 1, 0)
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960
BASE: Point = (_BX, _BY, 1, _BX * _BY % P)

BLIND_NONCE_STRING = b"Derive temporary signing key hash input"


def _add(p1: Point, p2: Point) -> Point:
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = 2 * D * t1 * t2 % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _double(p1: Point) -> Point:
    x1, y1, z1, _ = p1
    a = x1 * x1 % P
    b = y1 * y1 % P
    c = 2 * z1 * z1 % P
    h = a + b
    e = h - (x1 + y1) * (x1 + y1)
    g = a - b
    f = c + g
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _mul(k: int, point: Point) -> Point:
    """k * point by double-and-add (variable time: fine for a testbed, not for a hostile co-tenant)."""
    result = _IDENTITY
    for bit in bin(k)[2:]:
        result = _double(result)
        if bit == "1":
            result = _add(result, point)
    return result


def _is_identity(point: Point) -> bool:
    x, y, z, _ = point
    return x % P == 0 and (y - z) % P == 0


def encode_point(point: Point) -> bytes:
    x, y, z, _ = point
    zinv = pow(z, -1, P)
    x, y = x * zinv % P, y * zinv % P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def decode_point(data: bytes) -> Point:
    """RFC 8032 5.1.3 point decoding; CryptoError for anything that is not a canonical curve point."""
    if len(data) != 32:
        raise CryptoError(f"Ed25519 key must be 32 bytes, not {len(data)}")
    n = int.from_bytes(data, "little")
    sign, y = n >> 255, n & ((1 << 255) - 1)
    if y >= P:
        raise CryptoError("Ed25519 key has a non-canonical y coordinate")
    x2 = (y * y - 1) * pow(D * y * y + 1, -1, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if x * x % P != x2:
        x = x * SQRT_M1 % P
    if x * x % P != x2:
        raise CryptoError("Ed25519 key is not a point on the curve")
    if x == 0 and sign:
        raise CryptoError("Ed25519 key encodes x = 0 with the sign bit set")
    if x & 1 != sign:
        x = P - x
    return (x, y, 1, x * y % P)


def check_public_key(public_key: bytes) -> None:
    """CryptoError unless `public_key` is a curve point of the prime-order subgroup other than the identity.

    rend-spec-v3 2.2.7 asks clients to refuse keys with a torsion component in onion addresses: it would give
    one service several equivalent addresses. The identity (no secret behind it) is refused as C tor does.
    Keys that passed are remembered (a bounded cache): the check is a pure-Python multiplication by L, about
    2 ms, and a client decodes the same address on every SOCKS connect.
    """
    _checked_public_key(bytes(public_key))


@functools.lru_cache(maxsize=1024)  # only keys that passed: an exception is not cached
def _checked_public_key(public_key: bytes) -> None:
    point = decode_point(public_key)
    if _is_identity(point):
        raise CryptoError("Ed25519 key is the identity element")
    if not _is_identity(_mul(L, point)):
        raise CryptoError("Ed25519 key has a torsion component")


def _clamp(scalar32: bytes) -> int:
    k = bytearray(scalar32)
    k[0] &= 248
    k[31] &= 63
    k[31] |= 64
    return int.from_bytes(k, "little")


def _check_len(name: str, value: bytes, n: int) -> None:
    if len(value) != n:
        raise LocalProtocolError(f"{name} must be {n} bytes, not {len(value)}")


def expand_seed(seed32: bytes) -> bytes:
    """RFC 8032 5.1.5: SHA-512(seed) with the scalar half clamped -> clamped scalar (LE) | nonce prefix."""
    _check_len("seed", seed32, 32)
    digest = hashlib.sha512(seed32).digest()
    return _clamp(digest[:32]).to_bytes(32, "little") + digest[32:]


def public_from_expanded(esk64: bytes) -> bytes:
    _check_len("expanded secret key", esk64, 64)
    return encode_point(_mul(int.from_bytes(esk64[:32], "little"), BASE))


def _hash_scalar(*parts: bytes) -> int:
    return int.from_bytes(hashlib.sha512(b"".join(parts)).digest(), "little") % L


def sign_expanded(esk64: bytes, message: bytes, public_key: bytes | None = None) -> bytes:
    """RFC 8032 5.1.6 signing that starts from the expanded secret (scalar | nonce prefix).

    `public_key` saves one scalar multiplication when the caller already knows it; it must be the right one.
    """
    _check_len("expanded secret key", esk64, 64)
    a = int.from_bytes(esk64[:32], "little")
    if public_key is None:
        public_key = encode_point(_mul(a, BASE))
    r = _hash_scalar(esk64[32:], message)
    big_r = encode_point(_mul(r, BASE))
    k = _hash_scalar(big_r, public_key, message)
    return big_r + ((r + k * a) % L).to_bytes(32, "little")


def verify(public_key: bytes, message: bytes, signature: bytes) -> None:
    """SignatureError unless `signature` is a valid Ed25519 signature of `message` under `public_key`."""
    if len(public_key) != 32 or len(signature) != 64:
        raise SignatureError("Ed25519 key must be 32 bytes and signature 64 bytes")
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError("Ed25519 signature does not verify") from exc


def blind_public_key(public_key: bytes, param32: bytes) -> bytes:
    """rend-spec-v3 A.2: A' = h*A, where h is the clamped blinding parameter."""
    _check_len("blinding parameter", param32, 32)
    return encode_point(_mul(_clamp(param32), decode_point(public_key)))


def blind_expanded_secret(esk64: bytes, param32: bytes) -> bytes:
    """rend-spec-v3 A.2: a' = h*a mod l; nonce prefix' = SHA-512(BLIND_NONCE_STRING | prefix)[:32]."""
    _check_len("expanded secret key", esk64, 64)
    _check_len("blinding parameter", param32, 32)
    scalar = _clamp(param32) * int.from_bytes(esk64[:32], "little") % L
    prefix = hashlib.sha512(BLIND_NONCE_STRING + esk64[32:]).digest()[:32]
    return scalar.to_bytes(32, "little") + prefix


def curve25519_to_ed25519_public(u32: bytes, sign_bit: int) -> bytes:
    """The Ed25519 point birationally equivalent to Curve25519 u, y = (u-1)/(u+1), with x's sign `sign_bit`.

    Used for the enc-key-cert (cert type 0B), whose certified key is the intro-point encryption key in Ed25519
    form; C tor builds it with sign bit 0. The u coordinate's top bit is ignored, as in RFC 7748.
    """
    _check_len("Curve25519 key", u32, 32)
    if sign_bit not in (0, 1):
        raise LocalProtocolError("sign_bit must be 0 or 1")
    u = int.from_bytes(u32, "little") & ((1 << 255) - 1)
    if (u + 1) % P == 0:
        raise CryptoError("Curve25519 key u = -1 has no Ed25519 equivalent")
    y = (u - 1) * pow(u + 1, -1, P) % P
    return (y | sign_bit << 255).to_bytes(32, "little")


class Signer:
    """An Ed25519 signing key: from a seed (signs via OpenSSL) or from an expanded secret (e.g. blinded)."""

    __slots__ = ("public_key", "_esk", "_openssl")

    public_key: bytes
    _esk: bytes
    _openssl: Ed25519PrivateKey | None

    def __init__(self, esk64: bytes, public_key: bytes, openssl: Ed25519PrivateKey | None) -> None:
        self._esk = esk64
        self.public_key = public_key
        self._openssl = openssl

    @classmethod
    def from_seed(cls, seed32: bytes) -> Signer:
        _check_len("seed", seed32, 32)
        key = Ed25519PrivateKey.from_private_bytes(seed32)
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(expand_seed(seed32), public, key)

    @classmethod
    def from_expanded(cls, esk64: bytes) -> Signer:
        return cls(bytes(esk64), public_from_expanded(esk64), None)

    @property
    def expanded_secret(self) -> bytes:
        return self._esk

    def sign(self, message: bytes) -> bytes:
        if self._openssl is not None:
            return self._openssl.sign(message)
        return sign_expanded(self._esk, message, self.public_key)

    def __repr__(self) -> str:  # never print the secret
        return f"Signer(public_key={self.public_key.hex()})"
