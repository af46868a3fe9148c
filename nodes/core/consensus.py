"""The microdesc-flavoured consensus (dir-spec 3.4.1, 3.9.2) as a client sees it; its signatures; bandwidth
weights (dir-spec 3.8.3).

Document (every line LF-terminated; the order is the one C tor's authorities write, dir-spec 3.4.1):

    network-status-version 3 microdesc
    vote-status consensus
    consensus-method N                       we write methods 33-35 (see MIN_ENCODED_METHOD)
    valid-after / fresh-until / valid-until YYYY-MM-DD HH:MM:SS
    voting-delay VOTE-SECONDS DIST-SECONDS
    known-flags FLAG...                      sorted
    recommended-client-protocols ... / recommended-relay-protocols ... /
    required-client-protocols ... / required-relay-protocols ...        each optional
    params K=V ...                           optional, sorted by keyword, values Int32
    shared-rand-previous-value 0 BASE64 / shared-rand-current-value 0 BASE64                 optional
    (dir-source NICK V3IDENT-HEX ADDR IP DIRPORT ORPORT, contact TEXT, vote-digest HEX)*   sorted by v3ident
    (r NICK ID-B64 2038-01-01 00:00:00 IP ORPORT DIRPORT, m MD-DIGEST-B64, s FLAGS, [v VERSION], pr PROTOCOLS,
     w Bandwidth=KB Unmeasured=1)*           sorted by node id
    directory-footer
    bandwidth-weights K=V ...                optional (C tor omits it when the weights do not balance)
    (directory-signature sha256 V3IDENT-HEX SIGNING-KEY-DIGEST-HEX + SIGNATURE object)+   sorted by v3ident

`encode_consensus` writes everything before the first directory-signature: the "body". Authorities sign
SHA-256 of the body followed by "directory-signature " (dir-spec 3.4.1: "we take the hash through the _space_
after directory-signature"; C tor's router_get_networkstatus_v3_signed_boundaries), with their signing key,
PKCS#1 v1.5 over the raw digest; a client accepts the consensus when more than half of the authorities IT
IS CONFIGURED WITH signed it (networkstatus_check_consensus_signature: n/2 + 1).

Parsing follows C tor's ns_parse.c token tables: unknown keywords are ignored, multiplicities and the checks
C tor makes on a consensus are enforced (timing minimums of a TestingTorNetwork client, sorted entries, a
dir-source for every signer, at least one signature in a known digest algorithm), so consensuses made by C tor
parse too. A router entry without an "m" line cannot be used by a microdescriptor client and is skipped.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from . import netdoc, tor_rsa
from .authcert import MAX_TIME, AuthorityCert
from .errors import DecodeError, ExpiredError, LocalProtocolError, SignatureError

# C tor 0.4.9 (dirvote.h): authorities negotiate methods 32-35. Method 33 and later write the fixed
# publication time below in microdesc "r" lines; method 32 wrote each relay's own, which ConsensusRouter does
# not carry, so we encode 33-35 and parse any.
MIN_CONSENSUS_METHOD, MAX_CONSENSUS_METHOD = 32, 35
MIN_ENCODED_METHOD = 33
MICRODESC_PUBLISHED = "2038-01-01 00:00:00"
# What a TestingTorNetwork client requires of a consensus (ns_parse.c; dirvote.h MIN_VOTE_INTERVAL_TESTING
# = (MIN_VOTE_SECONDS_TESTING + MIN_DIST_SECONDS_TESTING + 1) * 2): valid-after + 10 <= fresh-until,
# valid-after + 20 <= valid-until, both voting delays >= 2.
MIN_VOTE_INTERVAL_TESTING = 10
MIN_VOTE_SECONDS = MIN_DIST_SECONDS = 2
# hs_common.h: the hsdir_interval parameter (HS time period in minutes) and how C tor clamps it.
HS_PERIOD_PARAM = "hsdir_interval"
HS_PERIOD_DEFAULT, HS_PERIOD_MIN, HS_PERIOD_MAX = 1440, 5, 14400
SHARED_RANDOM_N_ROUNDS, SHARED_RANDOM_N_PHASES = 12, 2  # shared_random_client.h
BW_WEIGHT_SCALE = 10000  # dir-spec 3.8.3 default of the bwweightscale parameter
MAX_SIGNATURE_BYTES = 512  # C tor: a directory-signature object is 128-512 bytes
MIN_SIGNATURE_BYTES = 128
_INT32 = (-(2**31), 2**31 - 1)
_UINT32_MAX = 2**32 - 1
SIGNATURE_ALGORITHMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256}  # C tor's common digests

_NICKNAME = re.compile(r"[A-Za-z0-9]{1,19}")
_TOKEN = re.compile(r"[!-~]+")  # a flag or parameter keyword: printable ASCII, no space
_TEXT = re.compile(r"[!-~]+( [!-~]+)*")  # printable ASCII words, single spaces
_PARAM_KEY = re.compile(r"[!-<>-~]+")  # a token without "="
_PROTO_NAME = re.compile(r"[A-Za-z0-9-]{1,100}")
_PROTO_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?")
_HEX = frozenset("0123456789abcdefABCDEF")


# ---------------------------------------------------------------------------------------------------------
# field checks, shared with vote.py: constructors raise LocalProtocolError, parsers turn it into DecodeError


def short(value: object) -> str:
    """repr() for error messages, bounded: remote values can be long."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_int(name: str, value: object, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise LocalProtocolError(f"{name} must be an integer in [{lo}, {hi}], got {short(value)}")
    return value


def check_time(name: str, value: object) -> int:
    return check_int(name, value, 0, MAX_TIME)


def check_bytes(name: str, value: object, n: int) -> bytes:
    if not isinstance(value, bytes) or len(value) != n:
        raise LocalProtocolError(f"{name} must be {n} bytes")
    return value


def check_nickname(value: object) -> str:
    if not isinstance(value, str) or not _NICKNAME.fullmatch(value):
        raise LocalProtocolError(f"nickname must be 1-19 characters of [A-Za-z0-9], got {short(value)}")
    return value


def check_ipv4(name: str, value: object) -> str:
    """dir-spec "r" and "dir-source" lines carry an IPv4 address, in canonical dotted-quad form."""
    if not isinstance(value, str):
        raise LocalProtocolError(f"{name} must be an IPv4 address string, got {short(value)}")
    try:
        canonical = str(ipaddress.IPv4Address(value))
    except ValueError:
        raise LocalProtocolError(f"{name} is not an IPv4 address: {short(value)}") from None
    if canonical != value:
        raise LocalProtocolError(f"{name} {value!r} is not in canonical form ({canonical!r})")
    return value


