"""Relay cell crypto (tor-spec 5.5, 6.1) and the onion-service virtual hop (rend-spec-v3 4.2.1)."""

import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st

from nodes.core.errors import CryptoError, DecodeError, LocalProtocolError
from nodes.core.kdf import shake256
from nodes.core.relay_crypto import BODY_LEN, HopCrypto, OriginCrypto, RelayLayer, _recognized_zero

VECTORS = json.loads(Path(__file__).with_name("tor-vectors.json").read_text())["relay_crypto_3hop"]

tor1_keys = st.binary(min_size=92, max_size=92)
hs_keys = st.binary(min_size=128, max_size=128)
payloads = st.binary(max_size=498)


def distinct_hops(min_size: int, max_size: int):
    """Hops with pairwise different Kf and Kb: with equal keys, two layers at the same keystream position
    cancel out (CTR is XOR), and the nearer hop would rightly recognize a cell meant for the farther one."""
    return st.lists(tor1_keys, min_size=min_size, max_size=max_size,
                    unique_by=(lambda k: k[40:56], lambda k: k[56:72]))


def body(data: bytes, command: int = 2, stream: int = 1) -> bytes:
    """A relay body as relay.encode_relay_body lays it out: recognized 0, digest 0, zero padding."""
    head = bytes([command]) + b"\0\0" + stream.to_bytes(2, "big") + bytes(4) + len(data).to_bytes(2, "big")
    return (head + data).ljust(BODY_LEN, b"\0")


def same_except_digest(a: bytes, b: bytes) -> bool:
    return a[:5] == b[:5] and a[9:] == b[9:]


def circuit(hop_keys: list[bytes]) -> tuple[OriginCrypto, list[RelayLayer]]:
    origin = OriginCrypto()
    for km in hop_keys:
        origin.add_hop(HopCrypto.tor1(km))
    return origin, [RelayLayer.tor1(km) for km in hop_keys]


def send_forward(origin, relays, plain, hop):
    """Origin -> relays 0..: returns (index of the relay that recognized it, or None; its plaintext)."""
    cell = origin.encrypt(plain, hop)
    for i, relay in enumerate(relays):
        recognized, cell = relay.decrypt_forward(cell)
        if recognized:
            return i, cell
    return None, cell


def send_backward(origin, relays, plain, hop):
    cell = relays[hop].encrypt_backward_originated(plain)
    for relay in reversed(relays[:hop]):
        cell = relay.encrypt_backward_relayed(cell)
    return origin.decrypt(cell)


# --- the published 3-hop vector ---------------------------------------------------------------------------

def vector_cells():
    """The 51 plaintext bodies of the vector, in order."""
    case = VECTORS["cases"][0]
    header = bytes.fromhex(case["body_header"])
    stream = shake256(case["body_seed_ascii"].encode(), 498 * 51)
    return [header + stream[498 * i:498 * (i + 1)] for i in range(51)]


def vector_keys():
    case = VECTORS["cases"][0]
    return [case[f"hop{i}_key_material_ascii"].encode() for i in (1, 2, 3)]


def test_arti_3hop_vector_origin_side():
    # Source: arti tor-proto crypto/cell/tor1.rs testvec + testdata/cell_crypt.rs (produced by C tor).
    expected = {c["cell_index"]: bytes.fromhex(c["encrypted_cell"]) for c in VECTORS["cases"]}
    assert len(expected) == 8
    origin, _ = circuit(vector_keys())
    for i, plain in enumerate(vector_cells()):
        assert len(plain) == BODY_LEN
        cell = origin.encrypt(plain, 2)
        if i in expected:
            assert cell == expected[i], f"cell {i}"


def test_arti_3hop_vector_relay_side():
    # The same 51 cells, as the three relays see them: only the third recognizes each one.
    origin, relays = circuit(vector_keys())
    for plain in vector_cells():
        cell = origin.encrypt(plain, 2)
        for i, relay in enumerate(relays):
            recognized, cell = relay.decrypt_forward(cell)
            assert recognized == (i == 2)
        assert same_except_digest(cell, plain) and cell[5:9] != bytes(4)
        assert relays[2].last_received_digest() == origin.last_sent_digest(2)


