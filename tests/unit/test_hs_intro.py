"""ESTABLISH_INTRO authentication, INTRODUCE1/2 encryption, RENDEZVOUS1/2 (rend-spec-v3 3.1-3.3, 4.2)."""

import dataclasses
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st

from nodes.core import ed25519
from nodes.core.errors import (
    CryptoError,
    DecodeError,
    LocalProtocolError,
    RemoteProtocolError,
    SignatureError,
)
from nodes.core.hs_intro import (
    ESTABLISH_INTRO_SIG_PREFIX,
    INTRODUCE1_MIN_SIZE,
    IntroducePlaintext,
    build_establish_intro,
    client_handle_rendezvous2,
    decrypt_introduce2,
    encrypt_introduce1,
    replay_key,
    service_rendezvous1,
    verify_establish_intro,
)
from nodes.core.hs_ntor import KEY_MATERIAL_LEN, client_intro_keys, expand_key_seed, public_key
from nodes.core.kdf import hs_mac
from nodes.core.relay import (
    RELAY_DATA_MAX,
    EstablishIntro,
    Extension,
    Introduce1,
    Introduce2,
    LinkSpecEd25519,
    LinkSpecIPv4,
    LinkSpecIPv6,
    LinkSpecRsaId,
    LinkSpecUnknown,
    Rendezvous1,
    Rendezvous2,
)
from nodes.core.relay_crypto import HopCrypto

# Source: rend-spec-v3 appendix G.1 (same values in arti tor-proto crypto/handshake/hs_ntor.rs fn testvec).
G1 = {k: bytes.fromhex(v) for k, v in
      json.loads(Path(__file__).with_name("tor-vectors.json").read_text())["hs_ntor"]["cases"][0].items()}
SERVICE = {"service_enc_secret": G1["b_private"], "service_enc_key": G1["b_public"],
           "subcredential": G1["subcredential"]}


def unhex(s: str) -> bytes:
    return bytes.fromhex("".join(s.split()))


def fixed(value: bytes):
    return lambda n: value[:n]


# --- the G.1 vector, end to end


def test_g1_plaintext_fields():
    p = IntroducePlaintext.decode(G1["plaintext"])
    assert p.rendezvous_cookie == G1["plaintext"][:20]
    assert p.extensions == (Extension(1, b""),)
    assert (p.onion_key_type, len(p.onion_key)) == (1, 32)
    assert p.link_specs == (
        LinkSpecIPv4("127.0.0.1", 5001),
        LinkSpecRsaId(unhex("F823C4F8CC085C792E0AEE0283FE00AD7520B37D")),
        LinkSpecEd25519(unhex("728D5DF39B7B7077A0118A900FF4456C382F0041300ACF9C58E51C392795EF87")),
    )
    # C tor's padding: header (56 bytes) + plaintext reach INTRODUCE1_MIN_SIZE.
    assert len(G1["introduce1_header"]) + len(G1["plaintext"]) == INTRODUCE1_MIN_SIZE
    assert p.encode(pad_to=INTRODUCE1_MIN_SIZE - len(G1["introduce1_header"])) == G1["plaintext"]


def g1_introduce1(plaintext=None, rng=None):
    """INTRODUCE1 from the G.1 client (its x unless `rng` says otherwise) to the G.1 service."""
    return encrypt_introduce1(auth_key=G1["auth_key"], service_enc_key=G1["b_public"],
                              subcredential=G1["subcredential"],
                              plaintext=plaintext or IntroducePlaintext.decode(G1["plaintext"]),
                              rng=rng or fixed(G1["x_private"]))


def test_g1_introduce1_body():
    msg, state = g1_introduce1()
    assert msg.header_bytes() == G1["introduce1_header"]
    # The MAC covers the header from LEGACY_KEY_ID on (not "from AUTH_KEY"): these bytes prove it.
    assert msg.encode() == G1["introduce1_body"]
    assert (state.X, state.B, state.auth_key) == (G1["x_public"], G1["b_public"], G1["auth_key"])
    assert G1["x_private"].hex() not in repr(state)


