"""Fuzz targets for the dir-spec documents: authority certificates (authcert), the microdesc consensus and
detached signatures (consensus), our internal vote (vote). Each target parses, then checks, so mutations that
still parse reach the signature and time checks.

Seeds are certificates made by tor-gencert and a C tor test network (tests/unit/dirspec_vectors), a consensus
made by C tor, and our own documents.
"""

from __future__ import annotations

from pathlib import Path

from nodes.core.authcert import parse_authority_certs
from nodes.core.consensus import SignedConsensus, parse_consensus, parse_detached_signature, sign_consensus
from nodes.core.vote import compute_consensus, parse_vote
from tests.fuzz.driver import Target
from tests.unit.dirspec_fixtures import AUTHS, CERTS, T0, UP, VA, configs, ids, relay, signed_by, vote

_VECTORS = Path(__file__).parent.parent / "unit" / "dirspec_vectors"
_GENCERT = (_VECTORS / "tor-gencert-authority_certificate").read_bytes()
_CTOR_CERTS = (_VECTORS / "ctor-3auth-certs").read_bytes()
_CTOR_CONSENSUS = (_VECTORS / "ctor-3auth-microdesc-consensus").read_bytes()
_CTOR_VA = 1796627780
_ctor_certs = {u.v3ident: u.check(_CTOR_VA) for u in parse_authority_certs(_CTOR_CERTS)}

_votes = [vote(i, [relay(1, UP | {"HSDir"}), relay(2, UP | {"Guard"}, version=None), relay(3 + i)],
               shared_rand_current=b"s" * 32 if i else None) for i in range(3)]
_consensus = compute_consensus(_votes, configs(3))
_signed = signed_by(_consensus, 0, 1)
_sigs = [sign_consensus(_signed.body, a.cert, a.signing) for a in AUTHS[:3]]


def _certs(data: bytes) -> object:
    return [u.check(T0 if u.v3ident in CERTS else _CTOR_VA) for u in parse_authority_certs(data)]


def _consensus_doc(data: bytes) -> object:
    u = parse_consensus(data)
    if any(d.v3ident in _ctor_certs for d in u.unchecked.dir_sources):
        return u.check(_ctor_certs, _ctor_certs.keys(), _CTOR_VA)
    return u.check(CERTS, ids(3), VA)


def _signature(data: bytes) -> object:
    return SignedConsensus.unsigned(_consensus).add_signature(parse_detached_signature(data), CERTS)


def _vote(data: bytes) -> object:
    return parse_vote(data).check(ids(3), T0)


TARGETS = [
    Target("dirspec.authority_certs", _certs, (_GENCERT, _CTOR_CERTS, AUTHS[0].cert.raw)),
    Target("dirspec.consensus", _consensus_doc, (_CTOR_CONSENSUS, _signed.encode())),
    Target("dirspec.detached_signature", _signature, tuple(s.encode() for s in _sigs)),
    Target("dirspec.vote", _vote, tuple(v.encode() for v in _votes)),
]