def check_text(name: str, value: object, max_len: int) -> str:
    if not isinstance(value, str) or len(value) > max_len or not _TEXT.fullmatch(value):
        raise LocalProtocolError(f"{name} must be 1-{max_len} printable ASCII characters in single-spaced "
                                 f"words, got {short(value)}")
    return value


def check_flags(name: str, flags: object) -> frozenset[str]:
    if isinstance(flags, str) or not isinstance(flags, Iterable):
        raise LocalProtocolError(f"{name} must be a collection of flag names")
    out = frozenset(flags)
    for f in out:
        if not isinstance(f, str) or not _TOKEN.fullmatch(f):
            raise LocalProtocolError(f"{name}: bad flag {short(f)}")
    return out


def protocols_valid(text: str) -> bool:
    """C tor's protover_list_is_invalid, negated: space-separated NAME=RANGES entries; NAME of [A-Za-z0-9-],
    at most 100 characters; RANGES a possibly empty comma list of N or N-M with 0 <= N <= M <= 63."""
    for entry in text.split(" "):
        if not entry:
            continue
        name, eq, ranges = entry.partition("=")
        if not eq or not _PROTO_NAME.fullmatch(name):
            return False
        if not ranges:
            continue
        for part in ranges.split(","):
            m = _PROTO_RANGE.fullmatch(part)
            if m is None:
                return False
            low = _small_int(m.group(1))
            high = _small_int(m.group(2)) if m.group(2) is not None else low
            if not low <= high <= 63:
                return False
    return True


def _small_int(digits: str) -> int:
    """int() of a digit string, any huge value collapsed to 2**64 (int() refuses over 4300 digits)."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 20 else 2**64


def check_protocols(name: str, value: object, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or (value and not _TEXT.fullmatch(value)) or not protocols_valid(value):
        raise LocalProtocolError(f"{name} is not a protocol list (NAME=RANGES ...): {short(value)}")
    return value


def check_params(name: str, value: object, *, int32: bool = True) -> dict[str, int]:
    if not isinstance(value, Mapping):
        raise LocalProtocolError(f"{name} must be a mapping of keyword to integer")
    out = {}
    for k in sorted(value):
        if not isinstance(k, str) or not _PARAM_KEY.fullmatch(k):
            raise LocalProtocolError(f"{name}: bad keyword {short(k)}")
        out[k] = check_int(f"{name}[{k}]", value[k], *_INT32)
    return out


@contextmanager
def as_decode_error(what: str) -> Iterator[None]:
    """Constructor validation raises LocalProtocolError; for remote input that is a DecodeError."""
    try:
        yield
    except LocalProtocolError as e:
        raise DecodeError(f"{what}: {e}") from None


def b64(data: bytes) -> str:
    return netdoc.b64encode_unpadded(data)


def b64_field(text: str, n: int, what: str) -> bytes:
    """Base64 of exactly n bytes, '=' padding optional (C tor: digest_from_base64, digest256_from_base64)."""
    raw = netdoc.b64decode_unpadded(text, what)
    if len(raw) != n:
        raise DecodeError(f"{what}: expected {n} bytes of base64, got {len(raw)}")
    return raw


def hex20(text: str, what: str) -> bytes:
    if len(text) != 40 or not all(c in _HEX for c in text):
        raise DecodeError(f"{what}: expected 40 hex digits, got {text[:44]!r}")
    return bytes.fromhex(text)


def parse_time_args(item: netdoc.Item, what: str, first: int | None = None) -> int:
    """A time at args[first:first+2]; with first None, the time must be the whole line (C tor parses the
    concatenated arguments as one time, so nothing may follow it)."""
    if first is None:
        if len(item.args) != 2:
            raise DecodeError(f"{what}: {item.keyword} needs YYYY-MM-DD HH:MM:SS")
        first = 0
    if len(item.args) < first + 2:
        raise DecodeError(f"{what}: {item.keyword} needs YYYY-MM-DD HH:MM:SS")
    value = netdoc.parse_time(item.args[first], item.args[first + 1], f"{what}: {item.keyword}")
    if not 0 <= value <= MAX_TIME:
        raise DecodeError(f"{what}: {item.keyword} before 1970")
    return value


def parse_port(text: str, what: str, lo: int = 0) -> int:
    if not text.isdigit():
        raise DecodeError(f"{what}: {text[:20]!r} is not a port number")
    return netdoc.parse_int(text, what, lo, 65535)


def parse_ipv4(text: str, what: str) -> str:
    with as_decode_error(what):
        return check_ipv4("address", text)


# ---------------------------------------------------------------------------------------------------------
# the consensus


@dataclass(frozen=True, slots=True)
class ConsensusRouter:
    """One relay's entry in a microdesc consensus. bandwidth is the "w Bandwidth=" value (kB/s)."""

    nickname: str
    node_id: bytes  # 20 bytes: SHA-1 of the relay's RSA identity key
    address: str  # IPv4
    or_port: int
    dir_port: int
    flags: frozenset[str]
    version: str | None
    proto: str
    bandwidth: int
    md_digest: bytes  # 32 bytes: SHA-256 of the relay's microdescriptor

    def __post_init__(self) -> None:
        check_nickname(self.nickname)
        check_bytes("node_id", self.node_id, 20)
        check_ipv4("address", self.address)
        check_int("or_port", self.or_port, 1, 65535)
        check_int("dir_port", self.dir_port, 0, 65535)
        object.__setattr__(self, "flags", check_flags("flags", self.flags))
        if self.version is not None:
            check_text("version", self.version, 120)  # C tor drops longer "v" lines (MAX_V_LINE_LEN 128)
        check_protocols("proto", self.proto)
        check_int("bandwidth", self.bandwidth, 0, _UINT32_MAX)
        check_bytes("md_digest", self.md_digest, 32)

    def lines(self) -> list[str]:
        out = [f"r {self.nickname} {b64(self.node_id)} {MICRODESC_PUBLISHED} {self.address} {self.or_port} "
               f"{self.dir_port}",
               f"m {b64(self.md_digest)}",
               " ".join(["s", *sorted(self.flags)])]
        if self.version is not None:
            out.append(f"v {self.version}")
        out.append(f"pr {self.proto}".rstrip(" "))
        out.append(f"w Bandwidth={self.bandwidth} Unmeasured=1")  # no bandwidth authorities measure ours
        return out


