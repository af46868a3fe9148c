"""onionlab's internal vote (exchanged among our authorities only) and the consensus computation.

The vote is our own, simplest form, in dir-spec's item format, signed as dir-spec votes are: the authority
includes its key certificate and signs with the certified signing key (RSA, PKCS#1 v1.5 over SHA-256 of the
document through the space after "directory-signature", the same range as a consensus). Parsing is strict: a
vote is accepted only if re-encoding what was parsed gives back the same bytes, so unknown, repeated,
missing or misplaced lines, and non-canonical values, are DecodeErrors.

    onionlab-vote 1
    published YYYY-MM-DD HH:MM:SS
    valid-after / fresh-until / valid-until YYYY-MM-DD HH:MM:SS    VA + 10 <= FU, FU + 10 <= VU
    voting-delay VOTE-SECONDS DIST-SECONDS                          each >= 2
    params hsdir_interval=N [K=V ...]                               sorted; Int32 values
    [shared-rand-previous-value 0 BASE64]
    [shared-rand-current-value 0 BASE64]
    dir-key-certificate-version 3 ... dir-key-certification         the authority's certificate, verbatim
    (r NICK NODE-ID-B64 PUBLISHED-DATE PUBLISHED-TIME IPV4 ORPORT DIRPORT
     id ed25519 ED25519-ID-B64
     m MICRODESC-SHA256-B64
     s FLAG ...                                                     sorted, from VOTE_FLAGS
     [v VERSION]
     pr PROTOCOLS
     w Bandwidth=KB-PER-SECOND)*                                    ascending node id
    directory-signature sha256 V3IDENT SIGNING-KEY-DIGEST + SIGNATURE

`compute_consensus` turns checked votes into the microdesc Consensus with dir-spec 3.8's rules as onionlab
keeps them (docs/differences.md): a relay is listed when more than half of ALL configured authorities list
it; a flag when more than half of the votes listing the relay set it; Running and Valid are required; times,
delays, bandwidths and parameters are low medians; a shared random value needs a majority of all
authorities. It can return a consensus that lists no relay: the caller must not sign or publish that one.
"""

from __future__ import annotations

import base64
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from . import netdoc, tor_rsa
from .authcert import AuthorityCert, UncheckedAuthorityCert, parse_authority_cert
from .consensus import (
    HS_PERIOD_PARAM,
    MAX_CONSENSUS_METHOD,
    MIN_DIST_SECONDS,
    MIN_ENCODED_METHOD,
    MIN_VOTE_INTERVAL_TESTING,
    MIN_VOTE_SECONDS,
    Consensus,
    ConsensusRouter,
    DirectorySignature,
    DirSource,
    as_decode_error,
    b64,
    b64_field,
    bandwidth_weights,
    check_bytes,
    check_flags,
    check_int,
    check_ipv4,
    check_nickname,
    check_params,
    check_protocols,
    check_text,
    check_time,
    parse_ipv4,
    parse_port,
    parse_signature_item,
    parse_time_args,
    signed_digest,
)
from .errors import DecodeError, ExpiredError, LocalProtocolError, SignatureError

VOTE_HEADER = "onionlab-vote 1"
DEFAULT_MAX_SKEW = 60  # seconds a vote's publication may lie in our future
# The flags our authorities have an opinion on (every vote knows all of them); the consensus knows these and
# NoEdConsensus, which the computation itself sets (dir-spec 3.8.0.1, consensus method 22 and later).
VOTE_FLAGS = frozenset({"Authority", "BadExit", "Exit", "Fast", "Guard", "HSDir", "Running", "Stable",
                        "V2Dir", "Valid"})