def test_g1_service_side_and_rendezvous():
    intro2 = Introduce2.decode(G1["introduce1_body"])
    plaintext, x_pub = decrypt_introduce2(intro2, **SERVICE)
    assert plaintext == IntroducePlaintext.decode(G1["plaintext"]) and x_pub == G1["x_public"]
    rend1, service_keys = service_rendezvous1(
        plaintext.rendezvous_cookie, X=x_pub, service_enc_secret=G1["b_private"],
        service_enc_key=G1["b_public"], auth_key=intro2.auth_key, rng=fixed(G1["y_private"]))
    assert rend1 == Rendezvous1(G1["plaintext"][:20], G1["y_public"] + G1["auth_input_mac"])
    # G.1 gives NTOR_KEY_SEED, not K; K = SHAKE-256(NTOR_KEY_SEED | m_hsexpand, 128).
    assert service_keys == expand_key_seed(G1["ntor_key_seed"])
    _, state = g1_introduce1()
    rend2 = Rendezvous2.decode(Rendezvous1.decode(rend1.encode()).handshake_info)
    assert client_handle_rendezvous2(state, rend2) == service_keys


# --- ESTABLISH_INTRO (3.1.1)


def test_arti_establish_intro_canned():
    # Source: arti crates/tor-cell/tests/testvec_relaymsg.rs fn establish_intro_canned (C tor, chutney),
    # with the circuit's KH as MAC key: both HANDSHAKE_AUTH and SIG verify.
    data = unhex("""02 0020 75BC879BF697A9B12E1E10596FEF041127FECD11FDD80706AEAE35812EA74328 00
                    A3DF998D6749A9323035AD23DAA7F8607E4F87473A975E50A42DEC9C0E565C48
                    0040 5A7F5E53D55B307B5F7866AE14508DDA3412E2B3E4805176C25413CEDF204F7F
                         53EAECADC0844472AA7BEC3BDCBA0A65F1FCDEF397B399F534F46E535B0E6301""")
    kh = unhex("250CCAF964B17B621A58CD82DF5DAFD060BA5F28")
    msg = EstablishIntro.decode(data)
    verify_establish_intro(msg, kh)
    with pytest.raises(CryptoError):
        verify_establish_intro(msg, kh[:3])  # arti checks the same: a wrong KH fails


def test_arti_chutney_establish_intro_signature():
    # Source: arti testvec_relaymsg.rs, the commented-out "For onion services only" chutney capture (C tor
    # 0.4.5). Its KH is not published, so only the signature can be checked.
    data = unhex("""02 0020 0450EFF847E40C180888F5EB9179F9B59F043385834B4C373C328E12FDFF46B4 00
                    546514E3BA58E95409828A235B6390B3729B4CB8E8607024081C860E1A0D40DC
                    0040 AF031A801FE9822853D4674C5061B0352F7E2487415E25E25554C0DBF88146
                         BCA9EBD2BD62338ADF3CC217658110EF38DB505C77B2FB38A1C0AF3C22C948F604""")
    msg = EstablishIntro.decode(data)
    ed25519.verify(msg.auth_key, ESTABLISH_INTRO_SIG_PREFIX + msg.sig_input(), msg.sig)
    with pytest.raises(CryptoError):
        verify_establish_intro(msg, bytes(20))


DOS_EXT = Extension(1, unhex("02 01 0000000000000001 02 000000000000000a"))
_exts = st.lists(st.builds(Extension, st.integers(0, 255), st.binary(max_size=24)), max_size=3)


@given(seed=st.binary(min_size=32, max_size=32), kh=st.binary(min_size=20, max_size=20), exts=_exts)
def test_establish_intro_round_trip(seed, kh, exts):
    signer = ed25519.Signer.from_seed(seed)
    msg = build_establish_intro(signer, kh, exts)
    assert msg.auth_key == signer.public_key and msg.auth_key_type == 2 and len(msg.sig) == 64
    wire = EstablishIntro.decode(msg.encode())
    verify_establish_intro(wire, kh)
    with pytest.raises(CryptoError):
        verify_establish_intro(wire, bytes(b ^ 1 for b in kh))


def establish_intro(kh=bytes(range(20))):
    return build_establish_intro(ed25519.Signer.from_seed(bytes(32)), kh, (DOS_EXT,))


def test_establish_intro_with_blinded_style_signer():
    # Intro auth keys are ordinary keys, but Signer.from_expanded must produce the same cell bytes.
    seed_signer = ed25519.Signer.from_seed(bytes(range(32)))
    expanded = ed25519.Signer.from_expanded(seed_signer.expanded_secret)
    assert build_establish_intro(expanded, b"kh", ()) == build_establish_intro(seed_signer, b"kh", ())


