"""nodes.core.server_descriptor: dir-spec 2.1.1 server descriptors, against a real C tor 0.4.9.11.

The vectors in dirspec_vectors/ were made by C tor (see its README): its relays' descriptors parse and check
here, and the descriptor digests we compute are the ones its authority put in its vote.
"""

import base64
import hashlib
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from nodes.core import ed25519, netdoc, tor_rsa
from nodes.core.certs import CertType, Ed25519Cert, make_cert
from nodes.core.errors import (
    DecodeError,
    ExpiredError,
    LocalProtocolError,
    RemoteProtocolError,
    SignatureError,
)
from nodes.core.server_descriptor import (
    MAX_DESCRIPTOR_SIZE,
    ONION_KEY_LIFETIME,
    SIGNATURE_PREFIX,
    TOR_MAX_AGE,
    TOR_MAX_SKEW,
    make_server_descriptor,
    ntor_crosscert_signer,
    parse_server_descriptor,
    split_upload,
)

VECTORS = Path(__file__).parent / "dirspec_vectors"
T0 = 1_700_000_000
PROTO = "Cons=1-2 Desc=1-2 DirCache=2 HSDir=2 HSIntro=4-5 HSRend=1-2 Link=4-5 Microdesc=1-2 Relay=2-4"
RSA_ID = rsa.generate_private_key(65537, 1024)
TAP = rsa.generate_private_key(65537, 1024)
IDENTITY = Ed25519PrivateKey.from_private_bytes(b"\x11" * 32)
SIGNING = Ed25519PrivateKey.from_private_bytes(b"\x22" * 32)
MASTER = IDENTITY.public_key().public_bytes_raw()


def _ntor_secret(bit: int) -> bytes:
    """A fixed ntor secret whose Ed25519 form has sign bit `bit` (both must work)."""
    for i in range(1, 256):
        if ntor_crosscert_signer(bytes([i]) * 32)[1] == bit:
            return bytes([i]) * 32
    raise AssertionError("no such secret")


NTOR0, NTOR1 = _ntor_secret(0), _ntor_secret(1)


def _make(**overrides):
    args = dict(nickname="relay1", address="10.0.0.3", or_port=9001, dir_port=0, rsa_identity=RSA_ID,
                ed25519_identity=IDENTITY, signing_key=SIGNING, signing_cert_expires=T0 + 30 * 86400,
                ntor_secret=NTOR0, bandwidth=1_000_000, platform="onionlab 0.1.0", proto=PROTO, published=T0)
    args.update(overrides)
    return make_server_descriptor(**args)


DESC = _make()
DESC_TAP = _make(tap_onion_key=TAP, ntor_secret=NTOR1)


def _check(raw: bytes, now: int = T0):
    return parse_server_descriptor(raw).check(now, max_age=3600, max_skew=60)


def _resign(body: bytes) -> bytes:
    """Sign a (modified) descriptor body again with the test keys: `body` may end anywhere after the
    ntor-onion-key line; everything from "router-sig-ed25519 " on is replaced."""
    body = body[:body.index(b"router-sig-ed25519 ") + len(b"router-sig-ed25519 ")] \
        if b"router-sig-ed25519 " in body else body + b"router-sig-ed25519 "
    sig = SIGNING.sign(hashlib.sha256(SIGNATURE_PREFIX + body).digest())
    body += netdoc.b64encode_unpadded(sig).encode() + b"\nrouter-signature\n"
    return body + tor_rsa.pem("SIGNATURE", tor_rsa.sign_digest(RSA_ID, hashlib.sha1(body).digest())).encode()


def _edit(old: bytes, new: bytes, raw: bytes = DESC.raw) -> bytes:
    assert raw.count(old) == 1, old
    return _resign(raw.replace(old, new))


# ---------------------------------------------------------------------------------------------------------
# What we write