@dataclass(frozen=True, slots=True)
class DirSource:
    """An authority whose vote the consensus used. contact and vote_digest are None only on the extra
    "NICK-legacy" entries of authorities with a legacy key (C tor parses them; we never write them)."""

    nickname: str
    v3ident: bytes
    address: str  # IPv4; written in both the hostname and the IP field
    dir_port: int
    or_port: int
    contact: str | None
    vote_digest: bytes | None  # SHA-1 of the vote as signed

    def __post_init__(self) -> None:
        nick = self.nickname
        if not isinstance(nick, str) or not _TOKEN.fullmatch(nick) or len(nick) > 64:
            raise LocalProtocolError(f"dir-source nickname must be 1-64 printable characters, got "
                                     f"{short(self.nickname)}")
        check_bytes("v3ident", self.v3ident, 20)
        check_ipv4("dir-source address", self.address)
        check_int("dir_port", self.dir_port, 0, 65535)
        check_int("or_port", self.or_port, 0, 65535)
        if self.contact is not None and self.contact != "":
            check_text("contact", self.contact, 1024)
        if self.vote_digest is not None:
            check_bytes("vote_digest", self.vote_digest, 20)
        if (self.contact is None) != (self.vote_digest is None):
            raise LocalProtocolError("a dir-source has both contact and vote-digest, or neither (legacy)")

    def lines(self) -> list[str]:
        out = [f"dir-source {self.nickname} {self.v3ident.hex().upper()} {self.address} {self.address} "
               f"{self.dir_port} {self.or_port}"]
        if self.contact is not None and self.vote_digest is not None:
            out += [f"contact {self.contact}".rstrip(" "), f"vote-digest {self.vote_digest.hex().upper()}"]
        return out


@dataclass(frozen=True, slots=True)
class Consensus:
    """The unsigned content of a microdesc consensus. dir_sources are kept sorted by v3ident, routers by
    node_id; params and bandwidth_weights by keyword."""

    valid_after: int
    fresh_until: int
    valid_until: int
    vote_delay: int
    dist_delay: int
    dir_sources: tuple[DirSource, ...]
    routers: tuple[ConsensusRouter, ...] = ()
    consensus_method: int = MAX_CONSENSUS_METHOD
    known_flags: frozenset[str] = frozenset()
    params: dict[str, int] = field(default_factory=dict)
    recommended_client_protocols: str | None = None
    recommended_relay_protocols: str | None = None
    required_client_protocols: str | None = None
    required_relay_protocols: str | None = None
    shared_rand_previous: bytes | None = None
    shared_rand_current: bytes | None = None
    bandwidth_weights: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        va = check_time("valid_after", self.valid_after)
        fu = check_time("fresh_until", self.fresh_until)
        vu = check_time("valid_until", self.valid_until)
        if va + MIN_VOTE_INTERVAL_TESTING > fu:
            raise LocalProtocolError(f"fresh-until must be at least {MIN_VOTE_INTERVAL_TESTING} s after "
                                     f"valid-after (C tor: freshness interval too short), got {fu - va} s")
        if va + 2 * MIN_VOTE_INTERVAL_TESTING > vu:
            raise LocalProtocolError(f"valid-until must be at least {2 * MIN_VOTE_INTERVAL_TESTING} s after "
                                     f"valid-after (C tor: liveness interval too short), got {vu - va} s")
        check_int("vote_delay", self.vote_delay, MIN_VOTE_SECONDS, _INT32[1])
        check_int("dist_delay", self.dist_delay, MIN_DIST_SECONDS, _INT32[1])
        check_int("consensus_method", self.consensus_method, 1, _INT32[1])
        object.__setattr__(self, "known_flags", check_flags("known_flags", self.known_flags))
        object.__setattr__(self, "params", check_params("params", self.params))
        object.__setattr__(self, "bandwidth_weights",
                           check_params("bandwidth_weights", self.bandwidth_weights))
        for name in ("recommended_client_protocols", "recommended_relay_protocols",
                     "required_client_protocols", "required_relay_protocols"):
            check_protocols(name, getattr(self, name), optional=True)
        for name in ("shared_rand_previous", "shared_rand_current"):
            if getattr(self, name) is not None:
                check_bytes(name, getattr(self, name), 32)
        object.__setattr__(self, "dir_sources", _sorted_unique(self.dir_sources, DirSource, "v3ident",
                                                               "dir-source"))
        if not self.dir_sources:
            raise LocalProtocolError("a consensus needs at least one dir-source (C tor rejects it otherwise)")
        object.__setattr__(self, "routers", _sorted_unique(self.routers, ConsensusRouter, "node_id", "relay"))

    @property
    def voting_interval(self) -> int:
        """fresh-until - valid-after, in seconds (C tor's get_voting_interval with a live consensus)."""
        return self.fresh_until - self.valid_after

    @property
    def hs_period_minutes(self) -> int:
        """HS time period length: the hsdir_interval parameter clamped to [5, 14400], default 1440
        (hs_common.c get_time_period_length). NOTE: a C tor with TestingTorNetwork set ignores the
        parameter and uses `testing_hs_period_minutes` instead."""
        value = self.params.get(HS_PERIOD_PARAM, HS_PERIOD_DEFAULT)
        return min(max(value, HS_PERIOD_MIN), HS_PERIOD_MAX)

    @property
    def testing_hs_period_minutes(self) -> int:
        """The HS period a TestingTorNetwork C tor uses: one shared-random protocol run, 24 voting intervals
        (sr_state_get_protocol_run_duration() / 60, integer division)."""
        return SHARED_RANDOM_N_ROUNDS * SHARED_RANDOM_N_PHASES * self.voting_interval // 60

    @property
    def hs_rotation_offset_minutes(self) -> int:
        """12 voting intervals, in whole minutes (sr_state_get_phase_duration() / 60)."""
        return SHARED_RANDOM_N_ROUNDS * self.voting_interval // 60

    @property
    def digest(self) -> bytes:
        """SHA-256 of what authorities sign: encode_consensus(self) + b"directory-signature "."""
        return signed_digest(encode_consensus(self), "sha256")


def _sorted_unique(items: object, kind: type, key: str, what: str) -> tuple:
    if isinstance(items, str | bytes) or not isinstance(items, Iterable):
        raise LocalProtocolError(f"{what} entries must be a sequence")
    out = tuple(items)
    for it in out:
        if not isinstance(it, kind):
            raise LocalProtocolError(f"{what} entries must be {kind.__name__}, got {type(it).__name__}")
    out = tuple(sorted(out, key=lambda it: getattr(it, key)))
    for a, b in zip(out, out[1:], strict=False):
        if getattr(a, key) == getattr(b, key):
            raise LocalProtocolError(f"{what} {getattr(a, key).hex().upper()} listed twice")
    return out


