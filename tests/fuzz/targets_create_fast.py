"""Fuzz targets: both sides of the CREATE_FAST handshake (tor-spec 5.1.5)."""

from __future__ import annotations

from nodes.core.create_fast import FastClientState, fast_client_finish, fast_server_handshake
from tests.fuzz.driver import Target

# arti tor-proto fast.rs testvec, case 1: X, and the relay's Y | KH for it.
_X = bytes.fromhex("080E247DF7C252FCD2DC10F459703480C223E3A6")
_REPLY = bytes.fromhex("BA95C0D092335428BF80093BBED0B7A26C49E1E8696FBF9C8D6BE26504219C000D26AFE370FCEF04")


def server_handshake(x: bytes) -> object:
    return fast_server_handshake(x, rng=lambda n: _REPLY[:n])


def client_finish(reply: bytes) -> object:
    return fast_client_finish(FastClientState(_X), reply)


TARGETS = [
    Target("create_fast_server_handshake", server_handshake, (_X,)),
    Target("create_fast_client_finish", client_finish, (_REPLY,)),
]
