"""Relay server descriptors exactly as dir-spec 2.1.1 defines them (what a relay uploads to the authorities).

    router NICKNAME ADDRESS ORPORT 0 DIRPORT          first item
    identity-ed25519 + ED25519 CERT (type 04)          second item: the master identity key certifies the
                                                       signing key, and names itself in the signed-with-key
                                                       extension
    master-key-ed25519 KEY                             must equal the key in that extension
    platform, proto, published, fingerprint, uptime, bandwidth AVG BURST OBSERVED
    [onion-key + RSA PUBLIC KEY]                       the obsolete TAP key (optional since 0.4.9, see below)
    signing-key + RSA PUBLIC KEY                       the RSA-1024 identity: node ID = SHA-1 of its DER
    [onion-key-crosscert + CROSSCERT]                  only with onion-key: RSA(onion key) over ID | master
    ntor-onion-key-crosscert BIT + ED25519 CERT (0A)   the ntor key, as an Ed25519 key with sign BIT,
                                                       certifies the master identity key
    hidden-service-dir, ntor-onion-key KEY, reject *:*, tunnelled-dir-server
    router-sig-ed25519 SIG                             next to last: Ed25519 (signing key) over SHA-256 of
                                                       "Tor router descriptor signature v1" | the document
                                                       through "router-sig-ed25519 "
    router-signature + SIGNATURE                       last: RSA (identity) over SHA-1 of the document
                                                       through "router-signature\\n"; that SHA-1 is the
                                                       descriptor's digest

Parsing follows C tor 0.4.9's router_parse_entry_from_string (routerparse.c): the same keyword table
(multiplicities, argument counts, objects), unknown keywords ignored, extra blank lines at the end
tolerated, annotations (`@...`) refused as for an upload. `parse_server_descriptor` returns an
`UncheckedServerDescriptor`; only `.check(now, max_age=, max_skew=)` gives a `ServerDescriptor`, after every
signature, certificate, cross-certificate and the publication time have been verified.

The TAP onion key: C tor 0.4.9 parses descriptors without one (proposal 350), but its authorities still
refuse them on upload ("Missing TAP key in descriptor", process_descs.c dirserv_add_descriptor) and make no
microdescriptor for them (dirvote.c dirvote_create_microdescriptor). `make_server_descriptor` therefore
takes an optional `tap_onion_key`: a dummy RSA-1024 key nobody uses (C tor's "publish-dummy-tap-key" idea),
which a relay that wants C tor authorities to list it must pass.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from . import ed25519, netdoc, tor_rsa
from .certs import CertType, Ed25519Cert, make_cert
from .ed25519 import Signer
from .errors import CryptoError, DecodeError, ExpiredError, LocalProtocolError, SignatureError
from .netdoc import ANY_NUMBER, Item, Obj, Rule

SIGNATURE_PREFIX = b"Tor router descriptor signature v1"  # routerparse.h ED_DESC_SIGNATURE_PREFIX
MAX_DESCRIPTOR_SIZE = 20_000  # dir-spec 2.1; C tor's MAX_DESCRIPTOR_UPLOAD_SIZE
MAX_NICKNAME_LEN = 19
RSA_BITS = 1024
RSA_EXPONENT = 65537
ONION_KEY_LIFETIME = 28 * 86400  # C tor's default onion-key-rotation-days: the ntor cross-cert's lifetime
FAMILY_V_IDENTITY = 0x0C  # cert-spec A.1 / proposal 321: a family key certifies a relay's identity key
CURVE25519_TO_ED25519_PREFIX = b"Derive high part of ed25519 key from curve25519 key\0"  # dir-spec app. C
# What a C tor 0.4.9 authority accepts (process_descs.c): published at most 24 h ago, at most 12 h ahead.
TOR_MAX_AGE = 24 * 3600  # ROUTER_MAX_AGE_TO_PUBLISH
TOR_MAX_SKEW = 12 * 3600  # ROUTER_ALLOW_SKEW

_CERT, _RSA_KEY, _SIGNATURE, _CROSSCERT = "ED25519 CERT", "RSA PUBLIC KEY", "SIGNATURE", "CROSSCERT"
_NICKNAME = re.compile(r"[A-Za-z0-9]{1,19}")
_HEXDIGEST = re.compile(r"\$?[0-9A-Fa-f]{40}(?:[=~][A-Za-z0-9]{1,19})?")
_PORTS = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?")
_PROTO = re.compile(r"(?:[A-Za-z0-9-]+=(?:\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*)?)(?: [A-Za-z0-9-]+="
                    r"(?:\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*)?)*")
_LINE_TEXT = re.compile(r"[\x20-\x7e]*")

WHAT = "server descriptor"


def _rule(keyword: str, count: tuple[int, int | None], args: tuple[int, int | None] = (0, None),
          obj: str = Obj.NONE, object_type: str | None = None) -> Rule:
    return Rule(keyword, count[0], count[1], args[0], args[1], obj, object_type)


_ONCE, _AT_MOST_ONCE, _ANY = (1, 1), (0, 1), (0, ANY_NUMBER)
_NO_ARGS = (0, 0)
_ARGS = (0, None)  # C tor's ARGS, and CONCAT_ARGS (its one argument is the rest of the line: Item.rest)

# C tor 0.4.9's routerdesc_token_table (routerparse.c), keyword by keyword.
RULES = (
    _rule("router", _ONCE, (5, None)),
    _rule("identity-ed25519", _ONCE, _NO_ARGS, Obj.NEEDED, _CERT),
    _rule("master-key-ed25519", _ONCE, (1, None)),
    _rule("bandwidth", _ONCE, (3, None)),
    _rule("platform", _AT_MOST_ONCE, _ARGS),
    _rule("proto", _ONCE, _ARGS),
    _rule("published", _ONCE, _ARGS),
    _rule("fingerprint", _AT_MOST_ONCE, _ARGS),
    _rule("hibernating", _AT_MOST_ONCE, (1, None)),
    _rule("uptime", _AT_MOST_ONCE, (1, None)),
    _rule("onion-key", _AT_MOST_ONCE, _NO_ARGS, Obj.NEEDED, _RSA_KEY),
    _rule("onion-key-crosscert", _AT_MOST_ONCE, _NO_ARGS, Obj.NEEDED, _CROSSCERT),
    _rule("ntor-onion-key", _ONCE, (1, None)),
    _rule("ntor-onion-key-crosscert", _ONCE, (1, 1), Obj.NEEDED, _CERT),
    _rule("signing-key", _ONCE, _NO_ARGS, Obj.NEEDED, _RSA_KEY),
    _rule("accept", _ANY), _rule("reject", _ANY), _rule("accept6", _ANY), _rule("reject6", _ANY),
    _rule("ipv6-policy", _AT_MOST_ONCE, _ARGS),
    _rule("router-sig-ed25519", _ONCE, (1, None)),
    _rule("router-signature", _ONCE, _NO_ARGS, Obj.NEEDED, _SIGNATURE),
    _rule("contact", _AT_MOST_ONCE, _ARGS),
    _rule("read-history", _AT_MOST_ONCE), _rule("write-history", _AT_MOST_ONCE),
    _rule("extra-info-digest", _AT_MOST_ONCE, (1, None)),
    _rule("hidden-service-dir", _AT_MOST_ONCE, _NO_ARGS),
    _rule("allow-single-hop-exits", _AT_MOST_ONCE, _NO_ARGS),
    _rule("family", _AT_MOST_ONCE),
    _rule("family-cert", _ANY, _ARGS, Obj.NEEDED),
    _rule("caches-extra-info", _AT_MOST_ONCE, _NO_ARGS),
    _rule("or-address", _ANY, (1, None)),
    _rule("tunnelled-dir-server", _AT_MOST_ONCE, _NO_ARGS),
)


# ---------------------------------------------------------------------------------------------------------
# Documents


@dataclass(frozen=True, slots=True)
class ServerDescriptor:
    """A verified server descriptor. Only `UncheckedServerDescriptor.check` and `make_server_descriptor`
    make these; `raw` is the exact document (without extra blank lines at its end)."""

    nickname: str
    address: str
    or_port: int
    dir_port: int
    # The RSA keys as their PKCS#1 DER, not as key objects: an authority holds every relay's descriptor, and
    # a loaded RSA-1024 public key costs 780 B of OpenSSL heap against 140 B of DER (docs/scale.md).
    rsa_identity_der: bytes
    ed25519_identity: bytes  # the master identity key (KP_relayid_ed)
    signing_cert: Ed25519Cert  # type 04: the master key certifies the medium-term signing key
    ntor_onion_key: bytes
    bandwidth_avg: int
    bandwidth_burst: int
    bandwidth_observed: int
    platform: str
    proto: str
    published: int
    hidden_service_dir: bool
    uptime: int
    raw: bytes
    ntor_crosscert: Ed25519Cert  # type 0A: the ntor key (as Ed25519) certifies the master identity key
    ntor_crosscert_sign_bit: int
    tap_onion_key_der: bytes | None = None
    family: tuple[str, ...] = ()  # the declared "family" line, as written
    family_ids: tuple[str, ...] = ()  # "ed25519:KEY" of every verified family-cert, sorted, unique
    exit_policy: tuple[str, ...] = ("reject *:*",)  # the accept/reject lines in order
    ipv6_policy: str | None = None
    tunnelled_dir_server: bool = False  # as C tor reads it: the tunnelled-dir-server line, or a DirPort
    hibernating: bool = False
    contact: str | None = None

    @property
    def node_id(self) -> bytes:
        """The 20-byte relay ID: SHA-1 of the DER-encoded RSA identity key."""
        return hashlib.sha1(self.rsa_identity_der).digest()

    @property
    def rsa_identity(self) -> RSAPublicKey:
        """The RSA identity key, loaded on each call (nothing on a node's paths needs it after the check)."""
        return tor_rsa.load_public_der(self.rsa_identity_der, f"{WHAT}: signing-key")

    @property
    def tap_onion_key(self) -> RSAPublicKey | None:
        """The TAP onion key, loaded on each call; None when the descriptor has none."""
        if self.tap_onion_key_der is None:
            return None
        return tor_rsa.load_public_der(self.tap_onion_key_der, f"{WHAT}: onion-key")

    @property
    def signing_key(self) -> bytes:
        """The medium-term Ed25519 signing key (what router-sig-ed25519 is made with)."""
        return self.signing_cert.certified_key

    @property
    def digest(self) -> bytes:
        """dir-spec 1.3's digest: SHA-1 from "router " through the newline after "router-signature"."""
        return hashlib.sha1(self.raw[:_rsa_signed_end(self.raw)]).digest()

    @property
    def expires(self) -> int:
        """When the first of the descriptor's certificates expires (C tor's cert_expiration_time)."""
        return min(self.signing_cert.expires, self.ntor_crosscert.expires)

    @property
    def policy_is_reject_star(self) -> bool:
        """True when the relay exits to no IPv4 address (C tor's policy_is_reject_star(AF_INET))."""
        return _policy_is_reject_star(self.exit_policy)


@dataclass(frozen=True, slots=True)
class UncheckedServerDescriptor:
    """A server descriptor that parsed but whose signatures, keys and times nobody has checked yet."""

    nickname: str
    address: str
    or_port: int
    dir_port: int
    rsa_identity: RSAPublicKey
    master_key: bytes  # the master-key-ed25519 line
    signing_cert: Ed25519Cert
    ntor_onion_key: bytes
    ntor_crosscert: Ed25519Cert
    ntor_crosscert_sign_bit: int
    bandwidth_avg: int
    bandwidth_burst: int
    bandwidth_observed: int
    platform: str
    proto: str
    published: int
    hidden_service_dir: bool
    uptime: int
    raw: bytes
    ed25519_signature: bytes
    rsa_signature: bytes
    fingerprint: bytes | None
    tap_onion_key: RSAPublicKey | None
    tap_crosscert: bytes | None
    family: tuple[str, ...]
    family_certs: tuple[Ed25519Cert, ...]
    exit_policy: tuple[str, ...]
    ipv6_policy: str | None
    tunnelled_dir_server: bool
    hibernating: bool
    contact: str | None

    def check(self, now: int, *, max_age: int, max_skew: int) -> ServerDescriptor:
        """Verify everything and return the descriptor.

        SignatureError: a signature, certificate or cross-certificate that does not verify, or keys that do
        not belong together (master-key-ed25519, the fingerprint line, what the cross-certificates certify).
        ExpiredError: a certificate expired at `now`, or published outside [now - max_age, now + max_skew]
        (C tor's authorities use TOR_MAX_AGE and TOR_MAX_SKEW).
        """
        master = self.signing_cert.signing_key
        if master != self.master_key:
            raise SignatureError(f"{WHAT}: master-key-ed25519 is not the key that signed identity-ed25519")
        try:
            ed25519.check_public_key(master)
        except CryptoError as exc:
            raise SignatureError(f"{WHAT}: master identity key: {exc}") from None
        self.signing_cert.check(now, master)
        if self.ntor_crosscert.certified_key != master:
            raise SignatureError(f"{WHAT}: ntor-onion-key-crosscert certifies another identity key")
        try:
            ntor_ed = ed25519.curve25519_to_ed25519_public(self.ntor_onion_key, self.ntor_crosscert_sign_bit)
        except CryptoError as exc:
            raise SignatureError(f"{WHAT}: ntor-onion-key has no Ed25519 form: {exc}") from None
        self.ntor_crosscert.check(now, ntor_ed)
        body_end = _ed25519_signed_end(self.raw)
        digest = hashlib.sha256(SIGNATURE_PREFIX + self.raw[:body_end]).digest()
        ed25519.verify(self.signing_cert.certified_key, digest, self.ed25519_signature)
        tor_rsa.verify_digest(self.rsa_identity, self.rsa_signature,
                              hashlib.sha1(self.raw[:_rsa_signed_end(self.raw)]).digest(),
                              f"{WHAT}: router-signature")
        node_id = tor_rsa.fingerprint(self.rsa_identity)
        if self.fingerprint is not None and self.fingerprint != node_id:
            raise SignatureError(f"{WHAT}: fingerprint line does not match the signing-key")
        if self.tap_onion_key is not None and self.tap_crosscert is not None:
            signed = tor_rsa.recover_signed_data(self.tap_onion_key, self.tap_crosscert,
                                                 f"{WHAT}: onion-key-crosscert")
            if signed[:52] != node_id + master:  # dir-spec: extra data beyond the 52 bytes is allowed
                raise SignatureError(f"{WHAT}: onion-key-crosscert does not certify this relay's identities")
        family_ids = sorted({_check_family_cert(cert, master) for cert in self.family_certs})
        if self.published < now - max_age:
            raise ExpiredError(f"{WHAT}: published {now - self.published} s ago, at most {max_age} accepted")
        if self.published > now + max_skew:
            raise ExpiredError(f"{WHAT}: published {self.published - now} s in the future, "
                               f"at most {max_skew} accepted")
        return ServerDescriptor(
            nickname=self.nickname, address=self.address, or_port=self.or_port, dir_port=self.dir_port,
            rsa_identity_der=tor_rsa.public_der(self.rsa_identity), ed25519_identity=master,
            signing_cert=self.signing_cert,
            ntor_onion_key=self.ntor_onion_key, bandwidth_avg=self.bandwidth_avg,
            bandwidth_burst=self.bandwidth_burst, bandwidth_observed=self.bandwidth_observed,
            platform=self.platform, proto=self.proto, published=self.published,
            hidden_service_dir=self.hidden_service_dir, uptime=self.uptime, raw=self.raw,
            ntor_crosscert=self.ntor_crosscert, ntor_crosscert_sign_bit=self.ntor_crosscert_sign_bit,
            tap_onion_key_der=None if self.tap_onion_key is None else tor_rsa.public_der(self.tap_onion_key),
            family=self.family, family_ids=tuple(family_ids),
            exit_policy=self.exit_policy, ipv6_policy=self.ipv6_policy,
            tunnelled_dir_server=self.tunnelled_dir_server, hibernating=self.hibernating,
            contact=self.contact)


def _check_family_cert(cert: Ed25519Cert, master: bytes) -> str:
    """A family-cert (type 0C, proposal 321) as C tor checks it: signed by the family key it names, over
    this relay's identity; its expiry is not checked here (C tor checks it with "now" 0 too)."""
    if cert.cert_type != FAMILY_V_IDENTITY or cert.signing_key is None:
        raise SignatureError(f"{WHAT}: family-cert is not a type 0C certificate naming its family key")
    if cert.certified_key != master:
        raise SignatureError(f"{WHAT}: family-cert certifies another identity key")
    ed25519.verify(cert.signing_key, cert.signed_part(), cert.signature)
    return "ed25519:" + netdoc.b64encode_unpadded(cert.signing_key)


# ---------------------------------------------------------------------------------------------------------
# Signed ranges (found the way C tor finds them: routerparse.c / sigcommon.c router_get_hash_impl_helper)


def _signed_end(raw: bytes, marker: bytes, end_char: bytes) -> int:
    """Offset just past the first `end_char` after the first `marker`: where a signed range ends."""
    at = raw.find(marker)
    if at < 0:
        raise DecodeError(f"{WHAT}: no {marker.decode().strip()!r} line")
    stop = raw.find(end_char, at + len(marker))
    if stop < 0:
        raise DecodeError(f"{WHAT}: {marker.decode().strip()!r} line does not end")
    return stop + 1


def _rsa_signed_end(raw: bytes) -> int:
    return _signed_end(raw, b"\nrouter-signature", b"\n")


def _ed25519_signed_end(raw: bytes) -> int:
    return _signed_end(raw, b"\nrouter-sig-ed25519", b" ")


# ---------------------------------------------------------------------------------------------------------
# Parsing


def split_upload(body: bytes) -> tuple[bytes, int]:
    """A relay's `POST /tor/` body: (its server descriptor, how many extra-info documents followed it).

    C tor uploads its descriptor and its extra-info document in one body (router.c
    router_upload_dir_desc_to_dirservers), and its authorities take every document of the body
    (dirserv_add_multiple_descriptors). We publish no extra-info, so those are only counted.
    """
    at = body.find(b"\nextra-info ")
    if at < 0:
        return body, 0
    return body[:at + 1], body.count(b"\nextra-info ")


def parse_server_descriptor(data: bytes) -> UncheckedServerDescriptor:
    """Parse one server descriptor (as uploaded to /tor/ or served from /tor/server/...); nothing checked.

    DecodeError for anything C tor's parser refuses before checking signatures: the meta-format, the
    keyword table, item positions, malformed values, a descriptor over 20,000 bytes.
    """
    raw = netdoc.trim_trailing_newlines(bytes(data))
    if len(raw) > MAX_DESCRIPTOR_SIZE:
        raise DecodeError(f"{WHAT}: {len(raw)} bytes, at most {MAX_DESCRIPTOR_SIZE}")
    if not raw.startswith(b"router "):
        raise DecodeError(f"{WHAT}: does not start with a router line")
    parsed = netdoc.parse_items(raw, WHAT)
    items = netdoc.check_rules(parsed, RULES, WHAT)
    if len(parsed) < 4:
        raise DecodeError(f"{WHAT}: impossibly short")
    if parsed[1].keyword != "identity-ed25519":
        raise DecodeError(f"{WHAT}: identity-ed25519 must be the second item")
    if parsed[-2].keyword != "router-sig-ed25519":
        raise DecodeError(f"{WHAT}: router-sig-ed25519 must be the next-to-last item")
    if parsed[-1].keyword != "router-signature":
        raise DecodeError(f"{WHAT}: router-signature must be the last item")
    if b"\nproto " not in raw:  # C tor drops descriptors without a literal "proto" line as obsolete
        raise DecodeError(f"{WHAT}: no proto line")
    # The signed ranges must end on the signature items themselves, not on a look-alike before them.
    ed_item, sig_item = parsed[-2], parsed[-1]
    if _ed25519_signed_end(raw) != ed_item.start + len(b"router-sig-ed25519 "):
        raise DecodeError(f"{WHAT}: router-sig-ed25519 is not where its signed range ends")
    if _rsa_signed_end(raw) != sig_item.start + len(b"router-signature\n"):
        raise DecodeError(f"{WHAT}: router-signature is not where its signed range ends")

    router = parsed[0]
    nickname, address = router.args[0], router.args[1]
    if not _NICKNAME.fullmatch(nickname):
        raise DecodeError(f"{WHAT}: nickname {nickname[:30]!r} is not 1-19 letters and digits")
    _check_ipv4(address)
    or_port = netdoc.parse_int(router.args[2], f"{WHAT}: ORPort", 0, 65535)
    dir_port = netdoc.parse_int(router.args[4], f"{WHAT}: DirPort", 0, 65535)
    if or_port == 0:
        raise DecodeError(f"{WHAT}: ORPort is 0")

    bandwidth = items.one("bandwidth").args
    bw_avg = netdoc.parse_int(bandwidth[0], f"{WHAT}: bandwidth-avg", 1, 2**31 - 1)
    bw_burst = netdoc.parse_int(bandwidth[1], f"{WHAT}: bandwidth-burst", 0, 2**31 - 1)
    bw_observed = netdoc.parse_int(bandwidth[2], f"{WHAT}: bandwidth-observed", 0, 2**31 - 1)

    uptime_item = items.optional("uptime")
    uptime = netdoc.parse_int(uptime_item.args[0], f"{WHAT}: uptime", 0) if uptime_item else 0
    hibernating_item = items.optional("hibernating")
    # C tor reads the number leniently (tor_parse_long without a check): anything but a non-zero number is 0
    hibernating = bool(hibernating_item and re.fullmatch(r"\d+", hibernating_item.args[0])
                       and int(hibernating_item.args[0]) != 0)
    published_item = items.one("published")
    if len(published_item.args) != 2:
        raise DecodeError(f"{WHAT}: published must be YYYY-MM-DD HH:MM:SS")
    published = netdoc.parse_time(*published_item.args, f"{WHAT}: published")

    tap_key_item, tap_cc_item = items.optional("onion-key"), items.optional("onion-key-crosscert")
    if (tap_key_item is None) != (tap_cc_item is None):
        raise DecodeError(f"{WHAT}: onion-key and onion-key-crosscert come together or not at all")
    tap_key = _rsa_key(tap_key_item, "onion-key", exponent=True) if tap_key_item else None

    ntor_item = items.one("ntor-onion-key")
    ntor_key = _curve25519_key(ntor_item.args[0], f"{WHAT}: ntor-onion-key")
    rsa_identity = _rsa_key(items.one("signing-key"), "signing-key", exponent=False)

    signing_cert = _cert(items.one("identity-ed25519"), "identity-ed25519", CertType.IDENTITY_V_SIGNING)
    if signing_cert.signing_key is None:
        raise DecodeError(f"{WHAT}: identity-ed25519 must carry the signed-with-ed25519-key extension")
    master_key = _b64_exact(items.one("master-key-ed25519").args[0], 32, f"{WHAT}: master-key-ed25519")
    cc_item = items.one("ntor-onion-key-crosscert")
    if cc_item.args[0] not in ("0", "1"):
        raise DecodeError(f"{WHAT}: ntor-onion-key-crosscert sign bit must be 0 or 1")
    ntor_crosscert = _cert(cc_item, "ntor-onion-key-crosscert", CertType.NTOR_CC_IDENTITY)

    ed_sig_text = ed_item.args[0]
    if len(ed_sig_text) != 86:  # C tor's ED25519_SIG_BASE64_LEN: unpadded
        raise DecodeError(f"{WHAT}: router-sig-ed25519 must be 86 base64 characters")
    ed_signature = _b64_exact(ed_sig_text, 64, f"{WHAT}: router-sig-ed25519")

    fingerprint = None
    if (fp_item := items.optional("fingerprint")) is not None:
        hex_text = fp_item.rest.replace(" ", "")
        if not re.fullmatch(r"[0-9A-Fa-f]{40}", hex_text):
            raise DecodeError(f"{WHAT}: fingerprint is not 40 hex digits")
        fingerprint = bytes.fromhex(hex_text)

    platform_item = items.optional("platform")
    if items.all("accept6") or items.all("reject6"):
        raise DecodeError(f"{WHAT}: accept6/reject6 lines are refused (they crash older Tors)")
    exit_policy = tuple(_exit_rule(item) for item in parsed if item.keyword in ("accept", "reject"))
    if not exit_policy:
        raise DecodeError(f"{WHAT}: no exit policy")
    ipv6_policy = None
    if (v6_item := items.optional("ipv6-policy")) is not None:
        ipv6_policy = v6_item.rest
        _check_short_policy(ipv6_policy, f"{WHAT}: ipv6-policy")
    family: tuple[str, ...] = ()
    if (family_item := items.optional("family")) is not None:
        for member in family_item.args:
            if not (_HEXDIGEST.fullmatch(member) if member.startswith("$") else _NICKNAME.fullmatch(member)):
                raise DecodeError(f"{WHAT}: family member {member[:50]!r} is no nickname or $hexdigest")
        family = family_item.args
    family_certs = tuple(_family_cert(item) for item in items.all("family-cert"))
    contact_item = items.optional("contact")

    return UncheckedServerDescriptor(
        nickname=nickname, address=address, or_port=or_port, dir_port=dir_port, rsa_identity=rsa_identity,
        master_key=master_key, signing_cert=signing_cert, ntor_onion_key=ntor_key,
        ntor_crosscert=ntor_crosscert, ntor_crosscert_sign_bit=int(cc_item.args[0]),
        bandwidth_avg=bw_avg, bandwidth_burst=bw_burst, bandwidth_observed=bw_observed,
        platform=platform_item.rest if platform_item else "", proto=items.one("proto").rest,
        published=published, hidden_service_dir=items.optional("hidden-service-dir") is not None,
        uptime=uptime, raw=raw, ed25519_signature=ed_signature,
        rsa_signature=sig_item.object(_SIGNATURE, WHAT), fingerprint=fingerprint, tap_onion_key=tap_key,
        tap_crosscert=tap_cc_item.object(_CROSSCERT, WHAT) if tap_cc_item else None, family=family,
        family_certs=family_certs, exit_policy=exit_policy, ipv6_policy=ipv6_policy,
        tunnelled_dir_server=items.optional("tunnelled-dir-server") is not None or dir_port > 0,
        hibernating=hibernating, contact=contact_item.rest if contact_item else None)


def _check_ipv4(address: str) -> None:
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        raise DecodeError(f"{WHAT}: address {address[:40]!r} is not a dotted-quad IPv4 address") from None


def _b64_exact(text: str, length: int, what: str) -> bytes:
    data = netdoc.b64decode_unpadded(text, what)
    if len(data) != length:
        raise DecodeError(f"{what}: {len(data)} bytes, expected {length}")
    return data


def _curve25519_key(text: str, what: str) -> bytes:
    if len(text) not in (43, 44):  # C tor's curve25519_public_from_base64: unpadded or padded, nothing else
        raise DecodeError(f"{what}: must be 43 or 44 base64 characters")
    return _b64_exact(text, 32, what)


def _rsa_key(item: Item, keyword: str, *, exponent: bool) -> RSAPublicKey:
    key = tor_rsa.load_public_der(item.object(_RSA_KEY, WHAT), f"{WHAT}: {keyword}")
    if key.key_size != RSA_BITS:
        raise DecodeError(f"{WHAT}: {keyword} is {key.key_size} bits, not {RSA_BITS}")
    if exponent and key.public_numbers().e != RSA_EXPONENT:
        raise DecodeError(f"{WHAT}: {keyword} has exponent {key.public_numbers().e}, not {RSA_EXPONENT}")
    return key


def _cert(item: Item, keyword: str, cert_type: CertType) -> Ed25519Cert:
    cert = Ed25519Cert.decode(item.object(_CERT, WHAT))
    if cert.cert_type != cert_type:
        raise DecodeError(f"{WHAT}: {keyword} is a type {cert.cert_type:#04x} certificate, "
                          f"expected {int(cert_type):#04x}")
    return cert


def _family_cert(item: Item) -> Ed25519Cert:
    assert item.object_data is not None  # the rule says NEEDED
    cert = Ed25519Cert.decode(item.object_data)
    if cert.cert_type != FAMILY_V_IDENTITY or cert.signing_key is None:
        raise DecodeError(f"{WHAT}: family-cert must be a type 0C certificate naming its family key")
    return cert


# Exit policies: what C tor's router_parse_addr_policy accepts in a descriptor's accept/reject lines.

def _exit_rule(item: Item) -> str:
    if len(item.args) != 1:
        raise DecodeError(f"{WHAT}: {item.keyword} takes exactly one address pattern")
    _parse_pattern(item.args[0])
    return f"{item.keyword} {item.args[0]}"


def _parse_pattern(pattern: str) -> tuple[bool, int, int, int]:
    """ADDR[/MASK][:PORTS] -> (covers every IPv4 address family-wise, mask bits, low port, high port)."""
    what = f"{WHAT}: exit policy {pattern[:60]!r}"
    if pattern.startswith("private"):
        ports = pattern[len("private"):]
        if ports and not ports.startswith(":"):
            raise DecodeError(f"{what}: malformed")
        low, high = _port_range(ports[1:], what)
        return False, 32, low, high
    address, _, ports = pattern.partition(":")
    address, slash, mask = address.partition("/")
    if address.startswith("[") or address == "*6" or address == "*4":
        raise DecodeError(f"{what}: accept/reject lines in a descriptor take IPv4 patterns only")
    if address == "*":
        if slash:
            raise DecodeError(f"{what}: a wildcard address takes no mask")
        bits = 0
    else:
        _check_ipv4(address)
        bits = _mask_bits(mask, what) if slash else 32
    low, high = _port_range(ports, what)
    return True, bits, low, high


def _mask_bits(mask: str, what: str) -> int:
    if re.fullmatch(r"\d{1,3}", mask):
        bits = int(mask)
        if bits > 32:
            raise DecodeError(f"{what}: mask over 32 bits")
        return bits
    try:
        value = int(ipaddress.IPv4Address(mask))
    except ValueError:
        raise DecodeError(f"{what}: malformed mask") from None
    bits = bin(value).count("1")
    if value != ((1 << 32) - 1) ^ ((1 << (32 - bits)) - 1):
        raise DecodeError(f"{what}: mask is not a prefix")
    return bits


def _port_range(ports: str, what: str) -> tuple[int, int]:
    if ports in ("", "*"):
        return 1, 65535
    match = _PORTS.fullmatch(ports)
    if not match:
        raise DecodeError(f"{what}: malformed port range")
    low = int(match.group(1))
    high = int(match.group(2)) if match.group(2) else low
    if not (1 <= low <= high <= 65535):
        raise DecodeError(f"{what}: bad port range")
    return low, high


def _policy_is_reject_star(rules: Sequence[str]) -> bool:
    """C tor's policy_is_reject_star(policy, AF_INET, 1): the first rule that decides for all IPv4 wins."""
    for rule in rules:
        action, _, pattern = rule.partition(" ")
        all_v4_family, bits, low, high = _parse_pattern(pattern)
        if pattern.startswith("private"):
            all_v4_family = True  # private expands into IPv4 (and IPv6) rules
        if action == "accept" and all_v4_family:
            return False
        if action == "reject" and all_v4_family and bits == 0 and low <= 1 and high == 65535:
            return True
    return True


def _check_short_policy(text: str, what: str) -> None:
    """A policy summary (dir-spec 3.8.2) as C tor's parse_short_policy reads it: "accept " or "reject ", then
    comma-separated PORT or PORT-PORT entries; entries that do not start with a digit are skipped (forward
    compatibility), and at least one must be there."""
    action, space, ports = text.partition(" ")
    if action not in ("accept", "reject") or not space:
        raise DecodeError(f"{what}: does not start with accept or reject")
    entries = 0
    for entry in ports.split(","):
        if not entry[:1].isdigit():
            continue
        match = _PORTS.fullmatch(entry)
        if not match or not 1 <= int(match.group(1)) <= int(match.group(2) or match.group(1)) <= 65535:
            raise DecodeError(f"{what}: bad entry {entry[:20]!r}")
        entries += 1
    if not entries:
        raise DecodeError(f"{what}: no port ranges")


# ---------------------------------------------------------------------------------------------------------
# Building


def ntor_crosscert_signer(ntor_secret: bytes) -> tuple[Signer, int]:
    """The Ed25519 key a relay's ntor (Curve25519) onion key becomes, and the sign bit of its public key.

    dir-spec appendix C / C tor's ed25519_keypair_from_curve25519_keypair: the (clamped) Curve25519 secret
    is the Ed25519 secret scalar as it is, and the nonce half of the expanded key is
    SHA-512(secret | "Derive high part of ed25519 key from curve25519 key\\0")[:32]. The public key's top bit
    is the sign bit the ntor-onion-key-crosscert line carries; with it, a verifier recovers the same Ed25519
    key from the Curve25519 public key (y = (u-1)/(u+1)).
    """
    if len(ntor_secret) != 32:
        raise LocalProtocolError("the ntor onion key secret must be 32 bytes")
    scalar = bytearray(ntor_secret)  # X25519 clamping, as C tor stores its Curve25519 secrets
    scalar[0] &= 248
    scalar[31] &= 127
    scalar[31] |= 64
    prefix = hashlib.sha512(bytes(scalar) + CURVE25519_TO_ED25519_PREFIX).digest()[:32]
    signer = Signer.from_expanded(bytes(scalar) + prefix)
    return signer, signer.public_key[31] >> 7


def _raw(key: Ed25519PrivateKey) -> Signer:
    return Signer.from_seed(key.private_bytes_raw())


def _line(value: str, what: str) -> str:
    if not _LINE_TEXT.fullmatch(value):
        raise LocalProtocolError(f"{what} must be printable ASCII on one line")
    return value


def make_server_descriptor(*, nickname: str, address: str, or_port: int, dir_port: int,
                           rsa_identity: RSAPrivateKey, ed25519_identity: Ed25519PrivateKey,
                           signing_key: Ed25519PrivateKey, signing_cert_expires: int, ntor_secret: bytes,
                           bandwidth: int, platform: str, proto: str, published: int,
                           hidden_service_dir: bool = True, uptime: int = 0,
                           tap_onion_key: RSAPrivateKey | None = None,
                           family: Sequence[str] = ()) -> ServerDescriptor:
    """Build and sign a relay's server descriptor, keyword order and encodings as C tor 0.4.9 writes them.

    bandwidth: bytes/s, written as average, burst and observed alike (authorities weigh relays by the
    observed value, and a testbed relay has not observed anything yet). The relay exits nowhere
    (`reject *:*`) and serves directory requests over BEGIN_DIR (`tunnelled-dir-server`). `tap_onion_key`:
    see the module docstring. No blank line is written after the signature (dir-spec: "New implementations
    SHOULD NOT generate such blank lines"; C tor writes one).
    """
    if not _NICKNAME.fullmatch(nickname):
        raise LocalProtocolError("nickname must be 1-19 letters and digits")
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        raise LocalProtocolError(f"address {address!r} is not an IPv4 address") from None
    if not (1 <= or_port <= 65535 and 0 <= dir_port <= 65535):
        raise LocalProtocolError("or_port must be 1-65535 and dir_port 0-65535")
    if not 1 <= bandwidth <= 2**31 - 1:
        raise LocalProtocolError("bandwidth must be 1..2^31-1 bytes/s")
    if uptime < 0 or published < 0:
        raise LocalProtocolError("uptime and published must not be negative")
    if not _PROTO.fullmatch(_line(proto, "proto")):
        raise LocalProtocolError(f"proto {proto!r} is not Keyword=Versions entries")
    _line(platform, "platform")
    for member in family:
        if not (_HEXDIGEST.fullmatch(member) if member.startswith("$") else _NICKNAME.fullmatch(member)):
            raise LocalProtocolError(f"family member {member!r} is no nickname or $hexdigest")
    for key, name in ((rsa_identity, "rsa_identity"), (tap_onion_key, "tap_onion_key")):
        if key is not None and key.key_size != RSA_BITS:
            raise LocalProtocolError(f"{name} must be an RSA-{RSA_BITS} key")

    ntor_signer, sign_bit = ntor_crosscert_signer(ntor_secret)
    ntor_public = X25519PrivateKey.from_private_bytes(ntor_secret).public_key().public_bytes_raw()
    identity, signing = _raw(ed25519_identity), _raw(signing_key)
    master = identity.public_key
    signing_cert = make_cert(CertType.IDENTITY_V_SIGNING, signing.public_key, identity, signing_cert_expires)
    ntor_cc = make_cert(CertType.NTOR_CC_IDENTITY, master, ntor_signer, published + ONION_KEY_LIFETIME,
                        include_signing_key=False)
    rsa_der = tor_rsa.public_der(rsa_identity.public_key())
    tap_der = None if tap_onion_key is None else tor_rsa.public_der(tap_onion_key.public_key())
    node_id = hashlib.sha1(rsa_der).digest()
    hex_id = node_id.hex().upper()

    parts = [
        f"router {nickname} {address} {or_port} 0 {dir_port}\n",
        "identity-ed25519\n", tor_rsa.pem(_CERT, signing_cert.encode()),
        f"master-key-ed25519 {netdoc.b64encode_unpadded(master)}\n",
        f"platform {platform}\n",
        f"proto {proto}\n",
        f"published {netdoc.format_time(published)}\n",
        "fingerprint " + " ".join(hex_id[i:i + 4] for i in range(0, 40, 4)) + "\n",
        f"uptime {uptime}\n",
        f"bandwidth {bandwidth} {bandwidth} {bandwidth}\n",
    ]
    if tap_der is not None:
        parts += ["onion-key\n", tor_rsa.pem(_RSA_KEY, tap_der)]
    parts += ["signing-key\n", tor_rsa.pem(_RSA_KEY, rsa_der)]
    if tap_onion_key is not None:
        # crypto_pk_private_sign over ID | master: the same raw PKCS#1 type-1 signature as over a digest
        parts += ["onion-key-crosscert\n",
                  tor_rsa.pem(_CROSSCERT, tor_rsa.sign_digest(tap_onion_key, node_id + master))]
    parts += [f"ntor-onion-key-crosscert {sign_bit}\n", tor_rsa.pem(_CERT, ntor_cc.encode())]
    if family:
        parts.append("family " + " ".join(family) + "\n")
    if hidden_service_dir:
        parts.append("hidden-service-dir\n")
    parts += [f"ntor-onion-key {netdoc.b64encode_unpadded(ntor_public)}\n",
              "reject *:*\n",
              "tunnelled-dir-server\n",
              "router-sig-ed25519 "]
    body = "".join(parts).encode("ascii")
    ed_sig = signing.sign(hashlib.sha256(SIGNATURE_PREFIX + body).digest())
    body += netdoc.b64encode_unpadded(ed_sig).encode("ascii") + b"\nrouter-signature\n"
    rsa_sig = tor_rsa.sign_digest(rsa_identity, hashlib.sha1(body).digest())
    raw = body + tor_rsa.pem(_SIGNATURE, rsa_sig).encode("ascii")
    if len(raw) > MAX_DESCRIPTOR_SIZE:
        raise LocalProtocolError(f"descriptor of {len(raw)} bytes is over {MAX_DESCRIPTOR_SIZE}")
    return ServerDescriptor(
        nickname=nickname, address=address, or_port=or_port, dir_port=dir_port, rsa_identity_der=rsa_der,
        ed25519_identity=master, signing_cert=signing_cert, ntor_onion_key=ntor_public,
        bandwidth_avg=bandwidth, bandwidth_burst=bandwidth, bandwidth_observed=bandwidth, platform=platform,
        proto=proto, published=published, hidden_service_dir=hidden_service_dir, uptime=uptime, raw=raw,
        ntor_crosscert=ntor_cc, ntor_crosscert_sign_bit=sign_bit, tap_onion_key_der=tap_der,
        family=tuple(family), exit_policy=("reject *:*",), tunnelled_dir_server=True)

