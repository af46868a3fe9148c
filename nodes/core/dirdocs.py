"""onionlab's own directory documents: relay descriptors, votes, consensus, consensus signatures.

Tor's dir-spec documents are RSA-signed text with many fields we have no use for. We keep dir-spec's concepts
and voting rules but sign with Ed25519 and keep only what the testbed needs (docs/differences.md says why).

Format (every document). ASCII text, at most MAX_DOCUMENT_BYTES, one item per line: `keyword` or
`keyword SP args`, each line ending in a single LF; no CR, no tabs, no empty lines. Keywords appear in the
fixed order shown below; an unknown, repeated (except `router`/`flags`/`directory-signature`), missing or
out-of-order keyword is a DecodeError. Integers are decimal without sign or leading zeros; keys, identities,
shared random values and signatures are standard base64 WITHOUT `=` padding (32 bytes -> 43 chars,
64 bytes -> 86 chars). Parsing is canonical: a document is accepted only if re-encoding what was parsed
gives back the identical bytes, so one value has exactly one encoding and encoding is deterministic.

A self-signed document ends in `signature SIG`, an Ed25519 signature over every byte before that line.
The first line names the document type, which keeps a signature on one type from being valid on another.

    onionlab-relay-descriptor 1          signed by the relay's identity key
    nickname NICK                        1-19 of [A-Za-z0-9], as in dir-spec
    identity ID                          Ed25519 identity (32 bytes)
    ntor-onion-key KEY                   curve25519 public key (32 bytes)
    address ADDR                         IPv4 or IPv6, canonical text form
    or-port PORT                         1-65535
    dir-port PORT                        0 when none
    bandwidth BYTES-PER-SECOND
    published UNIX-SECONDS
    platform TEXT                        1-128 printable ASCII characters, taken verbatim
    signature SIG

    onionlab-vote 1                      signed by the authority's identity key
    authority ID
    published T
    valid-after T                        valid-after < fresh-until < valid-until
    fresh-until T
    valid-until T
    hs-period-minutes N                  HS time period length (Tor: hsdir-interval, 1440)
    hs-rotation-offset-minutes N         HS time period rotation offset (Tor: 12 voting intervals, 720)
    [shared-rand-previous SRV]           optional, 32 bytes
    [shared-rand-current SRV]            optional, 32 bytes
    (router NICK ID NTOR-KEY ADDR OR-PORT DIR-PORT BANDWIDTH PUBLISHED
     flags [FLAG ...])*                  routers in ascending identity order; flags sorted, possibly none
    signature SIG

    onionlab-consensus 1                 the same header as a vote without authority/published/signature;
    valid-after T ... (router/flags)*    these bytes are Consensus.signing_bytes()
    (directory-signature ID SIG)*        only in a signed consensus: ascending authority order, one each

    onionlab-consensus-signature 1       one authority's detached signature, for exchange between authorities
    directory-signature ID SIG

Parsers return UNCHECKED objects (UncheckedRelayDescriptor, UncheckedVote, SignedConsensus, and a bare
ConsensusSignature claim); only `.check(...)` (or `add_signature`) hands out something to act on.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import re
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import StrEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import DecodeError, ExpiredError, LocalProtocolError, SignatureError
from .wire import Reader

MAX_DOCUMENT_BYTES = 256 * 1024
MAX_PLATFORM_CHARS = 128
DEFAULT_MAX_SKEW = 60  # seconds a document's publication time may lie in our future (clock skew)
_MAX_INT = 2**63 - 1

_DESCRIPTOR_HEADER = "onionlab-relay-descriptor 1"
_VOTE_HEADER = "onionlab-vote 1"
_CONSENSUS_HEADER = "onionlab-consensus 1"
_SIGNATURE_HEADER = "onionlab-consensus-signature 1"

_NICKNAME = re.compile(r"[A-Za-z0-9]{1,19}")
_KEYWORD = re.compile(r"[a-z][a-z0-9-]*")
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")
_B64 = re.compile(r"[A-Za-z0-9+/]*")
_PLATFORM = re.compile(rf"[\x20-\x7e]{{1,{MAX_PLATFORM_CHARS}}}")
_DOC_BYTES = re.compile(rb"[\x20-\x7e\n]*")


class Flag(StrEnum):
    """Router status flags (dir-spec names); members compare equal to their plain strings."""

    Fast = "Fast"
    Guard = "Guard"
    HSDir = "HSDir"
    Running = "Running"
    Stable = "Stable"
    Valid = "Valid"


def relay_node_id(identity: bytes) -> bytes:
    """The 20-byte node ID that ntor (ID field) and link specifier type 2 need.

    Tor uses the SHA-1 of the relay's RSA identity key; we have no RSA keys, so it is SHA-1 of the Ed25519
    identity. Everything else (HSDir ring, consensus lookups) uses the Ed25519 identity itself.
    """
    _check_bytes("identity", identity, 32)
    return hashlib.sha1(identity).digest()


# ---------------------------------------------------------------------------------------------------------
# field validation (shared by constructors, which raise LocalProtocolError, and parsers, which re-raise as
# DecodeError)


def _short(value: object) -> str:
    """repr() for error messages, bounded: remote values can be as long as a document."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise LocalProtocolError(f"{name} must be an integer in [{lo}, {hi}], got {_short(value)}")