def test_establish_intro_forgeries():
    kh = bytes(range(20))
    good = establish_intro(kh)
    verify_establish_intro(good, kh)
    # A flipped signature bit.
    sig = bytearray(good.sig)
    sig[5] ^= 0x10
    with pytest.raises(SignatureError):
        verify_establish_intro(dataclasses.replace(good, sig=bytes(sig)), kh)
    # Changed extensions without a new MAC.
    with pytest.raises(CryptoError):
        verify_establish_intro(dataclasses.replace(good, extensions=()), kh)
    # Changed extensions by someone who knows KH but not the auth key: the MAC passes, the signature not.
    stripped = dataclasses.replace(good, extensions=())
    stripped = dataclasses.replace(stripped, handshake_auth=hs_mac(kh, stripped.mac_input()))
    with pytest.raises(SignatureError):
        verify_establish_intro(stripped, kh)
    # Another auth key substituted, MAC recomputed.
    other = dataclasses.replace(good, auth_key=ed25519.Signer.from_seed(b"\1" * 32).public_key)
    other = dataclasses.replace(other, handshake_auth=hs_mac(kh, other.mac_input()))
    with pytest.raises(SignatureError):
        verify_establish_intro(other, kh)


@pytest.mark.parametrize(("key_type", "key"), [(3, bytes(32)), (2, bytes(31)), (255, b"")])
def test_establish_intro_unsupported_auth_keys(key_type, key):
    msg = dataclasses.replace(establish_intro(), auth_key_type=key_type, auth_key=key)
    with pytest.raises(DecodeError):
        verify_establish_intro(msg, bytes(range(20)))


# --- INTRODUCE1/2 and RENDEZVOUS1/2 round trips with random keys

_link_spec = st.one_of(
    st.builds(LinkSpecIPv4, st.ip_addresses(v=4).map(str), st.integers(0, 0xFFFF)),
    st.builds(LinkSpecIPv6, st.ip_addresses(v=6).map(str), st.integers(0, 0xFFFF)),
    st.builds(LinkSpecUnknown, st.integers(4, 255), st.binary(max_size=20)),
)
_plaintexts = st.builds(
    IntroducePlaintext,
    st.binary(min_size=20, max_size=20),
    st.lists(st.builds(Extension, st.integers(0, 255), st.binary(max_size=16)), max_size=2),
    st.just(1),
    st.binary(min_size=32, max_size=32),
    st.tuples(st.lists(_link_spec, max_size=3),
              st.builds(LinkSpecRsaId, st.binary(min_size=20, max_size=20)),
              st.builds(LinkSpecEd25519, st.binary(min_size=32, max_size=32)))
    .map(lambda t: (*t[0], t[1], t[2])),
)
keys32 = st.binary(min_size=32, max_size=32)


@given(plaintext=_plaintexts, pad=st.integers(0, 300))
def test_plaintext_round_trip(plaintext, pad):
    data = plaintext.encode(pad_to=pad)
    assert len(data) == max(pad, len(plaintext.encode()))
    assert IntroducePlaintext.decode(data) == plaintext


@given(plaintext=_plaintexts, b=keys32, x=keys32, y=keys32, auth_seed=keys32, subcred=keys32,
       intro_exts=st.lists(st.builds(Extension, st.integers(0, 255), st.binary(max_size=8)), max_size=2))
def test_full_round_trip(plaintext, b, x, y, auth_seed, subcred, intro_exts):
    big_b = public_key(b)
    auth_key = ed25519.Signer.from_seed(auth_seed).public_key
    intro1, state = encrypt_introduce1(auth_key=auth_key, service_enc_key=big_b, subcredential=subcred,
                                       plaintext=plaintext, rng=fixed(x), extensions=intro_exts)
    wire = intro1.encode()
    assert len(wire) <= RELAY_DATA_MAX
    assert len(intro1.header_bytes()) + len(intro1.encrypted) - 64 >= INTRODUCE1_MIN_SIZE
    # The intro point relays the same bytes as INTRODUCE2.
    intro2 = Introduce2.decode(wire)
    got, x_pub = decrypt_introduce2(intro2, service_enc_secret=b, service_enc_key=big_b,
                                    subcredential=subcred)
    assert got == plaintext and x_pub == state.X == public_key(x)
    rend1, service_keys = service_rendezvous1(got.rendezvous_cookie, X=x_pub, service_enc_secret=b,
                                              service_enc_key=big_b, auth_key=intro2.auth_key, rng=fixed(y))
    assert rend1.cookie == plaintext.rendezvous_cookie
    client_keys = client_handle_rendezvous2(state, Rendezvous2.decode(rend1.handshake_info))
    assert client_keys == service_keys and len(client_keys) == KEY_MATERIAL_LEN


