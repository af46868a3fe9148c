"""Regression (issue 10): relays were listed and then dropped from the consensus again within seconds once a
lab was large. The authority tested every relay at once in the first fifth of each round and counted a test
still running at the vote as a failure; when a machine is loaded enough that a test takes longer than that
window (a few hundred relays on 2 cores), the tests on upload listed the relays and then every round's tests
failed until the grace rounds ran out. Now tests run all the time, each to its end, spread over the interval.

One authority on loopback (C tor's shortest voting interval, 10 s) and a reachability test slower than a
fifth of the interval; about a minute of rounds.
"""

import dataclasses

import trio

from nodes.config import Timing
from nodes.core.netview import Flag
from tests.net.test_directory import _client, _descriptor, _published, _start_authority
from tests.net.test_relay_role import _authority_configs

INTERVAL = 10  # seconds: the shortest a vote allows
TEST_TIME = 0.3 * INTERVAL  # longer than the vote's 0.2 V after the round's start
RELAYS = 12


def _running(signed) -> set[bytes]:
    return {r.node_id for r in signed.consensus.routers if str(Flag.Running) in r.flags}


async def test_relays_whose_reachability_tests_are_slow_stay_running_round_after_round(tmp_path):
    (config,) = _authority_configs(tmp_path, 1)
    config = dataclasses.replace(config, timing=Timing(voting_interval=INTERVAL))
    descriptors = [_descriptor(f"relay{i}") for i in range(RELAYS)]
    ids = {d.node_id for d in descriptors}
    tested: list[bytes] = []

    async def slow_reachable(desc) -> bool:
        await trio.sleep(TEST_TIME)  # a loaded machine: the TLS link and ntor handshake take a while
        tested.append(desc.node_id)
        return desc.node_id in ids

    async with trio.open_nursery() as nursery:
        auth, _ = await _start_authority(nursery, config, slow_reachable)
        client = _client(config.authorities)
        for desc in descriptors:
            assert await client.upload_descriptor(desc.raw) == 1
        with trio.fail_after(3 * INTERVAL):
            first = await _published(auth, lambda sc: _running(sc) == ids)
        # every later round still lists every relay Running: past the grace rounds of the old tests
        rounds = []
        with trio.fail_after(4 * INTERVAL):
            while len(rounds) < 3:
                signed = await _published(auth, lambda sc, after=(rounds or [first])[-1]:
                                          sc.consensus.valid_after > after.consensus.valid_after)
                rounds.append(signed)
        assert [_running(sc) for sc in rounds] == [ids] * 3
        # each relay was tested again and again, not only on upload
        assert all(tested.count(i) >= 3 for i in ids)
        nursery.cancel_scope.cancel()
