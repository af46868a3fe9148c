"""Answering the directory requests of C tor's clients (dir-spec 4, 6): the documents every relay with the
V2Dir flag serves on BEGIN_DIR, and the authorities on their dir port too.

C tor's clients fetch through their directory guards, which must be directory caches (entrynodes.c
node_is_possible_guard wants V2Dir): the consensus, the microdescriptors it names and the authority key
certificates. Authorities and relays answer them with the same function from their own `Documents`.

    GET /tor/status-vote/current/consensus-microdesc[/F1+F2...]   the consensus (signed by whom it was)
    GET /tor/micro/d/D1-D2-...             microdescriptors by digest (those we lack are left out)
    GET /tor/keys/all | authority | fp/F1+F2... | fp-sk/F-S+...   authority key certificates
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from nodes.core.authcert import AuthorityCert
from nodes.core.errors import DecodeError, RemoteProtocolError
from nodes.core.microdesc import Microdescriptor
from nodes.core.netdoc import b64decode_unpadded

CONSENSUS_PATH = "/tor/status-vote/current/consensus-microdesc"
MICRODESC_PATH = "/tor/micro/d/"
KEYS_PATH = "/tor/keys/"

Answer = tuple[int, str, bytes]


class Documents(Protocol):
    """What a directory cache holds."""

    def consensus_document(self) -> bytes | None: ...

    def microdescriptors(self) -> Mapping[bytes, Microdescriptor]: ...

    def authority_certs(self) -> Iterable[AuthorityCert]: ...

    def own_cert(self) -> AuthorityCert | None: ...


def text(status: int, message: str) -> Answer:
    return status, "text/plain", message.encode("ascii", "replace") + b"\n"


def answer(path: str, docs: Documents) -> Answer | None:
    """The answer to GET `path` (without ".z": httpio deflates), or None when it names no document we serve.
    A malformed resource list is a 400."""
    try:
        if path == CONSENSUS_PATH or path.startswith(CONSENSUS_PATH + "/"):
            # "/F1+F2...": the client wants it signed by those authorities; ours carries every signature
            return _found("consensus", [doc] if (doc := docs.consensus_document()) else [])
        if path.startswith(MICRODESC_PATH):
            held = docs.microdescriptors()
            digests = [b64decode_unpadded(d, "microdescriptor digest")
                       for d in path[len(MICRODESC_PATH):].split("-") if d]
            return _found("microdescriptor", [held[d].raw for d in digests if d in held])
        if path.startswith(KEYS_PATH):
            return _found("certificate", [c.raw for c in _certs(path[len(KEYS_PATH):], docs)])
    except RemoteProtocolError as e:
        return text(400, f"bad request: {e}")
    return None


def _found(kind: str, parts: list[bytes]) -> Answer:
    return (200, "text/plain", b"".join(parts)) if parts else text(404, f"no such {kind}")


def _hex(text_: str) -> bytes:
    try:
        return bytes.fromhex(text_)
    except ValueError:
        raise DecodeError(f"not hex: {text_[:50]!r}") from None


def _certs(resource: str, docs: Documents) -> list[AuthorityCert]:
    certs = list(docs.authority_certs())
    if resource == "all":
        return certs
    if resource == "authority":
        own = docs.own_cert()
        return [own] if own is not None else []
    if resource.startswith("fp/"):
        wanted = {_hex(fp) for fp in resource[3:].split("+") if fp}
        return [c for c in certs if c.v3ident in wanted]
    if resource.startswith("fp-sk/"):
        pairs = {tuple(_hex(h) for h in p.split("-", 1)) for p in resource[6:].split("+") if p}
        return [c for c in certs if (c.v3ident, c.signing_key_digest) in pairs]
    return []
