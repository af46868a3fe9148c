"""hs-ntor (rend-spec-v3 3.3.2, 4.2) and the onion-service MAC it is built on (rend-spec-v3 0.3)."""

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nodes.core.errors import CryptoError, DecodeError, LocalProtocolError
from nodes.core.hs_ntor import (
    KEY_MATERIAL_LEN,
    M_HSEXPAND,
    PROTOID,
    T_HSENC,
    T_HSMAC,
    T_HSVERIFY,
    client_intro_keys,
    client_rendezvous,
    expand_key_seed,
    public_key,
    service_intro_keys,
    service_rendezvous,
)
from nodes.core.kdf import hs_mac

_VECTORS = json.loads(Path(__file__).with_name("tor-vectors.json").read_text())
# Source: rend-spec-v3 appendix G.1 (same values in arti tor-proto crypto/handshake/hs_ntor.rs fn testvec).
G1 = {k: bytes.fromhex(v) for k, v in _VECTORS["hs_ntor"]["cases"][0].items()}

# X25519 public keys of small order: every exchange with them yields the all-zero shared secret.
LOW_ORDER = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    (2**255 - 20).to_bytes(32, "little"),  # p - 1
]

keys32 = st.binary(min_size=32, max_size=32)


def client_keys(B=G1["b_public"], auth_key=G1["auth_key"], subcredential=G1["subcredential"]):
    return client_intro_keys(G1["x_private"], G1["x_public"], B, auth_key, subcredential)


def client_finish(Y=G1["y_public"], auth_key=G1["auth_key"], auth=G1["auth_input_mac"]):
    return client_rendezvous(G1["x_private"], G1["x_public"], G1["b_public"], Y, auth_key, auth)


def test_constants():
    assert PROTOID == b"tor-hs-ntor-curve25519-sha3-256-1"
    assert T_HSENC == PROTOID + b":hs_key_extract" and T_HSVERIFY == PROTOID + b":hs_verify"
    assert T_HSMAC == PROTOID + b":hs_mac" and M_HSEXPAND == PROTOID + b":hs_key_expand"
    assert KEY_MATERIAL_LEN == 128


@pytest.mark.parametrize("case", _VECTORS["hs_mac"]["cases"], ids=lambda c: c["key_ascii"])
def test_hs_mac_vectors(case):
    # Source: arti tor-proto crypto/handshake/hs_ntor.rs fn ntor_mac (generated with C tor's hs_ntor_ref.py).
    assert hs_mac(case["key_ascii"].encode(), case["message_ascii"].encode()) == bytes.fromhex(case["mac"])


def test_g1_public_keys():
    assert public_key(G1["x_private"]) == G1["x_public"]
    assert public_key(G1["y_private"]) == G1["y_public"]
    assert public_key(G1["b_private"]) == G1["b_public"]


def test_g1_intro_keys_both_sides():
    client = client_keys()
    service = service_intro_keys(G1["b_private"], G1["b_public"], G1["x_public"], G1["auth_key"],
                                 G1["subcredential"])
    assert client.enc_key == service.enc_key == G1["enc_key"]
    assert client.mac_key == service.mac_key == G1["mac_key"]
    assert G1["enc_key"].hex() not in repr(client)


def test_g1_rendezvous():
    auth, service_keys = service_rendezvous(G1["b_private"], G1["b_public"], G1["y_private"], G1["y_public"],
                                            G1["x_public"], G1["auth_key"])
    assert auth == G1["auth_input_mac"]
    # G.1 publishes NTOR_KEY_SEED but no expanded K; K = SHAKE-256(NTOR_KEY_SEED | m_hsexpand) (4.2.1).
    assert service_keys == expand_key_seed(G1["ntor_key_seed"])
    assert len(service_keys) == KEY_MATERIAL_LEN
    assert client_finish() == service_keys


@given(b=keys32, x=keys32, y=keys32, auth_key=keys32, subcred=keys32)
def test_round_trip(b, x, y, auth_key, subcred):
    big_b, big_x, big_y = public_key(b), public_key(x), public_key(y)
    assert client_intro_keys(x, big_x, big_b, auth_key, subcred) == \
        service_intro_keys(b, big_b, big_x, auth_key, subcred)
    auth, keys = service_rendezvous(b, big_b, y, big_y, big_x, auth_key)
    assert client_rendezvous(x, big_x, big_b, big_y, auth_key, auth) == keys


@given(bit=st.integers(0, 255))
def test_flipped_auth_is_refused(bit):
    auth = bytearray(G1["auth_input_mac"])
    auth[bit // 8] ^= 1 << bit % 8
    with pytest.raises(CryptoError):
        client_finish(auth=bytes(auth))


def test_auth_binds_y_and_auth_key():
    with pytest.raises(CryptoError):
        client_finish(Y=public_key(bytes(range(32))))
    with pytest.raises(CryptoError):
        client_finish(auth_key=bytes(32))


def test_intro_keys_bind_subcredential_and_auth_key():
    assert client_keys(subcredential=bytes(32)) != client_keys()
    assert client_keys(auth_key=bytes(32)) != client_keys()


@pytest.mark.parametrize("bad", LOW_ORDER, ids=range(len(LOW_ORDER)))
def test_low_order_points_are_refused(bad):
    with pytest.raises(CryptoError):
        service_intro_keys(G1["b_private"], G1["b_public"], bad, G1["auth_key"], G1["subcredential"])
    with pytest.raises(CryptoError):
        client_keys(B=bad)
    with pytest.raises(CryptoError):
        service_rendezvous(G1["b_private"], G1["b_public"], G1["y_private"], G1["y_public"], bad,
                           G1["auth_key"])
    with pytest.raises(CryptoError):
        client_finish(Y=bad)


def test_malformed_rendezvous_reply_is_a_decode_error():
    with pytest.raises(DecodeError):
        client_finish(Y=G1["y_public"][:31])
    with pytest.raises(DecodeError):
        client_finish(auth=G1["auth_input_mac"] + b"\0")


def test_wrong_sized_local_inputs_are_local_errors():
    with pytest.raises(LocalProtocolError):
        public_key(bytes(31))
    with pytest.raises(LocalProtocolError):
        client_keys(subcredential=bytes(31))
    with pytest.raises(LocalProtocolError):
        service_intro_keys(G1["b_private"][:16], G1["b_public"], G1["x_public"], G1["auth_key"],
                           G1["subcredential"])
    with pytest.raises(LocalProtocolError):
        service_rendezvous(G1["b_private"], G1["b_public"], G1["y_private"], G1["y_public"], G1["x_public"],
                           bytes(33))
