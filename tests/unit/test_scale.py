"""The lab's timing grows with its size (orchestrator/scale.py): small labs keep the topology's, a 300-node
lab gets rounds long enough for its reachability tests and consensus fetches (issue 10)."""

import pytest

from nodes.config import Timing
from orchestrator.plan import make_plan
from orchestrator.scale import ready_timeout, scaled_timing, voting_interval_for
from orchestrator.topology import parse_topology


@pytest.mark.parametrize(("relays", "floor", "interval"), [
    (0, 10, 10), (6, 10, 10), (50, 10, 10), (51, 10, 12), (100, 10, 20), (280, 10, 60), (1000, 10, 200),
    (6, 30, 30), (280, 120, 120), (101, 10, 24),
])
def test_the_voting_interval_is_the_first_divisor_of_a_day_past_the_size_and_the_topology(relays, floor,
                                                                                          interval):
    assert voting_interval_for(relays, floor) == interval
    assert 86400 % interval == 0


def test_small_labs_keep_the_topology_timing_and_large_ones_scale_every_delay_with_it():
    default = Timing()
    assert scaled_timing(default, 6) == default
    assert scaled_timing(Timing(descriptor_refresh=5), 6).descriptor_refresh == 5  # a node's own choice stays
    large = scaled_timing(default, 280)
    assert large == Timing(voting_interval=60, vote_delay=6, dist_delay=6, descriptor_refresh=180)
    # the round still fits: the vote at 0.2 V, then the two delays (the topology's rule)
    assert 5 * (large.vote_delay + large.dist_delay) <= 4 * large.voting_interval
    slow = scaled_timing(Timing(voting_interval=20, vote_delay=9, dist_delay=3), 280)
    assert (slow.voting_interval, slow.vote_delay, slow.dist_delay) == (60, 9, 6)


def test_every_node_of_a_large_plan_gets_the_scaled_timing():
    topology = parse_topology("""\
name: big
networks: {onionnet: {subnet: 10.79.0.0/23}}
nodes:
  - {name: auth, role: authority, count: 5}
  - {name: relay, role: relay, count: 280}
  - {name: fast, role: relay, descriptor_refresh: 15}
  - {name: hs, role: onion_service, services: [{port: 80, target: http}]}
  - {name: client, role: client}
""")
    timings = {c.name: c.timing for c in make_plan(topology).nodes}
    assert {t.voting_interval for t in timings.values()} == {60}
    assert timings["relay1"].descriptor_refresh == 180 and timings["fast"].descriptor_refresh == 90


def test_up_waits_longer_for_a_large_lab():
    assert ready_timeout(12, 10) == 120
    assert ready_timeout(300, 60) == 5 * 60 + 0.5 * 300
