"""Fuzz targets for nodes/core/dirdocs.py: every parser, then its check (Ed25519 verification is cheap)."""

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nodes.core.dirdocs import (
    Flag,
    RouterStatus,
    SignedConsensus,
    compute_consensus,
    make_relay_descriptor,
    make_vote,
    parse_consensus_signature,
    parse_relay_descriptor,
    parse_signed_consensus,
    parse_vote,
    sign_consensus,
)
from tests.fuzz.driver import Target

_T0 = 1_700_000_000
_AUTHS = [Ed25519PrivateKey.from_private_bytes(bytes([i]) * 32) for i in (1, 2, 3)]
_AUTH_IDS = [k.public_key().public_bytes_raw() for k in _AUTHS]
_UP = frozenset({Flag.Running, Flag.Valid})

_descs = [
    make_relay_descriptor(nickname=f"relay{i}", ntor_onion_key=bytes([i]) * 32, address=addr, or_port=9001,
                          dir_port=dir_port, bandwidth=1000 * i, published=_T0, platform="onionlab 0.1.0",
                          signer_private=Ed25519PrivateKey.from_private_bytes(bytes([0x40 + i]) * 32))
    for i, addr, dir_port in ((1, "10.0.0.1", 0), (2, "10.0.0.2", 9030), (3, "2001:db8::3", 0))
]
_extra_flags = ({Flag.HSDir}, {Flag.Fast, Flag.Guard, Flag.Stable}, set())
_statuses = [RouterStatus.from_descriptor(d, _UP | x) for d, x in zip(_descs, _extra_flags, strict=True)]
_votes = [make_vote(k, published=_T0, valid_after=_T0 + 100, fresh_until=_T0 + 200, valid_until=_T0 + 300,
                    routers=_statuses[: 2 + (i % 2)], shared_rand_current=b"s" * 32 if i else None)
          for i, k in enumerate(_AUTHS)]
_consensus = compute_consensus(_votes, 3)
_sigs = [sign_consensus(_consensus, k) for k in _AUTHS]


def _descriptor(data: bytes) -> object:
    return parse_relay_descriptor(data).check(_T0, 3600)


def _vote(data: bytes) -> object:
    return parse_vote(data).check(_AUTH_IDS, _T0)


def _consensus_doc(data: bytes) -> object:
    return parse_signed_consensus(data).check(_AUTH_IDS, _T0 + 150)


def _signature(data: bytes) -> object:
    return SignedConsensus(_consensus).add_signature(parse_consensus_signature(data), _AUTH_IDS)


TARGETS = [
    Target("dirdocs.relay_descriptor", _descriptor, tuple(d.encode() for d in _descs)),
    Target("dirdocs.vote", _vote, tuple(v.encode() for v in _votes)),
    Target("dirdocs.signed_consensus", _consensus_doc,
           tuple(SignedConsensus(_consensus, tuple(_sigs[:n])).encode() for n in (2, 3))),
    Target("dirdocs.consensus_signature", _signature, tuple(s.encode() for s in _sigs)),
]