def _check_bytes(name: str, value: object, n: int) -> None:
    if not isinstance(value, bytes) or len(value) != n:
        raise LocalProtocolError(f"{name} must be {n} bytes")


def _check_relay_fields(nickname: object, identity: object, ntor_onion_key: object, address: object,
                        or_port: object, dir_port: object, bandwidth: object, published: object) -> None:
    if not isinstance(nickname, str) or not _NICKNAME.fullmatch(nickname):
        raise LocalProtocolError(f"nickname must be 1-19 characters of [A-Za-z0-9], got {_short(nickname)}")
    _check_bytes("identity", identity, 32)
    _check_bytes("ntor_onion_key", ntor_onion_key, 32)
    if not isinstance(address, str) or "%" in address:
        raise LocalProtocolError(f"address must be an IP address string, got {_short(address)}")
    try:
        canonical = str(ipaddress.ip_address(address))
    except ValueError:
        raise LocalProtocolError(f"address is not an IP address: {_short(address)}") from None
    if canonical != address:
        raise LocalProtocolError(f"address {address!r} is not in canonical form ({canonical!r})")
    _check_int("or_port", or_port, 1, 65535)
    _check_int("dir_port", dir_port, 0, 65535)
    _check_int("bandwidth", bandwidth, 0, _MAX_INT)
    _check_int("published", published, 0, _MAX_INT)


def _check_period(valid_after: object, fresh_until: object, valid_until: object, hs_period_minutes: object,
                  hs_rotation_offset_minutes: object, shared_rand_previous: object,
                  shared_rand_current: object) -> None:
    for name, value in (("valid_after", valid_after), ("fresh_until", fresh_until),
                        ("valid_until", valid_until)):
        _check_int(name, value, 0, _MAX_INT)
    if not valid_after < fresh_until < valid_until:  # type: ignore[operator]
        raise LocalProtocolError(f"need valid_after < fresh_until < valid_until, got {valid_after}, "
                                 f"{fresh_until}, {valid_until}")
    _check_int("hs_period_minutes", hs_period_minutes, 1, 2**31 - 1)
    _check_int("hs_rotation_offset_minutes", hs_rotation_offset_minutes, 0, 2**31 - 1)
    for name, value in (("shared_rand_previous", shared_rand_previous),
                        ("shared_rand_current", shared_rand_current)):
        if value is not None:
            _check_bytes(name, value, 32)


def _sorted_routers(routers: Iterable[RouterStatus]) -> tuple[RouterStatus, ...]:
    routers = tuple(routers)
    for r in routers:
        if not isinstance(r, RouterStatus):
            raise LocalProtocolError(f"routers must be RouterStatus, got {type(r).__name__}")
    out = tuple(sorted(routers, key=lambda r: r.identity))
    for a, b in zip(out, out[1:], strict=False):
        if a.identity == b.identity:
            raise LocalProtocolError(f"relay {_b64e(a.identity)} listed twice")
    return out


# ---------------------------------------------------------------------------------------------------------
# encoding helpers


def _b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _finish(lines: list[str], what: str) -> bytes:
    data = "".join(line + "\n" for line in lines).encode("ascii")
    if len(data) > MAX_DOCUMENT_BYTES:
        raise LocalProtocolError(f"{what} is {len(data)} bytes, over the {MAX_DOCUMENT_BYTES}-byte limit")
    return data


def _verify(identity: bytes, signature: bytes, data: bytes, what: str) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(identity).verify(signature, data)
    except (InvalidSignature, ValueError):
        raise SignatureError(f"{what}: signature does not verify") from None