def test_round_trip_and_layout():
    for desc in (DESC, DESC_TAP):
        assert _check(desc.raw) == desc
    keywords = [item.keyword for item in netdoc.parse_items(DESC.raw, "d")]
    assert keywords == ["router", "identity-ed25519", "master-key-ed25519", "platform", "proto", "published",
                        "fingerprint", "uptime", "bandwidth", "signing-key", "ntor-onion-key-crosscert",
                        "hidden-service-dir", "ntor-onion-key", "reject", "tunnelled-dir-server",
                        "router-sig-ed25519", "router-signature"]
    keywords = [item.keyword for item in netdoc.parse_items(DESC_TAP.raw, "d")]
    assert keywords[9:13] == ["onion-key", "signing-key", "onion-key-crosscert", "ntor-onion-key-crosscert"]
    text = DESC.raw.decode()
    assert text.startswith("router relay1 10.0.0.3 9001 0 0\n"
                           "identity-ed25519\n-----BEGIN ED25519 CERT-----\n")
    assert "\npublished 2023-11-14 22:13:20\n" in text and "\nbandwidth 1000000 1000000 1000000\n" in text
    hex_id = DESC.node_id.hex().upper()
    assert f"\nfingerprint {' '.join(hex_id[i:i + 4] for i in range(0, 40, 4))}\n" in text
    ntor_line = re.search(r"\nntor-onion-key (\S+)\n", text).group(1)
    assert len(ntor_line) == 43 and base64.b64decode(ntor_line + "=") == DESC.ntor_onion_key
    assert DESC.ntor_onion_key == X25519PrivateKey.from_private_bytes(NTOR0).public_key().public_bytes_raw()
    assert f"\nmaster-key-ed25519 {netdoc.b64encode_unpadded(MASTER)}\n" in text
    assert text.endswith("-----END SIGNATURE-----\n")  # no blank line after it (dir-spec SHOULD NOT)
    assert DESC.ed25519_identity == MASTER and DESC.node_id == tor_rsa.fingerprint(RSA_ID.public_key())


def test_signatures_cover_the_ranges_dir_spec_names():
    raw = DESC.raw
    ed_end = raw.index(b"\nrouter-sig-ed25519 ") + len(b"\nrouter-sig-ed25519 ")
    ed_sig = base64.b64decode(raw[ed_end:raw.index(b"\n", ed_end)] + b"==")
    signing_key = SIGNING.public_key()
    signing_key.verify(ed_sig, hashlib.sha256(b"Tor router descriptor signature v1" + raw[:ed_end]).digest())
    assert DESC.signing_key == signing_key.public_bytes_raw()
    rsa_end = raw.index(b"\nrouter-signature\n") + len(b"\nrouter-signature\n")
    rsa_sig = netdoc.parse_items(raw, "d")[-1].object("SIGNATURE", "d")
    recovered = RSA_ID.public_key().recover_data_from_signature(rsa_sig, padding.PKCS1v15(), None)
    assert recovered == hashlib.sha1(raw[:rsa_end]).digest() == DESC.digest


