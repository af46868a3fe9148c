"""Microdescriptors (dir-spec 3.3): what an authority derives from a server descriptor for clients.

For consensus method 35, the highest C tor 0.4.9 supports (dirvote.h MAX_SUPPORTED_CONSENSUS_METHOD), a C tor
authority writes (dirvote.c dirvote_create_microdescriptor), in this order:

    onion-key                       then the TAP key as an RSA PUBLIC KEY object, when the relay has one
    ntor-onion-key KEY              base64 without "=" (consensus method 30 and later)
    family MEMBERS                  only with a declared family: canonicalized (method 29 and later)
    family-ids IDS                  only with verified family certificates (method 35)
    p accept|reject PORTS           omitted when it would be "reject 1-65535" (a relay that exits nowhere)
    p6 accept|reject PORTS          likewise for IPv6
    id ed25519 KEY                  the master identity key

No "id rsa1024", "a" or "pr" line any more. The microdescriptor is these bytes; its name is their SHA-256,
written in base64 without "=" in the consensus "m" lines and in /tor/micro/d/ URLs.

Relays without a TAP key: C tor 0.4.9.11 makes no microdescriptor for them at all ("We do not yet support
creating MDs for relays without TAP onion keys"), while its clients accept an "onion-key" line with no object
(microdesc_parse.c: the onion-key rule is OPT_KEY_1024; dir-spec: "Optionally, a public key"). For such a
relay `microdescriptor_for` writes a bare "onion-key" line: what the spec and C tor's parser allow, not what
any released C tor authority produces.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from . import netdoc, tor_rsa
from .errors import DecodeError, LocalProtocolError
from .netdoc import ANY_NUMBER, Obj, Rule
from .server_descriptor import RSA_BITS, RSA_EXPONENT, ServerDescriptor

CONSENSUS_METHOD = 35  # the method whose microdescriptor format `microdescriptor_for` writes
MAX_MICRODESCS_SIZE = netdoc.MAX_DOCUMENT
WHAT = "microdescriptor"

_NICKNAME = re.compile(r"[A-Za-z0-9]{1,19}")
_HEXDIGEST = re.compile(r"\$?([0-9A-Fa-f]{40})(?:[=~][A-Za-z0-9]{1,19})?")

# C tor 0.4.9's microdesc_token_table (microdesc_parse.c).
RULES = (
    Rule("onion-key", 1, 1, 0, 0, Obj.OPTIONAL, "RSA PUBLIC KEY"),
    Rule("ntor-onion-key", 1, 1, 1, None),
    Rule("id", 0, ANY_NUMBER, 2, None),
    Rule("a", 0, ANY_NUMBER, 1, None),
    Rule("family", 0, 1),
    Rule("family-ids", 0, 1),
    Rule("p", 0, 1),
    Rule("p6", 0, 1),
)


@dataclass(frozen=True, slots=True)
class Microdescriptor:
    """One microdescriptor. Trust it only when its `digest` is the one a checked consensus lists."""

    ntor_onion_key: bytes
    ed25519_identity: bytes | None  # the "id ed25519" line (C tor clients also accept a microdesc without)
    raw: bytes
    tap_onion_key_der: bytes | None = None  # PKCS#1 DER, loaded by `tap_onion_key` (see ServerDescriptor)
    family: tuple[str, ...] = ()
    family_ids: tuple[str, ...] = ()
    policy: str | None = None  # the "p" summary, None = "reject 1-65535"
    policy6: str | None = None  # the "p6" summary, None = "reject 1-65535"

    @property
    def tap_onion_key(self) -> RSAPublicKey | None:
        """The TAP onion key, loaded on each call; None when the microdescriptor has none."""
        if self.tap_onion_key_der is None:
            return None
        return tor_rsa.load_public_der(self.tap_onion_key_der, f"{WHAT}: onion-key")

    @property
    def digest(self) -> bytes:
        """SHA-256 of the microdescriptor's bytes: its name in the consensus."""
        return hashlib.sha256(self.raw).digest()

    @property
    def digest_b64(self) -> str:
        """The digest as consensus "m" lines and /tor/micro/d/ URLs write it: base64 without "="."""
        return netdoc.b64encode_unpadded(self.digest)


def canonical_family(family: tuple[str, ...], node_id: bytes) -> str:
    """dir-spec 3.3's family canonicalization (C tor's nodefamily_canonicalize): "$HEXID" (upper case, any
    "=name"/"~name" dropped) and lower-case nicknames, the relay itself added, sorted, duplicates removed."""
    members = {"$" + node_id.hex().upper()}
    for member in family:
        hexid = _HEXDIGEST.fullmatch(member) if member.startswith("$") else None
        if hexid:
            members.add("$" + hexid.group(1).upper())
        elif _NICKNAME.fullmatch(member):
            members.add(member.lower())
        else:  # unrecognized entries stay as they are (the algorithm's forward compatibility)
            members.add(member)
    return " ".join(sorted(members))