def _public_bytes(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes_raw()


# ---------------------------------------------------------------------------------------------------------
# relay descriptor


@dataclass(frozen=True, slots=True)
class RelayDescriptor:
    """What a relay says about itself, self-signed with its Ed25519 identity key."""

    nickname: str
    identity: bytes
    ntor_onion_key: bytes
    address: str
    or_port: int
    dir_port: int
    bandwidth: int
    published: int
    platform: str
    signature: bytes

    def __post_init__(self) -> None:
        _check_relay_fields(self.nickname, self.identity, self.ntor_onion_key, self.address, self.or_port,
                            self.dir_port, self.bandwidth, self.published)
        if not isinstance(self.platform, str) or not _PLATFORM.fullmatch(self.platform):
            raise LocalProtocolError(f"platform must be 1-{MAX_PLATFORM_CHARS} printable ASCII characters")
        _check_bytes("signature", self.signature, 64)

    def signing_bytes(self) -> bytes:
        return _finish(self._body_lines(), "relay descriptor")

    def encode(self) -> bytes:
        return _finish([*self._body_lines(), f"signature {_b64e(self.signature)}"], "relay descriptor")

    def _body_lines(self) -> list[str]:
        return [
            _DESCRIPTOR_HEADER,
            f"nickname {self.nickname}",
            f"identity {_b64e(self.identity)}",
            f"ntor-onion-key {_b64e(self.ntor_onion_key)}",
            f"address {self.address}",
            f"or-port {self.or_port}",
            f"dir-port {self.dir_port}",
            f"bandwidth {self.bandwidth}",
            f"published {self.published}",
            f"platform {self.platform}",
        ]


def make_relay_descriptor(*, nickname: str, ntor_onion_key: bytes, address: str, or_port: int, dir_port: int,
                          bandwidth: int, published: int, platform: str,
                          signer_private: Ed25519PrivateKey) -> RelayDescriptor:
    """Build and self-sign a descriptor; the identity is the signer's public key."""
    unsigned = RelayDescriptor(nickname, _public_bytes(signer_private), ntor_onion_key, address, or_port,
                               dir_port, bandwidth, published, platform, bytes(64))
    return replace(unsigned, signature=signer_private.sign(unsigned.signing_bytes()))


def _check_published(published: int, now: int, max_age: int | None, max_skew: int, what: str) -> None:
    if published > now + max_skew:
        raise ExpiredError(f"{what}: published {published - now} s in the future (allowed skew {max_skew} s)")
    if max_age is not None and published < now - max_age:
        raise ExpiredError(f"{what}: published {now - published} s ago, older than {max_age} s")


@dataclass(frozen=True, slots=True)
class UncheckedRelayDescriptor:
    """A parsed descriptor whose signature and age are not yet checked."""

    unchecked: RelayDescriptor

    def check(self, now: int, max_age: int, *, max_skew: int = DEFAULT_MAX_SKEW) -> RelayDescriptor:
        """Verify the self-signature, then that it was published within [now - max_age, now + max_skew]."""
        d = self.unchecked
        _verify(d.identity, d.signature, d.signing_bytes(), f"relay descriptor {d.nickname}")
        _check_published(d.published, now, max_age, max_skew, f"relay descriptor {d.nickname}")
        return d


# ---------------------------------------------------------------------------------------------------------
# router status, vote


@dataclass(frozen=True, slots=True)
class RouterStatus:
    """One relay's entry in a vote or the consensus. `flags` is normalised to a frozenset of Flag."""

    nickname: str
    identity: bytes
    ntor_onion_key: bytes
    address: str
    or_port: int
    dir_port: int
    bandwidth: int
    published: int
    flags: frozenset[str]

    def __post_init__(self) -> None:
        _check_relay_fields(self.nickname, self.identity, self.ntor_onion_key, self.address, self.or_port,
                            self.dir_port, self.bandwidth, self.published)
        try:
            flags = frozenset(Flag(f) for f in self.flags)
        except (ValueError, TypeError):
            raise LocalProtocolError(f"unknown flag in {sorted(map(str, self.flags))}") from None
        object.__setattr__(self, "flags", flags)

    @classmethod
    def from_descriptor(cls, desc: RelayDescriptor, flags: Iterable[str]) -> RouterStatus:
        return cls(desc.nickname, desc.identity, desc.ntor_onion_key, desc.address, desc.or_port,
                   desc.dir_port, desc.bandwidth, desc.published, frozenset(flags))

    def _lines(self) -> list[str]:
        return [
            f"router {self._descriptor_fields()} {self.bandwidth} {self.published}",
            " ".join(["flags", *sorted(self.flags)]),
        ]

    def _descriptor_fields(self) -> str:
        return (f"{self.nickname} {_b64e(self.identity)} {_b64e(self.ntor_onion_key)} {self.address} "
                f"{self.or_port} {self.dir_port}")


@dataclass(frozen=True, slots=True)
class Vote:
    """One authority's opinion of the network for one period; `routers` is kept sorted by identity."""

    authority_id: bytes
    published: int
    valid_after: int
    fresh_until: int
    valid_until: int
    routers: tuple[RouterStatus, ...]
    signature: bytes
    hs_period_minutes: int = 1440
    hs_rotation_offset_minutes: int = 720
    shared_rand_previous: bytes | None = None
    shared_rand_current: bytes | None = None

    def __post_init__(self) -> None:
        _check_bytes("authority_id", self.authority_id, 32)
        _check_int("published", self.published, 0, _MAX_INT)
        _check_period(self.valid_after, self.fresh_until, self.valid_until, self.hs_period_minutes,
                      self.hs_rotation_offset_minutes, self.shared_rand_previous, self.shared_rand_current)
        object.__setattr__(self, "routers", _sorted_routers(self.routers))
        _check_bytes("signature", self.signature, 64)

    def signing_bytes(self) -> bytes:
        return _finish(self._body_lines(), "vote")

    def encode(self) -> bytes:
        return _finish([*self._body_lines(), f"signature {_b64e(self.signature)}"], "vote")

    def _body_lines(self) -> list[str]:
        return [
            _VOTE_HEADER,
            f"authority {_b64e(self.authority_id)}",
            f"published {self.published}",
            *_period_lines(self.valid_after, self.fresh_until, self.valid_until, self.hs_period_minutes,
                           self.hs_rotation_offset_minutes, self.shared_rand_previous,
                           self.shared_rand_current),
            *(line for r in self.routers for line in r._lines()),
        ]


def _period_lines(valid_after: int, fresh_until: int, valid_until: int, hs_period_minutes: int,
                  hs_rotation_offset_minutes: int, shared_rand_previous: bytes | None,
                  shared_rand_current: bytes | None) -> list[str]:
    lines = [
        f"valid-after {valid_after}",
        f"fresh-until {fresh_until}",
        f"valid-until {valid_until}",
        f"hs-period-minutes {hs_period_minutes}",
        f"hs-rotation-offset-minutes {hs_rotation_offset_minutes}",
    ]
    if shared_rand_previous is not None:
        lines.append(f"shared-rand-previous {_b64e(shared_rand_previous)}")
    if shared_rand_current is not None:
        lines.append(f"shared-rand-current {_b64e(shared_rand_current)}")
    return lines


def make_vote(authority_private: Ed25519PrivateKey, *, published: int, valid_after: int, fresh_until: int,
              valid_until: int, routers: Iterable[RouterStatus], hs_period_minutes: int = 1440,
              hs_rotation_offset_minutes: int = 720, shared_rand_previous: bytes | None = None,
              shared_rand_current: bytes | None = None) -> Vote:
    """Build and sign a vote with the authority's identity key (which is also its authority_id)."""
    unsigned = Vote(_public_bytes(authority_private), published, valid_after, fresh_until, valid_until,
                    tuple(routers), bytes(64), hs_period_minutes, hs_rotation_offset_minutes,
                    shared_rand_previous, shared_rand_current)
    return replace(unsigned, signature=authority_private.sign(unsigned.signing_bytes()))


@dataclass(frozen=True, slots=True)
class UncheckedVote:
    """A parsed vote whose authority, signature and time are not yet checked."""

    unchecked: Vote

    def check(self, authority_keys: Collection[bytes], now: int, *,
              max_skew: int = DEFAULT_MAX_SKEW) -> Vote:
        """The signer must be a configured authority (a Mapping keyed by identity works too), the signature
        must verify, the vote must not be published in the future nor used after its valid-until."""
        v = self.unchecked
        if v.authority_id not in authority_keys:
            raise SignatureError(f"vote from unknown authority {_b64e(v.authority_id)}")
        _verify(v.authority_id, v.signature, v.signing_bytes(), "vote")
        _check_published(v.published, now, None, max_skew, "vote")
        if now > v.valid_until:
            raise ExpiredError(f"vote: valid until {v.valid_until}, now is {now}")
        return v


# ---------------------------------------------------------------------------------------------------------
# consensus


@dataclass(frozen=True, slots=True)
class Consensus:
    """The network status all clients share; `routers` is kept sorted by identity. Unsigned on its own."""

    valid_after: int
    fresh_until: int
    valid_until: int
    routers: tuple[RouterStatus, ...]
    hs_period_minutes: int = 1440
    hs_rotation_offset_minutes: int = 720
    shared_rand_previous: bytes | None = None
    shared_rand_current: bytes | None = None

    def __post_init__(self) -> None:
        _check_period(self.valid_after, self.fresh_until, self.valid_until, self.hs_period_minutes,
                      self.hs_rotation_offset_minutes, self.shared_rand_previous, self.shared_rand_current)
        object.__setattr__(self, "routers", _sorted_routers(self.routers))

    def signing_bytes(self) -> bytes:
        """The exact bytes every authority signs (also the head of the signed consensus document)."""
        return _finish(self._lines(), "consensus")

    def digest(self) -> bytes:
        """SHA-256 of signing_bytes(): a short name for comparing consensuses in logs and status pages."""
        return hashlib.sha256(self.signing_bytes()).digest()

    def _lines(self) -> list[str]:
        return [
            _CONSENSUS_HEADER,
            *_period_lines(self.valid_after, self.fresh_until, self.valid_until, self.hs_period_minutes,
                           self.hs_rotation_offset_minutes, self.shared_rand_previous,
                           self.shared_rand_current),
            *(line for r in self.routers for line in r._lines()),
        ]


def _descriptor_tuple(r: RouterStatus) -> tuple[int, str]:
    """What makes two listings 'the same descriptor' (dir-spec: published time, nickname, address, ports)."""
    return r.published, r._descriptor_fields()


def _low_median(values: Iterable[int]) -> int:
    """dir-spec: 'All ties in computing medians are broken in favor of the smaller or earlier item'."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def compute_consensus(votes: Sequence[Vote], n_authorities: int) -> Consensus:
    """Combine checked votes into the (unsigned) consensus with dir-spec's rules; the result depends only on
    the set of votes, never their order.

    - A relay (by Ed25519 identity) is a candidate when MORE than n_authorities/2 votes list it (total
      configured authorities, not just those that voted).
    - Its descriptor fields (nickname, ntor key, address, ports, published) are the tuple listed by the most
      votes; ties go to the most recently published, then to the smallest text of those fields as encoded
      (dir-spec breaks the last tie by the smaller descriptor digest).
    - A flag is set when MORE than half of the votes that list the relay set it; exactly half is not enough.
    - Bandwidth is the low median of the listing votes' values.
    - As in dir-spec consensus methods 4 and 24, a candidate without the resulting Running and Valid flags is
      left out, so clients never see relays the authorities consider down or invalid.
    - valid-after, fresh-until, valid-until and the HS period parameters are low medians over all votes.
    - A shared random value (previous, current) is included when more than n_authorities/2 votes carry the
      same value (Tor keeps an SRV only with a majority of authorities); otherwise it is absent and clients
      fall back to the disaster SRV.
    """
    if not isinstance(n_authorities, int) or n_authorities < 1:
        raise LocalProtocolError(f"n_authorities must be positive, got {n_authorities!r}")
    if not votes:
        raise LocalProtocolError("cannot compute a consensus from no votes")
    if len({v.authority_id for v in votes}) != len(votes):
        raise LocalProtocolError("two votes from the same authority")
    if len(votes) > n_authorities:
        raise LocalProtocolError(f"{len(votes)} votes but only {n_authorities} authorities")

    by_identity: dict[bytes, list[RouterStatus]] = {}
    for vote in votes:
        for r in vote.routers:
            by_identity.setdefault(r.identity, []).append(r)

    routers = []
    for listings in by_identity.values():
        if 2 * len(listings) <= n_authorities:
            continue
        flags = frozenset(f for f in Flag if 2 * sum(f in r.flags for r in listings) > len(listings))
        if Flag.Running not in flags or Flag.Valid not in flags:
            continue
        tally = Counter(_descriptor_tuple(r) for r in listings)
        best, _ = min(tally.items(), key=lambda kv: (-kv[1], -kv[0][0], kv[0][1]))
        chosen = next(r for r in listings if _descriptor_tuple(r) == best)
        routers.append(RouterStatus(chosen.nickname, chosen.identity, chosen.ntor_onion_key, chosen.address,
                                    chosen.or_port, chosen.dir_port,
                                    _low_median(r.bandwidth for r in listings), chosen.published, flags))

    def majority_srv(values: Iterable[bytes | None]) -> bytes | None:
        tally = Counter(v for v in values if v is not None)
        if not tally:
            return None
        value, count = min(tally.items(), key=lambda kv: (-kv[1], kv[0]))
        return value if 2 * count > n_authorities else None

    return Consensus(
        valid_after=_low_median(v.valid_after for v in votes),
        fresh_until=_low_median(v.fresh_until for v in votes),
        valid_until=_low_median(v.valid_until for v in votes),
        routers=tuple(routers),
        hs_period_minutes=_low_median(v.hs_period_minutes for v in votes),
        hs_rotation_offset_minutes=_low_median(v.hs_rotation_offset_minutes for v in votes),
        shared_rand_previous=majority_srv(v.shared_rand_previous for v in votes),
        shared_rand_current=majority_srv(v.shared_rand_current for v in votes),
    )


@dataclass(frozen=True, slots=True)
class ConsensusSignature:
    """One authority's signature over Consensus.signing_bytes(). Parsed ones are claims until verified."""

    authority_id: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_bytes("authority_id", self.authority_id, 32)
        _check_bytes("signature", self.signature, 64)

    def _line(self) -> str:
        return f"directory-signature {_b64e(self.authority_id)} {_b64e(self.signature)}"

    def encode(self) -> bytes:
        """The detached form authorities send each other."""
        return _finish([_SIGNATURE_HEADER, self._line()], "consensus signature")

    def verify(self, consensus: Consensus) -> None:
        _verify(self.authority_id, self.signature, consensus.signing_bytes(), "consensus signature")


def sign_consensus(consensus: Consensus, private: Ed25519PrivateKey) -> ConsensusSignature:
    return ConsensusSignature(_public_bytes(private), private.sign(consensus.signing_bytes()))


@dataclass(frozen=True, slots=True)
class SignedConsensus:
    """A consensus with the signatures gathered so far (sorted by authority, one each). Parsed ones are
    unchecked: use `check` to get the Consensus."""

    consensus: Consensus
    signatures: tuple[ConsensusSignature, ...] = ()

    def __post_init__(self) -> None:
        for s in self.signatures:
            if not isinstance(s, ConsensusSignature):
                raise LocalProtocolError(f"signatures must be ConsensusSignature, got {type(s).__name__}")
        sigs = tuple(sorted(self.signatures, key=lambda s: s.authority_id))
        for a, b in zip(sigs, sigs[1:], strict=False):
            if a.authority_id == b.authority_id:
                raise LocalProtocolError(f"two signatures from authority {_b64e(a.authority_id)}")
        object.__setattr__(self, "signatures", sigs)

    def encode(self) -> bytes:
        return _finish([*self.consensus._lines(), *(s._line() for s in self.signatures)], "signed consensus")

    def add_signature(self, sig: ConsensusSignature, authority_keys: Collection[bytes]) -> SignedConsensus:
        """Add another authority's signature after verifying it (so a bad one can never displace a good one).
        Adding a signature already present is a no-op."""
        if sig.authority_id not in authority_keys:
            raise SignatureError(f"signature from unknown authority {_b64e(sig.authority_id)}")
        sig.verify(self.consensus)
        if sig in self.signatures:
            return self
        others = tuple(s for s in self.signatures if s.authority_id != sig.authority_id)
        return SignedConsensus(self.consensus, (*others, sig))

    def check(self, authority_keys: Collection[bytes], now: int) -> Consensus:
        """Need floor(n/2)+1 valid signatures from distinct configured authorities (n = number configured);
        signatures from unknown authorities and forged ones are not counted. Then valid_after <= now <=
        valid_until."""
        known = set(authority_keys)
        needed = len(known) // 2 + 1
        body = self.consensus.signing_bytes()
        valid = 0
        for s in self.signatures:
            if s.authority_id not in known:
                continue
            try:
                _verify(s.authority_id, s.signature, body, "consensus")
            except SignatureError:
                continue
            valid += 1
        if valid < needed:
            raise SignatureError(f"consensus has {valid} valid signatures of {len(known)} authorities, "
                                 f"needs {needed}")
        c = self.consensus
        if now < c.valid_after:
            raise ExpiredError(f"consensus not valid until {c.valid_after}, now is {now}")
        if now > c.valid_until:
            raise ExpiredError(f"consensus expired at {c.valid_until}, now is {now}")
        return c


# ---------------------------------------------------------------------------------------------------------
# parsing


class _Lines:
    """A cursor over a document's lines that knows which keywords the document may contain."""

    def __init__(self, data: bytes, what: str, known: frozenset[str]) -> None:
        self._what = what
        self._known = known
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError(f"{what}: not bytes")
        data = bytes(data)
        if len(data) > MAX_DOCUMENT_BYTES:
            raise DecodeError(f"{what}: {len(data)} bytes, over the {MAX_DOCUMENT_BYTES}-byte limit")
        if not _DOC_BYTES.fullmatch(data):
            raise DecodeError(f"{what}: bytes outside printable ASCII and LF")
        if not data.endswith(b"\n"):
            raise DecodeError(f"{what}: does not end with a newline")
        self._items: list[tuple[str, str]] = []
        for n, line in enumerate(data[:-1].decode("ascii").split("\n"), 1):
            keyword, _, args = line.partition(" ")
            if not _KEYWORD.fullmatch(keyword):
                raise DecodeError(f"{what}: line {n}: bad keyword {keyword[:32]!r}")
            self._items.append((keyword, args))
        self._pos = 0
        self._seen: set[str] = set()

    def peek(self) -> str | None:
        return self._items[self._pos][0] if self._pos < len(self._items) else None

    def take(self, keyword: str) -> str:
        found = self.peek()
        if found != keyword:
            if found is None:
                raise DecodeError(f"{self._what}: missing {keyword!r} at end of document")
            if found not in self._known:
                raise DecodeError(f"{self._what}: line {self._pos + 1}: unknown keyword {found!r}")
            if found in self._seen:
                raise DecodeError(f"{self._what}: line {self._pos + 1}: duplicate or misplaced {found!r}")
            raise DecodeError(f"{self._what}: line {self._pos + 1}: expected {keyword!r}, found {found!r}")
        self._seen.add(keyword)
        self._pos += 1
        return self._items[self._pos - 1][1]

    def optional(self, keyword: str) -> str | None:
        return self.take(keyword) if self.peek() == keyword else None

    def end(self) -> None:
        found = self.peek()
        if found is None:
            return
        if found not in self._known:
            raise DecodeError(f"{self._what}: line {self._pos + 1}: unknown keyword {found!r}")
        raise DecodeError(f"{self._what}: line {self._pos + 1}: duplicate or misplaced {found!r}")


def _args(value: str, n: int, what: str) -> list[str]:
    parts = value.split(" ")
    if len(parts) != n or "" in parts:
        raise DecodeError(f"{what}: expected {n} space-separated arguments")
    return parts


def _int(value: str, what: str) -> int:
    if not _DECIMAL.fullmatch(value):
        raise DecodeError(f"{what}: not a canonical decimal integer: {value[:32]!r}")
    return int(value)


def _b64(value: str, n: int, what: str) -> bytes:
    if len(value) != (4 * n + 2) // 3 or not _B64.fullmatch(value):
        raise DecodeError(f"{what}: expected {n} bytes as unpadded base64")
    try:
        raw = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError(f"{what}: bad base64") from None
    if _b64e(raw) != value:
        raise DecodeError(f"{what}: non-canonical base64")
    r = Reader(raw, what)
    out = r.bytes(n)
    r.expect_end()
    return out


def _parse_router(lines: _Lines) -> RouterStatus:
    nick, ident, ntor, addr, orp, dirp, bw, pub = _args(lines.take("router"), 8, "router")
    flag_args = lines.take("flags")
    names = flag_args.split(" ") if flag_args else []
    flags = set()
    for name in names:
        if name not in Flag.__members__:
            raise DecodeError(f"router {nick[:19]!r}: unknown flag {name[:32]!r}")
        if name in flags:
            raise DecodeError(f"router {nick[:19]!r}: duplicate flag {name!r}")
        flags.add(Flag(name))
    with _as_decode_error("router"):
        return RouterStatus(nick, _b64(ident, 32, "router identity"), _b64(ntor, 32, "router ntor-onion-key"),
                            addr, _int(orp, "router or-port"), _int(dirp, "router dir-port"),
                            _int(bw, "router bandwidth"), _int(pub, "router published"), frozenset(flags))


@contextmanager
def _as_decode_error(what: str) -> Iterator[None]:
    """Constructor validation raises LocalProtocolError; for remote input that is a DecodeError."""
    try:
        yield
    except LocalProtocolError as e:
        raise DecodeError(f"{what}: {e}") from None


def _canonical(doc_bytes: bytes, data: bytes, what: str) -> None:
    if doc_bytes != bytes(data):
        raise DecodeError(f"{what}: not in canonical form (order, spacing or number format)")


_PERIOD_KEYWORDS = frozenset({"valid-after", "fresh-until", "valid-until", "hs-period-minutes",
                              "hs-rotation-offset-minutes", "shared-rand-previous", "shared-rand-current",
                              "router", "flags"})


def _parse_period(lines: _Lines) -> dict[str, object]:
    fields: dict[str, object] = {}
    for keyword, name in (("valid-after", "valid_after"), ("fresh-until", "fresh_until"),
                          ("valid-until", "valid_until"), ("hs-period-minutes", "hs_period_minutes"),
                          ("hs-rotation-offset-minutes", "hs_rotation_offset_minutes")):
        fields[name] = _int(lines.take(keyword), keyword)
    for keyword, name in (("shared-rand-previous", "shared_rand_previous"),
                          ("shared-rand-current", "shared_rand_current")):
        value = lines.optional(keyword)
        fields[name] = None if value is None else _b64(value, 32, keyword)
    routers = []
    while lines.peek() == "router":
        routers.append(_parse_router(lines))
    fields["routers"] = tuple(routers)
    return fields


def parse_relay_descriptor(data: bytes) -> UncheckedRelayDescriptor:
    what = "relay descriptor"
    lines = _Lines(data, what, frozenset({"onionlab-relay-descriptor", "nickname", "identity",
                                          "ntor-onion-key", "address", "or-port", "dir-port", "bandwidth",
                                          "published", "platform", "signature"}))
    if lines.take("onionlab-relay-descriptor") != "1":
        raise DecodeError(f"{what}: unsupported version")
    nickname = lines.take("nickname")
    identity = _b64(lines.take("identity"), 32, "identity")
    ntor = _b64(lines.take("ntor-onion-key"), 32, "ntor-onion-key")
    address = lines.take("address")
    or_port = _int(lines.take("or-port"), "or-port")
    dir_port = _int(lines.take("dir-port"), "dir-port")
    bandwidth = _int(lines.take("bandwidth"), "bandwidth")
    published = _int(lines.take("published"), "published")
    platform = lines.take("platform")
    signature = _b64(lines.take("signature"), 64, "signature")
    lines.end()
    with _as_decode_error(what):
        desc = RelayDescriptor(nickname, identity, ntor, address, or_port, dir_port, bandwidth, published,
                               platform, signature)
    _canonical(desc.encode(), data, what)
    return UncheckedRelayDescriptor(desc)


def parse_vote(data: bytes) -> UncheckedVote:
    what = "vote"
    lines = _Lines(data, what, _PERIOD_KEYWORDS | {"onionlab-vote", "authority", "published", "signature"})
    if lines.take("onionlab-vote") != "1":
        raise DecodeError(f"{what}: unsupported version")
    authority = _b64(lines.take("authority"), 32, "authority")
    published = _int(lines.take("published"), "published")
    fields = _parse_period(lines)
    signature = _b64(lines.take("signature"), 64, "signature")
    lines.end()
    with _as_decode_error(what):
        vote = Vote(authority_id=authority, published=published, signature=signature, **fields)  # type: ignore[arg-type]
    _canonical(vote.encode(), data, what)
    return UncheckedVote(vote)


def parse_signed_consensus(data: bytes) -> SignedConsensus:
    """Parse a consensus with its signatures; the result is unchecked until SignedConsensus.check."""
    what = "consensus"
    lines = _Lines(data, what, _PERIOD_KEYWORDS | {"onionlab-consensus", "directory-signature"})
    if lines.take("onionlab-consensus") != "1":
        raise DecodeError(f"{what}: unsupported version")
    fields = _parse_period(lines)
    sigs = []
    while lines.peek() == "directory-signature":
        sigs.append(_parse_signature_line(lines.take("directory-signature")))
    lines.end()
    with _as_decode_error(what):
        signed = SignedConsensus(Consensus(**fields), tuple(sigs))  # type: ignore[arg-type]
    _canonical(signed.encode(), data, what)
    return signed


def _parse_signature_line(args: str) -> ConsensusSignature:
    authority, sig = _args(args, 2, "directory-signature")
    return ConsensusSignature(_b64(authority, 32, "signature authority"), _b64(sig, 64, "signature"))


def parse_consensus_signature(data: bytes) -> ConsensusSignature:
    """Parse a detached signature; it is a claim until SignedConsensus.add_signature verifies it."""
    what = "consensus signature"
    lines = _Lines(data, what, frozenset({"onionlab-consensus-signature", "directory-signature"}))
    if lines.take("onionlab-consensus-signature") != "1":
        raise DecodeError(f"{what}: unsupported version")
    sig = _parse_signature_line(lines.take("directory-signature"))
    lines.end()
    _canonical(sig.encode(), data, what)
    return sig