NO_ED_CONSENSUS = "NoEdConsensus"
# Protocol lines (dir-spec 3.4.1). C tor refuses to run, logging "At least one protocol listed as required in
# the consensus is not supported by this version of Tor", when a consensus published after its release
# (networkstatus_check_required_protocols) requires a protocol it lacks, and warns about missing recommended
# ones. Required: what every onionlab node and C tor 0.4.9 (Cons=1-2 Desc=1-4 FlowCtrl=1-2 Link=3-5
# Microdesc=1-3 Relay=2-6 ...) both speak, and no more (C tor's own required-client list). Recommended: that
# plus the onion-service protocols our relays implement.
REQUIRED_PROTOCOLS = "Cons=2 Desc=2 FlowCtrl=1 Link=4 Microdesc=2 Relay=2"
RECOMMENDED_PROTOCOLS = "Cons=2 Desc=2 FlowCtrl=1 HSDir=2 HSIntro=4 HSRend=2 Link=4-5 Microdesc=2 Relay=2"
MIN_PARAM_VOTES = 3  # dir-spec 3.8: a parameter is kept with a majority of all authorities, or 3 votes
_UINT32_MAX = 2**32 - 1
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class DirAuthority:
    """A configured authority: what its dir-source line says. compute_consensus needs ALL of them."""

    nickname: str
    v3ident: bytes
    address: str  # IPv4
    dir_port: int
    or_port: int
    contact: str = "onionlab authority"

    def __post_init__(self) -> None:
        check_nickname(self.nickname)
        check_bytes("v3ident", self.v3ident, 20)
        check_ipv4("address", self.address)
        check_int("dir_port", self.dir_port, 0, 65535)
        check_int("or_port", self.or_port, 0, 65535)
        check_text("contact", self.contact, 1024)


@dataclass(frozen=True, slots=True)
class VoteRouter:
    """One relay as an authority sees it. bandwidth is in kB/s (the "w Bandwidth=" unit)."""

    nickname: str
    node_id: bytes  # SHA-1 of the relay's RSA identity key
    ed25519_identity: bytes
    address: str  # IPv4
    or_port: int
    dir_port: int
    published: int  # of the relay's descriptor
    bandwidth: int
    version: str | None
    proto: str
    md_digest: bytes  # SHA-256 of its microdescriptor
    flags: frozenset[str]

    def __post_init__(self) -> None:
        check_nickname(self.nickname)
        check_bytes("node_id", self.node_id, 20)
        check_bytes("ed25519_identity", self.ed25519_identity, 32)
        check_ipv4("address", self.address)
        check_int("or_port", self.or_port, 1, 65535)
        check_int("dir_port", self.dir_port, 0, 65535)
        check_time("published", self.published)
        check_int("bandwidth", self.bandwidth, 0, _UINT32_MAX)
        if self.version is not None:
            check_text("version", self.version, 120)
        check_protocols("proto", self.proto)
        check_bytes("md_digest", self.md_digest, 32)
        flags = check_flags("flags", self.flags)
        if not flags <= VOTE_FLAGS:
            raise LocalProtocolError(f"flags {sorted(flags - VOTE_FLAGS)} are not ones our authorities vote "
                                     "on")
        object.__setattr__(self, "flags", flags)

    def lines(self) -> list[str]:
        out = [f"r {self.nickname} {b64(self.node_id)} {netdoc.format_time(self.published)} {self.address} "
               f"{self.or_port} {self.dir_port}",
               f"id ed25519 {b64(self.ed25519_identity)}",
               f"m {b64(self.md_digest)}",
               " ".join(["s", *sorted(self.flags)])]
        if self.version is not None:
            out.append(f"v {self.version}")
        out += [f"pr {self.proto}".rstrip(" "), f"w Bandwidth={self.bandwidth}"]
        return out


