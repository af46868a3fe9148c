"""Onion-service common functions: time periods, key blinding, subcredential, HSDir hash ring, disaster SRV.

H is SHA3-256 and INT_8 an 8-byte big-endian integer (rend-spec-v3 0.3). The blinding nonce and the two ring
indexes order period number and period length differently; each function below follows its own formula.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence

from . import ed25519
from .ed25519 import Signer
from .wire import u64

DEFAULT_PERIOD_LENGTH = 1440  # minutes (consensus parameter hsdir-interval)
DEFAULT_ROTATION_OFFSET = 720  # minutes: 12 voting intervals of one hour
HSDIR_N_REPLICAS = 2
HSDIR_SPREAD_STORE = 4
HSDIR_SPREAD_FETCH = 3

BLIND_STRING = b"Derive temporary signing key\x00"
# rend-spec-v3 A.2 hashes the base point as this decimal text, not as its 32-byte encoding.
BASEPOINT_STRING = (
    b"(15112221349535400772501151409588531511454012693041857206046113283949847762202, "
    b"46316835694926478169428394003475163141307993866256225615783033603165251855960)"
)


def _h(*parts: bytes) -> bytes:
    return hashlib.sha3_256(b"".join(parts)).digest()


def time_period_num(now: int, period_length_minutes: int = DEFAULT_PERIOD_LENGTH,
                    rotation_offset_minutes: int = DEFAULT_ROTATION_OFFSET) -> int:
    """rend-spec-v3 2.2.1: (minutes since the epoch - rotation offset) // period length."""
    return (now // 60 - rotation_offset_minutes) // period_length_minutes


def time_period_start(num: int, period_length_minutes: int = DEFAULT_PERIOD_LENGTH,
                      rotation_offset_minutes: int = DEFAULT_ROTATION_OFFSET) -> int:
    """Unix time (seconds) at which period `num` begins."""
    return (num * period_length_minutes + rotation_offset_minutes) * 60


def blinding_param(public_key: bytes, period_num: int, period_length_minutes: int) -> bytes:
    """rend-spec-v3 A.2: h = H(BLIND_STRING | A | s | B | N) with s empty, before clamping."""
    nonce = b"key-blind" + u64(period_num) + u64(period_length_minutes)
    return _h(BLIND_STRING, public_key, BASEPOINT_STRING, nonce)


def blinded_public_key(public_key: bytes, period_num: int, period_length_minutes: int) -> bytes:
    param = blinding_param(public_key, period_num, period_length_minutes)
    return ed25519.blind_public_key(public_key, param)


def blinded_signer(identity: Signer, period_num: int, period_length_minutes: int) -> Signer:
    """The service's signing key for one time period (it signs the descriptor-signing-key certificate)."""
    param = blinding_param(identity.public_key, period_num, period_length_minutes)
    return Signer.from_expanded(ed25519.blind_expanded_secret(identity.expanded_secret, param))


def credential(public_key: bytes) -> bytes:
    """rend-spec-v3 2.1: N_hs_cred = H("credential" | public-identity-key)."""
    return _h(b"credential", public_key)


def subcredential(public_key: bytes, blinded_key: bytes) -> bytes:
    """rend-spec-v3 2.1: N_hs_subcred = H("subcredential" | N_hs_cred | blinded-public-key)."""
    return _h(b"subcredential", credential(public_key), blinded_key)


def hs_service_index(blinded_key: bytes, replica: int, period_length_minutes: int, period_num: int) -> bytes:
    """rend-spec-v3 2.2.3: H("store-at-idx" | blinded key | INT_8(replica) | INT_8(length) | INT_8(num))."""
    return _h(b"store-at-idx", blinded_key, u64(replica), u64(period_length_minutes), u64(period_num))


def hs_relay_index(node_ed_id: bytes, srv: bytes, period_num: int, period_length_minutes: int) -> bytes:
    """rend-spec-v3 2.2.3: H("node-idx" | node Ed25519 id | SRV | INT_8(num) | INT_8(length))."""
    return _h(b"node-idx", node_ed_id, srv, u64(period_num), u64(period_length_minutes))


def disaster_srv(period_length_minutes: int, period_num: int) -> bytes:
    """rend-spec-v3 2.3.1: the SRV to use when the consensus has none for the period."""
    return _h(b"shared-random-disaster", u64(period_length_minutes), u64(period_num))


def responsible_hsdirs(hsdirs: Sequence[bytes], blinded_key: bytes, srv: bytes, period_num: int,
                       period_length_minutes: int, *, replicas: int = HSDIR_N_REPLICAS,
                       spread: int = HSDIR_SPREAD_STORE) -> list[bytes]:
    """rend-spec-v3 2.2.3: the HSDirs (Ed25519 ids) that store, or with spread=3 serve, a descriptor.

    For each replica, walk the ring (relays sorted by relay index) from the first relay whose index is at or
    after the service index, wrapping around, and take `spread` relays not chosen for an earlier replica.
    Result order: replica 1's relays in ring order, then replica 2's, and so on.
    """
    ring = sorted((hs_relay_index(node, srv, period_num, period_length_minutes), node)
                  for node in set(hsdirs))
    indexes = [index for index, _ in ring]
    chosen: list[bytes] = []
    for replica in range(1, replicas + 1):
        start = bisect.bisect_left(indexes, hs_service_index(blinded_key, replica, period_length_minutes,
                                                               period_num))
        taken = 0
        for step in range(len(ring)):
            if taken == spread:
                break
            node = ring[(start + step) % len(ring)][1]
            if node not in chosen:
                chosen.append(node)
                taken += 1
    return chosen