# --- round trips ------------------------------------------------------------------------------------------

@given(distinct_hops(1, 4), st.data())
def test_round_trips_both_directions(hop_keys, data):
    origin, relays = circuit(hop_keys)
    assert origin.hop_count == len(hop_keys)
    for _ in range(data.draw(st.integers(1, 12))):
        hop = data.draw(st.integers(0, len(hop_keys) - 1))
        plain = body(data.draw(payloads))
        if data.draw(st.booleans()):
            where, got = send_forward(origin, relays, plain, hop)
            assert where == hop and same_except_digest(got, plain)
            assert relays[hop].last_received_digest() == origin.last_sent_digest(hop)
        else:
            where, got = send_backward(origin, relays, plain, hop)
            assert where == hop and same_except_digest(got, plain)
            assert relays[hop].last_sent_digest() == origin.last_received_digest(hop)


@given(tor1_keys, st.lists(payloads, min_size=2, max_size=5))
def test_keystream_is_never_reset(km, datas):
    # Identical plaintexts give different ciphertexts: one keystream runs across cells.
    origin, _ = circuit([km])
    cells = [origin.encrypt(body(datas[0]), 0) for _ in datas]
    assert len(set(cells)) == len(cells)


@given(st.integers(1, 255), st.integers(0, 65535), payloads, st.binary(min_size=498, max_size=498))
def test_with_the_relay_body_codec(command, stream_id, data, padding):
    # The contract with relay.py: its bodies go in as they are, and decode on the far side.
    from nodes.core.relay import decode_relay_body, encode_relay_body

    origin, relays = circuit([bytes(range(92)), bytes(range(1, 93))])
    plain = encode_relay_body(command, stream_id, data, rng=lambda n: padding[:n])
    where, got = send_forward(origin, relays, plain, 1)
    assert where == 1
    assert decode_relay_body(got) == decode_relay_body(plain)
    where, got = send_backward(origin, relays, plain, 1)
    assert where == 1
    assert decode_relay_body(got) == decode_relay_body(plain)


def test_sendme_digests_are_20_bytes_and_track_each_cell():
    origin, relays = circuit([bytes(range(92))])
    before = origin.last_sent_digest(0)
    assert len(before) == 20 and before == hashlib.sha1(bytes(range(20))).digest()
    send_forward(origin, relays, body(b"x"), 0)
    assert origin.last_sent_digest(0) != before
    assert origin.last_sent_digest(0) == relays[0].last_received_digest()


# --- the virtual hop --------------------------------------------------------------------------------------

def rendezvous(client_keys, service_keys, hs_km):
    """Client and service each build 3 hops to the rendezvous point and append the virtual hop."""
    client, client_relays = circuit(client_keys)
    service, service_relays = circuit(service_keys)
    client.add_hop(HopCrypto.hs_virtual(hs_km, service_side=False))
    service.add_hop(HopCrypto.hs_virtual(hs_km, service_side=True))
    return (client, client_relays), (service, service_relays)


def across(sender, receiver, plain):
    """Sender's origin -> its relays (none recognizes) -> rendezvous point -> receiver's relays -> origin."""
    origin, relays = sender
    cell = origin.encrypt(plain, 3)
    for relay in relays:
        recognized, cell = relay.decrypt_forward(cell)
        assert not recognized
    other, other_relays = receiver
    for relay in reversed(other_relays):
        cell = relay.encrypt_backward_relayed(cell)
    return other.decrypt(cell)


@given(distinct_hops(6, 6), hs_keys, st.lists(st.tuples(st.booleans(), payloads),
                                                                           min_size=1, max_size=8))
def test_virtual_hop_client_service_round_trip(tor1, hs_km, messages):
    client, service = rendezvous(tor1[:3], tor1[3:], hs_km)
    for to_service, data in messages:
        plain = body(data)
        sender, receiver = (client, service) if to_service else (service, client)
        where, got = across(sender, receiver, plain)
        assert where == 3 and same_except_digest(got, plain)
        # authenticated SENDME: both ends agree on the (SHA3, truncated) digest of the last cell
        assert sender[0].last_sent_digest(3) == receiver[0].last_received_digest(3)
        assert len(sender[0].last_sent_digest(3)) == 20


