"""The CREATE_FAST handshake (tor-spec 5.1.5) with KDF-TOR (tor-spec 5.2.1).

A first hop only: the client already knows who it talks to from the link, so no public-key step is needed.
A C tor client uses it for a first hop whose onion key it does not know yet, which is how it bootstraps
(one-hop directory circuits to an authority or fallback before it has any descriptor).

Two pure steps per side with the RNG passed in, like nodes.core.ntor:
  client: `fast_client_start(rng)` -> (state, X), later `fast_client_finish(state, Y | KH)`;
  relay:  `fast_server_handshake(X, rng)` -> (Y | KH, key material).
X and Y are 20 random bytes each. K = KDF-TOR(X | Y): its first 20 bytes are KH, which the relay sends
back as proof that it computed K, then Df(20) Db(20) Kf(16) Kb(16).

Both sides return KEY_MATERIAL_LEN bytes in the layout ntor's key material has, Df | Db | Kf | Kb | KH, so
HopCrypto.tor1 and everything that reads KH (the circuit's nonce for ESTABLISH_INTRO) take either handshake's
output: KH is moved from the front of K to the end.

CREATE_FAST gives no authentication beyond the link's and no forward secrecy beyond TLS's; tor-spec calls
it deprecated whenever it is not necessary. We build it for first hops only and never put it in an EXTEND2.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import CryptoError, LocalProtocolError
from .kdf import kdf_tor
from .wire import Reader

HASH_LEN = 20
CREATE_FAST_LEN = HASH_LEN  # X
CREATED_FAST_LEN = 2 * HASH_LEN  # Y | KH
KEY_MATERIAL_LEN = 92  # Df 20 | Db 20 | Kf 16 | Kb 16 | KH 20, as nodes.core.ntor returns it
_K_LEN = KEY_MATERIAL_LEN  # KDF-TOR output: KH 20 | Df 20 | Db 20 | Kf 16 | Kb 16

Rng = Callable[[int], bytes]  # the shape of os.urandom


@dataclass(frozen=True, slots=True)
class FastClientState:
    """What the client keeps between sending X and reading the reply."""

    x: bytes = field(repr=False)


def _random(rng: Rng, what: str) -> bytes:
    value = rng(HASH_LEN)
    if len(value) != HASH_LEN:
        raise LocalProtocolError(f"create_fast: rng gave {len(value)} bytes for {what}, wanted {HASH_LEN}")
    return bytes(value)


def _derive(x: bytes, y: bytes) -> tuple[bytes, bytes]:
    """(KH, key material in the ntor layout) from X and Y."""
    k = kdf_tor(x + y, _K_LEN)
    kh = k[:HASH_LEN]
    return kh, k[HASH_LEN:] + kh


def fast_client_start(rng: Rng) -> tuple[FastClientState, bytes]:
    """Begin a handshake: (state, X), X being the body of the CREATE_FAST cell."""
    x = _random(rng, "X")
    return FastClientState(x), x


def fast_server_handshake(x: bytes, *, rng: Rng) -> tuple[bytes, bytes]:
    """Answer X: (reply Y | KH for the CREATED_FAST cell, key material). DecodeError unless X is 20 bytes."""
    r = Reader(x, "CREATE_FAST handshake")
    x = r.bytes(CREATE_FAST_LEN)
    r.expect_end()
    y = _random(rng, "Y")
    kh, keys = _derive(x, y)
    return y + kh, keys


def fast_client_finish(state: FastClientState, reply: bytes) -> bytes:
    """Check the relay's reply Y | KH and return the key material. CryptoError if KH does not match."""
    r = Reader(reply, "CREATED_FAST handshake")
    y, their_kh = r.bytes(HASH_LEN), r.bytes(HASH_LEN)
    r.expect_end()
    kh, keys = _derive(state.x, y)
    if not hmac.compare_digest(kh, their_kh):
        raise CryptoError("CREATE_FAST: the relay's KH does not match")
    return keys
