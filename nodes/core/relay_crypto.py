"""Relay cell crypto (tor-spec 5.5, 6.1) and the onion-service virtual hop (rend-spec-v3 4.2.1).

Each hop of a circuit has, per direction, ONE AES-CTR keystream (IV 0) that runs for the whole life of
the circuit, and one running digest seeded with Df (forward) or Db (backward). Whoever originates a cell for a
hop feeds the whole body (digest field zeroed) into that hop's running digest and writes its first 4 bytes
into the digest field. A receiver calls a cell its own when `recognized` is 0 AND the digest matches; as
'recognized == 0' also happens by chance (1 in 65536), the digest is checked on a COPY of the running digest,
which replaces the running one only on a match.

Hot paths use bytes slices and long-lived cipher and hash objects: no per-cell key setup, no int conversions.
Relay body layout: command(1) recognized(2) stream(2) digest(4) length(2) data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import CryptoError, DecodeError, LocalProtocolError

BODY_LEN = 509
SENDME_DIGEST_LEN = 20  # authenticated SENDME v1 carries 20 bytes; SHA3-256 digests are truncated to this
_ZERO_IV = bytes(16)
_ZERO2 = bytes(2)
_ZERO4 = bytes(4)

# tor1 (ntor) key material: Df(20) Db(20) Kf(16) Kb(16), then KH(20) which cell crypto does not use.
TOR1_KEY_LEN = 72
# Virtual hop, from hs-ntor: Df(32) Db(32) Kf(32) Kb(32): SHA3-256 digests and AES-256 keys.
HS_KEY_LEN = 128


def _keystream(key: bytes):
    # CTR encryption and decryption are the same XOR, so one encryptor serves either role.
    return Cipher(algorithms.AES(key), modes.CTR(_ZERO_IV)).encryptor()


def _matching_digest(running, body: bytes):
    """A copy of `running` advanced over `body` if body's digest field matches it, else None."""
    d = running.copy()
    d.update(body[:5])
    d.update(_ZERO4)
    d.update(body[9:])
    return d if d.digest()[:4] == body[5:9] else None


def _recognized_zero(data: bytes) -> list[int]:
    """The offsets of the bodies in `data` (whole bodies, joined) whose recognized field is 0. The field's
    two bytes of every body are gathered by two stride slices; under a layer that is not a body's last
    only 1 in 256 has a zero first byte, so the loop runs over the few candidates only."""
    first, second = data[1::BODY_LEN], data[2::BODY_LEN]
    out = []
    i = first.find(0)
    while i >= 0:
        if second[i] == 0:
            out.append(i * BODY_LEN)
        i = first.find(0, i + 1)
    return out


def _check_outgoing(body: bytes) -> None:
    if len(body) != BODY_LEN:
        raise LocalProtocolError(f"relay body must be {BODY_LEN} bytes, got {len(body)}")
    if body[1:3] != _ZERO2 or body[5:9] != _ZERO4:
        raise LocalProtocolError("relay body to encrypt must have recognized and digest set to 0")


def _check_incoming(body: bytes) -> None:
    if len(body) != BODY_LEN:
        raise DecodeError(f"relay body must be {BODY_LEN} bytes, got {len(body)}")


class HopCrypto:
    """Both directions' keystreams and running digests for one hop.

    "forward" is always the direction away from whoever built the circuit; an origin encrypts and digests
    forward cells with it, the relay at that hop decrypts and checks them with the same state.
    """

    __slots__ = ("fwd_update", "bwd_update", "fwd_digest", "bwd_digest")

    def __init__(self, df: bytes, db: bytes, kf: bytes, kb: bytes, digest_name: str) -> None:
        self.fwd_update = _keystream(kf).update
        self.bwd_update = _keystream(kb).update
        self.fwd_digest = hashlib.new(digest_name, df)
        self.bwd_digest = hashlib.new(digest_name, db)

    @classmethod
    def tor1(cls, key_material: bytes) -> HopCrypto:
        """A normal hop from ntor key material (AES-128-CTR, SHA-1); bytes past the first 72 are ignored."""
        if len(key_material) < TOR1_KEY_LEN:
            raise LocalProtocolError(f"tor1 key material needs {TOR1_KEY_LEN} bytes, got {len(key_material)}")
        km = bytes(key_material)
        return cls(km[0:20], km[20:40], km[40:56], km[56:72], "sha1")

    @classmethod
    def hs_virtual(cls, key_material: bytes, *, service_side: bool) -> HopCrypto:
        """The onion-service virtual hop (AES-256-CTR, SHA3-256) that each end appends as its LAST hop.

        rend-spec-v3: the service uses the keys "with Kf and Kb interchanged" (digests too), so what the
        client sends forward the service reads as backward traffic on its own circuit, and vice versa.
        """
        if len(key_material) < HS_KEY_LEN:
            raise LocalProtocolError(f"hs key material needs {HS_KEY_LEN} bytes, got {len(key_material)}")
        km = bytes(key_material)
        df, db, kf, kb = km[0:32], km[32:64], km[64:96], km[96:128]
        if service_side:
            df, db, kf, kb = db, df, kb, kf
        return cls(df, db, kf, kb, "sha3_256")


