"""The authority's round follows the topology's timing (issue 9, defect 7: vote_delay and dist_delay were
validated and documented but the authority used constants), and the consensus says so (voting-delay)."""

import io
import time

from nodes.config import AuthorityRef, NodeConfig, Timing
from nodes.core.consensus import DirectorySignature
from nodes.init import make_authority_keys
from nodes.net.events import EventLog
from nodes.net.metrics import Metrics
from nodes.net.node_keys import load_or_create_authority_keys, load_or_create_node_keys
from nodes.roles.authority import MIN_TEST_TIME, Authority, split_descriptors


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
