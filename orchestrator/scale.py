"""Timing chosen from a lab's size: the work that grows with the network gets a longer interval, as in Tor.

Per voting interval V, each authority tests every relay's reachability once (a TLS link and an ntor
handshake each), every node fetches and verifies the new consensus (its size grows with the relays), and
every relay uploads its descriptor every descriptor_refresh. With a fixed V the lab's work per second grows
with relays x nodes; on a 2-core machine a 300-node lab at V = 10 s spent longer on a round's tests and votes
than the round lasted, and votes arrived a round late (issue 10). Tor itself tests a relay every ~21 minutes
and votes hourly; a lab wants seconds, so the interval grows only as far as the size needs:

    V    = the smallest divisor of a day that is >= max(topology's V, relays / RELAYS_PER_SECOND)
    D_v  = max(topology's vote_delay, V / DELAY_SHARE)     (the same for dist_delay; pushes and fetches of
                                                             votes wait behind a busier event loop)
    refresh = node's descriptor_refresh x V / topology's V  (uploads scale with the rounds)

so up to 50 relays nothing changes (V = 10 s), 100 relays get V = 20 s and 280 relays V = 60 s (D_v = D_d =
6 s, descriptors every 180 s). The topology's values are floors: a lab may always ask for slower rounds.
What the lab's timing became is in every node's config (and `onionlab up` says it when it differs).
"""

from __future__ import annotations

import math
from dataclasses import replace

from nodes.config import Timing

RELAYS_PER_SECOND = 5  # relays one second of the voting interval carries (reachability tests, consensus size)
DELAY_SHARE = 10  # vote and dist delays are at least V / DELAY_SHARE
DAY = 86400
READY_BASE = 120.0  # seconds `up` waits for a small lab
READY_ROUNDS = 5  # ... and for a large one: this many intervals, plus
START_SECONDS_PER_NODE = 0.5  # the time to start a node's process or container on a busy 2-core machine


def voting_interval_for(relays: int, floor: int) -> int:
    """The smallest divisor of a day that is at least `floor` and relays / RELAYS_PER_SECOND seconds."""
    wanted = max(floor, math.ceil(relays / RELAYS_PER_SECOND))
    return next(d for d in range(wanted, DAY + 1) if DAY % d == 0)


def scaled_timing(timing: Timing, relays: int) -> Timing:
    """A node's timing in a lab of `relays` relays, its (the topology's) values as floors (module docstring).
    """
    v = voting_interval_for(relays, timing.voting_interval)
    return replace(timing, voting_interval=v, vote_delay=max(timing.vote_delay, v // DELAY_SHARE),
                   dist_delay=max(timing.dist_delay, v // DELAY_SHARE),
                   descriptor_refresh=timing.descriptor_refresh * v // timing.voting_interval)


def ready_timeout(nodes: int, voting_interval: int) -> float:
    """How long `up` waits for a lab of this size by default: time to start every node, then the rounds
    until relays are listed and onion services published."""
    return max(READY_BASE, READY_ROUNDS * voting_interval + START_SECONDS_PER_NODE * nodes)