@dataclass(frozen=True, slots=True)
class Vote:
    """One authority's signed opinion of the network for one period. routers are kept sorted by node id."""

    cert: AuthorityCert
    published: int
    valid_after: int
    fresh_until: int
    valid_until: int
    vote_delay: int
    dist_delay: int
    routers: tuple[VoteRouter, ...]
    signature: DirectorySignature
    hs_period_minutes: int = 1440  # the hsdir_interval parameter this authority proposes
    params: dict[str, int] = field(default_factory=dict)  # other consensus parameters it proposes
    shared_rand_previous: bytes | None = None
    shared_rand_current: bytes | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.cert, AuthorityCert):
            raise LocalProtocolError("cert must be an AuthorityCert")
        check_time("published", self.published)
        va = check_time("valid_after", self.valid_after)
        fu = check_time("fresh_until", self.fresh_until)
        vu = check_time("valid_until", self.valid_until)
        if not (va + MIN_VOTE_INTERVAL_TESTING <= fu and fu + MIN_VOTE_INTERVAL_TESTING <= vu):
            gap = MIN_VOTE_INTERVAL_TESTING
            raise LocalProtocolError(f"need valid_after + {gap} <= fresh_until and fresh_until + {gap} <= "
                                     f"valid_until, got {va}, {fu}, {vu}")
        check_int("vote_delay", self.vote_delay, MIN_VOTE_SECONDS, _INT32_MAX)
        check_int("dist_delay", self.dist_delay, MIN_DIST_SECONDS, _INT32_MAX)
        check_int("hs_period_minutes", self.hs_period_minutes, 1, _INT32_MAX)
        params = check_params("params", self.params)
        if HS_PERIOD_PARAM in params:
            raise LocalProtocolError(f"{HS_PERIOD_PARAM} is hs_period_minutes, not one of params")
        object.__setattr__(self, "params", params)
        for name in ("shared_rand_previous", "shared_rand_current"):
            if getattr(self, name) is not None:
                check_bytes(name, getattr(self, name), 32)
        routers = tuple(self.routers) if isinstance(self.routers, Iterable) else None
        if routers is None or not all(isinstance(r, VoteRouter) for r in routers):
            raise LocalProtocolError("routers must be VoteRouter")
        routers = tuple(sorted(routers, key=lambda r: r.node_id))
        for a, b in zip(routers, routers[1:], strict=False):
            if a.node_id == b.node_id:
                raise LocalProtocolError(f"relay {a.node_id.hex().upper()} listed twice")
        if len({r.ed25519_identity for r in routers}) != len(routers):
            raise LocalProtocolError("two relays with one ed25519 identity (C tor rejects such a vote)")
        object.__setattr__(self, "routers", routers)
        if not isinstance(self.signature, DirectorySignature) or (
                self.signature.v3ident, self.signature.signing_key_digest, self.signature.algorithm) != (
                self.cert.v3ident, self.cert.signing_key_digest, "sha256"):
            raise LocalProtocolError("the signature must be a sha256 one by the certificate's signing key")

    @property
    def authority(self) -> bytes:
        """The v3ident of the authority that made this vote."""
        return self.cert.v3ident

    @property
    def all_params(self) -> dict[str, int]:
        return dict(sorted({**self.params, HS_PERIOD_PARAM: self.hs_period_minutes}.items()))

    def body(self) -> bytes:
        """Everything before the directory-signature line."""
        lines = [
            VOTE_HEADER,
            f"published {netdoc.format_time(self.published)}",
            f"valid-after {netdoc.format_time(self.valid_after)}",
            f"fresh-until {netdoc.format_time(self.fresh_until)}",
            f"valid-until {netdoc.format_time(self.valid_until)}",
            f"voting-delay {self.vote_delay} {self.dist_delay}",
            " ".join(["params", *(f"{k}={v}" for k, v in self.all_params.items())]),
        ]
        for keyword, value in (("shared-rand-previous-value", self.shared_rand_previous),
                               ("shared-rand-current-value", self.shared_rand_current)):
            if value is not None:
                lines.append(f"{keyword} 0 {_b64_padded(value)}")
        head = "".join(line + "\n" for line in lines).encode("ascii")
        routers = "".join(line + "\n" for r in self.routers for line in r.lines()).encode("ascii")
        return head + self.cert.raw + routers

    def encode(self) -> bytes:
        return self.body() + self.signature.encode()

    @property
    def digest(self) -> bytes:
        """SHA-1 of the vote as signed: the consensus's vote-digest for this authority (dir-spec 3.4.1)."""
        return signed_digest(self.body(), "sha1")


