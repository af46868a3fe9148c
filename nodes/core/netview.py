"""What a node knows of the network: the checked microdesc consensus joined with the microdescriptors it
names.

A Tor client needs both halves to use a relay (dir-spec 5): the consensus says who runs, with which flags,
at which address; the microdescriptor carries the keys (the ntor onion key for CREATE2, the Ed25519 identity
for link specifiers and the HSDir ring). A relay whose microdescriptor has not arrived yet is not usable and
is left out of `relays`, as C tor leaves it out of path selection.

Timing follows C tor with TestingTorNetwork set, which every tor in a lab runs with (hs_common.c
get_time_period_length, shared_random_client.c): the HS time period is one shared-random protocol run, 24
voting intervals, and periods start 12 voting intervals after the epoch; both in whole minutes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from .consensus import Consensus

if TYPE_CHECKING:
    from .microdesc import Microdescriptor

SHARED_RANDOM_N_ROUNDS = 12
SHARED_RANDOM_N_PHASES = 2


class Flag(StrEnum):
    """The consensus flags onionlab's authorities assign (dir-spec 3.4.2 names)."""

    Fast = "Fast"
    Guard = "Guard"
    HSDir = "HSDir"
    Running = "Running"
    Stable = "Stable"
    V2Dir = "V2Dir"
    Valid = "Valid"


@dataclass(frozen=True, slots=True)
class Relay:
    """A usable relay: its consensus entry with its microdescriptor's keys."""

    nickname: str
    node_id: bytes  # 20 bytes: SHA-1 of its RSA identity (ntor's ID, link specifier type 2)
    identity: bytes | None  # its Ed25519 identity (link specifier type 3, the HSDir ring); None: unknown
    ntor_onion_key: bytes
    address: str
    or_port: int
    dir_port: int
    bandwidth: int  # kB/s, the consensus weight
    flags: frozenset[str]
    proto: str
    version: str | None = None


@dataclass(frozen=True, slots=True)
class NetworkView:
    consensus: Consensus
    relays: tuple[Relay, ...]  # in consensus order (by node ID)
    missing: frozenset[bytes]  # microdescriptor digests the consensus names and we do not hold

    # -- the consensus' times and HS parameters, as the layers above use them --------------------------------
    @property
    def valid_after(self) -> int:
        return self.consensus.valid_after

    @property
    def fresh_until(self) -> int:
        return self.consensus.fresh_until

    @property
    def valid_until(self) -> int:
        return self.consensus.valid_until

    @property
    def routers(self) -> tuple[Relay, ...]:
        return self.relays

    @property
    def hs_period_minutes(self) -> int:
        return SHARED_RANDOM_N_ROUNDS * SHARED_RANDOM_N_PHASES * self.consensus.voting_interval // 60

    @property
    def hs_rotation_offset_minutes(self) -> int:
        return SHARED_RANDOM_N_ROUNDS * self.consensus.voting_interval // 60

    @property
    def shared_rand_current(self) -> bytes | None:
        return self.consensus.shared_rand_current

    @property
    def shared_rand_previous(self) -> bytes | None:
        return self.consensus.shared_rand_previous

    def by_node_id(self, node_id: bytes) -> Relay | None:
        for relay in self.relays:
            if relay.node_id == node_id:
                return relay
        return None


def join(consensus: Consensus, microdescs: Mapping[bytes, Microdescriptor]) -> NetworkView:
    """The view of `consensus` given the microdescriptors we hold, by digest."""
    relays, missing = [], set()
    for r in consensus.routers:
        md = microdescs.get(r.md_digest)
        if md is None:
            missing.add(r.md_digest)
            continue
        relays.append(Relay(r.nickname, r.node_id, md.ed25519_identity, md.ntor_onion_key, r.address,
                            r.or_port, r.dir_port, r.bandwidth, r.flags, r.proto, r.version))
    return NetworkView(consensus, tuple(relays), frozenset(missing))


def wanted(consensus: Consensus, held: Iterable[bytes]) -> list[bytes]:
    """The microdescriptor digests of `consensus` not in `held`, in consensus order."""
    have = set(held)
    return [r.md_digest for r in consensus.routers if r.md_digest not in have]