def _srv_line(keyword: str, value: bytes) -> str:
    # NumReveals is 0: our shared random values come from no commit-reveal run (docs/differences.md).
    return f"{keyword} 0 {base64.b64encode(value).decode('ascii')}"


def encode_consensus(c: Consensus) -> bytes:
    """The body: every line before the first directory-signature, in C tor's order."""
    if not isinstance(c, Consensus):
        raise LocalProtocolError(f"not a Consensus: {type(c).__name__}")
    if not MIN_ENCODED_METHOD <= c.consensus_method <= MAX_CONSENSUS_METHOD:
        raise LocalProtocolError(f"we encode consensus methods {MIN_ENCODED_METHOD}-{MAX_CONSENSUS_METHOD}, "
                                 f"not {c.consensus_method}")
    lines = [
        "network-status-version 3 microdesc",
        "vote-status consensus",
        f"consensus-method {c.consensus_method}",
        f"valid-after {netdoc.format_time(c.valid_after)}",
        f"fresh-until {netdoc.format_time(c.fresh_until)}",
        f"valid-until {netdoc.format_time(c.valid_until)}",
        f"voting-delay {c.vote_delay} {c.dist_delay}",
        " ".join(["known-flags", *sorted(c.known_flags)]),
    ]
    for keyword, value in (("recommended-client-protocols", c.recommended_client_protocols),
                           ("recommended-relay-protocols", c.recommended_relay_protocols),
                           ("required-client-protocols", c.required_client_protocols),
                           ("required-relay-protocols", c.required_relay_protocols)):
        if value is not None:
            lines.append(f"{keyword} {value}".rstrip(" "))
    if c.params:
        lines.append(" ".join(["params", *(f"{k}={v}" for k, v in sorted(c.params.items()))]))
    if c.shared_rand_previous is not None:
        lines.append(_srv_line("shared-rand-previous-value", c.shared_rand_previous))
    if c.shared_rand_current is not None:
        lines.append(_srv_line("shared-rand-current-value", c.shared_rand_current))
    for ds in c.dir_sources:
        lines += ds.lines()
    for r in c.routers:
        lines += r.lines()
    lines.append("directory-footer")
    if c.bandwidth_weights:
        lines.append(" ".join(["bandwidth-weights",
                               *(f"{k}={v}" for k, v in sorted(c.bandwidth_weights.items()))]))
    return "".join(line + "\n" for line in lines).encode("ascii")


# ---------------------------------------------------------------------------------------------------------
# signatures


def signed_digest(body: bytes, algorithm: str) -> bytes:
    """The digest a directory-signature signs: the body through the space after "directory-signature"."""
    return SIGNATURE_ALGORITHMS[algorithm](body + b"directory-signature ").digest()


@dataclass(frozen=True, slots=True)
class DirectorySignature:
    """One authority's signature of a consensus body. Parsed ones are claims until verified
    (SignedConsensus.add_signature, UncheckedConsensus.check)."""

    v3ident: bytes
    signing_key_digest: bytes
    signature: bytes
    algorithm: str = "sha256"

    def __post_init__(self) -> None:
        check_bytes("v3ident", self.v3ident, 20)
        check_bytes("signing_key_digest", self.signing_key_digest, 20)
        if self.algorithm not in SIGNATURE_ALGORITHMS:
            raise LocalProtocolError(f"algorithm must be one of {sorted(SIGNATURE_ALGORITHMS)}")
        if not isinstance(self.signature, bytes) or not (
                MIN_SIGNATURE_BYTES <= len(self.signature) <= MAX_SIGNATURE_BYTES):
            raise LocalProtocolError(f"a signature is {MIN_SIGNATURE_BYTES}-{MAX_SIGNATURE_BYTES} bytes")

    def encode(self) -> bytes:
        """The directory-signature item. On its own, it is the detached signature authorities exchange."""
        return (f"directory-signature {self.algorithm} {self.v3ident.hex().upper()} "
                f"{self.signing_key_digest.hex().upper()}\n"
                + tor_rsa.pem("SIGNATURE", self.signature)).encode("ascii")

    def verify(self, body: bytes, cert: AuthorityCert) -> None:
        """SignatureError unless `cert` is this signer's certificate and the signature is of `body`."""
        if cert.v3ident != self.v3ident:
            raise SignatureError(f"signature by {self.v3ident.hex().upper()} checked against the certificate "
                                 f"of {cert.v3ident.hex().upper()}")
        if cert.signing_key_digest != self.signing_key_digest:
            raise SignatureError(f"signature by {self.v3ident.hex().upper()} names signing key "
                                 f"{self.signing_key_digest.hex().upper()}, its certificate has "
                                 f"{cert.signing_key_digest.hex().upper()}")
        tor_rsa.verify_digest(cert.signing_key, self.signature, signed_digest(body, self.algorithm),
                              f"consensus signature by {self.v3ident.hex().upper()}")


def sign_consensus(body: bytes, cert: AuthorityCert, signing: RSAPrivateKey) -> DirectorySignature:
    """Sign a body (encode_consensus output) with the authority's signing key, the one `cert` certifies."""
    if not isinstance(body, bytes) or not body.endswith(b"\n"):
        raise LocalProtocolError("the consensus body must be bytes ending in a newline")
    if tor_rsa.fingerprint(signing.public_key()) != cert.signing_key_digest:
        raise LocalProtocolError("that signing key is not the one the certificate certifies")
    return DirectorySignature(cert.v3ident, cert.signing_key_digest,
                              tor_rsa.sign_digest(signing, signed_digest(body, "sha256")))


