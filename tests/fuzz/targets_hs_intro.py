"""Fuzz targets: the onion-service handshake cells as the service and the client receive them.

Keys are the rend-spec-v3 G.1 hs-ntor vector's, so the seeds are the published cells. Mutated cells almost
always fail the MAC; `introduce2_sealed` therefore re-encrypts and re-MACs each mutated plaintext, so the
plaintext parser is reached through the whole decrypt path too.
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from nodes.core.ed25519 import Signer
from nodes.core.hs_intro import (
    ClientIntroState,
    IntroducePlaintext,
    build_establish_intro,
    client_handle_rendezvous2,
    decrypt_introduce2,
    verify_establish_intro,
)
from nodes.core.hs_ntor import client_intro_keys
from nodes.core.kdf import hs_mac
from nodes.core.relay import EstablishIntro, Extension, Introduce2, Rendezvous2
from tests.fuzz.driver import Target

_VECTORS = Path(__file__).parent.parent / "unit" / "tor-vectors.json"
_V = {k: bytes.fromhex(v) for k, v in json.loads(_VECTORS.read_text())["hs_ntor"]["cases"][0].items()}
_SERVICE = {"service_enc_secret": _V["b_private"], "service_enc_key": _V["b_public"],
            "subcredential": _V["subcredential"]}
_CLIENT = ClientIntroState(_V["x_private"], _V["x_public"], _V["b_public"], _V["auth_key"])
_KH = bytes(range(20))
_EST_INTRO = build_establish_intro(Signer.from_seed(bytes(range(32))), _KH,
                                   (Extension(1, bytes.fromhex("0201000000000000000102000000000000000a")),))


def introduce2(data: bytes) -> object:
    return decrypt_introduce2(Introduce2.decode(data), **_SERVICE)


def introduce2_sealed(plaintext: bytes) -> object:
    """`plaintext` under a valid MAC, as a client that encrypts garbage would send it."""
    keys = client_intro_keys(_V["x_private"], _V["x_public"], _V["b_public"], _V["auth_key"],
                             _V["subcredential"])
    ciphertext = Cipher(algorithms.AES(keys.enc_key), modes.CTR(bytes(16))).encryptor().update(plaintext)
    mac = hs_mac(keys.mac_key, _V["introduce1_header"] + _V["x_public"] + ciphertext)
    cell = Introduce2.decode(_V["introduce1_header"] + _V["x_public"] + ciphertext + mac)
    return decrypt_introduce2(cell, **_SERVICE)


def rendezvous2(data: bytes) -> object:
    return client_handle_rendezvous2(_CLIENT, Rendezvous2.decode(data))


def establish_intro(data: bytes) -> object:
    return verify_establish_intro(EstablishIntro.decode(data), _KH)


_SMALL_PLAINTEXT = IntroducePlaintext(bytes(20), (), 1, bytes(32), ()).encode()  # unpadded, no link specs

TARGETS = [
    Target("hs_intro_plaintext", IntroducePlaintext.decode, (_V["plaintext"], _SMALL_PLAINTEXT)),
    Target("hs_intro_introduce2", introduce2, (_V["introduce1_body"],)),
    Target("hs_intro_introduce2_sealed", introduce2_sealed, (_V["plaintext"], _SMALL_PLAINTEXT)),
    Target("hs_intro_rendezvous2", rendezvous2, (_V["y_public"] + _V["auth_input_mac"],)),
    Target("hs_intro_establish_intro", establish_intro, (_EST_INTRO.encode(),)),
]