def microdescriptor_for(desc: ServerDescriptor) -> Microdescriptor:
    """The microdescriptor a C tor 0.4.9 authority derives from `desc` for consensus method 35.

    LocalProtocolError for a relay that exits somewhere: policy summaries are not implemented (our relays
    are not exits; C tor relays that are would need dir-spec 3.8.2's summary here).
    """
    if not desc.policy_is_reject_star:
        raise LocalProtocolError(f"{desc.nickname}: exit policy summaries are not implemented")
    if desc.ipv6_policy is not None and desc.ipv6_policy != "reject 1-65535":
        raise LocalProtocolError(f"{desc.nickname}: IPv6 exit policy summaries are not implemented")
    lines = ["onion-key\n"]
    if desc.tap_onion_key_der is not None:
        lines.append(tor_rsa.pem("RSA PUBLIC KEY", desc.tap_onion_key_der))
    lines.append(f"ntor-onion-key {netdoc.b64encode_unpadded(desc.ntor_onion_key)}\n")
    family: tuple[str, ...] = ()
    if desc.family:
        text = canonical_family(desc.family, desc.node_id)
        lines.append(f"family {text}\n")
        family = tuple(text.split(" "))
    if desc.family_ids:
        lines.append("family-ids " + " ".join(desc.family_ids) + "\n")
    lines.append(f"id ed25519 {netdoc.b64encode_unpadded(desc.ed25519_identity)}\n")
    raw = "".join(lines).encode("ascii")
    return Microdescriptor(ntor_onion_key=desc.ntor_onion_key, ed25519_identity=desc.ed25519_identity,
                           raw=raw, tap_onion_key_der=desc.tap_onion_key_der, family=family,
                           family_ids=desc.family_ids)


def parse_microdescriptors(data: bytes) -> list[Microdescriptor]:
    """Every microdescriptor in a concatenation (a /tor/micro/d/ answer, a cache file without annotations).

    Each one starts at an "onion-key" line and runs to the next one (microdesc_parse.c). DecodeError for
    anything malformed, in any of them. Nothing is trusted: the caller keeps a microdescriptor only when its
    `digest` is one it asked for from a checked consensus.
    """
    if len(data) > MAX_MICRODESCS_SIZE:
        raise DecodeError(f"{WHAT}s: {len(data)} bytes, at most {MAX_MICRODESCS_SIZE}")
    items = netdoc.parse_items(bytes(data), WHAT)
    if items and items[0].keyword != "onion-key":
        raise DecodeError(f"{WHAT}: does not start with onion-key")
    starts = [i for i, item in enumerate(items) if item.keyword == "onion-key"]
    out = []
    for n, first in enumerate(starts):
        last = starts[n + 1] if n + 1 < len(starts) else len(items)
        group = items[first:last]
        out.append(_parse_one(group, bytes(data[group[0].start:group[-1].end])))
    return out


def _parse_one(group: list[netdoc.Item], raw: bytes) -> Microdescriptor:
    items = netdoc.check_rules(group, RULES, WHAT)
    onion = group[0]
    tap_der = None
    if onion.object_data is not None:
        tap_key = tor_rsa.load_public_der(onion.object_data, f"{WHAT}: onion-key")  # checked, then dropped
        if tap_key.key_size != RSA_BITS or tap_key.public_numbers().e != RSA_EXPONENT:
            raise DecodeError(f"{WHAT}: onion-key must be RSA-{RSA_BITS} with exponent {RSA_EXPONENT}")
        tap_der = bytes(onion.object_data)  # load_public_der refused anything but canonical DER
    ntor_text = items.one("ntor-onion-key").args[0]
    if len(ntor_text) not in (43, 44):
        raise DecodeError(f"{WHAT}: ntor-onion-key must be 43 or 44 base64 characters")
    ntor_key = _b64_exact(ntor_text, 32, f"{WHAT}: ntor-onion-key")
    ed_id = None
    for item in items.all("id"):
        if item.args[0] == "ed25519":
            if ed_id is not None:
                raise DecodeError(f"{WHAT}: more than one id ed25519 line")
            ed_id = _b64_exact(item.args[1], 32, f"{WHAT}: id ed25519")
    family = items.optional("family")
    family_ids = items.optional("family-ids")
    p, p6 = items.optional("p"), items.optional("p6")
    return Microdescriptor(
        ntor_onion_key=ntor_key, ed25519_identity=ed_id, raw=raw, tap_onion_key_der=tap_der,
        family=family.args if family else (), family_ids=family_ids.args if family_ids else (),
        policy=p.rest if p else None, policy6=p6.rest if p6 else None)


def _b64_exact(text: str, length: int, what: str) -> bytes:
    data = netdoc.b64decode_unpadded(text, what)
    if len(data) != length:
        raise DecodeError(f"{what}: {len(data)} bytes, expected {length}")
    return data
