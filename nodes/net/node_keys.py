"""A node's long-term secret keys, kept in `<data_dir>/keys/` (directory mode 0700, files 0600).

Made on first start and read back on every later one, so a relay keeps its identity (and its place in the
consensus and on the HSDir ring) across restarts: the Ed25519 identity seed and the Curve25519 secret of the
ntor onion key (raw 32-byte files), and the RSA-1024 legacy identity (PEM) whose SHA-1 is the node ID Tor
uses everywhere. Nothing here ever goes into the repository, a config or an image.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from nodes.config import ConfigError
from nodes.core import tor_rsa
from nodes.core.link_certs import LinkIdentity, make_link_identity

from .relay_engine import RelayKeys

KEYS_DIR = "keys"
IDENTITY_KEY = "identity.key"  # the same name the authorities use (nodes.roles.authority.load_identity)
NTOR_KEY = "ntor.key"
RSA_IDENTITY_KEY = "rsa_identity.pem"
TAP_ONION_KEY = "tap_onion.pem"
AUTHORITY_IDENTITY_KEY = "authority_identity.pem"
AUTHORITY_SIGNING_KEY = "authority_signing.pem"
HS_IDENTITY_KEY = "hs_identity.key"  # an onion service's Ed25519 identity seed: its onion address
SEED_BYTES = 32


def load_or_create_seed(path: str | Path) -> bytes:
    """The 32 random bytes in `path`, made (mode 0600, parent directory 0700) if the file does not exist.
    A file of the wrong size is a ConfigError (we do not replace a key someone else put there)."""
    return _read_seed(_create_once(Path(path), lambda: os.urandom(SEED_BYTES)))


def load_or_create_rsa_key(path: str | Path) -> RSAPrivateKey:
    """The 1024-bit RSA key in `path` (PKCS#8 PEM), made if the file does not exist: a relay's legacy
    identity (its 20-byte node ID is the SHA-1 of the public key), or an authority's v3 identity or signing
    key. Made with `cryptography`'s generator, which reads the OS RNG."""
    def make() -> bytes:
        key = rsa.generate_private_key(tor_rsa.PUBLIC_EXPONENT, tor_rsa.IDENTITY_BITS)
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    path = _create_once(Path(path), make)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{path}: not an unencrypted PEM private key: {e}") from None
    if not isinstance(key, RSAPrivateKey):
        raise ConfigError(f"{path}: not an RSA key")
    return key


def _create_once(path: Path, make: Callable[[], bytes]) -> Path:
    """Write `make()` to `path` unless it exists. Creation is atomic and never overwrites: the bytes go to a
    private temporary file that is then hard-linked into place, so a crash leaves no half-written key and
    two starts racing agree on one key."""
    if path.exists():
        return path
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(make())
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another start made it first: use theirs
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _read_seed(path: Path) -> bytes:
    seed = path.read_bytes()
    if len(seed) != SEED_BYTES:
        raise ConfigError(f"{path}: expected a raw {SEED_BYTES}-byte key, found {len(seed)} bytes")
    return seed


@dataclass(frozen=True, slots=True)
class NodeKeys:
    """A relay's (or authority's) long-term keys: the Ed25519 master identity, the RSA-1024 legacy identity
    (node ID = SHA-1 of its DER) and the ntor onion key."""

    ed25519_identity: Ed25519PrivateKey = field(repr=False)
    rsa_identity: RSAPrivateKey = field(repr=False)
    ntor_secret: bytes = field(repr=False)
    # Never used for a handshake (no TAP here), but C tor's authorities refuse a descriptor without one and
    # every microdescriptor they make carries it: ours look the same (nodes/core/server_descriptor.py).
    tap_onion_key: RSAPrivateKey = field(repr=False)

    @property
    def node_id(self) -> bytes:
        return tor_rsa.fingerprint(self.rsa_identity.public_key())

    @property
    def fingerprint(self) -> str:
        return self.node_id.hex().upper()

    @property
    def relay_keys(self) -> RelayKeys:
        ntor_public = X25519PrivateKey.from_private_bytes(self.ntor_secret).public_key().public_bytes_raw()
        return RelayKeys(self.ed25519_identity.public_key().public_bytes_raw(), self.ntor_secret, ntor_public,
                         self.node_id)


def load_or_create_node_keys(data_dir: str | Path) -> NodeKeys:
    keys_dir = Path(data_dir, KEYS_DIR)
    return NodeKeys(Ed25519PrivateKey.from_private_bytes(load_or_create_seed(keys_dir / IDENTITY_KEY)),
                    load_or_create_rsa_key(keys_dir / RSA_IDENTITY_KEY),
                    load_or_create_seed(keys_dir / NTOR_KEY),
                    load_or_create_rsa_key(keys_dir / TAP_ONION_KEY))


@dataclass(frozen=True, slots=True)
class AuthorityKeys:
    """A directory authority's v3 keys (dir-spec 3.1): the identity key that certifies the medium-term signing
    key in its key certificate, and the signing key itself, which signs votes and consensuses."""

    v3_identity: RSAPrivateKey = field(repr=False)
    signing: RSAPrivateKey = field(repr=False)

    @property
    def v3ident(self) -> str:
        return tor_rsa.hex_fingerprint(self.v3_identity.public_key())


def load_or_create_authority_keys(data_dir: str | Path) -> AuthorityKeys:
    keys_dir = Path(data_dir, KEYS_DIR)
    return AuthorityKeys(load_or_create_rsa_key(keys_dir / AUTHORITY_IDENTITY_KEY),
                         load_or_create_rsa_key(keys_dir / AUTHORITY_SIGNING_KEY))


def link_identity(keys: NodeKeys, signing: Ed25519PrivateKey, now: int) -> LinkIdentity:
    """What this node's OR port proves (nodes/core/link_certs.py): its identities, certifying `signing`, the
    medium-term Ed25519 key that also signs its server descriptor. Nodes make it fresh at each start: it
    lives in memory only (C tor rotates its own too)."""
    return make_link_identity(keys.rsa_identity, keys.ed25519_identity.private_bytes_raw(),
                              signing.private_bytes_raw(), now, os.urandom)