def _b64_padded(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def make_vote(cert: AuthorityCert, signing: RSAPrivateKey, *, published: int, valid_after: int,
              fresh_until: int, valid_until: int, vote_delay: int, dist_delay: int,
              routers: Iterable[VoteRouter], hs_period_minutes: int = 1440,
              params: Mapping[str, int] | None = None, shared_rand_previous: bytes | None = None,
              shared_rand_current: bytes | None = None) -> Vote:
    """Build a vote and sign it with `signing`, the key `cert` certifies."""
    if not isinstance(cert, AuthorityCert) or not isinstance(signing, RSAPrivateKey):
        raise LocalProtocolError("make_vote needs an AuthorityCert and an RSA signing key")
    if tor_rsa.fingerprint(signing.public_key()) != cert.signing_key_digest:
        raise LocalProtocolError("that signing key is not the one the certificate certifies")
    key_bytes = (signing.key_size + 7) // 8
    placeholder = DirectorySignature(cert.v3ident, cert.signing_key_digest, bytes(max(128, key_bytes)))
    unsigned = Vote(cert, published, valid_after, fresh_until, valid_until, vote_delay, dist_delay,
                    tuple(routers), placeholder, hs_period_minutes, dict(params or {}), shared_rand_previous,
                    shared_rand_current)
    signature = tor_rsa.sign_digest(signing, signed_digest(unsigned.body(), "sha256"))
    return replace(unsigned, signature=replace(placeholder, signature=signature))


@dataclass(frozen=True, slots=True)
class UncheckedVote:
    """A parsed vote: its certificate, signature and times are not yet checked."""

    unchecked: Vote
    unchecked_cert: UncheckedAuthorityCert = field(repr=False)

    def check(self, configured: Collection[bytes], now: int, *, max_skew: int = DEFAULT_MAX_SKEW) -> Vote:
        """The authority must be one of `configured` (v3idents), its certificate must check at `now`, the
        vote must be signed by the certified signing key, not published more than max_skew seconds in the
        future, and not used after its valid-until."""
        v = self.unchecked
        who = v.authority.hex().upper()
        if v.authority not in configured:
            raise SignatureError(f"vote from unknown authority {who}")
        cert = self.unchecked_cert.check(now)
        v.signature.verify(v.body(), cert)
        if v.published > now + max_skew:
            raise ExpiredError(f"vote from {who} published {v.published - now} s in the future")
        if now > v.valid_until:
            raise ExpiredError(f"vote from {who} was valid until {netdoc.format_time(v.valid_until)}")
        return v


def parse_vote(data: bytes) -> UncheckedVote:
    what = "vote"
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"{what}: not bytes")
    data = bytes(data)
    items = netdoc.parse_items(data, what)
    if not items or items[0].line != VOTE_HEADER:
        raise DecodeError(f"{what}: does not begin with {VOTE_HEADER!r}")
    cert_at = next((i for i, it in enumerate(items) if it.keyword == "dir-key-certificate-version"), None)
    if cert_at is None:
        raise DecodeError(f"{what}: no authority certificate")
    cert_end = next((i for i in range(cert_at, len(items)) if items[i].keyword == "dir-key-certification"),
                    None)
    if cert_end is None:
        raise DecodeError(f"{what}: the authority certificate does not end")
    cert = parse_authority_cert(data[items[cert_at].start:items[cert_end].end])
    header = netdoc.Items(items[:cert_at], what)
    rest = items[cert_end + 1:]
    if not rest or rest[-1].keyword != "directory-signature":
        raise DecodeError(f"{what}: does not end with a directory-signature")
    signature = parse_signature_item(rest[-1], what)
    if signature is None:
        raise DecodeError(f"{what}: unknown signature algorithm")
    entries: list[list[netdoc.Item]] = []
    for it in rest[:-1]:
        if it.keyword == "r":
            entries.append([])
        elif not entries:
            raise DecodeError(f"{what}: {it.keyword[:40]!r} before the first router")
        entries[-1].append(it)
    times = [parse_time_args(header.one(k), what) for k in ("published", "valid-after", "fresh-until",
                                                             "valid-until")]
    delays = header.one("voting-delay")
    if len(delays.args) != 2:
        raise DecodeError(f"{what}: voting-delay needs 2 arguments")
    params = {}
    for arg in header.one("params").args:
        key, _, value = arg.partition("=")
        params[key] = netdoc.parse_int(value, f"{what}: params {key[:40]}", -(2**31), 2**31 - 1)
    if HS_PERIOD_PARAM not in params:
        raise DecodeError(f"{what}: params without {HS_PERIOD_PARAM}")
    hs_period = params.pop(HS_PERIOD_PARAM)
    srvs = []
    for keyword in ("shared-rand-previous-value", "shared-rand-current-value"):
        item = header.optional(keyword)
        if item is not None and len(item.args) != 2:
            raise DecodeError(f"{what}: {keyword} needs 2 arguments")
        srvs.append(None if item is None else b64_field(item.args[1], 32, f"{what}: {keyword}"))
    routers = [_parse_vote_router(e, what) for e in entries]
    with as_decode_error(what):
        vote = Vote(cert.unchecked, *times, netdoc.parse_int(delays.args[0], f"{what}: voting-delay"),
                    netdoc.parse_int(delays.args[1], f"{what}: voting-delay"), tuple(routers), signature,
                    hs_period, params, srvs[0], srvs[1])
    if vote.encode() != data:
        raise DecodeError(f"{what}: not in canonical form (order, spacing, number format or unknown lines)")
    return UncheckedVote(vote, cert)


