"""RSA as Tor uses it: 1024-bit legacy identity keys, fingerprints, PKCS#1 v1.5 signatures over a raw digest.

Tor signs directory documents, authority certificates and the RSA->Ed25519 cross-certificate by padding the
digest itself (PKCS#1 v1.5 block type 1, no ASN.1 DigestInfo) and applying the private key: dir-spec 1.3
("the signature of the digest ... using PKCS1 padding") and cert-spec 2.3. `cryptography` only signs with a
DigestInfo, so the padding and the modular exponentiation are done here; both are short and fixed.

Keys are `cryptography` RSA key objects. Making keys needs randomness, so it lives in the net layer.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from .errors import DecodeError, LocalProtocolError, SignatureError

IDENTITY_BITS = 1024
PUBLIC_EXPONENT = 65537


def public_der(key: RSAPublicKey) -> bytes:
    """The PKCS#1 RSAPublicKey DER encoding Tor hashes for fingerprints and puts in documents."""
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)


def fingerprint(key: RSAPublicKey) -> bytes:
    """The 20-byte node ID (tor-spec 0.3: SHA-1 of the DER-encoded identity key)."""
    return hashlib.sha1(public_der(key)).digest()


def hex_fingerprint(key: RSAPublicKey) -> str:
    return fingerprint(key).hex().upper()


def load_public_der(der: bytes, what: str = "RSA key") -> RSAPublicKey:
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, TypeError) as e:
        raise DecodeError(f"{what}: not a PKCS#1 RSA public key: {e}") from None
    if not isinstance(key, RSAPublicKey):
        raise DecodeError(f"{what}: not an RSA key")
    if public_der(key) != der:
        raise DecodeError(f"{what}: not canonical DER")
    return key


def _modulus_bytes(n: int) -> int:
    return (n.bit_length() + 7) // 8


def sign_digest(key: RSAPrivateKey, digest: bytes) -> bytes:
    """PKCS#1 v1.5 (block type 1) over the raw digest: 00 01 FF..FF 00 DIGEST, then m^d mod n."""
    numbers = key.private_numbers()
    n = numbers.public_numbers.n
    k = _modulus_bytes(n)
    if len(digest) > k - 11:
        raise LocalProtocolError(f"a {len(digest)}-byte digest does not fit a {k * 8}-bit key")
    return pow(int.from_bytes(_type1_block(digest, k), "big"), numbers.d, n).to_bytes(k, "big")


def _type1_block(data: bytes, k: int) -> bytes:
    """PKCS#1 v1.5 block type 1 of a k-byte modulus: 00 01 FF..FF 00 DATA."""
    return b"\x00\x01" + b"\xff" * (k - 3 - len(data)) + b"\x00" + data


def _public_operation(key: RSAPublicKey, signature: bytes, what: str) -> bytes:
    """s^e mod n as a k-byte block; SignatureError for a signature of the wrong length or out of range."""
    numbers = key.public_numbers()
    k = _modulus_bytes(numbers.n)
    if len(signature) != k:
        raise SignatureError(f"{what}: {len(signature)} bytes, expected {k}")
    s = int.from_bytes(signature, "big")
    if s >= numbers.n:
        raise SignatureError(f"{what}: signature out of range")
    return pow(s, numbers.e, numbers.n).to_bytes(k, "big")


def verify_digest(key: RSAPublicKey, signature: bytes, digest: bytes, what: str = "RSA signature") -> None:
    """Raise SignatureError unless `signature` is a PKCS#1 v1.5 type-1 signature of exactly `digest`."""
    block = _public_operation(key, signature, what)
    if block != _type1_block(digest, len(block)):
        raise SignatureError(f"{what}: does not verify")


def pem(kind: str, data: bytes) -> str:
    """An object block (dir-spec 1.2): BEGIN/END lines around base64 in 64-column lines, ending in LF."""
    b64 = base64.b64encode(data).decode("ascii")
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return f"-----BEGIN {kind}-----\n" + "".join(line + "\n" for line in lines) + f"-----END {kind}-----\n"


def public_pem(key: RSAPublicKey) -> str:
    return pem("RSA PUBLIC KEY", public_der(key))


def recover_signed_data(key: RSAPublicKey, signature: bytes, what: str = "RSA signature") -> bytes:
    """The data inside a PKCS#1 v1.5 type-1 signature: SignatureError unless the padding is well formed.

    For signatures whose checker must accept data beyond what it compares (dir-spec's onion-key-crosscert:
    "Parties verifying this signature MUST allow additional data beyond the 52 bytes").
    """
    block = _public_operation(key, signature, what)
    # 00 01, at least eight FF bytes (RFC 8017 9.2 / OpenSSL's RSA_padding_check_PKCS1_type_1), 00, data
    if block[:2] != b"\x00\x01":
        raise SignatureError(f"{what}: not a PKCS#1 v1.5 type 1 block")
    sep = block.find(b"\x00", 2)
    if sep < 0 or sep < 10 or block[2:sep] != b"\xff" * (sep - 2):
        raise SignatureError(f"{what}: bad PKCS#1 v1.5 padding")
    return block[sep + 1:]
