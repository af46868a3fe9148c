"""hs-ntor, the onion-service variant of ntor (rend-spec-v3 3.3.2 [NTOR-WITH-EXTRA-DATA], 4.2).

Two halves share one Curve25519 exchange:
  introduce: the client's X and the service's introduction encryption key B give ENC_KEY | MAC_KEY, which
             encrypt and authenticate the INTRODUCE1 payload (`client_intro_keys` / `service_intro_keys`);
  rendezvous: the service's fresh Y completes the handshake; RENDEZVOUS1/2 carry Y | AUTH and both sides end
             with KEY_MATERIAL_LEN bytes Df | Db | Kf | Kb for the virtual hop (`service_rendezvous` /
             `client_rendezvous`).
All functions are pure: secrets are raw 32-byte Curve25519 scalars, keys raw 32-byte public values.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from .errors import CryptoError, DecodeError, LocalProtocolError
from .kdf import hs_mac, shake256

PROTOID = b"tor-hs-ntor-curve25519-sha3-256-1"
T_HSENC = PROTOID + b":hs_key_extract"
T_HSVERIFY = PROTOID + b":hs_verify"
T_HSMAC = PROTOID + b":hs_mac"
M_HSEXPAND = PROTOID + b":hs_key_expand"

KEY_LEN = 32  # Curve25519 keys, Ed25519 AUTH_KEY, subcredential
S_KEY_LEN = 32  # AES-256
MAC_LEN = 32  # SHA3-256
HASH_LEN = 32  # SHA3-256
AUTH_LEN = MAC_LEN
KEY_MATERIAL_LEN = 2 * HASH_LEN + 2 * S_KEY_LEN  # Df | Db | Kf | Kb = 128 (rend-spec-v3 4.2.1)


@dataclass(frozen=True, slots=True)
class IntroKeys:
    """ENC_KEY (AES-256-CTR) and MAC_KEY for the encrypted part of one INTRODUCE1 cell."""

    enc_key: bytes = field(repr=False)
    mac_key: bytes = field(repr=False)


def _check_len(value: bytes, what: str) -> None:
    if len(value) != KEY_LEN:
        raise LocalProtocolError(f"hs-ntor: {what} must be {KEY_LEN} bytes, got {len(value)}")


def _exp(secret: bytes, public: bytes) -> bytes:
    """EXP(public, secret), refusing the all-zero output of a low-order point (PK_VALID in 3.3.2)."""
    try:
        peer = X25519PublicKey.from_public_bytes(public)
        shared = X25519PrivateKey.from_private_bytes(secret).exchange(peer)
    except ValueError as exc:  # cryptography refuses an all-zero shared secret itself
        raise CryptoError("hs-ntor: degenerate Curve25519 public key") from exc
    if shared == bytes(KEY_LEN):
        raise CryptoError("hs-ntor: degenerate Curve25519 public key")
    return shared


def public_key(secret: bytes) -> bytes:
    """The Curve25519 public key of a raw secret scalar."""
    _check_len(secret, "secret")
    return X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()


def _intro_keys(shared: bytes, auth_key: bytes, x_pub: bytes, b_pub: bytes, subcredential: bytes,
                ) -> IntroKeys:
    for value, what in ((auth_key, "auth_key"), (x_pub, "X"), (b_pub, "B"), (subcredential, "subcredential")):
        _check_len(value, what)
    secret_input = shared + auth_key + x_pub + b_pub + PROTOID
    keys = shake256(secret_input + T_HSENC + M_HSEXPAND + subcredential, S_KEY_LEN + MAC_LEN)
    return IntroKeys(keys[:S_KEY_LEN], keys[S_KEY_LEN:])


def client_intro_keys(x_secret: bytes, X: bytes, B: bytes, auth_key: bytes, subcredential: bytes,
                      ) -> IntroKeys:
    """The client's INTRODUCE1 keys: EXP(B, x), the intro point's AUTH_KEY and the service's subcredential."""
    _check_len(x_secret, "x")
    _check_len(B, "B")
    return _intro_keys(_exp(x_secret, B), auth_key, X, B, subcredential)


def service_intro_keys(b_secret: bytes, B: bytes, X: bytes, auth_key: bytes, subcredential: bytes,
                       ) -> IntroKeys:
    """The service's INTRODUCE2 keys: EXP(X, b). CryptoError if the client's X is degenerate."""
    _check_len(b_secret, "b")
    _check_len(X, "X")
    return _intro_keys(_exp(b_secret, X), auth_key, X, B, subcredential)


def expand_key_seed(ntor_key_seed: bytes) -> bytes:
    """K = KDF(NTOR_KEY_SEED | m_hsexpand, 128) = Df | Db | Kf | Kb (rend-spec-v3 4.2.1)."""
    return shake256(ntor_key_seed + M_HSEXPAND, KEY_MATERIAL_LEN)


def _rendezvous(xy: bytes, xb: bytes, auth_key: bytes, b_pub: bytes, x_pub: bytes, y_pub: bytes,
                ) -> tuple[bytes, bytes]:
    """(AUTH_INPUT_MAC, key material) from both exchanges; identical on both sides."""
    for value, what in ((auth_key, "auth_key"), (b_pub, "B"), (x_pub, "X"), (y_pub, "Y")):
        _check_len(value, what)
    secret_input = xy + xb + auth_key + b_pub + x_pub + y_pub + PROTOID
    # MAC(key, message): the secret input is the key, the tweak the message (3.3.2; the G.1 vector agrees).
    ntor_key_seed = hs_mac(secret_input, T_HSENC)
    verify = hs_mac(secret_input, T_HSVERIFY)
    auth = hs_mac(verify + auth_key + b_pub + y_pub + x_pub + PROTOID + b"Server", T_HSMAC)
    return auth, expand_key_seed(ntor_key_seed)


def service_rendezvous(b_secret: bytes, B: bytes, y_secret: bytes, Y: bytes, X: bytes, auth_key: bytes,
                       ) -> tuple[bytes, bytes]:
    """The service's half: (AUTH for RENDEZVOUS1, 128 bytes of virtual-hop key material)."""
    _check_len(b_secret, "b")
    _check_len(y_secret, "y")
    _check_len(X, "X")
    return _rendezvous(_exp(y_secret, X), _exp(b_secret, X), auth_key, B, X, Y)


def client_rendezvous(x_secret: bytes, X: bytes, B: bytes, Y: bytes, auth_key: bytes, auth: bytes) -> bytes:
    """The client's half from RENDEZVOUS2's Y and AUTH: key material; CryptoError if AUTH does not verify."""
    _check_len(x_secret, "x")
    _check_len(B, "B")
    if len(Y) != KEY_LEN or len(auth) != AUTH_LEN:
        raise DecodeError("hs-ntor: RENDEZVOUS2 handshake must be Y(32) AUTH(32)")
    expected, keys = _rendezvous(_exp(x_secret, Y), _exp(x_secret, B), auth_key, B, X, Y)
    if not hmac.compare_digest(expected, auth):
        raise CryptoError("hs-ntor: AUTH does not verify")
    return keys