def test_key_material_drives_the_virtual_hop():
    """Both ends' HopCrypto.hs_virtual from our 128 bytes: what one encrypts the other decrypts."""
    _, keys = service_rendezvous1(bytes(20), X=G1["x_public"], service_enc_secret=G1["b_private"],
                                  service_enc_key=G1["b_public"], auth_key=G1["auth_key"],
                                  rng=fixed(G1["y_private"]))
    client = HopCrypto.hs_virtual(keys, service_side=False)
    service = HopCrypto.hs_virtual(keys, service_side=True)
    data = bytes(range(200))
    assert service.bwd_update(client.fwd_update(data)) == data
    assert client.bwd_update(service.fwd_update(data)) == data


# --- tampering and bad input


@given(index=st.integers(0, len(G1["introduce1_body"]) - 1), bit=st.integers(0, 7))
def test_any_flipped_bit_in_introduce2_is_refused(index, bit):
    data = bytearray(G1["introduce1_body"])
    data[index] ^= 1 << bit
    header_len = len(G1["introduce1_header"])
    if index < header_len:  # the header may stop parsing (DecodeError) or fail the MAC
        with pytest.raises(RemoteProtocolError):
            decrypt_introduce2(Introduce2.decode(bytes(data)), **SERVICE)
    else:  # X, ciphertext or MAC
        with pytest.raises(CryptoError):
            decrypt_introduce2(Introduce2.decode(bytes(data)), **SERVICE)


def test_introduce2_header_changes_fail_the_mac():
    intro2 = Introduce2.decode(G1["introduce1_body"])
    for changed in (dataclasses.replace(intro2, extensions=(Extension(9, b""),)),
                    dataclasses.replace(intro2, auth_key=bytes(32))):  # sent to another intro point
        with pytest.raises(CryptoError):
            decrypt_introduce2(changed, **SERVICE)


def test_introduce2_with_wrong_service_keys():
    intro2 = Introduce2.decode(G1["introduce1_body"])
    with pytest.raises(CryptoError):
        decrypt_introduce2(intro2, **{**SERVICE, "subcredential": bytes(32)})  # another time period
    other_b = bytes(range(32))
    with pytest.raises(CryptoError):
        decrypt_introduce2(intro2, service_enc_secret=other_b, service_enc_key=public_key(other_b),
                           subcredential=G1["subcredential"])


@pytest.mark.parametrize("encrypted_len", [0, 32, 63])
def test_introduce2_short_encrypted_section(encrypted_len):
    intro2 = Introduce2.decode(G1["introduce1_body"])
    with pytest.raises(DecodeError):
        decrypt_introduce2(dataclasses.replace(intro2, encrypted=intro2.encrypted[:encrypted_len]), **SERVICE)


def test_introduce2_low_order_x():
    intro2 = Introduce2.decode(G1["introduce1_body"])
    with pytest.raises(CryptoError):
        decrypt_introduce2(dataclasses.replace(intro2, encrypted=bytes(32) + intro2.encrypted[32:]),
                           **SERVICE)


def test_introduce2_unsupported_auth_key_type():
    intro2 = Introduce2.decode(G1["introduce1_body"])
    with pytest.raises(DecodeError):
        decrypt_introduce2(dataclasses.replace(intro2, auth_key_type=3), **SERVICE)


def seal(raw_plaintext: bytes) -> Introduce2:
    """An INTRODUCE2 whose MAC is valid around an arbitrary plaintext, as a malicious client could send."""
    keys = client_intro_keys(G1["x_private"], G1["x_public"], G1["b_public"], G1["auth_key"],
                             G1["subcredential"])
    ct = Cipher(algorithms.AES(keys.enc_key), modes.CTR(bytes(16))).encryptor().update(raw_plaintext)
    mac = hs_mac(keys.mac_key, G1["introduce1_header"] + G1["x_public"] + ct)
    return Introduce2.decode(G1["introduce1_header"] + G1["x_public"] + ct + mac)


def test_seal_helper_matches_the_vector():
    assert seal(G1["plaintext"]).encode() == G1["introduce1_body"]


