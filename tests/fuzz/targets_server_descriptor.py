"""Fuzz targets for nodes/core/server_descriptor.py and microdesc.py: parse, then check (RSA-1024 and
Ed25519 verification are cheap), seeded with our descriptors and C tor's from tests/unit/dirspec_vectors."""

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nodes.core.microdesc import microdescriptor_for, parse_microdescriptors
from nodes.core.server_descriptor import make_server_descriptor, parse_server_descriptor
from tests.fuzz.driver import Target

_T0 = 1_700_000_000
_VECTORS = Path(__file__).parent.parent / "unit" / "dirspec_vectors"
_CTOR = [(_VECTORS / name).read_bytes() for name in ("ctor-relay.desc", "ctor-authority.desc",
                                                      "ctor-relay-family.desc", "onionlab-tap.desc")]
_CTOR_NOW = 1_796_628_546  # their publication time (2026-12-07 07:29:06)

_descs = [
    make_server_descriptor(
        nickname=f"relay{i}", address=f"10.0.0.{i}", or_port=9001, dir_port=9030 * (i % 2),
        rsa_identity=rsa_key,
        ed25519_identity=Ed25519PrivateKey.from_private_bytes(bytes([i]) * 32),
        signing_key=Ed25519PrivateKey.from_private_bytes(bytes([0x40 + i]) * 32),
        signing_cert_expires=_T0 + 86400, ntor_secret=bytes([0x80 + i]) * 32, bandwidth=1000 * i,
        platform="onionlab 0.1.0", proto="Cons=1-2 Desc=1-2 Link=4-5 Microdesc=1-2 Relay=2-4", published=_T0,
        tap_onion_key=tap, family=("relay9", "$" + "AB" * 20) if i == 2 else ())
    for i, rsa_key, tap in ((1, rsa.generate_private_key(65537, 1024), None),
                            (2, rsa.generate_private_key(65537, 1024), rsa.generate_private_key(65537, 1024)))
]


def _descriptor(data: bytes) -> object:
    unchecked = parse_server_descriptor(data)
    now = _T0 if unchecked.published < _CTOR_NOW - 86400 else _CTOR_NOW
    return unchecked.check(now, max_age=86400, max_skew=86400)


_mds = [microdescriptor_for(d).raw for d in _descs]

TARGETS = [
    Target("server_descriptor.parse", parse_server_descriptor, (*(d.raw for d in _descs), *_CTOR)),
    Target("server_descriptor.parse_check", _descriptor, (*(d.raw for d in _descs), *_CTOR)),
    Target("microdesc.parse_microdescriptors", parse_microdescriptors,
           (*_mds, b"".join(_mds), (_VECTORS / "ctor-microdescs.txt").read_bytes(),
            (_VECTORS / "ctor-microdescs-family.txt").read_bytes())),
]
