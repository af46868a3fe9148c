"""Fuzz targets: both sides of the ntor handshake, and relay-cell decryption on both sides of a circuit
(normal hops and the onion-service virtual hop).

Decryption targets build fresh circuit state per input, so every case starts from the state its seed needs.
"""

from __future__ import annotations

import json
from pathlib import Path

from nodes.core.ntor import ntor_client_finish, ntor_client_start, ntor_server_handshake
from nodes.core.relay_crypto import BODY_LEN, HopCrypto, OriginCrypto, RelayLayer
from tests.fuzz.driver import Target

_VECTORS = Path(__file__).parent.parent / "unit" / "tor-vectors.json"
_NTOR = json.loads(_VECTORS.read_text())["ntor"]["cases"][0]
_NODE_ID = bytes.fromhex(_NTOR["node_id"])
_B_SECRET = bytes.fromhex(_NTOR["b_private"])
_B_PUBLIC = bytes.fromhex(_NTOR["b_public"])
_X = bytes.fromhex(_NTOR["x_private"])
_Y = bytes.fromhex(_NTOR["y_private"])
_CLIENT_STATE, _ = ntor_client_start(_NODE_ID, _B_PUBLIC, lambda n: _X)
_HOP_KEYS = (bytes(range(92)), bytes(range(100, 192)))


def server_handshake(onionskin: bytes) -> object:
    return ntor_server_handshake(onionskin, node_id=_NODE_ID, onion_secret=_B_SECRET, rng=lambda n: _Y)


def client_finish(reply: bytes) -> object:
    return ntor_client_finish(_CLIENT_STATE, reply)


def origin_decrypt(body: bytes) -> object:
    origin = OriginCrypto()
    for km in _HOP_KEYS:
        origin.add_hop(HopCrypto.tor1(km))
    return origin.decrypt(body)


def relay_decrypt(body: bytes) -> object:
    return RelayLayer.tor1(_HOP_KEYS[0]).decrypt_forward(body)


def _seed_cells() -> tuple[bytes, bytes]:
    """A backward cell from hop 2 as the origin receives it, and a forward cell for hop 1 as relay 1 does."""
    plain = (b"\x02\x00\x00\x00\x01" + bytes(4) + b"\x00\x05hello").ljust(BODY_LEN, b"\0")
    near, far = (RelayLayer.tor1(km) for km in _HOP_KEYS)
    backward = near.encrypt_backward_relayed(far.encrypt_backward_originated(plain))
    origin = OriginCrypto()
    origin.add_hop(HopCrypto.tor1(_HOP_KEYS[0]))
    return backward, origin.encrypt(plain, 0)


_BACKWARD, _FORWARD = _seed_cells()

# The onion-service virtual hop (rend-spec-v3 4.2.1): AES-256-CTR and SHA3-256 instead of AES-128 and SHA-1.
_HS_KEYS = bytes(range(128, 256))


def origin_decrypt_hs(body: bytes) -> object:
    """A client's rendezvous circuit: two normal hops, then the virtual hop to the service."""
    origin = OriginCrypto()
    for km in _HOP_KEYS:
        origin.add_hop(HopCrypto.tor1(km))
    origin.add_hop(HopCrypto.hs_virtual(_HS_KEYS, service_side=False))
    return origin.decrypt(body)


def service_decrypt_hs(body: bytes) -> object:
    """The service end of the virtual hop, reading what the client sent through it."""
    return RelayLayer.hs_virtual(_HS_KEYS).decrypt_forward(body)


def _hs_seed_cells() -> tuple[bytes, bytes]:
    """A cell from the service as the client receives it, and a client cell as the service end reads it."""
    plain = (b"\x02\x00\x00\x00\x01" + bytes(4) + b"\x00\x07onion!!").ljust(BODY_LEN, b"\0")
    cell = RelayLayer.hs_virtual(_HS_KEYS).encrypt_backward_originated(plain)
    for km in reversed(_HOP_KEYS):
        cell = RelayLayer.tor1(km).encrypt_backward_relayed(cell)
    client = OriginCrypto()
    client.add_hop(HopCrypto.hs_virtual(_HS_KEYS, service_side=False))
    return cell, client.encrypt(plain, 0)


_HS_BACKWARD, _HS_FORWARD = _hs_seed_cells()

TARGETS = [
    Target("ntor_server_handshake", server_handshake, (bytes.fromhex(_NTOR["client_handshake"]),)),
    Target("ntor_client_finish", client_finish, (bytes.fromhex(_NTOR["server_handshake"]),)),
    Target("relay_crypto_origin_decrypt", origin_decrypt, (_BACKWARD,)),
    Target("relay_crypto_relay_decrypt", relay_decrypt, (_FORWARD,)),
    Target("relay_crypto_origin_decrypt_hs", origin_decrypt_hs, (_HS_BACKWARD,)),
    Target("relay_crypto_service_decrypt_hs", service_decrypt_hs, (_HS_FORWARD,)),
]
