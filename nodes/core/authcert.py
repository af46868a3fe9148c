"""v3 directory authority key certificates (dir-spec 3.1, "dir-key-certificate-version 3").

An authority has a long-term RSA identity key (its fingerprint, the "v3ident", is what clients are configured
with) and a medium-term RSA signing key that signs votes and consensuses. The certificate binds the two:

    dir-key-certificate-version 3            at start, exactly once
    [dir-address IP:PORT]                    at most once
    fingerprint HEX                          exactly once: SHA-1 of the identity key's PKCS#1 DER, upper hex
    dir-key-published YYYY-MM-DD HH:MM:SS    exactly once
    dir-key-expires YYYY-MM-DD HH:MM:SS      exactly once
    dir-identity-key + RSA PUBLIC KEY        exactly once, no arguments
    dir-signing-key + RSA PUBLIC KEY         exactly once, no arguments
    dir-key-crosscert + ID SIGNATURE         exactly once, no arguments: the SIGNING key's signature of
                                             SHA-1(identity key DER) (the object may be typed SIGNATURE too)
    dir-key-certification + SIGNATURE        at end, exactly once, no arguments: the IDENTITY key's signature
                                             of SHA-1 over the document from its start through the newline of
                                             "dir-key-certification"

Signatures are PKCS#1 v1.5 over the raw digest (tor_rsa). Unknown keywords are ignored (dir-spec 1.2), the
multiplicities above are enforced as C tor's authcert_parse.c enforces them. Keys of 1024 to 8192 bits are
accepted (dir-spec: at least 1024; C tor sets no upper bound, we bound the work a certificate can cost).

`parse_authority_certs` reads a concatenation (what /tor/keys/... serves) into `UncheckedAuthorityCert`s;
only `.check(now)` (both signatures, fingerprint, expiry) gives an `AuthorityCert` to act on.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from . import netdoc, tor_rsa
from .errors import DecodeError, ExpiredError, LocalProtocolError, SignatureError

MIN_KEY_BITS, MAX_KEY_BITS = 1024, 8192
MAX_CERT_BYTES = 128 * 1024  # C tor's MAX_CERT_SIZE
MAX_TIME = 253402300799  # 9999-12-31 23:59:59, the last time dir-spec's format can write
DEFAULT_MAX_SKEW = 3600  # how far in our future a certificate's dir-key-published may lie

_HEX = frozenset("0123456789abcdefABCDEF")
_FIRST = "dir-key-certificate-version"
_LAST = "dir-key-certification"
# keyword -> (min count, max count, arguments allowed, object type wanted or None for no object)
_RULES: dict[str, tuple[int, int, bool, str | None]] = {
    _FIRST: (1, 1, True, None),
    "dir-address": (0, 1, True, None),
    "fingerprint": (1, 1, True, None),
    "dir-key-published": (1, 1, True, None),
    "dir-key-expires": (1, 1, True, None),
    "dir-identity-key": (1, 1, False, "RSA PUBLIC KEY"),
    "dir-signing-key": (1, 1, False, "RSA PUBLIC KEY"),
    "dir-key-crosscert": (1, 1, False, "ID SIGNATURE"),
    _LAST: (1, 1, False, "SIGNATURE"),
}


def _check_time(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_TIME:
        raise LocalProtocolError(f"{name} must be Unix seconds in [0, {MAX_TIME}], got {value!r}")
    return value


def _key_bits(key: RSAPublicKey) -> int:
    return key.key_size


@dataclass(frozen=True, slots=True)
class AuthorityCert:
    """A certificate whose signatures and dates are checked (or that we made). `raw` is its exact text."""

    raw: bytes
    v3ident: bytes  # SHA-1 of the identity key's DER: the authority's v3 identity
    signing_key_digest: bytes  # SHA-1 of the signing key's DER (named in directory-signature lines)
    published: int
    expires: int
    address: tuple[str, int] | None
    identity_key: RSAPublicKey = field(compare=False, repr=False)
    signing_key: RSAPublicKey = field(compare=False, repr=False)

    def encode(self) -> bytes:
        return self.raw


def _signed_part(raw: bytes) -> bytes:
    """From the start through the newline that ends the "dir-key-certification" line (C tor's range)."""
    at = raw.find(b"\n" + _LAST.encode())
    end = raw.find(b"\n", at + 1) if at >= 0 else -1
    if end < 0:
        raise DecodeError("authority certificate: no dir-key-certification line")
    return raw[: end + 1]


def make_authority_cert(identity: RSAPrivateKey, signing: RSAPrivateKey, published: int, expires: int, *,
                        address: tuple[str, int] | None = None) -> AuthorityCert:
    """Build and sign a certificate (same item order as C tor's tor-gencert)."""
    _check_time("published", published)
    _check_time("expires", expires)
    if expires <= published:
        raise LocalProtocolError(f"expires ({expires}) must be after published ({published})")
    for name, key in (("identity", identity), ("signing", signing)):
        if not isinstance(key, RSAPrivateKey) or not MIN_KEY_BITS <= key.key_size <= MAX_KEY_BITS:
            raise LocalProtocolError(f"the {name} key must be an RSA key of {MIN_KEY_BITS}-{MAX_KEY_BITS} "
                                     "bits")
    identity_pub, signing_pub = identity.public_key(), signing.public_key()
    v3ident = tor_rsa.fingerprint(identity_pub)
    lines = [f"{_FIRST} 3\n"]
    if address is not None:
        ip, port = address
        if not _is_ipv4(ip) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise LocalProtocolError(f"address must be (IPv4, port 1-65535), got {address!r}")
        lines.append(f"dir-address {ip}:{port}\n")
    lines += [
        f"fingerprint {v3ident.hex().upper()}\n",
        f"dir-key-published {netdoc.format_time(published)}\n",
        f"dir-key-expires {netdoc.format_time(expires)}\n",
        "dir-identity-key\n", tor_rsa.public_pem(identity_pub),
        "dir-signing-key\n", tor_rsa.public_pem(signing_pub),
        "dir-key-crosscert\n", tor_rsa.pem("ID SIGNATURE", tor_rsa.sign_digest(signing, v3ident)),
        f"{_LAST}\n",
    ]
    signed = "".join(lines).encode("ascii")
    certification = tor_rsa.sign_digest(identity, hashlib.sha1(signed).digest())
    raw = signed + tor_rsa.pem("SIGNATURE", certification).encode("ascii")
    return AuthorityCert(raw, v3ident, tor_rsa.fingerprint(signing_pub), published, expires, address,
                         identity_pub, signing_pub)


def _is_ipv4(text: object) -> bool:
    if not isinstance(text, str):
        return False
    try:
        return str(ipaddress.IPv4Address(text)) == text
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class UncheckedAuthorityCert:
    """A parsed certificate; nothing in it is trusted until `check`."""

    unchecked: AuthorityCert
    _certification: bytes = field(repr=False)
    _crosscert: bytes = field(repr=False)
    _declared_fingerprint: bytes = field(repr=False)

    @property
    def v3ident(self) -> bytes:
        """The identity the certificate claims (SHA-1 of its identity key): unverified."""
        return self.unchecked.v3ident

    def check(self, now: int, *, max_skew: int = DEFAULT_MAX_SKEW) -> AuthorityCert:
        """The declared fingerprint must be the identity key's; the identity key must have certified the
        document and the signing key must have cross-certified the identity; now <= dir-key-expires and the
        certificate was not published more than max_skew seconds in our future."""
        c = self.unchecked
        if self._declared_fingerprint != c.v3ident:
            raise SignatureError("authority certificate: fingerprint is not the identity key's digest")
        tor_rsa.verify_digest(c.identity_key, self._certification, hashlib.sha1(_signed_part(c.raw)).digest(),
                              "authority certificate: dir-key-certification")
        tor_rsa.verify_digest(c.signing_key, self._crosscert, c.v3ident,
                              "authority certificate: dir-key-crosscert")
        if now > c.expires:
            raise ExpiredError(f"authority certificate {c.v3ident.hex().upper()} expired at "
                               f"{netdoc.format_time(c.expires)}")
        if c.published > now + max_skew:
            raise ExpiredError(f"authority certificate {c.v3ident.hex().upper()} published "
                               f"{c.published - now} s in the future")
        return c


def _load_key(item: netdoc.Item, what: str) -> RSAPublicKey:
    key = tor_rsa.load_public_der(item.object("RSA PUBLIC KEY", what), what)
    if not MIN_KEY_BITS <= _key_bits(key) <= MAX_KEY_BITS:
        raise DecodeError(f"{what}: a {_key_bits(key)}-bit key, need {MIN_KEY_BITS}-{MAX_KEY_BITS}")
    return key


def _parse_cert(raw: bytes, items: list[netdoc.Item]) -> UncheckedAuthorityCert:
    what = "authority certificate"
    if len(raw) > MAX_CERT_BYTES:
        raise DecodeError(f"{what}: {len(raw)} bytes, at most {MAX_CERT_BYTES}")
    doc = netdoc.Items(items, what)
    for keyword, (lo, hi, args_ok, obj) in _RULES.items():
        found = doc.all(keyword)
        if not lo <= len(found) <= hi:
            raise DecodeError(f"{what}: {keyword} must appear {lo}-{hi} times, found {len(found)}")
        for it in found:
            if it.args and not args_ok:
                raise DecodeError(f"{what}: {keyword} takes no arguments")
            if obj is None and it.object_type is not None:
                raise DecodeError(f"{what}: unexpected object after {keyword}")
    if items[0].keyword != _FIRST or items[0].args[:1] != ("3",):
        raise DecodeError(f"{what}: does not begin with {_FIRST} 3")
    if items[-1].keyword != _LAST:
        raise DecodeError(f"{what}: does not end with {_LAST}")
    for it in doc.all("fingerprint"), doc.all("dir-key-published"), doc.all("dir-key-expires"):
        if not it[0].args:
            raise DecodeError(f"{what}: {it[0].keyword} needs an argument")
    declared = _hex20(doc.one("fingerprint"), what)
    published = _parse_time(doc.one("dir-key-published"), what)
    expires = _parse_time(doc.one("dir-key-expires"), what)
    identity = _load_key(doc.one("dir-identity-key"), f"{what}: dir-identity-key")
    signing = _load_key(doc.one("dir-signing-key"), f"{what}: dir-signing-key")
    cross = doc.one("dir-key-crosscert")
    if cross.object_type not in ("ID SIGNATURE", "SIGNATURE"):
        raise DecodeError(f"{what}: dir-key-crosscert needs an ID SIGNATURE object")
    address = None
    if (addr := doc.optional("dir-address")) is not None:
        ip, sep, port = addr.arg(0, what).rpartition(":")
        if not sep or not _is_ipv4(ip) or not port.isdigit() or len(port) > 5 or not 0 < int(port) <= 65535:
            raise DecodeError(f"{what}: bad dir-address {addr.arg(0, what)[:40]!r}")
        address = (ip, int(port))
    cert = AuthorityCert(raw, tor_rsa.fingerprint(identity), tor_rsa.fingerprint(signing), published, expires,
                         address, identity, signing)
    return UncheckedAuthorityCert(cert, doc.one(_LAST).object("SIGNATURE", what), cross.object_data or b"",
                                  declared)


def _hex20(item: netdoc.Item, what: str) -> bytes:
    """C tor takes the whole line and decodes it as 40 hex digits: nothing else may follow."""
    if len(item.args) != 1 or len(item.args[0]) != 40 or not all(c in _HEX for c in item.args[0]):
        raise DecodeError(f"{what}: {item.keyword} is not 40 hex digits")
    return bytes.fromhex(item.args[0])


def _parse_time(item: netdoc.Item, what: str) -> int:
    if len(item.args) != 2:
        raise DecodeError(f"{what}: {item.keyword} needs YYYY-MM-DD HH:MM:SS")
    value = netdoc.parse_time(item.args[0], item.args[1], f"{what}: {item.keyword}")
    if not 0 <= value <= MAX_TIME:
        raise DecodeError(f"{what}: {item.keyword} before 1970")
    return value


def parse_authority_certs(data: bytes) -> list[UncheckedAuthorityCert]:
    """Every certificate of a concatenation (each begins with dir-key-certificate-version and ends with its
    dir-key-certification object). Empty input gives an empty list; anything else malformed is a
    DecodeError, so one bad certificate spoils the batch, as in C tor."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError("authority certificates: not bytes")
    data = bytes(data)
    items = netdoc.parse_items(data, "authority certificates")
    certs = []
    start = 0
    while start < len(items):
        if items[start].keyword != _FIRST:
            raise DecodeError("authority certificates: a certificate must begin with "
                              f"{_FIRST}, found {items[start].keyword[:40]!r}")
        end = start + 1
        while end < len(items) and items[end - 1].keyword != _LAST:
            if items[end].keyword == _FIRST:
                break
            end += 1
        chunk = items[start:end]
        base = chunk[0].start
        raw = data[base:chunk[-1].end]
        rebased = [netdoc.Item(i.keyword, i.args, i.object_type, i.object_data, i.start - base, i.end - base)
                   for i in chunk]
        certs.append(_parse_cert(raw, rebased))
        start = end
    return certs


def parse_authority_cert(data: bytes) -> UncheckedAuthorityCert:
    """Exactly one certificate."""
    certs = parse_authority_certs(data)
    if len(certs) != 1:
        raise DecodeError(f"authority certificate: expected one certificate, found {len(certs)}")
    return certs[0]
