"""A node's long-term secret keys, kept in `<data_dir>/keys/` (directory mode 0700, files 0600).

Made on first start and read back on every later one, so a relay keeps its identity (and its place in the
consensus and on the HSDir ring) across restarts. Each key is a raw 32-byte file: the Ed25519 identity
seed, and the Curve25519 secret of the ntor onion key. Nothing here ever goes into the repository or a config.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from nodes.config import ConfigError

from .relay_engine import RelayKeys

KEYS_DIR = "keys"
IDENTITY_KEY = "identity.key"  # the same name the authorities use (nodes.roles.authority.load_identity)
NTOR_KEY = "ntor.key"
SEED_BYTES = 32


def load_or_create_seed(path: str | Path) -> bytes:
    """The 32 random bytes in `path`, made (mode 0600, parent directory 0700) if the file does not exist.

    Creation is atomic and never overwrites: the seed is written to a private temporary file that is then
    hard-linked into place, so a crash leaves no half-written key and two starts racing agree on one seed.
    A file of the wrong size is a ConfigError (we do not replace a key someone else put there)."""
    path = Path(path)
    try:
        return _read_seed(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(SEED_BYTES))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another start made it first: use theirs
    finally:
        tmp.unlink(missing_ok=True)
    return _read_seed(path)


def _read_seed(path: Path) -> bytes:
    seed = path.read_bytes()
    if len(seed) != SEED_BYTES:
        raise ConfigError(f"{path}: expected a raw {SEED_BYTES}-byte key, found {len(seed)} bytes")
    return seed


def load_or_create_relay_keys(data_dir: str | Path) -> tuple[Ed25519PrivateKey, RelayKeys]:
    """The relay's Ed25519 identity (it signs the relay descriptor) and its identity + ntor key pair."""
    keys_dir = Path(data_dir, KEYS_DIR)
    identity = Ed25519PrivateKey.from_private_bytes(load_or_create_seed(keys_dir / IDENTITY_KEY))
    ntor_secret = load_or_create_seed(keys_dir / NTOR_KEY)
    ntor_public = X25519PrivateKey.from_private_bytes(ntor_secret).public_key().public_bytes_raw()
    return identity, RelayKeys(identity.public_key().public_bytes_raw(), ntor_secret, ntor_public)