@dataclass(frozen=True, slots=True)
class SignedConsensus:
    """A consensus body with signatures that have been verified (by add_signature or
    UncheckedConsensus.check). Signatures are kept sorted by authority, one per authority and algorithm."""

    consensus: Consensus
    body: bytes
    signatures: tuple[DirectorySignature, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.consensus, Consensus) or not isinstance(self.body, bytes):
            raise LocalProtocolError("SignedConsensus needs a Consensus and its body bytes")
        sigs = tuple(self.signatures)
        for s in sigs:
            if not isinstance(s, DirectorySignature):
                raise LocalProtocolError(f"signatures must be DirectorySignature, got {type(s).__name__}")
        sigs = tuple(sorted(sigs, key=lambda s: (s.v3ident, s.algorithm)))
        for a, b in zip(sigs, sigs[1:], strict=False):
            if (a.v3ident, a.algorithm) == (b.v3ident, b.algorithm):
                raise LocalProtocolError(f"two {a.algorithm} signatures by {a.v3ident.hex().upper()}")
        object.__setattr__(self, "signatures", sigs)

    @classmethod
    def unsigned(cls, consensus: Consensus) -> SignedConsensus:
        """The start of an authority's round: our encoding of `consensus`, no signatures yet."""
        return cls(consensus, encode_consensus(consensus))

    @property
    def digest(self) -> bytes:
        """SHA-256 of the signed range: what every authority's sha256 signature covers."""
        return signed_digest(self.body, "sha256")

    @property
    def signers(self) -> frozenset[bytes]:
        return frozenset(s.v3ident for s in self.signatures)

    def encode(self) -> bytes:
        if not self.signatures:
            raise LocalProtocolError("a consensus without signatures is not a document (C tor rejects it)")
        return self.body + b"".join(s.encode() for s in self.signatures)

    def add_signature(self, sig: DirectorySignature, certs: Mapping[bytes, AuthorityCert]) -> SignedConsensus:
        """Verify another authority's signature, then add it (replacing that authority's earlier one, so a
        bad signature can never displace a good one). The signer needs a certificate in `certs` (keyed by
        v3ident) and a dir-source in the consensus: C tor rejects a whole consensus with a signature from an
        authority it does not list."""
        if not isinstance(sig, DirectorySignature):
            raise LocalProtocolError(f"not a DirectorySignature: {type(sig).__name__}")
        who = sig.v3ident.hex().upper()
        cert = certs.get(sig.v3ident)
        if cert is None:
            raise SignatureError(f"signature from unknown authority {who} (no certificate)")
        if sig.v3ident not in {ds.v3ident for ds in self.consensus.dir_sources}:
            raise SignatureError(f"authority {who} has no dir-source in this consensus: its vote was not "
                                 "used")
        sig.verify(self.body, cert)
        if sig in self.signatures:
            return self
        others = tuple(s for s in self.signatures if s.v3ident != sig.v3ident)
        return SignedConsensus(self.consensus, self.body, (*others, sig))


@dataclass(frozen=True, slots=True)
class UncheckedConsensus:
    """A parsed consensus: nothing in it may be used before `check`."""

    unchecked: Consensus
    body: bytes
    signatures: tuple[DirectorySignature, ...]  # claims, not verified
    raw: bytes = field(repr=False)

    def check(self, certs: Mapping[bytes, AuthorityCert], configured: Collection[bytes],
              now: int, *, tolerance: int = 0) -> SignedConsensus:
        """Count the authorities among `configured` (v3idents) whose signature verifies with their
        certificate in `certs` (keyed by v3ident; expired ones do not count); more than half of ALL configured
        authorities must have signed (C tor: n/2 + 1). Then valid-after - tolerance <= now <= valid-until +
        tolerance. The result keeps only the verified signatures."""
        configured = frozenset(configured)
        needed = len(configured) // 2 + 1
        good: list[DirectorySignature] = []
        signed_by: set[bytes] = set()
        problems = []
        for sig in self.signatures:
            who = sig.v3ident.hex().upper()
            cert = certs.get(sig.v3ident)
            if sig.v3ident not in configured:
                problems.append(f"{who}: not a configured authority")
            elif cert is None or cert.expires < now:
                problems.append(f"{who}: no {'current ' if cert else ''}certificate")
            else:
                try:
                    sig.verify(self.body, cert)
                except SignatureError as e:
                    problems.append(str(e))
                    continue
                good.append(sig)
                signed_by.add(sig.v3ident)
        if len(signed_by) < needed:
            detail = f" ({'; '.join(problems)})" if problems else ""
            raise SignatureError(f"consensus has valid signatures from {len(signed_by)} of the "
                                 f"{len(configured)} configured authorities, needs {needed}{detail}")
        c = self.unchecked
        if now < c.valid_after - tolerance:
            raise ExpiredError(f"consensus not valid until {netdoc.format_time(c.valid_after)} "
                               f"({c.valid_after - now} s from now)")
        if now > c.valid_until + tolerance:
            raise ExpiredError(f"consensus expired at {netdoc.format_time(c.valid_until)} "
                               f"({now - c.valid_until} s ago)")
        return SignedConsensus(c, self.body, tuple(good))


# ---------------------------------------------------------------------------------------------------------
# parsing

# keyword -> (min count, max count, min args, max args) in the header of a consensus (ns_parse.c
# networkstatus_consensus_token_table); none of them takes an object.
_HEADER_RULES: dict[str, tuple[int, int, int, int]] = {
    "network-status-version": (1, 1, 1, 1 << 30),
    "vote-status": (1, 1, 1, 1 << 30),
    "valid-after": (1, 1, 0, 1 << 30),
    "fresh-until": (1, 1, 0, 1 << 30),
    "valid-until": (1, 1, 0, 1 << 30),
    "voting-delay": (1, 1, 2, 1 << 30),
    "dir-source": (1, 1 << 30, 6, 1 << 30),
    "contact": (1, 1 << 30, 0, 1 << 30),
    "vote-digest": (1, 1 << 30, 1, 1 << 30),
    "known-flags": (1, 1, 0, 1 << 30),
    "client-versions": (0, 1, 0, 1 << 30),
    "server-versions": (0, 1, 0, 1 << 30),
    "consensus-method": (0, 1, 1, 1),
    "params": (0, 1, 0, 1 << 30),
    "shared-rand-previous-value": (0, 1, 2, 2),
    "shared-rand-current-value": (0, 1, 2, 2),
    "recommended-client-protocols": (0, 1, 0, 1 << 30),
    "recommended-relay-protocols": (0, 1, 0, 1 << 30),
    "required-client-protocols": (0, 1, 0, 1 << 30),
    "required-relay-protocols": (0, 1, 0, 1 << 30),
}
# in a router entry (rtrstatus_token_table)
_ROUTER_RULES: dict[str, tuple[int, int, int, int]] = {
    "r": (1, 1, 7, 1 << 30),
    "a": (0, 1 << 30, 1, 1 << 30),
    "s": (1, 1, 0, 1 << 30),
    "v": (0, 1, 0, 1 << 30),
    "w": (0, 1, 0, 1 << 30),
    "m": (0, 1 << 30, 0, 1 << 30),
    "id": (0, 1 << 30, 2, 1 << 30),
    "pr": (1, 1, 0, 1 << 30),
    "p": (0, 1, 0, 1 << 30),
}
_FOOTER_KEYWORDS = ("directory-footer", "directory-signature")