def _parse_vote_router(items: list[netdoc.Item], what: str) -> VoteRouter:
    doc = netdoc.Items(items, what)
    r = doc.one("r")
    if len(r.args) != 7:
        raise DecodeError(f"{what}: r needs 7 arguments")
    ed = doc.one("id")
    if ed.args[:1] != ("ed25519",) or len(ed.args) != 2:
        raise DecodeError(f"{what}: expected id ed25519 KEY")
    v = doc.optional("v")
    w = doc.one("w")
    if len(w.args) != 1 or not w.args[0].startswith("Bandwidth="):
        raise DecodeError(f"{what}: expected w Bandwidth=N")
    with as_decode_error(what):
        return VoteRouter(
            netdoc.shared_text(r.args[0]), b64_field(r.args[1], 20, f"{what}: node id"),
            b64_field(ed.args[1], 32, f"{what}: ed25519 identity"),
            netdoc.shared_text(parse_ipv4(r.args[4], f"{what}: address")),
            parse_port(r.args[5], f"{what}: orport", 1), parse_port(r.args[6], f"{what}: dirport"),
            parse_time_args(r, what, 2),
            netdoc.parse_int(w.args[0][10:], f"{what}: bandwidth", 0, _UINT32_MAX),
            netdoc.shared_text(" ".join(v.args)) if v is not None else None,
            netdoc.shared_text(" ".join(doc.one("pr").args)),
            b64_field(doc.one("m").arg(0, what), 32, f"{what}: microdescriptor digest"),
            netdoc.shared_flags(doc.one("s").args))


# ---------------------------------------------------------------------------------------------------------
# the consensus computation


def _low_median(values: Iterable[int]) -> int:
    """dir-spec: "All ties in computing medians are broken in favor of the smaller or earlier item"."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def _version_key(version: str) -> tuple:
    """Tor versions compare by their numbers ("0.4.10" after "0.4.9"); other text by itself."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[ .-]", version))


def _most_frequent(values: Iterable[str], key=None) -> str | None:
    """The most common value, ties to the larger (C tor: "ties in favor of later-occurring members" of the
    sorted list)."""
    tally = Counter(values)
    if not tally:
        return None
    return max(tally, key=lambda v: (tally[v], key(v) if key else v))


