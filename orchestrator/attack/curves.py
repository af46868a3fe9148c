"""The numbers of the guard-discovery report: the adversary's share and the probability curves.

The share f is what a bandwidth-weighted pick sees: the adversary relays' consensus weight over every relay's.
Our authorities put a relay's advertised bandwidth in kB/s (at least 1) in the consensus as its weight
(nodes/roles/authority.py), so f is computed from the topology the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.topology import Topology


def consensus_weight(bandwidth: int | None) -> int:
    """A relay's weight in the consensus: advertised bytes/s in kB/s, at least 1 (as the authorities vote)."""
    return max(1, (bandwidth or 0) // 1000)


def adversary_share(topology: Topology) -> float:
    """f: the probability that one bandwidth-weighted pick among the topology's relays is the adversary's."""
    relays = topology.nodes_by_role("relay")
    total = sum(consensus_weight(r.bandwidth) for r in relays)
    bad = sum(consensus_weight(r.bandwidth) for r in relays if r.adversary)
    return bad / total if total else 0.0


def first_hop_share(topology: Topology, rendezvous: str) -> float:
    """The share of first hops the adversary gets when its relay `rendezvous` is the circuit's last hop (the
    first hop is never the last one, so that relay's weight is out of the draw): slightly below f."""
    relays = topology.nodes_by_role("relay")
    others = [r for r in relays if r.name != rendezvous]
    total = sum(consensus_weight(r.bandwidth) for r in others)
    bad = sum(consensus_weight(r.bandwidth) for r in others if r.adversary)
    return bad / total if total else 0.0


def theoretical_located(f: float, n: int) -> float:
    """P(located within n circuits) when each circuit's first hop is the adversary's with probability f,
    independently (no guards): 1 - (1 - f)^n."""
    if not 0.0 <= f <= 1.0 or n < 0:
        raise ValueError(f"need 0 <= f <= 1 and n >= 0, got f={f}, n={n}")
    return 1.0 - (1.0 - f) ** n


def empirical_located(located_at: Sequence[int | None], n_max: int) -> list[float]:
    """P(located by circuit n) for n = 1..n_max over trials: `located_at` holds each trial's circuit count
    when it was located, or None (not located within its budget)."""
    if not located_at:
        return [0.0] * n_max
    return [sum(1 for k in located_at if k is not None and k <= n) / len(located_at)
            for n in range(1, n_max + 1)]


def expected_circuits(f: float) -> float:
    """The mean number of circuits until the first adversarial first hop (geometric): 1/f."""
    return float("inf") if f <= 0 else 1.0 / f