def enforce_rules(items: list[netdoc.Item], rules: Mapping[str, tuple[int, int, int, int]],
                  what: str) -> None:
    """C tor's tokenizer checks: counts, argument counts, and no object on a known keyword."""
    counts = dict.fromkeys(rules, 0)
    for it in items:
        rule = rules.get(it.keyword)
        if rule is None:
            continue  # unknown keyword: ignored (dir-spec 1.2), objects allowed
        counts[it.keyword] += 1
        if not rule[2] <= len(it.args) <= rule[3]:
            raise DecodeError(f"{what}: {it.keyword} needs {rule[2]}-{rule[3]} arguments, got {len(it.args)}")
        if it.object_type is not None:
            raise DecodeError(f"{what}: unexpected object after {it.keyword}")
    for keyword, (lo, hi, _, _) in rules.items():
        if not lo <= counts[keyword] <= hi:
            raise DecodeError(f"{what}: {keyword} must appear {lo}-{hi} times, found {counts[keyword]}")


def parse_params(item: netdoc.Item | None, what: str, *, sorted_unique: bool) -> dict[str, int]:
    out: dict[str, int] = {}
    if item is None:
        return out
    for i, arg in enumerate(item.args):
        key, eq, value = arg.partition("=")
        if not eq or not key:
            raise DecodeError(f"{what}: bad element {arg[:40]!r} in {item.keyword}")
        if sorted_unique and i and not item.args[i - 1] < arg:
            raise DecodeError(f"{what}: {item.keyword} not sorted")
        if key in out:
            raise DecodeError(f"{what}: duplicate {key[:40]!r} in {item.keyword}")
        out[key] = netdoc.parse_int(value, f"{what}: {item.keyword} {key[:40]}", *_INT32)
    return out


def _parse_srv(item: netdoc.Item | None) -> bytes | None:
    """C tor (sr_parse_srv) ignores an unparseable SRV with a warning; so do we."""
    if item is None:
        return None
    reveals, value = item.args
    if not reveals.isdigit() or len(value) != 44:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        return None
    return raw if len(raw) == 32 else None


def _parse_dir_sources(header: list[netdoc.Item], what: str) -> tuple[DirSource, ...]:
    groups: list[dict[str, netdoc.Item]] = []
    for it in header:
        if it.keyword == "dir-source":
            groups.append({"dir-source": it})
        elif it.keyword in ("contact", "vote-digest"):
            if not groups or it.keyword in groups[-1]:
                raise DecodeError(f"{what}: {it.keyword} element is out of place")
            groups[-1][it.keyword] = it
    out = []
    for g in groups:
        src = g["dir-source"]
        contact = g.get("contact")
        digest = g.get("vote-digest")
        if (contact is None) != (digest is None):
            raise DecodeError(f"{what}: dir-source {src.args[0][:20]!r} needs both contact and vote-digest")
        with as_decode_error(what):
            out.append(DirSource(
                src.args[0], hex20(src.args[1], f"{what}: dir-source identity"),
                parse_ipv4(src.args[3], f"{what}: dir-source address"),
                parse_port(src.args[4], f"{what}: dir-source dirport"),
                parse_port(src.args[5], f"{what}: dir-source orport"),
                None if contact is None else " ".join(contact.args),
                None if digest is None else hex20(digest.args[0], f"{what}: vote-digest")))
    return tuple(out)


def parse_router_entry(items: list[netdoc.Item], what: str) -> tuple[bytes, ConsensusRouter | None]:
    """One "r" entry of a microdesc consensus: (node id, router or None when it has no "m" line)."""
    enforce_rules(items, _ROUTER_RULES, what)
    doc = netdoc.Items(items, what)
    r = doc.one("r")
    nickname = netdoc.shared_text(r.args[0])
    node_id = b64_field(r.args[1], 20, f"{what}: identity")
    parse_time_args(r, what, 2)  # "SHOULD be ignored" in a consensus; C tor still rejects a bad one
    address = netdoc.shared_text(parse_ipv4(r.args[4], f"{what}: address"))
    or_port = parse_port(r.args[5], f"{what}: orport", 1)
    dir_port = parse_port(r.args[6], f"{what}: dirport")
    flags = netdoc.shared_flags(doc.one("s").args)
    v = doc.optional("v")
    version = netdoc.shared_text(" ".join(v.args)) if v is not None and v.args else None
    proto = netdoc.shared_text(" ".join(doc.one("pr").args))
    if not protocols_valid(proto):
        raise DecodeError(f"{what}: malformed pr line {proto[:40]!r}")
    bandwidth = 0
    if (w := doc.optional("w")) is not None:
        for arg in w.args:
            if arg.startswith("Bandwidth="):
                bandwidth = netdoc.parse_int(arg[10:], f"{what}: Bandwidth", 0, _UINT32_MAX)
    m = doc.all("m")
    if not m:
        return node_id, None
    md_digest = b64_field(m[0].arg(0, what), 32, f"{what}: microdescriptor digest")
    with as_decode_error(what):
        return node_id, ConsensusRouter(nickname, node_id, address, or_port, dir_port, flags, version, proto,
                                        bandwidth, md_digest)


def split_sections(items: list[netdoc.Item]) -> tuple[list[netdoc.Item], list[list[netdoc.Item]],
                                                       list[netdoc.Item]]:
    """Header items, router entries (each from an "r" item), footer items (from the first directory-footer
    or directory-signature)."""
    i = 0
    while i < len(items) and items[i].keyword not in ("r", *_FOOTER_KEYWORDS):
        i += 1
    header = items[:i]
    entries: list[list[netdoc.Item]] = []
    while i < len(items) and items[i].keyword not in _FOOTER_KEYWORDS:
        if items[i].keyword == "r":
            entries.append([])
        entries[-1].append(items[i])
        i += 1
    return header, entries, items[i:]


def parse_signature_item(it: netdoc.Item, what: str) -> DirectorySignature | None:
    """A directory-signature item; None for an algorithm C tor does not know (it skips those)."""
    if len(it.args) < 2:
        raise DecodeError(f"{what}: directory-signature needs at least 2 arguments")
    if len(it.args) == 2:
        algorithm, ident, sk = "sha1", it.args[0], it.args[1]
    else:
        algorithm, ident, sk = it.args[0], it.args[1], it.args[2]
        if algorithm not in SIGNATURE_ALGORITHMS:
            return None
    if it.object_type != "SIGNATURE" or not (
            MIN_SIGNATURE_BYTES <= len(it.object_data or b"") <= MAX_SIGNATURE_BYTES):
        raise DecodeError(f"{what}: bad object type or length on directory-signature")
    return DirectorySignature(hex20(ident, f"{what}: signature identity"),
                              hex20(sk, f"{what}: signing key digest"), it.object_data or b"", algorithm)


