"""Fuzz target: the request paths a directory cache answers (nodes/net/dircache.py), as any client may send
them over BEGIN_DIR or the dir port. Every answer is a (status, type, body) or None; a malformed resource
list is a 400, never an exception."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import rsa

from nodes.core.authcert import make_authority_cert
from nodes.core.errors import DecodeError
from nodes.net import dircache
from tests.fuzz.driver import Target

_IDENTITY = rsa.generate_private_key(65537, 1024)
_CERT = make_authority_cert(_IDENTITY, rsa.generate_private_key(65537, 1024), 1_700_000_000, 1_900_000_000)


class _Docs:
    def consensus_document(self):
        return b"network-status-version 3 microdesc\n"

    def microdescriptors(self):
        return {}

    def authority_certs(self):
        return [_CERT]

    def own_cert(self):
        return _CERT


def _answer(data: bytes) -> object:
    found = dircache.answer(data.decode("latin-1"), _Docs())
    assert found is None or (isinstance(found, tuple) and found[0] in (200, 400, 404)), found
    if found is not None and found[0] == 400:  # the refusal the client sees, as the driver counts it
        raise DecodeError(found[2].decode())
    return found


_V3 = _CERT.v3ident.hex().upper()
TARGETS = [Target("dircache_paths", _answer, (
    b"/tor/status-vote/current/consensus-microdesc/" + _V3[:6].encode() + b"+ABCDEF",
    b"/tor/micro/d/AAAA-BBBB",
    b"/tor/keys/fp/" + _V3.encode(),
    b"/tor/keys/fp-sk/" + _V3.encode() + b"-" + _CERT.signing_key_digest.hex().encode(),
    b"/tor/keys/all",
))]