def test_virtual_hop_key_layout():
    # Df(32) Db(32) Kf(32) Kb(32): AES-256-CTR with zero IV, and SHA3-256 seeded with Df (rend-spec-v3 4.2.1).
    km = bytes(range(128))
    df, kf = km[0:32], km[64:96]
    origin = OriginCrypto()
    origin.add_hop(HopCrypto.hs_virtual(km, service_side=False))
    plain = body(b"hello")
    digest = hashlib.sha3_256(df + plain).digest()[:4]
    aes256 = Cipher(algorithms.AES(kf), modes.CTR(bytes(16))).encryptor()
    expected = aes256.update(plain[:5] + digest + plain[9:])
    assert origin.encrypt(plain, 0) == expected
    assert origin.last_sent_digest(0) == hashlib.sha3_256(df + plain).digest()[:20]


@given(hs_keys, st.lists(st.tuples(st.booleans(), payloads), min_size=1, max_size=6))
def test_relay_layer_hs_virtual_is_the_service_end(hs_km, messages):
    client = OriginCrypto()
    client.add_hop(HopCrypto.hs_virtual(hs_km, service_side=False))
    as_relay = RelayLayer.hs_virtual(hs_km)
    as_origin = OriginCrypto()
    as_origin.add_hop(HopCrypto.hs_virtual(hs_km, service_side=True))
    for to_service, data in messages:
        plain = body(data)
        if to_service:
            cell = client.encrypt(plain, 0)
            recognized, got = as_relay.decrypt_forward(cell)
            assert recognized and (0, got) == as_origin.decrypt(cell)
        else:
            cell = as_relay.encrypt_backward_originated(plain)
            assert cell == as_origin.encrypt(plain, 0)
            assert client.decrypt(cell)[0] == 0


# --- recognized false positives and tampering -------------------------------------------------------------

def test_recognized_false_positive_at_a_relay():
    """A cell for hop 1 that decrypts at hop 0 to recognized == 0 with a wrong digest is passed on, and
    hop 0's running digest does not move, so hop 0 still recognizes the next cell the client sends it."""
    keys = [bytes([i]) * 92 for i in (1, 2)]
    origin, relays = circuit(keys)
    twin = RelayLayer.tor1(keys[0])  # sees the same cells as relay 0, to learn what relay 0 will decrypt
    for hop in (0, 1, 0):
        cell = origin.encrypt(body(b"warm-up"), hop)
        assert relays[0].decrypt_forward(cell) == twin.decrypt_forward(cell)
    cell = origin.encrypt(body(b"for hop 1"), 1)
    _, peeked = twin.decrypt_forward(cell)
    # CTR is malleable: flip the ciphertext so relay 0 reads recognized == 0.
    forged = cell[:1] + bytes(a ^ b for a, b in zip(cell[1:3], peeked[1:3], strict=True)) + cell[3:]
    before = relays[0].last_received_digest()
    recognized, passed_on = relays[0].decrypt_forward(forged)
    assert passed_on[1:3] == b"\0\0"
    assert not recognized
    assert relays[0].last_received_digest() == before
    where, got = send_forward(origin, relays[:1], body(b"next for hop 0"), 0)
    assert where == 0 and same_except_digest(got, body(b"next for hop 0"))


@pytest.mark.parametrize("offset", [5, 6, 7, 8, 20, 508])
def test_tampered_cell_is_not_accepted(offset):
    origin, relays = circuit([bytes(92)])
    cell = bytearray(origin.encrypt(body(b"payload"), 0))
    cell[offset] ^= 0x40
    before = relays[0].last_received_digest()
    recognized, _ = relays[0].decrypt_forward(bytes(cell))
    assert not recognized
    assert relays[0].last_received_digest() == before


def test_origin_rejects_cell_no_hop_recognizes():
    origin, relays = circuit([bytes([7]) * 92, bytes([8]) * 92])
    cell = bytearray(relays[1].encrypt_backward_originated(body(b"hi")))
    cell[6] ^= 1  # wrong digest at hop 1, recognized still 0
    cell = relays[0].encrypt_backward_relayed(bytes(cell))
    before = [origin.last_received_digest(i) for i in range(2)]
    with pytest.raises(CryptoError):
        origin.decrypt(cell)
    assert [origin.last_received_digest(i) for i in range(2)] == before
    with pytest.raises(CryptoError):
        OriginCrypto().decrypt(bytes(BODY_LEN))