def parse_consensus(data: bytes) -> UncheckedConsensus:
    """Parse a microdesc-flavoured consensus (ours or C tor's). DecodeError for anything C tor would refuse
    to parse, and for the other flavours."""
    what = "consensus"
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"{what}: not bytes")
    data = bytes(data)
    items = netdoc.parse_items(data, what)
    if not items or items[0].keyword != "network-status-version" or items[0].start != 0:
        raise DecodeError(f"{what}: does not begin with network-status-version")
    header, entries, footer = split_sections(items)
    enforce_rules(header, _HEADER_RULES, what)
    doc = netdoc.Items(header, what)
    version = doc.one("network-status-version").args
    if version[0] != "3":
        raise DecodeError(f"{what}: network-status-version {version[0][:10]!r}, we read 3")
    if version[1:2] != ("microdesc",):
        raise DecodeError(f"{what}: not the microdesc flavour ({' '.join(version[1:2])[:20] or 'ns'})")
    if doc.one("vote-status").args[0] != "consensus":
        raise DecodeError(f"{what}: vote-status is not consensus")
    method_item = doc.optional("consensus-method")
    method = 1 if method_item is None else netdoc.parse_int(method_item.args[0], f"{what}: consensus-method",
                                                            1, _INT32[1])
    times = [parse_time_args(doc.one(k), what) for k in ("valid-after", "fresh-until", "valid-until")]
    delays = doc.one("voting-delay").args
    vote_delay = netdoc.parse_int(delays[0], f"{what}: voting-delay", 0, _INT32[1])
    dist_delay = netdoc.parse_int(delays[1], f"{what}: voting-delay", 0, _INT32[1])
    protocols = {}
    for keyword in ("recommended-client-protocols", "recommended-relay-protocols",
                    "required-client-protocols", "required-relay-protocols"):
        if (it := doc.optional(keyword)) is not None:
            text = " ".join(it.args)
            if not protocols_valid(text):
                raise DecodeError(f"{what}: malformed {keyword}")
            protocols[keyword.replace("-", "_")] = text
    params = parse_params(doc.optional("params"), what, sorted_unique=True)
    dir_sources = _parse_dir_sources(header, what)

    routers = []
    previous = None
    for entry in entries:
        node_id, router = parse_router_entry(entry, f"{what}: router {entry[0].args[0][:19]!r}"
                                             if entry[0].args else what)
        if previous is not None and node_id <= previous:
            raise DecodeError(f"{what}: router entries not sorted by identity digest")
        previous = node_id
        if router is not None:
            routers.append(router)

    weights, signatures, body = _parse_footer(footer, dir_sources, data, what)
    with as_decode_error(what):
        consensus = Consensus(
            valid_after=times[0], fresh_until=times[1], valid_until=times[2], vote_delay=vote_delay,
            dist_delay=dist_delay, dir_sources=dir_sources, routers=tuple(routers), consensus_method=method,
            known_flags=frozenset(doc.one("known-flags").args), params=params,
            shared_rand_previous=_parse_srv(doc.optional("shared-rand-previous-value")),
            shared_rand_current=_parse_srv(doc.optional("shared-rand-current-value")),
            bandwidth_weights=weights, **protocols)
    return UncheckedConsensus(consensus, body, signatures, data)


def _parse_footer(footer: list[netdoc.Item], dir_sources: tuple[DirSource, ...], data: bytes,
                  what: str) -> tuple[dict[str, int], tuple[DirectorySignature, ...], bytes]:
    first_sig = next((i for i, it in enumerate(footer) if it.keyword == "directory-signature"), None)
    if first_sig is None:
        raise DecodeError(f"{what}: no directory-signature")
    for it in footer[first_sig:]:
        if it.keyword != "directory-signature":
            raise DecodeError(f"{what}: extraneous {it.keyword[:40]!r} after the first directory-signature")
    head = footer[:first_sig]
    enforce_rules(head, {"directory-footer": (0, 1, 0, 0), "bandwidth-weights": (0, 1, 0, 1 << 30)}, what)
    for i, it in enumerate(head):
        if it.keyword == "directory-footer" and i != 0:
            raise DecodeError(f"{what}: misplaced directory-footer")
    weights = parse_params(netdoc.Items(head, what).optional("bandwidth-weights"), what, sorted_unique=False)
    sig_start = footer[first_sig].start
    if data.find(b"\ndirectory-signature") + 1 != sig_start:
        raise DecodeError(f"{what}: a line before the first signature begins with directory-signature")
    voters = {ds.v3ident for ds in dir_sources}
    sigs: list[DirectorySignature] = []
    for it in footer[first_sig:]:
        sig = parse_signature_item(it, what)
        if sig is None:
            continue
        if sig.v3ident not in voters:
            raise DecodeError(f"{what}: signature by {sig.v3ident.hex().upper()}, which has no dir-source")
        if any((s.v3ident, s.algorithm) == (sig.v3ident, sig.algorithm) for s in sigs):
            continue  # C tor uses the first of two signatures from one voter with one algorithm
        sigs.append(sig)
    if not sigs:
        raise DecodeError(f"{what}: no signature in a known digest algorithm")
    return weights, tuple(sigs), data[:sig_start]


def parse_detached_signature(data: bytes) -> DirectorySignature:
    """A detached signature as authorities exchange it: exactly one directory-signature item (sha1 or
    sha256). It is a claim until SignedConsensus.add_signature verifies it."""
    what = "detached signature"
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"{what}: not bytes")
    items = netdoc.parse_items(bytes(data), what)
    if len(items) != 1 or items[0].keyword != "directory-signature":
        raise DecodeError(f"{what}: expected exactly one directory-signature item")
    sig = parse_signature_item(items[0], what)
    if sig is None:
        raise DecodeError(f"{what}: unknown digest algorithm {items[0].args[0][:20]!r}")
    return sig


# ---------------------------------------------------------------------------------------------------------
# bandwidth weights (dir-spec 3.8.3, as consensus methods 26 and later compute them)


