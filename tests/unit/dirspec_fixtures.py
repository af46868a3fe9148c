"""Test authorities and relays shared by the dir-spec document tests (keys are made at import, none kept)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from nodes.core.authcert import AuthorityCert, make_authority_cert
from nodes.core.consensus import Consensus, SignedConsensus, sign_consensus
from nodes.core.vote import DirAuthority, Vote, VoteRouter, make_vote

T0 = 1_800_000_000  # 2027-01-15 08:00:00
VA, FU, VU = T0 + 100, T0 + 400, T0 + 1000
PROTO = "Cons=2 Desc=2 FlowCtrl=1 HSDir=2 HSIntro=4 HSRend=2 Link=4-5 Microdesc=2 Relay=2"
UP = frozenset({"Running", "Valid"})


@dataclass(frozen=True)
class Auth:
    identity: RSAPrivateKey
    signing: RSAPrivateKey
    cert: AuthorityCert
    config: DirAuthority

    @property
    def v3ident(self) -> bytes:
        return self.cert.v3ident


def _authority(i: int) -> Auth:
    identity = rsa.generate_private_key(65537, 1024)
    signing = rsa.generate_private_key(65537, 1024)
    cert = make_authority_cert(identity, signing, T0 - 86400, T0 + 30 * 86400)
    config = DirAuthority(f"auth{i}", cert.v3ident, f"10.1.0.{i}", 7000 + i, 5000 + i,
                          f"auth{i}@onionlab.test")
    return Auth(identity, signing, cert, config)


# sorted by v3ident, so AUTHS[i] is also the i-th dir-source and signature of a consensus
AUTHS = sorted((_authority(i) for i in range(7)), key=lambda a: a.v3ident)
CERTS = {a.v3ident: a.cert for a in AUTHS}


def ids(n: int) -> list[bytes]:
    return [a.v3ident for a in AUTHS[:n]]


def configs(n: int) -> list[DirAuthority]:
    return [a.config for a in AUTHS[:n]]


def node_id(i: int) -> bytes:
    return hashlib.sha1(b"relay %d" % i).digest()


def relay(i: int, flags=UP, **kw) -> VoteRouter:
    """Relay i; relays sort by node id, which is not i's order."""
    fields = dict(nickname=f"relay{i}", node_id=node_id(i),
                  ed25519_identity=hashlib.sha256(b"ed %d" % i).digest(), address=f"10.0.0.{i}",
                  or_port=9001, dir_port=0, published=T0, bandwidth=100 * i,
                  version="onionlab 0.1.0", proto=PROTO, md_digest=hashlib.sha256(b"md %d" % i).digest(),
                  flags=frozenset(flags))
    fields.update(kw)
    return VoteRouter(**fields)


def vote(auth: int, routers, **kw) -> Vote:
    fields = dict(published=T0, valid_after=VA, fresh_until=FU, valid_until=VU, vote_delay=20, dist_delay=20,
                  routers=routers)
    fields.update(kw)
    a = AUTHS[auth]
    return make_vote(a.cert, a.signing, **fields)


def signed_by(c: Consensus, *auths: int) -> SignedConsensus:
    s = SignedConsensus.unsigned(c)
    for i in auths:
        s = s.add_signature(sign_consensus(s.body, AUTHS[i].cert, AUTHS[i].signing), CERTS)
    return s


def resign(document: bytes, *auths: int) -> bytes:
    """Cut a consensus document at its first directory-signature and sign that body again."""
    body = document[: document.index(b"\ndirectory-signature ") + 1]
    return body + b"".join(sign_consensus(body, AUTHS[i].cert, AUTHS[i].signing).encode() for i in auths)