# --- misuse and malformed input ---------------------------------------------------------------------------

def test_wrong_lengths_and_misuse():
    origin, relays = circuit([bytes(92)])
    with pytest.raises(DecodeError):
        origin.decrypt(bytes(508))
    with pytest.raises(DecodeError):
        relays[0].decrypt_forward(bytes(510))
    with pytest.raises(DecodeError):
        relays[0].encrypt_backward_relayed(bytes(10))
    with pytest.raises(LocalProtocolError):
        origin.encrypt(bytes(508), 0)
    with pytest.raises(LocalProtocolError):
        origin.encrypt(body(b""), 1)
    with pytest.raises(LocalProtocolError):
        origin.last_sent_digest(-1)
    nonzero_digest = body(b"")[:5] + b"\x01\0\0\0" + body(b"")[9:]
    with pytest.raises(LocalProtocolError):
        origin.encrypt(nonzero_digest, 0)
    with pytest.raises(LocalProtocolError):
        relays[0].encrypt_backward_originated(b"\x02\x00\x01" + body(b"")[3:])
    with pytest.raises(LocalProtocolError):
        HopCrypto.tor1(bytes(71))
    with pytest.raises(LocalProtocolError):
        HopCrypto.hs_virtual(bytes(127), service_side=True)


def _three_hops_and_virtual() -> OriginCrypto:
    origin = OriginCrypto()
    for i in range(3):
        origin.add_hop(HopCrypto.tor1(shake256(b"hop %d" % i, 72)))
    origin.add_hop(HopCrypto.hs_virtual(shake256(b"virtual", 128), service_side=True))
    return origin


def test_encrypt_many_is_encrypt_on_each_with_the_digest_after_each():
    """The batch of DATA an origin sends: the same bytes as encrypt() cell by cell, and after_each sees the
    running digest of exactly the cells sealed so far (what SENDME v1 bookkeeping reads)."""
    bodies = [bytes([2, 0, 0, 0, 7, 0, 0, 0, 0, 1, 242]) + shake256(b"body %d" % i, BODY_LEN - 11)
              for i in range(7)]
    one, many = _three_hops_and_virtual(), _three_hops_and_virtual()
    expected, digests = [], []
    for body in bodies:
        expected.append(one.encrypt(body, 3))
        digests.append(one.last_sent_digest(3))
    seen = []
    assert many.encrypt_many(bodies, 3, lambda: seen.append(many.last_sent_digest(3))) == expected
    assert seen == digests
    assert many.encrypt(bodies[0], 1) == one.encrypt(bodies[0], 1)  # the keystreams went on in step
    with pytest.raises(LocalProtocolError):
        many.encrypt_many([bodies[0][:-1]], 3)


# --- decrypt_many: a run of cells, one keystream call per layer -------------------------------------------

def _backward_cells(relays: list[RelayLayer], plan: list[tuple[int, bytes, int | None]]) -> list[bytes]:
    """Cells as the origin gets them: each originated at its hop, layered by the hops before it; with a
    byte offset, that byte is flipped where the hop sent it (a forged or damaged cell)."""
    out = []
    for hop, data, flip in plan:
        cell = relays[hop].encrypt_backward_originated(body(data))
        if flip is not None:
            cell = cell[:flip] + bytes([cell[flip] ^ 0x10]) + cell[flip + 1:]
        for relay in reversed(relays[:hop]):
            cell = relay.encrypt_backward_relayed(cell)
        out.append(cell)
    return out


def _one_by_one(origin: OriginCrypto, cells: list[bytes]) -> list[tuple[int, bytes, bytes]]:
    """What decrypt_many must return, from decrypt() on each (-1 where it raises) and the digest after."""
    out = []
    for cell in cells:
        try:
            hop, plain = origin.decrypt(cell)
        except CryptoError:
            out.append((-1, b"", b""))
        else:
            out.append((hop, plain, origin.last_received_digest(hop)))
    return out