def compute_consensus(votes: Sequence[Vote], authorities: Sequence[DirAuthority],
                      consensus_method: int = MAX_CONSENSUS_METHOD, *,
                      recommended_client_protocols: str = RECOMMENDED_PROTOCOLS,
                      recommended_relay_protocols: str = RECOMMENDED_PROTOCOLS,
                      required_client_protocols: str = REQUIRED_PROTOCOLS,
                      required_relay_protocols: str = REQUIRED_PROTOCOLS) -> Consensus:
    """Combine CHECKED votes into the unsigned consensus; the result depends only on the set of votes.

    `authorities` are ALL configured authorities (their dir-source lines come from here; the majorities
    count them all, not just those that voted). Rules (dir-spec 3.8 as onionlab keeps them):

    - a relay (by node id) is a candidate when more than len(authorities)/2 votes list it;
    - its descriptor fields (nickname, ed25519 identity, address, ports, published, microdescriptor digest)
      are the tuple listed by the most votes, ties to the most recently published, then the smallest
      microdescriptor digest (dir-spec breaks this tie by the smaller descriptor digest);
    - a flag is set when more than half of the votes listing the relay set it; candidates without the
      resulting Running and Valid are left out (consensus methods 4 and 24); NoEdConsensus is set when the
      chosen ed25519 identity is not listed by more than half of all authorities (3.8.0.1);
    - version and protocols: the most listed value, ties to the later one (as C tor);
    - bandwidth: low median of the listing votes; valid-after, fresh-until, valid-until and the voting
      delays: low medians of all votes;
    - params: every keyword voted by more than half of all authorities or by at least 3, at its low median
      (hsdir_interval is each vote's hs_period_minutes);
    - shared random values: kept when more than half of all authorities carry the same one;
    - bandwidth weights from the listed relays (dir-spec 3.8.3); dir-source, contact and vote-digest for each
      authority whose vote was used.

    The consensus can list no relay (after a restart, say, before relays have uploaded descriptors). An
    authority must not sign or publish that one: check `consensus.routers` first.
    """
    authorities = tuple(authorities)
    by_ident = {a.v3ident: a for a in authorities}
    if not authorities or not all(isinstance(a, DirAuthority) for a in authorities):
        raise LocalProtocolError("authorities must be the non-empty list of DirAuthority configured")
    if len(by_ident) != len(authorities):
        raise LocalProtocolError("two configured authorities with one v3ident")
    votes = tuple(votes)
    if not votes:
        raise LocalProtocolError("cannot compute a consensus from no votes")
    if not all(isinstance(v, Vote) for v in votes):
        raise LocalProtocolError("votes must be Vote")
    if len({v.authority for v in votes}) != len(votes):
        raise LocalProtocolError("two votes from the same authority")
    for v in votes:
        if v.authority not in by_ident:
            raise LocalProtocolError(f"vote from {v.authority.hex().upper()}, which is not configured")
    if not MIN_ENCODED_METHOD <= consensus_method <= MAX_CONSENSUS_METHOD:
        raise LocalProtocolError(f"consensus method must be {MIN_ENCODED_METHOD}-{MAX_CONSENSUS_METHOD}")
    n = len(authorities)

    listings: dict[bytes, list[VoteRouter]] = {}
    for v in votes:
        for r in v.routers:
            listings.setdefault(r.node_id, []).append(r)
    routers = []
    for node_id, rs in listings.items():
        if 2 * len(rs) <= n:
            continue
        flags = {f for f in VOTE_FLAGS if 2 * sum(f in r.flags for r in rs) > len(rs)}
        if "Running" not in flags or "Valid" not in flags:
            continue
        tally = Counter(_descriptor(r) for r in rs)
        best = min(tally, key=lambda d: (-tally[d], -d[0], d[1:]))
        published, md_digest, ed, nickname, address, or_port, dir_port = best
        if 2 * sum(r.ed25519_identity == ed for r in rs) <= n:
            flags.add(NO_ED_CONSENSUS)
        version = _most_frequent((r.version for r in rs if r.version), key=_version_key)
        proto = _most_frequent(r.proto for r in rs)
        routers.append(ConsensusRouter(nickname, node_id, address, or_port, dir_port, frozenset(flags),
                                       version, proto or "", _low_median(r.bandwidth for r in rs), md_digest))

    params: dict[str, list[int]] = {}
    for v in votes:
        for k, value in v.all_params.items():
            params.setdefault(k, []).append(value)
    agreed = {k: _low_median(vs) for k, vs in params.items()
              if len(vs) > n // 2 or len(vs) >= MIN_PARAM_VOTES}

    def majority_srv(values: Iterable[bytes | None]) -> bytes | None:
        tally = Counter(x for x in values if x is not None)
        if not tally:
            return None
        value = min(tally, key=lambda x: (-tally[x], x))
        return value if 2 * tally[value] > n else None

    dir_sources = tuple(DirSource(a.nickname, a.v3ident, a.address, a.dir_port, a.or_port, a.contact,
                                  v.digest) for v in votes for a in (by_ident[v.authority],))
    return Consensus(
        valid_after=_low_median(v.valid_after for v in votes),
        fresh_until=_low_median(v.fresh_until for v in votes),
        valid_until=_low_median(v.valid_until for v in votes),
        vote_delay=_low_median(v.vote_delay for v in votes),
        dist_delay=_low_median(v.dist_delay for v in votes),
        dir_sources=dir_sources,
        routers=tuple(routers),
        consensus_method=consensus_method,
        known_flags=VOTE_FLAGS | {NO_ED_CONSENSUS},
        params=agreed,
        recommended_client_protocols=recommended_client_protocols,
        recommended_relay_protocols=recommended_relay_protocols,
        required_client_protocols=required_client_protocols,
        required_relay_protocols=required_relay_protocols,
        shared_rand_previous=majority_srv(v.shared_rand_previous for v in votes),
        shared_rand_current=majority_srv(v.shared_rand_current for v in votes),
        bandwidth_weights=bandwidth_weights(routers, agreed),
    )


def _descriptor(r: VoteRouter) -> tuple[int, bytes, bytes, str, str, int, int]:
    """What makes two listings 'the same descriptor'."""
    return r.published, r.md_digest, r.ed25519_identity, r.nickname, r.address, r.or_port, r.dir_port

