"""Onion-service descriptor v3 (rend-spec-v3 2.4-2.5): build, sign and encrypt; parse, check and decrypt.

Three nested documents in dir-spec 1.2 meta-format:

    outer    hs-descriptor 3, descriptor-lifetime, descriptor-signing-key-cert (type 08, signed by the blinded
             key), revision-counter, superencrypted (MESSAGE), signature (by the descriptor signing key over
             "Tor onion service descriptor sig v3" | every byte before the "signature" line)
    first    desc-auth-type x25519, desc-auth-ephemeral-key, auth-client (16 fake ones without client auth),
             encrypted (MESSAGE); NUL-padded to a multiple of 10000 bytes before encryption
    second   create2-formats, intro-auth-required?, single-onion-service?, then per intro point:
             introduction-point (link specifiers), onion-key ntor, auth-key (cert 09), enc-key ntor,
             enc-key-cert (cert 0B)

Each layer is SALT(16) | AES-256-CTR ciphertext | MAC(32), keyed by SHAKE-256 over the blinded key, the
subcredential and the revision counter (2.5.3). Parsing is strict about the items it knows and ignores the
ones it does not (dir-spec 1.2), so newer Tor lines such as flow-control and pow-params pass.

`parse_descriptor` gives an `UncheckedDescriptor`; `.check(now, blinded_key)` verifies the certificate chain
and signature (all an HSDir can do); `.decrypt(subcredential)` opens both layers and checks the intro-point
certificates. Only clients without client authorization are supported (no descriptor cookie).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from . import ed25519
from .certs import CertType, Ed25519Cert, make_cert
from .ed25519 import Signer
from .errors import CryptoError, DecodeError, LocalProtocolError, SignatureError
from .hs_common import subcredential as compute_subcredential
from .kdf import hs_mac, shake256
from .relay import LinkSpec, encode_link_specs, read_link_specs
from .wire import Reader, u64

Rng = Callable[[int], bytes]

SIGNATURE_PREFIX = b"Tor onion service descriptor sig v3"
SUPERENCRYPTED_CONSTANT = b"hsdir-superencrypted-data"
ENCRYPTED_CONSTANT = b"hsdir-encrypted-data"
MAX_DESCRIPTOR_SIZE = 50_000  # what HSDirs accept (rend-spec-v3 2.4; Tor's HSV3MaxDescriptorSize default)
SUPERENCRYPTED_PAD_MULTIPLE = 10_000  # rend-spec-v3 2.5.1.1
MIN_LIFETIME, MAX_LIFETIME = 30, 720  # minutes
MAX_INTRO_POINTS = 20  # rend-spec-v3 2.5.4
FAKE_AUTH_CLIENTS = 16  # 2.5.1.4: client counts are padded to a multiple of 16, so 16 fake ones when none
CERT_LIFETIME = 54 * 3600  # C tor's HS_DESC_CERT_LIFETIME: the 08, 09 and 0B certificates last 54 hours
CREATE2_NTOR = 2
SALT_LEN, MAC_LEN = 16, 32
_KEY_LEN, _IV_LEN, _MAC_KEY_LEN = 32, 16, 32
_CERT_TAG, _MESSAGE_TAG = "ED25519 CERT", "MESSAGE"


# ---------------------------------------------------------------------------------------------------------
# Documents


@dataclass(frozen=True, slots=True)
class IntroPointDesc:
    """One introduction point as the second layer lists it.

    link_specs: relay link specifiers, sent verbatim in EXTEND2; onion_key: the intro relay's ntor key;
    auth_key: KP_hs_ipt_sid (Ed25519); enc_key: KP_hss_ntor (Curve25519). The certificates come from the
    parser; `build_descriptor` makes them when they are None.
    """

    link_specs: tuple[LinkSpec, ...]
    onion_key: bytes
    auth_key: bytes
    enc_key: bytes
    auth_key_cert: Ed25519Cert | None = None
    enc_key_cert: Ed25519Cert | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "link_specs", tuple(self.link_specs))


@dataclass(frozen=True, slots=True)
class AuthClient:
    """One auth-client line of the first layer (fake unless the service uses client authorization)."""

    client_id: bytes  # 8
    iv: bytes  # 16
    encrypted_cookie: bytes  # 16


@dataclass(frozen=True, slots=True)
class FirstLayer:
    """The decrypted "superencrypted" document (rend-spec-v3 2.5.1.2)."""

    auth_type: str
    ephemeral_key: bytes
    auth_clients: tuple[AuthClient, ...]
    encrypted: bytes  # the second layer's ciphertext


@dataclass(frozen=True, slots=True)
class SecondLayer:
    """The decrypted "encrypted" document (rend-spec-v3 2.5.2.2); its certificates are not yet checked."""

    create2_formats: tuple[int, ...]
    intro_auth_required: tuple[str, ...] | None
    single_onion: bool
    intro_points: tuple[IntroPointDesc, ...]

    def check_certs(self, signing_key: bytes, now: int) -> None:
        """Every auth-key and enc-key-cert certificate must be signed by the descriptor signing key.

        C tor signs them "backwards" (the descriptor signing key certifies the intro point's keys, not the
        other way round), so that is what we verify. SignatureError / ExpiredError.
        """
        for point in self.intro_points:
            if point.auth_key_cert is None or point.enc_key_cert is None:
                raise LocalProtocolError("check_certs needs parsed intro points, which carry certificates")
            point.auth_key_cert.check(now, signing_key)
            point.enc_key_cert.check(now, signing_key)
            if point.enc_key_cert.certified_key != ed25519.curve25519_to_ed25519_public(point.enc_key, 0):
                raise SignatureError("enc-key-cert does not certify the intro point's enc-key")


@dataclass(frozen=True, slots=True)
class HsDescriptor:
    """A checked and decrypted descriptor: what a client needs to introduce itself. lifetime is in minutes."""

    blinded_key: bytes
    signing_key: bytes
    revision_counter: int
    lifetime: int
    create2_formats: tuple[int, ...]
    intro_auth_required: tuple[str, ...] | None
    single_onion: bool
    intro_points: tuple[IntroPointDesc, ...]


@dataclass(frozen=True, slots=True)
class CheckedOuterDescriptor:
    """An outer document whose certificate and signature verified at `checked_at`. lifetime is in minutes.

    An HSDir stores it by blinded_key and keeps the highest revision_counter; a client decrypts it.
    """

    blinded_key: bytes
    signing_key: bytes
    revision_counter: int
    lifetime: int
    expires: int  # Unix time at which the descriptor-signing-key certificate expires
    checked_at: int
    superencrypted: bytes = field(repr=False)

    def decrypt(self, subcredential: bytes) -> HsDescriptor:
        """Open both layers; CryptoError if the subcredential is wrong (or client auth would be needed)."""
        first = parse_first_layer(self._open(self.superencrypted, subcredential, SUPERENCRYPTED_CONSTANT))
        second = parse_second_layer(self._open(first.encrypted, subcredential, ENCRYPTED_CONSTANT))
        second.check_certs(self.signing_key, self.checked_at)
        return HsDescriptor(self.blinded_key, self.signing_key, self.revision_counter, self.lifetime,
                            second.create2_formats, second.intro_auth_required, second.single_onion,
                            second.intro_points)

    def _open(self, blob: bytes, subcredential: bytes, constant: bytes) -> bytes:
        return decrypt_layer(blob, secret_data=self.blinded_key, subcredential=subcredential,
                             revision_counter=self.revision_counter, constant=constant)


@dataclass(frozen=True, slots=True)
class UncheckedDescriptor:
    """A syntactically valid outer document; nothing in it is trusted before `check`."""

    lifetime: int
    signing_key_cert: Ed25519Cert
    revision_counter: int
    superencrypted: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    signed_part: bytes = field(repr=False)  # the signature prefix and every byte before "signature"

    def check(self, now: int, blinded_key: bytes | None = None) -> CheckedOuterDescriptor:
        """Verify the 08 certificate (signed by the blinded key, which must be `blinded_key` when given),
        its expiry, and the document signature. SignatureError / ExpiredError."""
        cert = self.signing_key_cert
        blinded = cert.signing_key
        assert blinded is not None  # the parser insists on the signed-with-ed25519-key extension
        if blinded_key is not None and not hmac.compare_digest(blinded, blinded_key):
            raise SignatureError("descriptor is signed by another blinded key")
        cert.check(now, blinded)
        ed25519.verify(cert.certified_key, self.signed_part, self.signature)
        return CheckedOuterDescriptor(blinded, cert.certified_key, self.revision_counter, self.lifetime,
                                      cert.expires, now, self.superencrypted)


# ---------------------------------------------------------------------------------------------------------
# Layer encryption (rend-spec-v3 2.5.3)


def _layer_keys(secret_data: bytes, subcredential: bytes, revision_counter: int, salt: bytes,
                constant: bytes) -> tuple[bytes, bytes, bytes]:
    keys = shake256(secret_data + subcredential + u64(revision_counter) + salt + constant,
                    _KEY_LEN + _IV_LEN + _MAC_KEY_LEN)
    return keys[:_KEY_LEN], keys[_KEY_LEN:_KEY_LEN + _IV_LEN], keys[_KEY_LEN + _IV_LEN:]


def _aes256_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    ctx = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return ctx.update(data) + ctx.finalize()


def _layer_mac(mac_key: bytes, salt: bytes, ciphertext: bytes) -> bytes:
    # D_MAC = H(INT_8(len(MAC_KEY)) | MAC_KEY | INT_8(len(SALT)) | SALT | ENCRYPTED)
    return hs_mac(mac_key, u64(len(salt)) + salt + ciphertext)


def encrypt_layer(plaintext: bytes, *, secret_data: bytes, subcredential: bytes, revision_counter: int,
                  constant: bytes, salt: bytes) -> bytes:
    """SALT | AES-256-CTR(plaintext) | MAC. SECRET_DATA is the blinded key (no descriptor cookie here)."""
    if len(salt) != SALT_LEN:
        raise LocalProtocolError(f"descriptor layer salt must be {SALT_LEN} bytes")
    key, iv, mac_key = _layer_keys(secret_data, subcredential, revision_counter, salt, constant)
    ciphertext = _aes256_ctr(key, iv, plaintext)
    return salt + ciphertext + _layer_mac(mac_key, salt, ciphertext)


def decrypt_layer(blob: bytes, *, secret_data: bytes, subcredential: bytes, revision_counter: int,
                  constant: bytes) -> bytes:
    """Inverse of `encrypt_layer`; CryptoError when the MAC does not match (wrong keys or tampering)."""
    if len(blob) < SALT_LEN + MAC_LEN:
        raise DecodeError(f"encrypted descriptor layer is {len(blob)} bytes, shorter than salt and MAC")
    salt, ciphertext, mac = blob[:SALT_LEN], blob[SALT_LEN:-MAC_LEN], blob[-MAC_LEN:]
    key, iv, mac_key = _layer_keys(secret_data, subcredential, revision_counter, salt, constant)
    if not hmac.compare_digest(_layer_mac(mac_key, salt, ciphertext), mac):
        raise CryptoError("descriptor layer MAC does not match (wrong subcredential or blinded key?)")
    return _aes256_ctr(key, iv, ciphertext)


# ---------------------------------------------------------------------------------------------------------
# Meta-format (dir-spec 1.2): keyword lines with optional base64 objects


@dataclass(frozen=True, slots=True)
class _Item:
    keyword: str
    args: tuple[str, ...]
    obj_tag: str | None
    obj: bytes | None
    offset: int  # where the keyword line starts: the signature covers everything before the last item


@dataclass(frozen=True, slots=True)
class _Rule:
    count: str  # "1" exactly once, "?" at most once, "+" once or more, "0" not allowed in this section
    min_args: int = 0
    obj_tag: str | None = None  # the object this item must carry; None: it must carry none


_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_OBJ_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*(?: [A-Za-z0-9][A-Za-z0-9-]*)*")
_TEXT = re.compile(r"[\t\n\x20-\x7e]*")
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_DECIMAL = re.compile(r"[0-9]{1,20}")
_OBJ_LINE_MAX = 64


def _b64decode(text: str, what: str, length: int | None = None) -> bytes:
    """Base64 with or without trailing '=' padding (Tor writes both), strict about everything else."""
    if not _B64.fullmatch(text) or ("=" in text and len(text) % 4):
        raise DecodeError(f"{what}: not base64")
    bare = text.rstrip("=")
    try:
        data = binascii.a2b_base64(bare + "=" * (-len(bare) % 4), strict_mode=True)
    except binascii.Error as exc:
        raise DecodeError(f"{what}: bad base64 ({exc})") from exc
    if length is not None and len(data) != length:
        raise DecodeError(f"{what}: {len(data)} bytes, expected {length}")
    return data


def _b64encode(data: bytes, *, pad: bool = True) -> str:
    text = binascii.b2a_base64(data, newline=False).decode("ascii")
    return text if pad else text.rstrip("=")


def _armor(tag: str, data: bytes) -> str:
    text = _b64encode(data)
    lines = [text[i:i + _OBJ_LINE_MAX] for i in range(0, len(text), _OBJ_LINE_MAX)]
    return "\n".join([f"-----BEGIN {tag}-----", *lines, f"-----END {tag}-----"]) + "\n"


def _tokenize(data: bytes, what: str) -> list[_Item]:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{what}: not ASCII") from exc
    if not _TEXT.fullmatch(text):
        raise DecodeError(f"{what}: control characters")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # a final newline is usual but optional (C tor omits it in the first layer)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    items: list[_Item] = []
    i = 0
    while i < len(lines):
        line, offset = lines[i], starts[i]
        i += 1
        if not line:
            continue  # dir-spec: Document ::= (Item | NL)+
        parts = line.split()
        if line[0] in " \t" or not _KEYWORD.fullmatch(parts[0]):
            raise DecodeError(f"{what}: bad keyword line {line[:40]!r}")
        tag = obj = None
        if i < len(lines) and lines[i].startswith("-----BEGIN "):
            tag, obj, i = _read_object(lines, i, what)
        items.append(_Item(parts[0], tuple(parts[1:]), tag, obj, offset))
    return items


def _read_object(lines: list[str], i: int, what: str) -> tuple[str, bytes, int]:
    """The object whose BEGIN line is lines[i]: (tag, decoded bytes, index of the line after END)."""
    begin = lines[i]
    tag = begin[len("-----BEGIN "):-len("-----")] if begin.endswith("-----") else ""
    if not _OBJ_TAG.fullmatch(tag):
        raise DecodeError(f"{what}: bad object BEGIN line")
    end = f"-----END {tag}-----"
    body: list[str] = []
    for j in range(i + 1, len(lines)):
        if lines[j] == end:
            return tag, _b64decode("".join(body), f"{what}: {tag} object"), j + 1
        if not lines[j] or len(lines[j]) > _OBJ_LINE_MAX or lines[j].startswith("-"):
            raise DecodeError(f"{what}: bad line in {tag} object")
        body.append(lines[j])
    raise DecodeError(f"{what}: {tag} object has no END line")


def _select(items: Sequence[_Item], rules: dict[str, _Rule], what: str) -> dict[str, list[_Item]]:
    """Items by keyword, checked against `rules`; unknown keywords are ignored (dir-spec 1.2)."""
    found: dict[str, list[_Item]] = {keyword: [] for keyword in rules}
    for item in items:
        rule = rules.get(item.keyword)
        if rule is None:
            continue
        if rule.count == "0":
            raise DecodeError(f"{what}: {item.keyword} is out of place")
        if len(item.args) < rule.min_args:
            raise DecodeError(f"{what}: {item.keyword} needs {rule.min_args} arguments")
        if item.obj_tag != rule.obj_tag:
            raise DecodeError(f"{what}: {item.keyword} must carry {rule.obj_tag or 'no'} object")
        found[item.keyword].append(item)
    for keyword, rule in rules.items():
        n = len(found[keyword])
        if (rule.count == "1" and n != 1) or (rule.count == "?" and n > 1) or (rule.count == "+" and n < 1):
            raise DecodeError(f"{what}: {keyword} appears {n} times")
    return found


def _decimal(text: str, what: str, low: int, high: int) -> int:
    if not _DECIMAL.fullmatch(text) or not low <= int(text) <= high:
        raise DecodeError(f"{what}: {text[:24]!r} is not an integer in [{low}, {high}]")
    return int(text)


def _cert(item: _Item, cert_type: CertType, what: str) -> Ed25519Cert:
    assert item.obj is not None  # _select insisted on the object
    cert = Ed25519Cert.decode(item.obj)
    if cert.cert_type != cert_type:
        raise DecodeError(f"{what}: certificate type {cert.cert_type}, expected {cert_type!r}")
    if cert.signing_key is None:
        raise DecodeError(f"{what}: certificate lacks the signed-with-ed25519-key extension")
    return cert


# ---------------------------------------------------------------------------------------------------------
# Parsing


_OUTER_RULES = {
    "hs-descriptor": _Rule("1", 1),
    "descriptor-lifetime": _Rule("1", 1),
    "descriptor-signing-key-cert": _Rule("1", 0, _CERT_TAG),
    "revision-counter": _Rule("1", 1),
    "superencrypted": _Rule("1", 0, _MESSAGE_TAG),
    "signature": _Rule("1", 1),
}


def parse_descriptor(data: bytes) -> UncheckedDescriptor:
    """Parse the outer document (what an HSDir receives). DecodeError for anything malformed."""
    if len(data) > MAX_DESCRIPTOR_SIZE:
        raise DecodeError(f"descriptor is {len(data)} bytes, over the {MAX_DESCRIPTOR_SIZE}-byte limit")
    what = "descriptor"
    items = _tokenize(data, what)
    if not items or items[0].keyword != "hs-descriptor" or items[-1].keyword != "signature":
        raise DecodeError(f"{what}: must start with hs-descriptor and end with signature")
    if not data.endswith(b"\n"):
        raise DecodeError(f"{what}: the signature line has no final newline")
    found = _select(items, _OUTER_RULES, what)
    if items[0].args[0] != "3":
        raise DecodeError(f"{what}: version {items[0].args[0][:8]!r}, only 3 is known")
    lifetime = _decimal(found["descriptor-lifetime"][0].args[0], "descriptor-lifetime",
                        MIN_LIFETIME, MAX_LIFETIME)
    cert = _cert(found["descriptor-signing-key-cert"][0], CertType.HS_DESC_SIGNING,
                 "descriptor-signing-key-cert")
    revision = _decimal(found["revision-counter"][0].args[0], "revision-counter", 0, 2**64 - 1)
    superencrypted = found["superencrypted"][0].obj
    assert superencrypted is not None
    signature = _b64decode(items[-1].args[0], "signature", 64)
    signed = SIGNATURE_PREFIX + data[:items[-1].offset]
    return UncheckedDescriptor(lifetime, cert, revision, superencrypted, signature, signed)


_FIRST_RULES = {
    "desc-auth-type": _Rule("1", 1),
    "desc-auth-ephemeral-key": _Rule("1", 1),
    "auth-client": _Rule("+", 3),
    "encrypted": _Rule("1", 0, _MESSAGE_TAG),
}


def parse_first_layer(plaintext: bytes) -> FirstLayer:
    """Parse the decrypted superencrypted layer, NUL padding included."""
    what = "descriptor first layer"
    found = _select(_tokenize(plaintext.rstrip(b"\0"), what), _FIRST_RULES, what)
    auth_type = found["desc-auth-type"][0].args[0]
    if auth_type != "x25519":
        raise DecodeError(f"{what}: desc-auth-type {auth_type[:16]!r}, only x25519 is known")
    ephemeral = _b64decode(found["desc-auth-ephemeral-key"][0].args[0], "desc-auth-ephemeral-key", 32)
    clients = tuple(AuthClient(_b64decode(item.args[0], "auth-client id", 8),
                               _b64decode(item.args[1], "auth-client iv", 16),
                               _b64decode(item.args[2], "auth-client cookie", 16))
                    for item in found["auth-client"])
    encrypted = found["encrypted"][0].obj
    assert encrypted is not None
    return FirstLayer(auth_type, ephemeral, clients, encrypted)


_INTRO_KEYWORDS = ("onion-key", "auth-key", "enc-key", "enc-key-cert")
_SECOND_HEADER_RULES = {
    "create2-formats": _Rule("1", 1),
    "intro-auth-required": _Rule("?", 1),
    "single-onion-service": _Rule("?"),
    **{keyword: _Rule("0") for keyword in _INTRO_KEYWORDS},
}
_INTRO_RULES = {
    "introduction-point": _Rule("1", 1),
    "onion-key": _Rule("+", 2),  # one "ntor" key; other key types may follow and are ignored
    "auth-key": _Rule("1", 0, _CERT_TAG),
    "enc-key": _Rule("+", 2),
    "enc-key-cert": _Rule("1", 0, _CERT_TAG),
    **{keyword: _Rule("0") for keyword in ("create2-formats", "intro-auth-required", "single-onion-service")},
}


def parse_second_layer(plaintext: bytes) -> SecondLayer:
    """Parse the decrypted encrypted layer. Certificates are decoded here and checked by `check_certs`."""
    what = "descriptor second layer"
    items = _tokenize(plaintext, what)
    starts = [i for i, item in enumerate(items) if item.keyword == "introduction-point"]
    if len(starts) > MAX_INTRO_POINTS:
        raise DecodeError(f"{what}: {len(starts)} introduction points, at most {MAX_INTRO_POINTS}")
    bounds = [*starts, len(items)]
    header = _select(items[:bounds[0]], _SECOND_HEADER_RULES, what)
    formats = tuple(_decimal(arg, "create2-formats", 0, 0xFFFF) for arg in header["create2-formats"][0].args)
    if CREATE2_NTOR not in formats:
        raise DecodeError(f"{what}: create2-formats lacks ntor ({CREATE2_NTOR})")
    auth_required = header["intro-auth-required"][0].args if header["intro-auth-required"] else None
    points = tuple(_parse_intro_point(items[start:end]) for start, end in itertools.pairwise(bounds))
    return SecondLayer(formats, auth_required, bool(header["single-onion-service"]), points)


def _ntor_key(items: list[_Item], what: str) -> bytes:
    ntor = [item for item in items if item.args[0] == "ntor"]
    if len(ntor) != 1:
        raise DecodeError(f"{what}: {len(ntor)} ntor keys, expected exactly one")
    return _b64decode(ntor[0].args[1], what, 32)


def _parse_intro_point(items: list[_Item]) -> IntroPointDesc:
    what = "introduction point"
    found = _select(items, _INTRO_RULES, what)
    r = Reader(_b64decode(found["introduction-point"][0].args[0], "link specifiers"), "link specifiers")
    link_specs = tuple(read_link_specs(r))
    r.expect_end()
    auth_cert = _cert(found["auth-key"][0], CertType.HS_INTRO_AUTH, "auth-key")
    enc_cert = _cert(found["enc-key-cert"][0], CertType.HS_NTOR_ENC, "enc-key-cert")
    return IntroPointDesc(link_specs, _ntor_key(found["onion-key"], "onion-key"), auth_cert.certified_key,
                          _ntor_key(found["enc-key"], "enc-key"), auth_cert, enc_cert)


# ---------------------------------------------------------------------------------------------------------
# Building


def _check_len(name: str, value: bytes, n: int) -> None:
    if len(value) != n:
        raise LocalProtocolError(f"{name} must be {n} bytes, not {len(value)}")


def _salt(rng: Rng) -> bytes:
    return hashlib.sha3_256(rng(32)).digest()[:SALT_LEN]  # 2.5.3: "16 bytes from H(random)"


def _encode_intro_point(point: IntroPointDesc, signing: Signer, expires: int) -> str:
    for name in ("onion_key", "auth_key", "enc_key"):
        _check_len(name, getattr(point, name), 32)
    auth_cert = point.auth_key_cert or make_cert(CertType.HS_INTRO_AUTH, point.auth_key, signing, expires)
    enc_cert = point.enc_key_cert or make_cert(CertType.HS_NTOR_ENC,
                                               ed25519.curve25519_to_ed25519_public(point.enc_key, 0),
                                               signing, expires)
    if auth_cert.certified_key != point.auth_key or not (
            auth_cert.signing_key == enc_cert.signing_key == signing.public_key):
        raise LocalProtocolError("intro point certificates do not match its keys and the signing key")
    return (f"introduction-point {_b64encode(encode_link_specs(point.link_specs))}\n"
            f"onion-key ntor {_b64encode(point.onion_key)}\n"
            f"auth-key\n{_armor(_CERT_TAG, auth_cert.encode())}"
            f"enc-key ntor {_b64encode(point.enc_key)}\n"
            f"enc-key-cert\n{_armor(_CERT_TAG, enc_cert.encode())}")


def encode_second_layer(intro_points: Sequence[IntroPointDesc], signing: Signer, expires: int, *,
                        single_onion: bool = False) -> bytes:
    """The second-layer plaintext, in the order and form C tor writes it."""
    if len(intro_points) > MAX_INTRO_POINTS:
        raise LocalProtocolError(f"at most {MAX_INTRO_POINTS} introduction points")
    text = f"create2-formats {CREATE2_NTOR}\n" + ("single-onion-service\n" if single_onion else "")
    return (text + "".join(_encode_intro_point(p, signing, expires) for p in intro_points)).encode("ascii")


def encode_first_layer(encrypted: bytes, rng: Rng) -> bytes:
    """The first-layer plaintext with a fresh unused ephemeral key and 16 fake auth-client lines (no client
    authorization), NUL-padded to a multiple of 10000 bytes. Like C tor, no newline after the END line."""
    ephemeral = X25519PrivateKey.from_private_bytes(rng(32)).public_key().public_bytes_raw()
    clients = "".join(f"auth-client {_b64encode(rng(8), pad=False)} {_b64encode(rng(16), pad=False)} "
                      f"{_b64encode(rng(16), pad=False)}\n" for _ in range(FAKE_AUTH_CLIENTS))
    text = (f"desc-auth-type x25519\ndesc-auth-ephemeral-key {_b64encode(ephemeral)}\n{clients}"
            f"encrypted\n{_armor(_MESSAGE_TAG, encrypted)}").rstrip("\n").encode("ascii")
    return text + bytes(-len(text) % SUPERENCRYPTED_PAD_MULTIPLE)


def encode_outer_body(lifetime_minutes: int, signing_key_cert: Ed25519Cert, revision_counter: int,
                      superencrypted: bytes) -> bytes:
    """The outer document up to (not including) its "signature" line: what the signature covers."""
    return (f"hs-descriptor 3\ndescriptor-lifetime {lifetime_minutes}\n"
            f"descriptor-signing-key-cert\n{_armor(_CERT_TAG, signing_key_cert.encode())}"
            f"revision-counter {revision_counter}\nsuperencrypted\n{_armor(_MESSAGE_TAG, superencrypted)}"
            ).encode("ascii")


def build_descriptor(*, identity: Signer, blinded: Signer, signing: Signer, subcredential: bytes,
                     revision_counter: int, intro_points: Sequence[IntroPointDesc], now: int,
                     lifetime_minutes: int = 180, rng: Rng, single_onion: bool = False) -> bytes:
    """The signed outer document (ASCII bytes) for one time period.

    `blinded` is the period's blinded identity key, `signing` the descriptor signing key it certifies for
    54 hours from `now`. `identity` only guards against a subcredential from another service or period.
    """
    if subcredential != compute_subcredential(identity.public_key, blinded.public_key):
        raise LocalProtocolError("subcredential does not belong to this identity and blinded key")
    if not MIN_LIFETIME <= lifetime_minutes <= MAX_LIFETIME:
        raise LocalProtocolError(f"descriptor lifetime must be {MIN_LIFETIME}..{MAX_LIFETIME} minutes")
    if not 0 <= revision_counter < 2**64:
        raise LocalProtocolError("revision counter must fit in 64 bits")
    expires = now + CERT_LIFETIME
    keys = {"secret_data": blinded.public_key, "subcredential": subcredential,
            "revision_counter": revision_counter}
    second = encode_second_layer(intro_points, signing, expires, single_onion=single_onion)
    inner = encrypt_layer(second, constant=ENCRYPTED_CONSTANT, salt=_salt(rng), **keys)
    outer = encrypt_layer(encode_first_layer(inner, rng), constant=SUPERENCRYPTED_CONSTANT, salt=_salt(rng),
                          **keys)
    cert = make_cert(CertType.HS_DESC_SIGNING, signing.public_key, blinded, expires)
    body = encode_outer_body(lifetime_minutes, cert, revision_counter, outer)
    signature = signing.sign(SIGNATURE_PREFIX + body)
    document = body + f"signature {_b64encode(signature, pad=False)}\n".encode()
    if len(document) > MAX_DESCRIPTOR_SIZE:
        raise LocalProtocolError(f"descriptor is {len(document)} bytes, over {MAX_DESCRIPTOR_SIZE}")
    return document