def test_certificates_and_cross_certificates():
    cert = DESC.signing_cert
    assert cert.cert_type == CertType.IDENTITY_V_SIGNING and cert.signing_key == MASTER
    assert cert.certified_key == SIGNING.public_key().public_bytes_raw()
    assert cert.expires == -(-(T0 + 30 * 86400) // 3600) * 3600  # whole hours, rounded up
    for desc, secret, bit in ((DESC, NTOR0, 0), (DESC_TAP, NTOR1, 1)):
        cc = desc.ntor_crosscert
        assert cc.cert_type == CertType.NTOR_CC_IDENTITY and cc.certified_key == MASTER
        assert cc.signing_key is None  # C tor makes it without the signed-with-key extension
        assert cc.expires == -(-(T0 + ONION_KEY_LIFETIME) // 3600) * 3600
        assert desc.ntor_crosscert_sign_bit == bit
        assert f"\nntor-onion-key-crosscert {bit}\n" in desc.raw.decode()
        signer, _ = ntor_crosscert_signer(secret)
        assert ed25519.curve25519_to_ed25519_public(desc.ntor_onion_key, bit) == signer.public_key
        cc.check(T0, signer.public_key)
    # the TAP cross-certificate: RSA (onion key) over node ID | master key, no hash
    crosscert = netdoc.Items(netdoc.parse_items(DESC_TAP.raw, "d"), "d").one("onion-key-crosscert")
    data = TAP.public_key().recover_data_from_signature(crosscert.object("CROSSCERT", "d"),
                                                         padding.PKCS1v15(), None)
    assert data == DESC_TAP.node_id + MASTER
    assert tor_rsa.public_der(DESC_TAP.tap_onion_key) == tor_rsa.public_der(TAP.public_key())


def test_ntor_key_as_ed25519_is_dir_spec_appendix_c():
    """The clamped Curve25519 secret is the Ed25519 scalar; its public key is the birational image of the
    Curve25519 public key with the sign bit of x; the nonce half is SHA-512(secret | the C string)."""
    for secret in (NTOR0, NTOR1, bytes(range(32))):
        signer, bit = ntor_crosscert_signer(secret)
        u = X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()
        assert ed25519.curve25519_to_ed25519_public(u, bit) == signer.public_key
        assert signer.public_key[31] >> 7 == bit
        esk = signer.expanded_secret
        assert esk[32:] == hashlib.sha512(esk[:32] + b"Derive high part of ed25519 key from curve25519 key\0"
                                          ).digest()[:32]
        Ed25519PublicKey.from_public_bytes(signer.public_key).verify(signer.sign(b"m"), b"m")
    with pytest.raises(LocalProtocolError):
        ntor_crosscert_signer(b"short")


@pytest.mark.parametrize("overrides", [
    {"nickname": "x" * 20}, {"nickname": "bad-name"}, {"address": "::1"}, {"address": "10.0.0"},
    {"or_port": 0}, {"dir_port": 70000}, {"bandwidth": 0}, {"bandwidth": 2**31}, {"uptime": -1},
    {"platform": "two\nlines"}, {"proto": "Link=4 Bad"}, {"family": ("$XYZ",)},
    {"rsa_identity": rsa.generate_private_key(65537, 2048)}, {"ntor_secret": b"\x01" * 31},
])
def test_impossible_values_are_local_errors(overrides):
    with pytest.raises(LocalProtocolError):
        _make(**overrides)


# ---------------------------------------------------------------------------------------------------------
# A real C tor 0.4.9.11

CTOR = {  # file -> (nickname, node ID as the vote's r line writes it, descriptor digest from that line)
    "ctor-relay.desc": ("ctorfixture", "ZBynm2a7bEd6hNCrRuruKgMV774", "mVZSnNVzEdzLUU8Ym/IK/xQtseY"),
    "ctor-authority.desc": ("auth1", "vTl3lozA/c5Gbzz76NVFwDCBYNE", "x2w0Jp61YHcPb9Rv0Ui8LapjUMo"),
    "ctor-relay-family.desc": ("ctorfixture", "ZBynm2a7bEd6hNCrRuruKgMV774", "6KIppb4XnlOiNpZ+haNZUUNqmCg"),
    "onionlab-tap.desc": ("ourstap", "aMlgbkaiAWpX6+XyYxLXnECBYiA", "xl4vzSjA+h4UzBAScK8B0KNMvdY"),
}


def _vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


@pytest.mark.parametrize("name", sorted(CTOR))
def test_c_tor_descriptors_parse_and_check(name):
    nickname, node_id, digest = CTOR[name]
    unchecked = parse_server_descriptor(_vector(name))
    desc = unchecked.check(unchecked.published, max_age=TOR_MAX_AGE, max_skew=TOR_MAX_SKEW)
    assert desc.nickname == nickname
    assert netdoc.b64encode_unpadded(desc.node_id) == node_id
    assert netdoc.b64encode_unpadded(desc.digest) == digest  # what C tor's authority computed
    assert desc.address == "127.0.0.1" and desc.tap_onion_key is not None
    assert desc.policy_is_reject_star and desc.exit_policy == ("reject *:*",)
    assert desc.hidden_service_dir and desc.tunnelled_dir_server
    # the certificates last weeks after publication, not forever
    with pytest.raises(ExpiredError):
        unchecked.check(desc.expires + 1, max_age=10**9, max_skew=0)


def test_c_tor_relay_fields():
    desc = _check(_vector("ctor-relay.desc"), now=netdoc.parse_time("2026-12-07", "07:29:06", "t"))
    assert desc.platform == "Tor 0.4.9.11 on Linux"
    assert desc.proto.startswith("Conflux=1 Cons=1-2 Desc=1-4 ") and desc.proto.endswith(" Relay=2-6")
    assert (desc.or_port, desc.dir_port, desc.uptime) == (47002, 0, 60)
    assert (desc.bandwidth_avg, desc.bandwidth_burst) == (1073741824, 1073741824)
    assert desc.bandwidth_observed == 767
    assert desc.ntor_crosscert_sign_bit == 1 and desc.contact == "onionlab test fixture"
    # the first certificate to expire is the ntor cross-cert: 28 days after publication, rounded up
    assert desc.expires == desc.ntor_crosscert.expires == -(-(desc.published + 28 * 86400) // 3600) * 3600


def test_c_tor_authority_descriptor_with_its_trailing_blank_line():
    raw = _vector("ctor-authority.desc")
    assert raw.endswith(b"-----END SIGNATURE-----\n\n")  # router.c adds one LF after the signature
    desc = parse_server_descriptor(raw).check(netdoc.parse_time("2026-12-07", "07:29:06", "t"),
                                              max_age=60, max_skew=60)
    assert desc.raw == raw[:-1] and desc.dir_port == 47030


def test_c_tor_family_and_family_cert():
    unchecked = parse_server_descriptor(_vector("ctor-relay-family.desc"))
    desc = unchecked.check(unchecked.published, max_age=60, max_skew=60)
    assert desc.family == ("$0123456789ABCDEF0123456789ABCDEF01234567",
                           "$641CA79B66BB6C477A84D0AB46EAEE2A0315EFBE",
                           "$BD3977968CC0FDCE466F3CFBE8D545C0308160D1", "somenick")
    assert desc.family_ids == ("ed25519:CEon0dOEOoRcJk/dBzpiocg8T93hOas+oprSN/YR1/8",)  # tor --keygen-family
    # a family-cert that does not verify rejects the descriptor, as in C tor (check_family_certs)
    raw = _vector("ctor-relay-family.desc")
    item = netdoc.Items(netdoc.parse_items(raw, "d"), "d").one("family-cert")
    cert = Ed25519Cert.decode(item.object_data)
    bad = Ed25519Cert(cert.cert_type, cert.expiration_hours, cert.key_type, cert.certified_key,
                      cert.extensions, bytes(64))
    forged = raw[:item.start] + b"family-cert\n" + tor_rsa.pem("FAMILY CERT", bad.encode()).encode() \
        + raw[item.end:]
    with pytest.raises(SignatureError):
        parse_server_descriptor(forged).check(unchecked.published, max_age=60, max_skew=60)


def test_onionlab_descriptor_without_tap_key_as_c_tor_saw_it():
    """C tor parsed and verified it, then refused it: "Missing TAP key in descriptor." (a policy of its
    authorities, not of the format)."""
    unchecked = parse_server_descriptor(_vector("onionlab-notap.desc"))
    desc = unchecked.check(unchecked.published, max_age=60, max_skew=60)
    assert desc.tap_onion_key is None and b"\nonion-key" not in desc.raw


# ---------------------------------------------------------------------------------------------------------
# Every way a descriptor must be refused


def test_bad_rsa_signature():
    item = netdoc.parse_items(DESC.raw, "d")[-1]
    sig = bytearray(item.object_data)
    sig[5] ^= 1
    raw = DESC.raw[:item.start] + b"router-signature\n" + tor_rsa.pem("SIGNATURE", bytes(sig)).encode()
    with pytest.raises(SignatureError):
        _check(raw)
    other = rsa.generate_private_key(65537, 1024)
    body = DESC.raw[:item.start + len(b"router-signature\n")]
    raw = body + tor_rsa.pem("SIGNATURE", tor_rsa.sign_digest(other, hashlib.sha1(body).digest())).encode()
    with pytest.raises(SignatureError):
        _check(raw)


def test_bad_ed25519_signature():
    raw = DESC.raw
    at = raw.index(b"router-sig-ed25519 ") + len(b"router-sig-ed25519 ")
    body = raw[:at]
    forged = Ed25519PrivateKey.generate().sign(hashlib.sha256(SIGNATURE_PREFIX + body).digest())
    body += netdoc.b64encode_unpadded(forged).encode() + b"\nrouter-signature\n"
    raw = body + tor_rsa.pem("SIGNATURE", tor_rsa.sign_digest(RSA_ID, hashlib.sha1(body).digest())).encode()
    with pytest.raises(SignatureError):
        _check(raw)
    # a body changed after signing breaks both signatures
    with pytest.raises(SignatureError):
        _check(DESC.raw.replace(b"uptime 0", b"uptime 1"))


def test_expired_identity_certificate():
    desc = _make(signing_cert_expires=T0 + 60)
    parse_server_descriptor(desc.raw).check(desc.signing_cert.expires - 1, max_age=10**6, max_skew=0)
    with pytest.raises(ExpiredError):
        parse_server_descriptor(desc.raw).check(desc.signing_cert.expires, max_age=10**6, max_skew=0)


def test_expired_ntor_crosscert():
    with pytest.raises(ExpiredError):
        parse_server_descriptor(DESC.raw).check(DESC.ntor_crosscert.expires, max_age=10**8, max_skew=0)


def _swap_ntor_crosscert(cert: Ed25519Cert, bit: int | None = None) -> bytes:
    raw = DESC.raw
    item = netdoc.Items(netdoc.parse_items(raw, "d"), "d").one("ntor-onion-key-crosscert")
    line = f"ntor-onion-key-crosscert {DESC.ntor_crosscert_sign_bit if bit is None else bit}\n"
    return _resign(raw[:item.start] + line.encode() + tor_rsa.pem("ED25519 CERT", cert.encode()).encode()
                   + raw[item.end:])


def test_ntor_crosscert_of_another_identity_key():
    signer, _ = ntor_crosscert_signer(NTOR0)
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    cert = make_cert(CertType.NTOR_CC_IDENTITY, other, signer, T0 + 86400, include_signing_key=False)
    with pytest.raises(SignatureError):
        _check(_swap_ntor_crosscert(cert))


def test_ntor_crosscert_signed_by_another_key():
    signer, _ = ntor_crosscert_signer(NTOR1)  # not the descriptor's ntor key
    cert = make_cert(CertType.NTOR_CC_IDENTITY, MASTER, signer, T0 + 86400, include_signing_key=False)
    with pytest.raises(SignatureError):
        _check(_swap_ntor_crosscert(cert))


def test_ntor_crosscert_with_the_wrong_sign_bit():
    with pytest.raises(SignatureError):
        _check(_swap_ntor_crosscert(DESC.ntor_crosscert, bit=1))
    with pytest.raises(DecodeError):
        _check(_swap_ntor_crosscert(DESC.ntor_crosscert, bit=2))


def test_ntor_crosscert_of_the_wrong_type():
    signer, _ = ntor_crosscert_signer(NTOR0)
    cert = make_cert(CertType.HS_NTOR_ENC, MASTER, signer, T0 + 86400, include_signing_key=False)
    with pytest.raises(DecodeError):
        _check(_swap_ntor_crosscert(cert))


def test_fingerprint_mismatch_and_malformed():
    hex_id = DESC.node_id.hex().upper()
    spaced = " ".join(hex_id[i:i + 4] for i in range(0, 40, 4))
    wrong = ("0000" + spaced[4:]).encode()
    with pytest.raises(SignatureError):
        _check(_edit(spaced.encode(), wrong))
    assert _check(_edit(spaced.encode(), hex_id.lower().encode())).node_id == DESC.node_id  # C tor: no spaces
    with pytest.raises(DecodeError):
        _check(_edit(spaced.encode(), spaced[:-1].encode()))
    without = _resign(DESC.raw.replace(f"fingerprint {spaced}\n".encode(), b""))
    assert _check(without).node_id == DESC.node_id  # at most once: may be absent


def test_master_key_line_must_name_the_certifying_key():
    other = netdoc.b64encode_unpadded(Ed25519PrivateKey.generate().public_key().public_bytes_raw())
    with pytest.raises(SignatureError):
        _check(_edit(netdoc.b64encode_unpadded(MASTER).encode(), other.encode()))


def test_published_window():
    raw = DESC.raw
    parse_server_descriptor(raw).check(T0 + 3600, max_age=3600, max_skew=0)
    parse_server_descriptor(raw).check(T0 - 60, max_age=0, max_skew=60)
    with pytest.raises(ExpiredError):  # too old
        parse_server_descriptor(raw).check(T0 + 3601, max_age=3600, max_skew=0)
    with pytest.raises(ExpiredError):  # from the future
        parse_server_descriptor(raw).check(T0 - 61, max_age=0, max_skew=60)


def test_tap_crosscert():
    raw = DESC_TAP.raw
    item = netdoc.Items(netdoc.parse_items(raw, "d"), "d").one("onion-key-crosscert")
    other_master = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    for data in (DESC_TAP.node_id + other_master, bytes(20) + MASTER):
        forged = raw[:item.start] + b"onion-key-crosscert\n" \
            + tor_rsa.pem("CROSSCERT", tor_rsa.sign_digest(TAP, data)).encode() + raw[item.end:]
        with pytest.raises(SignatureError):
            _check(_resign(forged))
    longer = raw[:item.start] + b"onion-key-crosscert\n" \
        + tor_rsa.pem("CROSSCERT", tor_rsa.sign_digest(TAP, DESC_TAP.node_id + MASTER + b"more")).encode() \
        + raw[item.end:]
    _check(_resign(longer))  # dir-spec: verifiers MUST allow additional data beyond the 52 bytes
    # onion-key and onion-key-crosscert come together
    with pytest.raises(DecodeError):
        _check(_resign(raw[:item.start] + raw[item.end:]))


REQUIRED = ["identity-ed25519", "master-key-ed25519", "bandwidth", "published", "signing-key", "proto",
            "ntor-onion-key", "ntor-onion-key-crosscert"]


@pytest.mark.parametrize("keyword", REQUIRED)
def test_missing_required_keyword(keyword):
    raw = DESC.raw
    item = netdoc.Items(netdoc.parse_items(raw, "d"), "d").one(keyword)
    with pytest.raises(DecodeError):
        _check(_resign(raw[:item.start] + raw[item.end:]))


def test_missing_signatures_and_router_line():
    raw = DESC.raw
    ed_at = raw.index(b"router-sig-ed25519 ")
    with pytest.raises(DecodeError):  # neither signature
        _check(raw[:ed_at])
    with pytest.raises(DecodeError):  # no router-signature
        _check(raw[:raw.index(b"router-signature\n")])
    with pytest.raises(DecodeError):  # no router line first
        _check(raw[raw.index(b"identity-ed25519"):])
    with pytest.raises(DecodeError):  # no exit policy
        _check(_resign(raw.replace(b"reject *:*\n", b"")))


@pytest.mark.parametrize("keyword", ["router", "identity-ed25519", "master-key-ed25519", "bandwidth",
                                     "platform", "proto", "published", "fingerprint", "uptime",
                                     "signing-key", "ntor-onion-key", "ntor-onion-key-crosscert",
                                     "hidden-service-dir", "tunnelled-dir-server"])
def test_duplicated_once_only_keyword(keyword):
    raw = DESC.raw
    item = netdoc.Items(netdoc.parse_items(raw, "d"), "d").one(keyword)
    ntor_at = raw.index(b"ntor-onion-key ")  # put the copy somewhere in the middle
    dup = raw[:ntor_at] + raw[item.start:item.end] + raw[ntor_at:]
    with pytest.raises(DecodeError):
        _check(_resign(dup))


def test_positions():
    raw = DESC.raw
    cert = netdoc.Items(netdoc.parse_items(raw, "d"), "d").one("identity-ed25519")
    moved = raw[:cert.start] + raw[cert.end:]
    at = moved.index(b"platform ")
    moved = moved[:at] + raw[cert.start:cert.end] + moved[at:]
    with pytest.raises(DecodeError):  # identity-ed25519 must be second
        _check(_resign(moved))
    # router-sig-ed25519 must be next to last: an item between the two signatures is refused
    ed_line = raw[raw.index(b"router-sig-ed25519 "):raw.index(b"router-signature\n")]
    body = raw[:raw.index(b"router-sig-ed25519 ")] + ed_line + b"x-extra 1\nrouter-signature\n"
    rsa_sig = tor_rsa.sign_digest(RSA_ID, hashlib.sha1(body).digest())
    with pytest.raises(DecodeError):
        _check(body + tor_rsa.pem("SIGNATURE", rsa_sig).encode())
    with pytest.raises(DecodeError):  # nothing after router-signature
        _check(raw + b"x-extra 1\n")


def test_tolerance_unknown_keywords_opt_and_blank_lines_at_the_end():
    raw = _edit(b"tunnelled-dir-server\n",
                b"tunnelled-dir-server\nx-onionlab-future 1 2\n-----BEGIN FUTURE THING-----\nAAAA\n"
                b"-----END FUTURE THING-----\nopt caches-extra-info\nextra-info-digest 00 xyz\n")
    desc = _check(raw)
    assert desc.raw == raw
    assert _check(raw + b"\n\n\n").raw == raw
    assert _check(_edit(b"uptime 0", b"uptime 0 extra args are fine")).uptime == 0


@pytest.mark.parametrize("old,new", [
    (b"hidden-service-dir\n", b"hidden-service-dir 1\n"),  # no extra arguments
    (b"tunnelled-dir-server\n", b"tunnelled-dir-server\n-----BEGIN X-----\nAAAA\n-----END X-----\n"),
    (b"reject *:*\n", b"reject *:*\naccept6 *:80\n"),  # refused by C tor ("they crash older Tors")
    (b"reject *:*\n", b"reject [::1]:*\n"),  # accept/reject take IPv4 patterns only
    (b"reject *:*\n", b"reject *:99999\n"), (b"reject *:*\n", b"reject *:* 2\n"),
    (b"reject *:*\n", b"reject 10.0.0.0/33:*\n"), (b"reject *:*\n", b"reject 10.0.0.0/255.0.255.0:*\n"),
    (b"reject *:*\n", b"reject *:*\nipv6-policy accept\n"), (b"reject *:*\n", b"reject *:*\nfamily $00\n"),
    (b"router relay1 ", b"router relay-1 "), (b"10.0.0.3 9001", b"10.0.0.300 9001"),
    (b"9001 0 0\n", b"0 0 0\n"), (b"9001 0 0\n", b"9001 0\n"),
    (b"bandwidth 1000000 ", b"bandwidth 0 "), (b"bandwidth 1000000 1000000 1000000", b"bandwidth 1 2"),
    (b"published 2023-11-14 22:13:20", b"published 2023-11-14"), (b"uptime 0", b"uptime -1"),
])
def test_malformed_items(old, new):
    with pytest.raises(RemoteProtocolError):
        _check(_edit(old, new))


def test_accepted_exit_policies():
    policy = (b"reject 10.0.0.0/8:*\nreject private:*\nreject 1.2.3.4/255.255.255.0:80-443\n"
              b"reject 0.0.0.0/0:*\naccept *:*\n")
    desc = _check(_edit(b"reject *:*\n", policy))
    assert len(desc.exit_policy) == 5 and desc.policy_is_reject_star
    # C tor's policy_is_reject_star: any IPv4 accept before a reject of everything means "exits somewhere"
    for policy in (b"accept *:80\nreject *:*\n", b"accept 1.2.3.4:80\nreject *:*\n", b"accept private:*\n"):
        assert not _check(_edit(b"reject *:*\n", policy)).policy_is_reject_star
    assert _check(_edit(b"reject *:*\n", b"reject *:80\n")).policy_is_reject_star  # C tor's default_reject
    assert _check(_edit(b"reject *:*\n", b"reject *\n")).policy_is_reject_star  # no port: all ports


def test_annotations_and_size_are_refused():
    with pytest.raises(DecodeError):
        _check(b"@uploaded-at 2023-11-14 22:13:20\n" + DESC.raw)
    pad = b"x-pad " + b"a" * MAX_DESCRIPTOR_SIZE + b"\n"
    big = _edit(b"tunnelled-dir-server\n", b"tunnelled-dir-server\n" + pad)
    with pytest.raises(DecodeError):
        _check(big)


def test_signed_range_look_alikes():
    """A line that begins like a signature keyword before the real one would move C tor's signed range."""
    with pytest.raises(DecodeError):
        _check(_edit(b"tunnelled-dir-server\n", b"tunnelled-dir-server\nrouter-signaturex\n"))
    with pytest.raises(DecodeError):
        _check(_edit(b"tunnelled-dir-server\n", b"tunnelled-dir-server\nrouter-sig-ed25519x 1\n"))


# ---------------------------------------------------------------------------------------------------------
# Only typed errors, whatever the bytes


def _parse_and_check(data: bytes) -> None:
    try:
        parse_server_descriptor(data).check(T0, max_age=3600, max_skew=60)
    except RemoteProtocolError:
        pass


@given(st.binary(max_size=600))
def test_arbitrary_bytes(data):
    _parse_and_check(data)
    _parse_and_check(b"router " + data)


@given(st.integers(0, len(DESC_TAP.raw)), st.integers(0, 40), st.binary(max_size=40))
def test_mutated_descriptors(at, cut, insert):
    for raw in (DESC_TAP.raw, _vector("ctor-relay-family.desc")):
        at_ = min(at, len(raw))
        _parse_and_check(raw[:at_] + insert + raw[at_ + cut:])


@given(st.integers(0, len(DESC.raw) - 1), st.integers(0, 7))
def test_bit_flips(at, bit):
    raw = bytearray(DESC.raw)
    raw[at] ^= 1 << bit
    _parse_and_check(bytes(raw))


def test_ipv6_policy_summaries_as_c_tor_reads_them():
    for summary in (b"accept 80,443", b"reject 1-65535", b"accept 80,future-syntax,1000-2000"):
        assert _check(_edit(b"reject *:*\n", b"reject *:*\nipv6-policy " + summary + b"\n")).ipv6_policy \
            == summary.decode()
    for summary in (b"", b"accept", b"allow 80", b"accept 0", b"accept 80-70", b"accept 80x", b"accept x"):
        with pytest.raises(DecodeError):
            _check(_edit(b"reject *:*\n", b"reject *:*\nipv6-policy " + summary + b"\n"))


def test_a_c_tor_relays_upload_is_its_descriptor_then_its_extra_info():
    """C tor POSTs its descriptor and its extra-info in one body; our authorities refused the whole body
    (`bad keyword line ''` at the blank line between them) until split_upload took the descriptor out."""
    body = (VECTORS / "ctor-relay-upload.txt").read_bytes()
    document, extra_infos = split_upload(body)
    assert extra_infos == 1 and document.startswith(b"router caprelay ")
    with pytest.raises(DecodeError):
        parse_server_descriptor(body)
    unchecked = parse_server_descriptor(document)
    desc = unchecked.check(unchecked.published, max_age=3600, max_skew=60)
    assert desc.nickname == "caprelay" and desc.hidden_service_dir and desc.tunnelled_dir_server
    assert split_upload(DESC.raw) == (DESC.raw, 0)


def test_checked_descriptor_keeps_rsa_keys_as_der_and_loads_them_when_asked():
    """An authority holds every relay's descriptor: its RSA keys stay 140 B of DER, not 780 B OpenSSL
    objects, and load to the keys the document carries (the node ID is still SHA-1 of the identity's DER)."""
    for made in (DESC, DESC_TAP):
        checked = _check(made.raw)
        assert checked == made
        for desc in (made, checked):
            held = [getattr(desc, f) for f in desc.__slots__]
            assert not any(isinstance(v, (rsa.RSAPublicKey, rsa.RSAPrivateKey)) for v in held)
            assert desc.rsa_identity_der == tor_rsa.public_der(RSA_ID.public_key())
            assert tor_rsa.public_der(desc.rsa_identity) == desc.rsa_identity_der
            assert desc.node_id == tor_rsa.fingerprint(RSA_ID.public_key())
            pem = tor_rsa.pem("RSA PUBLIC KEY", desc.rsa_identity_der).encode()
            assert b"\nsigning-key\n" + pem in desc.raw
    assert DESC.tap_onion_key_der is None and DESC.tap_onion_key is None
    assert DESC_TAP.tap_onion_key_der == tor_rsa.public_der(TAP.public_key())
    assert DESC_TAP.tap_onion_key.public_numbers() == TAP.public_key().public_numbers()
    # the key loaded from the held DER still verifies the descriptor's RSA signature
    items = netdoc.Items(netdoc.parse_items(DESC.raw, "d"), "d")
    sig = items.one("router-signature").object("SIGNATURE", "d")
    tor_rsa.verify_digest(DESC.rsa_identity, sig, DESC.digest)