_COOKIE_NO_EXT = bytes(20) + b"\x00"
_NTOR_KEY = b"\x01\x00\x20" + bytes(32)


@pytest.mark.parametrize("raw", [
    b"",
    bytes(19),  # truncated cookie
    _COOKIE_NO_EXT + b"\x02\x00\x20" + bytes(32) + b"\x00",  # ONION_KEY_TYPE 2
    _COOKIE_NO_EXT + b"\x01\x00\x1f" + bytes(31) + b"\x00",  # 31-byte ntor key
    _COOKIE_NO_EXT + _NTOR_KEY,  # no NSPEC
    _COOKIE_NO_EXT + _NTOR_KEY + b"\x01\x00\x05" + bytes(5),  # IPv4 specifier of 5 bytes
    _COOKIE_NO_EXT + _NTOR_KEY + b"\x02" + (b"\x02\x14" + bytes(20)) * 2,  # two RSA identities
    bytes(20) + b"\x01\x05\x09" + bytes(3),  # extension runs past the end
])
def test_malformed_plaintext_under_a_valid_mac(raw):
    with pytest.raises(DecodeError):
        IntroducePlaintext.decode(raw)
    with pytest.raises(DecodeError):
        decrypt_introduce2(seal(raw), **SERVICE)


def test_plaintext_keeps_unknown_link_specs_in_order():
    specs = (LinkSpecUnknown(9, b"abc"), LinkSpecIPv4("10.0.0.1", 9001), LinkSpecUnknown(7, b""))
    p = IntroducePlaintext(bytes(20), (), 1, bytes(32), specs)
    assert IntroducePlaintext.decode(p.encode(200)).link_specs == specs


@pytest.mark.parametrize("kwargs", [
    {"rendezvous_cookie": bytes(19)},
    {"onion_key_type": 2},
    {"onion_key": bytes(31)},
])
def test_plaintext_refuses_impossible_values(kwargs):
    fields = {"rendezvous_cookie": bytes(20), "extensions": (), "onion_key_type": 1, "onion_key": bytes(32),
              "link_specs": ()}
    with pytest.raises(LocalProtocolError):
        IntroducePlaintext(**{**fields, **kwargs})


def test_plaintext_too_big_for_a_cell():
    exts = (Extension(1, bytes(255)), Extension(2, bytes(255)))
    with pytest.raises(LocalProtocolError):
        g1_introduce1(IntroducePlaintext(bytes(20), exts, 1, bytes(32), ()))


def test_short_rng_is_a_local_error():
    with pytest.raises(LocalProtocolError):
        g1_introduce1(rng=lambda n: bytes(n - 1))


@given(bit=st.integers(0, 64 * 8 - 1))
def test_flipped_rendezvous2_is_refused(bit):
    _, state = g1_introduce1()
    info = bytearray(G1["y_public"] + G1["auth_input_mac"])
    info[bit // 8] ^= 1 << bit % 8
    with pytest.raises(CryptoError):
        client_handle_rendezvous2(state, Rendezvous2(bytes(info)))


def test_rendezvous2_length_rules():
    _, state = g1_introduce1()
    info = G1["y_public"] + G1["auth_input_mac"]
    with pytest.raises(DecodeError):
        client_handle_rendezvous2(state, Rendezvous2(info[:63]))
    # rend-spec-v3 4.3: RENDEZVOUS payloads may be padded (to 168 bytes for old relays); the rest is ignored.
    padded = Rendezvous1(bytes(20), info + bytes(148 - 64))
    assert len(padded.encode()) == 168
    keys = client_handle_rendezvous2(state, Rendezvous2(padded.handshake_info))
    assert keys == expand_key_seed(G1["ntor_key_seed"])


def test_replay_key():
    intro2 = Introduce2.decode(G1["introduce1_body"])
    intro1, _ = g1_introduce1()
    assert replay_key(intro2) == replay_key(intro1) and len(replay_key(intro1)) == 32
    # The same request sent again by the client uses a fresh X, so it is a new request, not a replay.
    again, _ = g1_introduce1(rng=fixed(bytes(range(32))))
    assert replay_key(again) != replay_key(intro1)


def test_introduce1_is_introduce2_on_the_wire():
    intro1, _ = g1_introduce1()
    assert isinstance(intro1, Introduce1) and Introduce2.decode(intro1.encode()).encode() == intro1.encode()
