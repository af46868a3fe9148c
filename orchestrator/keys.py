"""The run's key material, made fresh for every run and written only into the nodes' data directories.

Authorities need their identities decided before any node starts, because every node's config names them
(AuthorityRef.identity); relays and onion services make their own keys on first start.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

IDENTITY_KEY = Path("keys", "identity.key")  # under the authority's data dir; nodes.roles.authority reads it


def write_authority_identity(data_dir: str | os.PathLike[str]) -> str:
    """Make a new Ed25519 identity seed at `<data_dir>/keys/identity.key` (mode 0600, in a 0700 directory;
    never overwrites) and return the public key in hex, as AuthorityRef.identity wants it."""
    path = Path(data_dir) / IDENTITY_KEY
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    seed = os.urandom(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(seed)
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw().hex()