class OriginCrypto:
    """The circuit builder's layers (client, or service on its rendezvous circuit); hop 0 is the first hop."""

    __slots__ = ("_hops",)

    def __init__(self) -> None:
        self._hops: list[HopCrypto] = []

    def add_hop(self, hop: HopCrypto) -> None:
        self._hops.append(hop)

    @property
    def hop_count(self) -> int:
        return len(self._hops)

    def _hop(self, hop: int) -> HopCrypto:
        if not 0 <= hop < len(self._hops):
            raise LocalProtocolError(f"no hop {hop} on a circuit of {len(self._hops)} hops")
        return self._hops[hop]

    def encrypt(self, body: bytes, hop: int) -> bytes:
        """Originate `body` (recognized 0, digest 0) for `hop`: set its digest, add layers hop..0."""
        target = self._hop(hop)
        _check_outgoing(body)
        d = target.fwd_digest
        d.update(body)
        body = body[:5] + d.digest()[:4] + body[9:]
        hops = self._hops
        for i in range(hop, -1, -1):
            body = hops[i].fwd_update(body)
        return body

    def encrypt_many(self, bodies: list[bytes], hop: int, after_each: Callable[[], object] | None = None
                     ) -> list[bytes]:
        """encrypt() over many bodies in order, the same bytes: each body's digest in turn (`after_each`
        runs right after each, when last_sent_digest is that cell's), then each layer in one keystream
        call over all of them (CTR over their concatenation is CTR over each in turn)."""
        target = self._hop(hop)
        d = target.fwd_digest
        sealed = []
        for body in bodies:
            _check_outgoing(body)
            d.update(body)
            sealed.append(body[:5] + d.digest()[:4] + body[9:])
            if after_each is not None:
                after_each()
        data = b"".join(sealed)
        hops = self._hops
        for i in range(hop, -1, -1):
            data = hops[i].fwd_update(data)
        return [data[i:i + BODY_LEN] for i in range(0, len(data), BODY_LEN)]

    def decrypt(self, body: bytes, start: int = 0) -> tuple[int, bytes]:
        """Peel layers from hop 0 outward until one hop recognizes the cell: (hop index, plaintext body).

        `start`: the first layer to remove, for a body decrypt_many left unrecognized under `start` layers
        (hops added since then may still recognize it)."""
        if len(body) != BODY_LEN:
            _check_incoming(body)
        hops = self._hops
        for i in range(start, len(hops)):
            h = hops[i]
            body = h.bwd_update(body)
            if body[1:3] == _ZERO2:
                d = _matching_digest(h.bwd_digest, body)
                if d is not None:
                    h.bwd_digest = d
                    return i, body
        raise CryptoError("relay cell not recognized by any hop of the circuit")

    def decrypt_many(self, bodies: Sequence[bytes]) -> list[tuple[int, bytes, bytes]]:
        """decrypt() over many bodies in order, with one keystream call per layer: CTR over the concatenation
        of the bodies that reach a layer is CTR over each in turn, and the bodies a hop recognizes leave
        the run there. Each result is (hop, body, that hop's full running digest right after the body),
        or (-1, the body under no layer, b"") for one no hop recognized, where decrypt() would have raised
        CryptoError: decrypt(body, start=hop_count at this call) continues it (or raises).

        A hop's digest is advanced over the run in place; a body that says recognized 0 but does not match
        (by chance or forged) rebuilds it from a copy taken before the run, as decrypt leaves it untouched."""
        for body in bodies:
            if len(body) != BODY_LEN:
                _check_incoming(body)
        n = len(bodies)
        results: list[tuple[int, bytes, bytes]] = [(-1, b"", b"")] * n
        waiting = list(range(n))  # indices of the bodies under the layers still to remove, in order
        data = b"".join(bodies)
        for i, h in enumerate(self._hops):
            if not waiting:
                break
            data = h.bwd_update(data)
            offsets = _recognized_zero(data)
            if not offsets:
                continue  # none may be this hop's: all go on under the next layer unsplit
            d = h.bwd_digest
            before = d.copy()
            taken: list[bytes] = []  # the bodies this hop recognized, as hashed (digest field zeroed)
            mine: set[int] = set()
            for k in offsets:
                body = data[k:k + BODY_LEN]
                hashed = body[:5] + _ZERO4 + body[9:]
                d.update(hashed)
                full = d.digest()
                if full[:4] == body[5:9]:
                    taken.append(hashed)
                    mine.add(k)
                    results[waiting[k // BODY_LEN]] = (i, body, full)
                else:  # not this hop's: the digest as if this body had not been seen
                    d = before.copy()
                    for b in taken:
                        d.update(b)
            h.bwd_digest = d
            if mine:
                kept = [k for k in range(0, len(data), BODY_LEN) if k not in mine]
                waiting = [waiting[k // BODY_LEN] for k in kept]
                data = b"".join([data[k:k + BODY_LEN] for k in kept])
        for j, index in enumerate(waiting):
            results[index] = (-1, data[j * BODY_LEN:(j + 1) * BODY_LEN], b"")
        return results

    def last_sent_digest(self, hop: int) -> bytes:
        """Running forward digest of `hop` right after the last cell sent to it (authenticated SENDME v1)."""
        return self._hop(hop).fwd_digest.digest()[:SENDME_DIGEST_LEN]

    def last_received_digest(self, hop: int) -> bytes:
        """Running backward digest of `hop` right after the last cell received from it."""
        return self._hop(hop).bwd_digest.digest()[:SENDME_DIGEST_LEN]


class RelayLayer:
    """One relay's layer of a circuit: it receives forward cells and sends backward ones."""

    __slots__ = ("_hop",)

    def __init__(self, hop: HopCrypto) -> None:
        self._hop = hop

    @classmethod
    def tor1(cls, key_material: bytes) -> RelayLayer:
        return cls(HopCrypto.tor1(key_material))

    @classmethod
    def hs_virtual(cls, key_material: bytes) -> RelayLayer:
        """The service end of the virtual hop seen as a relay at the end of the client's circuit.

        Equivalent to appending HopCrypto.hs_virtual(key_material, service_side=True) to an OriginCrypto.
        """
        return cls(HopCrypto.hs_virtual(key_material, service_side=False))

    def decrypt_forward(self, body: bytes) -> tuple[bool, bytes]:
        """Remove this layer: (recognized here?, body). Unrecognized bodies are to be passed on unchanged."""
        body = self.remove_forward_layer(body)
        return self.recognize(body), body

    def encrypt_backward_originated(self, body: bytes) -> bytes:
        """Originate `body` (recognized 0, digest 0) towards the origin: set the digest, add this layer."""
        _check_outgoing(body)
        h = self._hop
        d = h.bwd_digest
        d.update(body)
        return h.bwd_update(body[:5] + d.digest()[:4] + body[9:])

    def encrypt_backward_relayed(self, body: bytes) -> bytes:
        """Add this layer to a backward cell from further along the circuit."""
        if len(body) != BODY_LEN:
            _check_incoming(body)
        return self._hop.bwd_update(body)

    def encrypt_backward_relayed_many(self, bodies: list[bytes]) -> list[bytes]:
        """encrypt_backward_relayed over many bodies in order, with one keystream call: CTR over their
        concatenation is CTR over each in turn."""
        for body in bodies:
            if len(body) != BODY_LEN:
                _check_incoming(body)
        out = self._hop.bwd_update(b"".join(bodies))
        return [out[i:i + BODY_LEN] for i in range(0, len(out), BODY_LEN)]

    def remove_forward_layer(self, body: bytes) -> bytes:
        """decrypt_forward's first half: this layer removed, nothing checked. Pair it with `recognize`."""
        if len(body) != BODY_LEN:
            _check_incoming(body)
        return self._hop.fwd_update(body)

    def remove_forward_layer_many(self, bodies: Sequence[bytes]) -> list[bytes]:
        """remove_forward_layer over many bodies in order, with one keystream call."""
        for body in bodies:
            if len(body) != BODY_LEN:
                _check_incoming(body)
        out = self._hop.fwd_update(b"".join(bodies))
        return [out[i:i + BODY_LEN] for i in range(0, len(out), BODY_LEN)]

    def recognize(self, body: bytes) -> bool:
        """decrypt_forward's second half on a body `remove_forward_layer` returned: is it for this relay?
        (recognized 0 and the digest matches; the running digest then takes the body)."""
        if body[1:3] != _ZERO2:
            return False
        h = self._hop
        d = _matching_digest(h.fwd_digest, body)
        if d is None:
            return False
        h.fwd_digest = d
        return True

    def last_received_digest(self) -> bytes:
        return self._hop.fwd_digest.digest()[:SENDME_DIGEST_LEN]

    def last_sent_digest(self) -> bytes:
        return self._hop.bwd_digest.digest()[:SENDME_DIGEST_LEN]
