"""The ntor handshake (tor-spec 5.1.4)."""

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from nodes.core.errors import CryptoError, DecodeError, LocalProtocolError
from nodes.core.ntor import (
    KEY_MATERIAL_LEN,
    PROTOID,
    ntor_client_finish,
    ntor_client_start,
    ntor_server_handshake,
)

VECTOR = json.loads(Path(__file__).with_name("tor-vectors.json").read_text())["ntor"]["cases"][0]

# X25519 public keys of small order: every exchange with them yields the all-zero shared secret.
LOW_ORDER = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    (2**255 - 20).to_bytes(32, "little"),  # p - 1
]

keys32 = st.binary(min_size=32, max_size=32)
node_ids = st.binary(min_size=20, max_size=20)


def h(name: str) -> bytes:
    return bytes.fromhex(VECTOR[name])


def fixed(value: bytes):
    """A deterministic rng that hands out `value` (the vector's private keys)."""
    return lambda n: value[:n]


def handshake(node_id, b, x, y):
    b_pub = X25519PrivateKey.from_private_bytes(b).public_key().public_bytes_raw()
    state, onionskin = ntor_client_start(node_id, b_pub, fixed(x))
    reply, server_keys = ntor_server_handshake(onionskin, node_id=node_id, onion_secret=b, rng=fixed(y))
    return state, onionskin, reply, server_keys


def test_protoid():
    assert PROTOID == b"ntor-curve25519-sha256-1" and KEY_MATERIAL_LEN == 92


def test_arti_vector():
    # Source: arti crates/tor-proto/src/crypto/handshake/ntor.rs fn testvec.
    node_id = VECTOR["node_id_ascii"].encode()
    assert node_id == h("node_id")
    state, onionskin = ntor_client_start(node_id, h("b_public"), fixed(h("x_private")))
    assert onionskin == h("client_handshake")
    assert state.public == h("x_public")
    reply, server_keys = ntor_server_handshake(onionskin, node_id=node_id, onion_secret=h("b_private"),
                                               rng=fixed(h("y_private")))
    assert reply == h("server_handshake")
    assert reply[:32] == h("y_public")
    client_keys = ntor_client_finish(state, reply)
    assert client_keys == server_keys
    assert len(client_keys) == KEY_MATERIAL_LEN
    assert client_keys[:72] == h("key_material")


@given(node_ids, keys32, keys32, keys32)
def test_round_trip(node_id, b, x, y):
    state, onionskin, reply, server_keys = handshake(node_id, b, x, y)
    assert len(onionskin) == 84 and len(reply) == 64
    assert ntor_client_finish(state, reply) == server_keys
    assert len(server_keys) == KEY_MATERIAL_LEN


@given(st.integers(0, 64 * 8 - 1))
def test_tampered_reply_is_rejected(bit):
    state, _, reply, _ = handshake(h("node_id"), h("b_private"), h("x_private"), h("y_private"))
    bad = bytearray(reply)
    bad[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(CryptoError):
        ntor_client_finish(state, bytes(bad))


def test_reply_from_another_handshake_is_rejected():
    state, _, _, _ = handshake(h("node_id"), h("b_private"), h("x_private"), h("y_private"))
    _, _, other_reply, _ = handshake(h("node_id"), h("b_private"), h("y_private"), h("x_private"))
    with pytest.raises(CryptoError):
        ntor_client_finish(state, other_reply)


def test_onionskin_for_another_relay_or_key():
    onionskin = h("client_handshake")
    kwargs = dict(node_id=h("node_id"), onion_secret=h("b_private"), rng=fixed(h("y_private")))
    with pytest.raises(CryptoError, match="identity"):
        ntor_server_handshake(b"\x00" * 20 + onionskin[20:], **kwargs)
    with pytest.raises(CryptoError, match="onion key"):
        ntor_server_handshake(onionskin[:20] + h("x_public") + onionskin[52:], **kwargs)


@pytest.mark.parametrize("point", LOW_ORDER, ids=lambda p: p[:4].hex())
def test_all_zero_shared_secret_is_rejected(point):
    onionskin = h("client_handshake")[:52] + point
    with pytest.raises(CryptoError):
        ntor_server_handshake(onionskin, node_id=h("node_id"), onion_secret=h("b_private"),
                              rng=fixed(h("y_private")))
    state, _ = ntor_client_start(h("node_id"), h("b_public"), fixed(h("x_private")))
    with pytest.raises(CryptoError):
        ntor_client_finish(state, point + bytes(32))
    # A relay advertising a low-order onion key is refused when the reply comes back.
    state, _ = ntor_client_start(h("node_id"), point, fixed(h("x_private")))
    with pytest.raises(CryptoError):
        ntor_client_finish(state, h("server_handshake"))


@pytest.mark.parametrize("n", [0, 20, 83, 85, 200])
def test_onionskin_wrong_length(n):
    onionskin = (h("client_handshake") * 3)[:n]
    with pytest.raises(DecodeError):
        ntor_server_handshake(onionskin, node_id=h("node_id"), onion_secret=h("b_private"),
                              rng=fixed(h("y_private")))


@pytest.mark.parametrize("n", [0, 32, 63, 65])
def test_reply_wrong_length(n):
    state, _ = ntor_client_start(h("node_id"), h("b_public"), fixed(h("x_private")))
    with pytest.raises(DecodeError):
        ntor_client_finish(state, (h("server_handshake") * 2)[:n])


def test_local_misuse():
    with pytest.raises(LocalProtocolError):
        ntor_client_start(b"short", h("b_public"), fixed(h("x_private")))
    with pytest.raises(LocalProtocolError):
        ntor_client_start(h("node_id"), h("b_public")[:31], fixed(h("x_private")))
    with pytest.raises(LocalProtocolError):
        ntor_client_start(h("node_id"), h("b_public"), fixed(b"too short"))
    with pytest.raises(LocalProtocolError):
        ntor_server_handshake(h("client_handshake"), node_id=h("node_id"), onion_secret=b"x",
                              rng=fixed(h("y_private")))


def test_client_state_hides_its_secret():
    state, _ = ntor_client_start(h("node_id"), h("b_public"), fixed(h("x_private")))
    assert VECTOR["x_private"] not in repr(state) and h("x_private").hex() not in repr(state)
