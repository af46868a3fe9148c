"""The ntor handshake (tor-spec 5.1.4), CREATE2/EXTEND2 handshake type 2.

Two pure steps per side with the RNG passed in:
  client: `ntor_client_start` -> onionskin ID | B | X (84 bytes), later `ntor_client_finish(state, Y | AUTH)`;
  relay:  `ntor_server_handshake(onionskin)` -> (Y | AUTH, key material).
Both sides end with KEY_MATERIAL_LEN bytes of HKDF-SHA256 output, Df | Db | Kf | Kb | KH (tor-spec 5.2.2).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from .errors import CryptoError, LocalProtocolError
from .kdf import hkdf_sha256
from .wire import Reader

PROTOID = b"ntor-curve25519-sha256-1"
T_MAC = PROTOID + b":mac"
T_KEY = PROTOID + b":key_extract"
T_VERIFY = PROTOID + b":verify"
M_EXPAND = PROTOID + b":key_expand"

NODE_ID_LEN = 20
KEY_LEN = 32
ONIONSKIN_LEN = NODE_ID_LEN + 2 * KEY_LEN  # 84
REPLY_LEN = 2 * KEY_LEN  # 64
KEY_MATERIAL_LEN = 92  # Df 20 | Db 20 | Kf 16 | Kb 16 | KH 20

Rng = Callable[[int], bytes]  # the shape of os.urandom


@dataclass(frozen=True, slots=True)
class NtorClientState:
    """What the client keeps between sending the onionskin and reading the reply."""

    node_id: bytes
    onion_key: bytes  # B
    public: bytes  # X
    secret: bytes = field(repr=False)  # x


def _h(message: bytes, tweak: bytes) -> bytes:
    # tor-spec's H(x, t) is HMAC-SHA256 keyed with the tweak t.
    return hmac.digest(tweak, message, "sha256")


def _exp(secret: X25519PrivateKey, public: bytes) -> bytes:
    """X25519, refusing the all-zero output a low-order public key produces (tor-spec 5.1.4)."""
    try:
        shared = secret.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as exc:  # cryptography rejects an all-zero shared secret itself
        raise CryptoError("ntor: degenerate Curve25519 public key") from exc
    if shared == bytes(KEY_LEN):
        raise CryptoError("ntor: degenerate Curve25519 public key")
    return shared


def _new_keypair(rng: Rng, what: str) -> tuple[X25519PrivateKey, bytes]:
    raw = rng(KEY_LEN)
    if len(raw) != KEY_LEN:
        raise LocalProtocolError(f"ntor: rng returned {len(raw)} bytes for {what}, wanted {KEY_LEN}")
    secret = X25519PrivateKey.from_private_bytes(raw)
    return secret, secret.public_key().public_bytes_raw()


def _check_len(value: bytes, n: int, what: str) -> None:
    if len(value) != n:
        raise LocalProtocolError(f"ntor: {what} must be {n} bytes, got {len(value)}")


def _finish(secret_input: bytes, node_id: bytes, b_pub: bytes, x_pub: bytes,
            y_pub: bytes) -> tuple[bytes, bytes]:
    """(AUTH, key material) from secret_input; identical on both sides."""
    verify = _h(secret_input, T_VERIFY)
    auth = _h(verify + node_id + b_pub + y_pub + x_pub + PROTOID + b"Server", T_MAC)
    # KDF-RFC5869(secret_input, t_key, m_expand); its extract step is KEY_SEED = H(secret_input, t_key).
    return auth, hkdf_sha256(secret_input, T_KEY, M_EXPAND, KEY_MATERIAL_LEN)


def ntor_client_start(node_id: bytes, onion_key: bytes, rng: Rng) -> tuple[NtorClientState, bytes]:
    """Begin a handshake with the relay `node_id` whose ntor onion key is `onion_key` (B)."""
    _check_len(node_id, NODE_ID_LEN, "node_id")
    _check_len(onion_key, KEY_LEN, "onion_key")
    secret, x_pub = _new_keypair(rng, "x")
    state = NtorClientState(bytes(node_id), bytes(onion_key), x_pub, secret.private_bytes_raw())
    return state, state.node_id + state.onion_key + x_pub


def ntor_server_handshake(onionskin: bytes, *, node_id: bytes, onion_secret: bytes,
                          rng: Rng) -> tuple[bytes, bytes]:
    """Answer an onionskin as the relay `node_id` holding ntor secret key `onion_secret` (b).

    Returns (reply Y | AUTH, key material). CryptoError if the onionskin names another relay or key, or X is
    degenerate; DecodeError if it is not 84 bytes.
    """
    _check_len(node_id, NODE_ID_LEN, "node_id")
    _check_len(onion_secret, KEY_LEN, "onion_secret")
    r = Reader(onionskin, "ntor onionskin")
    their_id, b_pub, x_pub = r.bytes(NODE_ID_LEN), r.bytes(KEY_LEN), r.bytes(KEY_LEN)
    r.expect_end()
    b = X25519PrivateKey.from_private_bytes(onion_secret)
    if their_id != node_id:
        raise CryptoError("ntor: onionskin is for another relay identity")
    if b_pub != b.public_key().public_bytes_raw():
        raise CryptoError("ntor: onionskin is for another onion key")
    y, y_pub = _new_keypair(rng, "y")
    secret_input = _exp(y, x_pub) + _exp(b, x_pub) + node_id + b_pub + x_pub + y_pub + PROTOID
    auth, keys = _finish(secret_input, node_id, b_pub, x_pub, y_pub)
    return y_pub + auth, keys


def ntor_client_finish(state: NtorClientState, reply: bytes) -> bytes:
    """Check the relay's reply Y | AUTH and return the key material. CryptoError if AUTH does not verify."""
    r = Reader(reply, "ntor reply")
    y_pub, auth = r.bytes(KEY_LEN), r.bytes(KEY_LEN)
    r.expect_end()
    x = X25519PrivateKey.from_private_bytes(state.secret)
    secret_input = (_exp(x, y_pub) + _exp(x, state.onion_key) + state.node_id + state.onion_key + state.public
                    + y_pub + PROTOID)
    expected, keys = _finish(secret_input, state.node_id, state.onion_key, state.public, y_pub)
    if not hmac.compare_digest(expected, auth):
        raise CryptoError("ntor: AUTH does not verify")
    return keys
