"""The authority's round follows the topology's timing (issue 9, defect 7: vote_delay and dist_delay were
validated and documented but the authority used constants), and the consensus says so (voting-delay)."""

import dataclasses
import gc
import io
import time
import weakref

import trio

from nodes.config import AuthorityRef, NodeConfig, Timing
from nodes.core.consensus import DirectorySignature
from nodes.init import make_authority_keys
from nodes.net import heap
from nodes.net.events import EventLog
from nodes.net.metrics import Metrics
from nodes.net.node_keys import load_or_create_authority_keys, load_or_create_node_keys
from nodes.roles.authority import MIN_TEST_TIME, VOTE_PATH, Authority, split_descriptors


async def _never(_desc) -> bool:
    return False


def _authority(tmp_path, timing: Timing) -> Authority:
    ref = AuthorityRef("auth1", "127.0.0.1", 9030, 9001, *make_authority_keys(tmp_path))
    config = NodeConfig(name="auth1", role="authority", address="127.0.0.1", data_dir=str(tmp_path),
                        control_port=0, authorities=(ref,), dir_port=9030, or_port=9001, timing=timing)
    events = EventLog("auth1", "authority", io.StringIO())
    return Authority(config, load_or_create_node_keys(tmp_path), load_or_create_authority_keys(tmp_path),
                     reachable=_never, metrics=Metrics(), events=events)


def test_round_schedule_uses_the_vote_and_distribution_delays(tmp_path):
    start = 1_800_000_000
    short = _authority(tmp_path / "a", Timing(voting_interval=20, vote_delay=3, dist_delay=5))
    assert short._schedule(start) == (start + MIN_TEST_TIME * 20, start + 4 + 3, start + 4 + 3 + 5)
    other = _authority(tmp_path / "b", Timing(voting_interval=20, vote_delay=7, dist_delay=2))
    assert other._schedule(start) == (start + 4, start + 4 + 7, start + 4 + 7 + 2)


async def test_the_vote_and_the_consensus_carry_the_delays(tmp_path):
    """One authority, alone: its round votes, computes and publishes without the network."""
    authority = _authority(tmp_path, Timing(voting_interval=20, vote_delay=3, dist_delay=5))
    vote_bytes = None
    start = authority._round_of(time.time())

    async def no_push(path, body, what, until):
        nonlocal vote_bytes
        vote_bytes = vote_bytes or body

    authority._push = no_push
    authority._trio_time = lambda wall: 0  # no waiting: the deadlines are in the past
    await authority.run_round(start)
    assert b"\nvoting-delay 3 5\n" in vote_bytes
    assert b"\nvoting-delay 3 5\n" in authority.published.encode()


def test_a_forged_early_claim_does_not_push_out_the_real_one(tmp_path):
    """Signatures that arrive before our consensus is computed cannot be checked yet: a forged claim in a
    peer's name must not replace the peer's real one (both are tried once the consensus exists)."""
    peer = AuthorityRef("auth2", "127.0.0.2", 9030, 9001, *make_authority_keys(tmp_path / "auth2"))
    authority = _authority(tmp_path / "auth1", Timing())
    authority.configured |= {bytes.fromhex(peer.v3ident)}
    v3ident = bytes.fromhex(peer.v3ident)
    real = DirectorySignature(v3ident, bytes(20), b"\x01" * 128)
    forged = DirectorySignature(v3ident, bytes(20), b"\x02" * 128)
    authority._add_signature(real)
    authority._add_signature(forged)
    assert list(authority.early_signatures[v3ident]) == [real, forged]


def test_split_descriptors_of_a_server_answer():
    one, two = b"router a 1.2.3.4 9001 0 0\nx\nrouter-signature\n", b"router b 1.2.3.5 9001 0 0\ny\n"
    assert split_descriptors(one + two) == [one, two]
    assert split_descriptors(b"") == [] and split_descriptors(b"junk\n") == []


async def test_a_round_keeps_no_parsed_vote_once_its_consensus_is_computed(tmp_path):
    """The parsed votes of every authority about every relay were kept all round (until the next one
    began): at 280 relays about 2.5 MB of an authority's memory, for nothing once the consensus is computed.
    Our own vote is still served to a peer that missed it, as the bytes we pushed."""
    authority = _authority(tmp_path, Timing(voting_interval=20, vote_delay=3, dist_delay=5))
    pushed = {}
    start = authority._round_of(time.time())

    async def no_push(path, body, what, until):
        pushed.setdefault(what, body)

    authority._push = no_push
    authority._trio_time = lambda wall: 0
    await authority.run_round(start)
    assert authority.published is not None
    assert start not in authority.votes
    assert await authority.handle("GET", VOTE_PATH, b"") == (200, "text/plain", pushed["vote"])


async def test_the_reachability_cycle_tests_a_relay_that_uploaded_again_and_holds_no_old_descriptor(
        tmp_path, autojump_clock):
    """The cycle took a list of descriptors for its whole interval: a relay that uploaded again (same keys,
    so not queued as new) before its turn was skipped for that cycle, and its old descriptor stayed in
    memory until the cycle ended. It now walks node IDs and tests each relay's newest descriptor."""
    authority = _authority(tmp_path, Timing(voting_interval=20))
    tested = []

    async def reachable(desc) -> bool:
        tested.append(desc)
        return True

    authority.reachable = reachable
    old = {i: _descriptor_stub(i, published=1) for i in range(4)}
    authority.descriptors = {d.node_id: d for d in old.values()}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(authority.test_reachability)
        while not tested:  # the cycle has begun: the first relay is tested, three wait for their turn
            await trio.sleep(0.001)
        first = tested[0].node_id
        new = {i: _descriptor_stub(i, published=2) for i in range(4)}
        authority.descriptors = {d.node_id: d for d in new.values()}
        waiting = [weakref.ref(d) for d in old.values() if d.node_id != first]
        del old
        tested.clear()
        gc.collect()
        assert [r() for r in waiting] == [None] * 3
        await trio.sleep(authority.interval * 0.9)  # the rest of the first cycle
        nursery.cancel_scope.cancel()
    assert [d.published for d in tested] == [2, 2, 2]
    assert {d.node_id for d in tested} == set(authority.descriptors) - {first}


@dataclasses.dataclass(frozen=True)
class _Stub:
    """What the reachability cycle reads of a descriptor."""
    node_id: bytes
    published: int


def _descriptor_stub(i: int, published: int) -> _Stub:
    return _Stub(bytes([i]) * 20, published)


async def test_each_round_gives_its_freed_heap_back(tmp_path, monkeypatch):
    """A round's peak (votes, consensus) leaves about 1 MB of free heap resident: nodes/net/heap.py."""
    authority = _authority(tmp_path, Timing(voting_interval=20))
    rounds, trims = [], []
    monkeypatch.setattr(heap, "release_free_heap", lambda: trims.append(len(rounds)))
    authority._trio_time = lambda wall: trio.current_time()  # no waiting for the wall clock
    with trio.CancelScope() as scope:
        async def run_round(start):
            rounds.append(start)
            if len(rounds) == 3:
                scope.cancel()
        authority.run_round = run_round
        await authority.run_rounds()
    assert trims == [1, 2, 3]