@given(distinct_hops(1, 4), st.lists(st.tuples(st.integers(0, 3), payloads,
                                               st.one_of(st.none(), st.sampled_from([1, 2, 5, 8, 40]))),
                                     max_size=12))
def test_decrypt_many_is_decrypt_on_each(hop_keys, plan):
    """The same hops, plaintexts and digests (SENDME v1 reads the one right after each cell) as decrypt()
    cell by cell, with cells from every hop mixed and some damaged; the keystreams and digests go on in
    step after the run."""
    plan = [(hop % len(hop_keys), data, flip) for hop, data, flip in plan]
    one, relays = circuit(hop_keys)
    many, _ = circuit(hop_keys)
    cells = _backward_cells(relays, plan)
    expected = _one_by_one(one, cells)
    got = [(hop, plain if hop >= 0 else b"", digest[:20]) for hop, plain, digest in many.decrypt_many(cells)]
    assert got == expected
    if all(flip is None for _, _, flip in plan):  # (a damaged cell puts its hop's digests out of step)
        assert [(e[0], e[1][9:]) for e in expected] == [(hop, body(data)[9:]) for hop, data, _ in plan]
    after = _backward_cells(relays, [(len(hop_keys) - 1, b"after the run", None)])
    assert _one_by_one(many, after) == _one_by_one(one, after)


def test_decrypt_many_rejects_a_forged_cell_and_keeps_the_digest():
    """A cell forged to read recognized 0 at hop 0 (CTR is malleable), between hop 0's cells: hop 0's
    digest check rejects it and its digest goes back to what it was before that cell (not before the run),
    so hop 0 still recognizes every later cell; no hop takes the forged one (decrypt would raise)."""
    keys = [bytes([i]) * 92 for i in (1, 2)]
    origin, relays = circuit(keys)
    reference, _ = circuit(keys)
    plan = [(0, b"a", None), (1, b"to be forged", None), (0, b"b", None), (0, b"c", None)]
    cells = _backward_cells(relays, plan)
    twin = RelayLayer.tor1(keys[0])  # hop 0's layer, to learn what hop 0 will read
    peeked = [twin.encrypt_backward_relayed(c) for c in cells[:2]][1]
    flipped = bytes(a ^ b for a, b in zip(cells[1][1:3], peeked[1:3], strict=True))
    cells[1] = cells[1][:1] + flipped + cells[1][3:]
    results = origin.decrypt_many(cells)
    assert [hop for hop, _, _ in results] == [0, -1, 0, 0]
    assert [(h, p if h >= 0 else b"", d[:20]) for h, p, d in results] == _one_by_one(reference, cells)
    for (_, plain, _), (_, data, _) in zip(results, plan, strict=True):
        if data != b"to be forged":
            assert same_except_digest(plain, body(data))


def test_decrypt_many_leaves_a_cell_for_a_hop_added_later_to_decrypt_from_there():
    keys = [bytes([i]) * 92 for i in (1, 2, 3)]
    origin, relays = circuit(keys[:2])
    cells = _backward_cells([*relays, RelayLayer.tor1(keys[2])], [(1, b"a", None), (2, b"b", None)])
    (hop_a, plain_a, _), (hop_b, under_two, _) = origin.decrypt_many(cells)
    assert hop_a == 1 and same_except_digest(plain_a, body(b"a")) and hop_b == -1
    origin.add_hop(HopCrypto.tor1(keys[2]))
    hop, plain = origin.decrypt(under_two, start=2)
    assert hop == 2 and same_except_digest(plain, body(b"b"))
    with pytest.raises(DecodeError):
        origin.decrypt_many([bytes(BODY_LEN), bytes(10)])


@given(st.lists(st.tuples(st.sampled_from([b"\0\0", b"\0\1", b"\1\0", b"\7\7"]), st.binary(min_size=507,
                                                                                         max_size=507)),
                max_size=20))
def test_recognized_zero_finds_exactly_the_bodies_whose_field_is_zero(bodies):
    data = b"".join(rest[:1] + field + rest[1:] for field, rest in bodies)
    naive = [k for k in range(0, len(data), BODY_LEN) if data[k + 1:k + 3] == b"\0\0"]
    assert _recognized_zero(data) == naive
    assert len(naive) == sum(field == b"\0\0" for field, _ in bodies)
