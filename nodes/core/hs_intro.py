"""The crypto of the onion-service introduction and rendezvous cells (rend-spec-v3 3.1-3.3, 4.2).

relay.py encodes and decodes the cells; this module fills in and checks their cryptographic fields:
  ESTABLISH_INTRO  HANDSHAKE_AUTH (MAC keyed with the circuit's KH) and the auth key's Ed25519 SIG (3.1.1);
  INTRODUCE1/2     ENCRYPTED = X | AES-256-CTR(ENC_KEY, plaintext) | MAC, with hs-ntor intro keys (3.3.2);
  RENDEZVOUS1/2    HANDSHAKE_INFO Y | AUTH and the 128 bytes of virtual-hop key material (4.2).
Everything is pure; randomness comes in as `rng`. Replay caching is the service runtime's job (`replay_key`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from . import ed25519
from .errors import CryptoError, DecodeError, LocalProtocolError
from .hs_ntor import (
    AUTH_LEN,
    KEY_LEN,
    MAC_LEN,
    client_intro_keys,
    client_rendezvous,
    public_key,
    service_intro_keys,
    service_rendezvous,
)
from .kdf import hs_mac
from .relay import (
    RELAY_DATA_MAX,
    REND_COOKIE_LEN,
    EstablishIntro,
    Extension,
    Introduce1,
    Introduce2,
    LinkSpec,
    Rendezvous1,
    Rendezvous2,
    encode_extensions,
    encode_link_specs,
    read_extensions,
    read_link_specs,
)
from .wire import Reader, u8, u16

Rng = Callable[[int], bytes]  # the shape of os.urandom

AUTH_KEY_TYPE_ED25519 = 2  # "Ed25519; SHA3-256", the only type this module speaks (3.1.1)
ONION_KEY_TYPE_NTOR = 1  # ONION_KEY is 32 bytes (3.3)
LEGACY_KEY_ID = bytes(20)
ESTABLISH_INTRO_SIG_PREFIX = b"Tor establish-intro cell v1"
SIG_LEN = 64
# C tor pads the INTRODUCE1 header plus the plaintext to at least this many bytes (its
# HS_CELL_INTRODUCE1_MIN_SIZE), as the rend-spec-v3 G.1 vector shows: a 56-byte header, a 190-byte plaintext.
# The spec itself gives no number.
INTRODUCE1_MIN_SIZE = 246
_ZERO_IV = bytes(16)


def _aes256_ctr(key: bytes, data: bytes) -> bytes:
    # A fresh key per cell, so IV 0 never repeats a keystream.
    return Cipher(algorithms.AES(key), modes.CTR(_ZERO_IV)).encryptor().update(data)


def _rng_bytes(rng: Rng, n: int, what: str) -> bytes:
    raw = rng(n)
    if len(raw) != n:
        raise LocalProtocolError(f"rng returned {len(raw)} bytes for {what}, wanted {n}")
    return raw


# --- ESTABLISH_INTRO (3.1.1)


def build_establish_intro(auth: ed25519.Signer, circuit_kh: bytes,
                          extensions: Iterable[Extension] = ()) -> EstablishIntro:
    """ESTABLISH_INTRO for the intro point at the end of the circuit whose hop has key KH `circuit_kh`."""
    draft = EstablishIntro(AUTH_KEY_TYPE_ED25519, auth.public_key, tuple(extensions), bytes(MAC_LEN),
                           bytes(SIG_LEN))
    # HANDSHAKE_AUTH binds the cell to this circuit, so it cannot be replayed on another one.
    draft = replace(draft, handshake_auth=hs_mac(circuit_kh, draft.mac_input()))
    return replace(draft, sig=auth.sign(ESTABLISH_INTRO_SIG_PREFIX + draft.sig_input()))


def verify_establish_intro(msg: EstablishIntro, circuit_kh: bytes) -> None:
    """Check an ESTABLISH_INTRO received on the circuit whose hop key KH is `circuit_kh`.

    DecodeError for an auth key type other than Ed25519 or a key of the wrong size, CryptoError for a wrong
    HANDSHAKE_AUTH, SignatureError for a wrong SIG.
    """
    if msg.auth_key_type != AUTH_KEY_TYPE_ED25519:
        raise DecodeError(f"ESTABLISH_INTRO: unsupported AUTH_KEY_TYPE {msg.auth_key_type}")
    if len(msg.auth_key) != KEY_LEN:
        raise DecodeError(f"ESTABLISH_INTRO: Ed25519 AUTH_KEY of {len(msg.auth_key)} bytes, not {KEY_LEN}")
    # The MAC first: it is cheap, and a cell made for another circuit fails it whatever its signature.
    if not hmac.compare_digest(hs_mac(circuit_kh, msg.mac_input()), msg.handshake_auth):
        raise CryptoError("ESTABLISH_INTRO: HANDSHAKE_AUTH does not verify")
    ed25519.verify(msg.auth_key, ESTABLISH_INTRO_SIG_PREFIX + msg.sig_input(), msg.sig)


# --- INTRODUCE1/2 (3.2, 3.3, 3.3.2)


@dataclass(frozen=True, slots=True)
class IntroducePlaintext:
    """The decrypted part of INTRODUCE2: where the rendezvous point is and which cookie to present there.

    `link_specs` are kept verbatim and in order, unknown types included: the service passes them on as sent.
    Only ntor onion keys exist (ONION_KEY_TYPE 1, 32 bytes); padding is not kept.
    """

    rendezvous_cookie: bytes
    extensions: tuple[Extension, ...]
    onion_key_type: int
    onion_key: bytes
    link_specs: tuple[LinkSpec, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "extensions", tuple(self.extensions))
        object.__setattr__(self, "link_specs", tuple(self.link_specs))
        if len(self.rendezvous_cookie) != REND_COOKIE_LEN:
            raise LocalProtocolError(f"rendezvous cookie must be {REND_COOKIE_LEN} bytes")
        if self.onion_key_type != ONION_KEY_TYPE_NTOR:
            raise LocalProtocolError(f"unsupported ONION_KEY_TYPE {self.onion_key_type}")
        if len(self.onion_key) != KEY_LEN:
            raise LocalProtocolError(f"ntor ONION_KEY must be {KEY_LEN} bytes, not {len(self.onion_key)}")

    def encode(self, pad_to: int = 0) -> bytes:
        """The plaintext, zero-padded to at least `pad_to` bytes (the padding is encrypted, so zeros do)."""
        body = (self.rendezvous_cookie + encode_extensions(self.extensions) + u8(self.onion_key_type)
                + u16(len(self.onion_key)) + self.onion_key + encode_link_specs(self.link_specs))
        return body + bytes(max(0, pad_to - len(body)))

    @classmethod
    def decode(cls, data: bytes) -> IntroducePlaintext:
        """DecodeError unless `data` is a well-formed plaintext with an ntor onion key; the rest is PAD."""
        r = Reader(data, "INTRODUCE2 plaintext")
        cookie = r.bytes(REND_COOKIE_LEN)
        exts = read_extensions(r)
        key_type = r.u8()
        key = r.bytes(r.u16())
        if key_type != ONION_KEY_TYPE_NTOR or len(key) != KEY_LEN:
            raise DecodeError(f"INTRODUCE2 plaintext: onion key type {key_type} of {len(key)} bytes")
        specs = read_link_specs(r)
        return cls(cookie, exts, key_type, key, specs)


@dataclass(frozen=True, slots=True)
class ClientIntroState:
    """What the client keeps from INTRODUCE1 to finish the handshake when RENDEZVOUS2 arrives."""

    x_secret: bytes = field(repr=False)
    X: bytes
    B: bytes  # the service's introduction encryption key (from the descriptor)
    auth_key: bytes  # the intro point's auth key (from the descriptor)


def _introduce_mac(mac_key: bytes, header: bytes, x_pub: bytes, ciphertext: bytes) -> bytes:
    # Covers the header from LEGACY_KEY_ID on (3.3.2 says "from AUTH_KEY"; C tor and the G.1 vector disagree).
    return hs_mac(mac_key, header + x_pub + ciphertext)


def encrypt_introduce1(*, auth_key: bytes, service_enc_key: bytes, subcredential: bytes,
                       plaintext: IntroducePlaintext, rng: Rng,
                       extensions: Iterable[Extension] = ()) -> tuple[Introduce1, ClientIntroState]:
    """INTRODUCE1 for the intro point with `auth_key`, encrypted to the service's `service_enc_key` (B).

    LocalProtocolError if the cell would not fit in one relay cell.
    """
    x_secret = _rng_bytes(rng, KEY_LEN, "x")
    x_pub = public_key(x_secret)
    draft = Introduce1(LEGACY_KEY_ID, AUTH_KEY_TYPE_ED25519, auth_key, tuple(extensions), b"")
    header = draft.header_bytes()
    body = plaintext.encode(pad_to=INTRODUCE1_MIN_SIZE - len(header))
    if len(header) + KEY_LEN + len(body) + MAC_LEN > RELAY_DATA_MAX:
        raise LocalProtocolError("INTRODUCE1 does not fit in a relay cell")
    keys = client_intro_keys(x_secret, x_pub, service_enc_key, auth_key, subcredential)
    ciphertext = _aes256_ctr(keys.enc_key, body)
    mac = _introduce_mac(keys.mac_key, header, x_pub, ciphertext)
    msg = replace(draft, encrypted=x_pub + ciphertext + mac)
    return msg, ClientIntroState(x_secret, x_pub, bytes(service_enc_key), bytes(auth_key))


def decrypt_introduce2(msg: Introduce2, *, service_enc_secret: bytes, service_enc_key: bytes,
                       subcredential: bytes) -> tuple[IntroducePlaintext, bytes]:
    """Open INTRODUCE2 with the service's introduction encryption key pair (b, B): (plaintext, client's X).

    The MAC is checked before anything is decrypted: CryptoError if it (or X) is bad, DecodeError if the
    section is too short or the plaintext malformed. AUTH_KEY enters the key derivation, so a cell sent to
    another intro point fails the MAC; matching it to the circuit and the replay cache is the caller's job.
    """
    if msg.auth_key_type != AUTH_KEY_TYPE_ED25519 or len(msg.auth_key) != KEY_LEN:
        raise DecodeError(f"INTRODUCE2: unsupported auth key type {msg.auth_key_type} "
                          f"({len(msg.auth_key)} bytes)")
    enc = msg.encrypted
    if len(enc) < KEY_LEN + MAC_LEN:
        raise DecodeError(f"INTRODUCE2: encrypted section of {len(enc)} bytes is too short")
    x_pub, ciphertext, mac = enc[:KEY_LEN], enc[KEY_LEN:-MAC_LEN], enc[-MAC_LEN:]
    keys = service_intro_keys(service_enc_secret, service_enc_key, x_pub, msg.auth_key, subcredential)
    if not hmac.compare_digest(_introduce_mac(keys.mac_key, msg.header_bytes(), x_pub, ciphertext), mac):
        raise CryptoError("INTRODUCE2: MAC does not verify")
    return IntroducePlaintext.decode(_aes256_ctr(keys.enc_key, ciphertext)), x_pub


def replay_key(msg: Introduce1) -> bytes:
    """What the service caches against replays (rend-spec-v3 3.3), for as long as it keeps this B.

    A digest of the ENCRYPTED section, as C tor caches that section: it holds the client's fresh X, so every
    genuine INTRODUCE differs, and the MAC covers the rest of the cell, so altered copies fail the MAC anyway.
    The service should also refuse a rendezvous cookie it has already answered.
    """
    return hashlib.sha3_256(msg.encrypted).digest()


# --- RENDEZVOUS1/2 (4.2)


def service_rendezvous1(cookie: bytes, *, X: bytes, service_enc_secret: bytes, service_enc_key: bytes,
                        auth_key: bytes, rng: Rng) -> tuple[Rendezvous1, bytes]:
    """RENDEZVOUS1 answering an INTRODUCE2 (its cookie and X), and 128 bytes of virtual-hop key material."""
    y_secret = _rng_bytes(rng, KEY_LEN, "y")
    y_pub = public_key(y_secret)
    auth, key_material = service_rendezvous(service_enc_secret, service_enc_key, y_secret, y_pub, X, auth_key)
    return Rendezvous1(cookie, y_pub + auth), key_material


def client_handle_rendezvous2(state: ClientIntroState, msg: Rendezvous2) -> bytes:
    """The virtual-hop key material from RENDEZVOUS2's Y | AUTH; CryptoError if AUTH does not verify.

    Bytes after AUTH are ignored, as in C tor: rend-spec-v3 4.3 lets services pad RENDEZVOUS1 for old relays.
    """
    r = Reader(msg.handshake_info, "RENDEZVOUS2 HANDSHAKE_INFO")
    y_pub, auth = r.bytes(KEY_LEN), r.bytes(AUTH_LEN)
    return client_rendezvous(state.x_secret, state.X, state.B, y_pub, state.auth_key, auth)
