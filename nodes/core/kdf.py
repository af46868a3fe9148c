"""Key derivation and the onion-service MAC.

`kdf_tor` is KDF-TOR (tor-spec 5.2.1), the SHA-1 counter KDF of CREATE_FAST; `hkdf_sha256` is KDF-RFC5869
(tor-spec 5.2.2), used by ntor; `shake256` is the KDF of rend-spec-v3 0.3
(hs-ntor, descriptor encryption); `hs_mac` is rend-spec-v3's MAC, which is NOT HMAC: it is a plain SHA3-256
over a length-prefixed key, safe because SHA3 has no length-extension weakness.
"""

from __future__ import annotations

import hashlib
import hmac

from .errors import LocalProtocolError
from .wire import u64

_SHA1_LEN = 20
_SHA256_LEN = 32


def kdf_tor(k0: bytes, length: int) -> bytes:
    """KDF-TOR: SHA1(K0 | [00]) | SHA1(K0 | [01]) | ..., cut to `length` bytes.

    The counter is a single byte, so 256 blocks (5120 bytes) is all this KDF can give.
    """
    if not 0 <= length <= 256 * _SHA1_LEN:
        raise LocalProtocolError(f"kdf_tor: cannot produce {length} bytes")
    blocks = b"".join(hashlib.sha1(k0 + bytes((i,))).digest() for i in range(-(-length // _SHA1_LEN)))
    return blocks[:length]


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 extract-then-expand, HMAC-SHA256. An empty salt equals HashLen zero bytes as an HMAC key."""
    if not 0 <= length <= 255 * _SHA256_LEN:
        raise LocalProtocolError(f"hkdf_sha256: cannot produce {length} bytes")
    prk = hmac.digest(salt, ikm, "sha256")
    out = bytearray()
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.digest(prk, block + info + bytes((counter,)), "sha256")
        out += block
        counter += 1
    return bytes(out[:length])


def shake256(data: bytes, length: int) -> bytes:
    """SHAKE-256 of `data`, `length` bytes long (rend-spec-v3's KDF)."""
    if length < 0:
        raise LocalProtocolError(f"shake256: negative length {length}")
    return hashlib.shake_256(data).digest(length)


def hs_mac(key: bytes, message: bytes) -> bytes:
    """rend-spec-v3 0.3 MAC: SHA3-256(INT_8(len(key)) | key | message)."""
    return hashlib.sha3_256(u64(len(key)) + key + message).digest()
