"""v3 onion addresses (rend-spec-v3 section 6): base32(PUBKEY | CHECKSUM | VERSION), 56 characters.

CHECKSUM = SHA3-256(".onion checksum" | PUBKEY | VERSION)[:2] and VERSION = 3. Decoding also refuses keys with
a torsion component (rend-spec-v3 2.2.7), so one service cannot hide behind several equivalent addresses.
"""

from __future__ import annotations

import base64
import functools
import hashlib

from . import ed25519
from .errors import AddressError, CryptoError, LocalProtocolError

VERSION = 3
ADDRESS_LEN = 56
SUFFIX = ".onion"
_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz234567")


def _checksum(public_key: bytes, version: int) -> bytes:
    return hashlib.sha3_256(b".onion checksum" + public_key + bytes([version])).digest()[:2]


def encode_onion_address(public_key: bytes) -> str:
    """The 56 lower-case characters of the address, without ".onion"."""
    if len(public_key) != 32:
        raise LocalProtocolError(f"onion service identity key must be 32 bytes, not {len(public_key)}")
    raw = public_key + _checksum(public_key, VERSION) + bytes([VERSION])
    return base64.b32encode(raw).decode("ascii").lower()


@functools.lru_cache(maxsize=1024)  # a client decodes one address on every connect; errors are not cached
def decode_onion_address(text: str) -> bytes:
    """The service's Ed25519 identity key; accepts upper or lower case, with or without ".onion"."""
    if not text.isascii():  # before lower(): str.lower() maps e.g. the Kelvin sign to "k"
        raise AddressError("not base32: the address contains non-ASCII characters")
    name = text.lower()
    if name.endswith(SUFFIX):
        name = name[: -len(SUFFIX)]
    if "." in name:
        raise AddressError("onion address has subdomain labels; give only the 56-character name")
    if len(name) != ADDRESS_LEN:
        raise AddressError(f"wrong length: {len(name)} characters instead of {ADDRESS_LEN}")
    bad = next((c for c in name if c not in _ALPHABET), None)
    if bad is not None:
        raise AddressError(f"not base32: character {bad!r} is not in a-z2-7")
    raw = base64.b32decode(name.upper())
    public_key, checksum, version = raw[:32], raw[32:34], raw[34]
    if version != VERSION:
        raise AddressError(f"bad version: {version}, only {VERSION} is valid")
    if checksum != _checksum(public_key, version):
        raise AddressError("bad checksum: the address is mistyped or corrupted")
    try:
        ed25519.check_public_key(public_key)
    except CryptoError as exc:
        raise AddressError(f"bad key: {exc}") from exc
    return public_key