def _cdiv(a: int, b: int) -> int:
    """C integer division: truncates toward zero (Python's // floors)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def bandwidth_totals(routers: Iterable[ConsensusRouter]) -> tuple[int, int, int, int, int]:
    """G, M, E, D, T of dir-spec 3.8.3 over the consensus's routers: guard-only, neither, exit-only, guard
    and exit; T the sum. Since method 26 G = M = E = D = 1 and T = 4 before adding anything; BadExit relays
    are not exits for this (method 11)."""
    g = m = e = d = 1
    t = 4
    for r in routers:
        exit_ = "Exit" in r.flags and "BadExit" not in r.flags
        guard = "Guard" in r.flags
        t += r.bandwidth
        if exit_ and guard:
            d += r.bandwidth
        elif exit_:
            e += r.bandwidth
        elif guard:
            g += r.bandwidth
        else:
            m += r.bandwidth
    return g, m, e, d, t


_RANGE_ERROR, _SUMG_ERROR, _SUME_ERROR, _SUMD_ERROR, _BALANCE_MID_ERROR, _BALANCE_EG_ERROR = 1, 2, 3, 4, 5, 6


def _check_weights(wgg: int, wgd: int, wmg: int, wme: int, wmd: int, wee: int, wed: int, scale: int, g: int,
                   m: int, e: int, d: int, t: int, margin: int = 10) -> int:
    """0 when the weights sum, lie in range and balance the positions (within margin), else which failed."""
    def near(a: int, b: int, tolerance: int) -> bool:
        return abs(a - b) <= tolerance

    if not near(wed + wmd + wgd, scale, margin):
        return _SUMD_ERROR
    if not near(wmg + wgg, scale, margin):
        return _SUMG_ERROR
    if not near(wme + wee, scale, margin):
        return _SUME_ERROR
    if not all(0 <= w <= scale for w in (wgg, wgd, wmg, wme, wmd, wed, wee)):
        return _RANGE_ERROR
    tolerance = _cdiv(margin * t, 3)
    if not near(wgg * g + wgd * d, wee * e + wed * d, tolerance):
        return _BALANCE_EG_ERROR
    if not near(wgg * g + wgd * d, m * scale + wmd * d + wme * e + wmg * g, tolerance):
        return _BALANCE_MID_ERROR
    return 0


def compute_bandwidth_weights(g: int, m: int, e: int, d: int, t: int,
                              weight_scale: int = BW_WEIGHT_SCALE) -> dict[str, int]:
    """The bandwidth-weights of dir-spec 3.8.3 for these totals, with C tor's integer arithmetic and its
    fallbacks (dirvote.c networkstatus_compute_bw_weights_v10). Empty when C tor writes no bandwidth-weights
    line: a class without bandwidth, or a case whose solution does not balance."""
    s = weight_scale
    if min(g, m, e, d) <= 0 or s < 1:
        return {}
    if 3 * e >= t and 3 * g >= t:  # case 1: neither guards nor exits are scarce
        wgd = wed = wmd = _cdiv(s, 3)
        wee = _cdiv(s * (e + g + m), 3 * e)
        wme = s - wee
        wmg = _cdiv(s * (2 * g - e - m), 3 * g)
        wgg = s - wmg
        if _check_weights(wgg, wgd, wmg, wme, wmd, wee, wed, s, g, m, e, d, t):
            return {}
    elif 3 * e < t and 3 * g < t:  # case 2: both scarce
        rare, scarce_not = min(e, g), max(e, g)
        if rare + d < scarce_not:  # 2a: all of D to the rarer class
            wgg = wee = s
            wmg = wme = wmd = 0
            wed, wgd = (s, 0) if e < g else (0, s)
        else:  # 2b
            wee = _cdiv(s * (e - g + m), e)
            wed = _cdiv(s * (d - 2 * e + 4 * g - 2 * m), 3 * d)
            wme = _cdiv(s * (g - m), e)
            wmg = 0
            wgg = s
            wmd = wgd = _cdiv(s - wed, 2)
            error = _check_weights(wgg, wgd, wmg, wme, wmd, wee, wed, s, g, m, e, d, t)
            if error:
                wgg = wee = s
                wed = _cdiv(s * (d - 2 * e + g + m), 3 * d)
                wmd = _cdiv(s * (d - 2 * m + g + e), 3 * d)
                wme = wmg = 0
                if wmd < 0:  # too much middle bandwidth to balance
                    wmd = 0
                wgd = s - wed - wmd
                error = _check_weights(wgg, wgd, wmg, wme, wmd, wee, wed, s, g, m, e, d, t)
            if error not in (0, _BALANCE_MID_ERROR):
                return {}
    else:  # case 3: exactly one of them scarce
        scarce = min(e, g)
        if 3 * (scarce + d) < t:  # 3a
            if g < e:
                wgg = wgd = s
                wmd = wed = wmg = 0
                wme = 0 if e < m else _cdiv(s * (e - m), 2 * e)
                wee = s - wme
            else:
                wee = wed = s
                wmd = wgd = wme = 0
                wmg = 0 if g < m else _cdiv(s * (g - m), 2 * g)
                wgg = s - wmg
        else:  # 3b
            if g < e:
                wgg = s
                wgd = _cdiv(s * (d - 2 * g + e + m), 3 * d)
                wmg = 0
                wee = _cdiv(s * (e + m), 2 * e)
                wme = s - wee
                wmd = wed = _cdiv(s - wgd, 2)
            else:
                wee = s
                wed = _cdiv(s * (d - 2 * e + g + m), 3 * d)
                wme = 0
                wgg = _cdiv(s * (g + m), 2 * g)
                wmg = s - wgg
                wmd = wgd = _cdiv(s - wed, 2)
            if _check_weights(wgg, wgd, wmg, wme, wmd, wee, wed, s, g, m, e, d, t):
                return {}
    return {"Wbd": wmd, "Wbe": wme, "Wbg": wmg, "Wbm": s, "Wdb": s, "Web": s, "Wed": wed, "Wee": wee,
            "Weg": wed, "Wem": wee, "Wgb": s, "Wgd": wgd, "Wgg": wgg, "Wgm": wgg, "Wmb": s, "Wmd": wmd,
            "Wme": wme, "Wmg": wmg, "Wmm": s}


def bandwidth_weights(routers: Iterable[ConsensusRouter], params: Mapping[str, int] | None = None
                      ) -> dict[str, int]:
    """The bandwidth-weights line for a consensus listing `routers` (empty: no line). The scale is the
    bwweightscale parameter when the consensus carries one (at least 1), else 10000."""
    scale = max(1, (params or {}).get("bwweightscale", BW_WEIGHT_SCALE))
    return compute_bandwidth_weights(*bandwidth_totals(routers), weight_scale=scale)
