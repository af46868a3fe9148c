"""Guard manager: a persisted sample, stable primaries, failover to the next guard, corrupt state survived."""

import io
import json
import os
import random
import stat

import pytest

from nodes.core.netview import Relay
from nodes.net.events import EventLog
from nodes.net.guards import MIN_FILTERED_SAMPLE, GuardManager, NoGuardAvailable
from nodes.net.metrics import Metrics

GUARD_FLAGS = ("Guard", "Running", "Valid", "Fast", "Stable")


def relay(n: int, flags=GUARD_FLAGS, bandwidth: int = 1000) -> Relay:
    return Relay(f"relay{n}", bytes([n]) * 20, bytes([n]) * 32, bytes([255 - n]) * 32, f"10.0.0.{n}", 9001, 0,
                 bandwidth, frozenset(flags), "")


GUARDS = [relay(n, bandwidth=1000 * n) for n in range(1, 11)]
OTHERS = [relay(20, ("Running", "Valid", "HSDir")), relay(21, ("Guard", "Valid"))]  # no Guard / not Running
CONSENSUS = GUARDS + OTHERS


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def manager(path, seed=1, clock=None, **kwargs):
    out, metrics = io.StringIO(), Metrics()
    gm = GuardManager(path, 3, random.Random(seed).randbytes, metrics=metrics,
                      events=EventLog("client1", "client", out), clock=clock or Clock(), **kwargs)
    gm.test_events, gm.test_metrics = out, metrics  # what the manager reported, for the assertions
    return gm


def events(gm, name):
    return [r for r in map(json.loads, gm.test_events.getvalue().splitlines()) if r["event"] == name]


def test_only_running_guards_are_sampled_and_the_same_guard_is_picked(tmp_path):
    gm = manager(tmp_path / "guards.json")
    sample = gm.sample(CONSENSUS)
    assert sorted(sample) == sorted(g.identity.hex() for g in GUARDS)  # a small network: all of them
    primary = gm.primary()
    assert len(primary) == 3 and [g.identity.hex() for g in primary] == sample[:3]
    picks = {gm.pick().identity for _ in range(100)}
    assert picks == {primary[0].identity}
    assert len(events(gm, "guard_sampled")) == 10


def test_sample_survives_a_restart(tmp_path):
    path = tmp_path / "data" / "guards.json"
    first = manager(path, seed=1)
    first.sample(CONSENSUS)
    before = [g.identity for g in first.primary()]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not path.with_name("guards.json.tmp").exists()

    restarted = manager(path, seed=99)  # a different rng would draw a different sample
    assert restarted.primary() == []  # no consensus yet: nothing is known to be running
    restarted.sample(CONSENSUS)
    assert [g.identity for g in restarted.primary()] == before
    assert {restarted.pick().identity for _ in range(100)} == {before[0]}
    assert events(restarted, "guard_sampled") == []
    other = manager(tmp_path / "other.json", seed=99)
    other.sample(CONSENSUS)
    assert [g.identity for g in other.primary()] != before


def test_failed_guard_is_replaced_by_the_next_and_retried_later(tmp_path):
    clock = Clock()
    gm = manager(tmp_path / "guards.json", clock=clock, retry_after=60)
    sample = gm.sample(CONSENSUS)
    first, second, third, fourth = sample[:4]
    gm.mark_failed(bytes.fromhex(first))
    assert gm.pick().identity.hex() == second
    assert [g.identity.hex() for g in gm.primary()] == [second, third, fourth]
    assert gm.status()["failed"] == [first]
    assert events(gm, "guard_failed")[0]["identity"] == first
    clock.now += 61
    assert gm.pick().identity.hex() == first  # retry time passed: back in front, in sample order


def test_confirmed_guard_is_preferred_and_persisted(tmp_path):
    clock = Clock()
    path = tmp_path / "guards.json"
    gm = manager(path, clock=clock, retry_after=60)
    first, second = gm.sample(CONSENSUS)[:2]
    gm.mark_failed(first)
    assert gm.pick().identity.hex() == second
    gm.mark_succeeded(gm.pick().identity)  # a circuit through the second guard worked: confirm it
    clock.now += 61
    assert gm.pick().identity.hex() == second  # guard-spec: confirmed guards come first
    restarted = manager(path, seed=5)
    restarted.sample(CONSENSUS)
    assert [g.identity.hex() for g in restarted.primary()][:2] == [second, first]


def test_guard_leaving_the_consensus(tmp_path):
    gm = manager(tmp_path / "guards.json")
    first, second = gm.sample(CONSENSUS)[:2]
    gone = [r for r in CONSENSUS if r.identity.hex() != first]
    gm.sample(gone)
    assert gm.pick().identity.hex() == second
    stopped = relay(bytes.fromhex(second)[0], ("Guard", "Valid"))
    not_running = [stopped if r.identity.hex() == second else r for r in gone]
    gm.sample(not_running)
    assert gm.pick().identity.hex() not in (first, second)
    assert gm.sample(CONSENSUS)[:2] == [first, second]  # it came back: the sample kept its place
    assert gm.pick().identity.hex() == first


def test_all_guards_failed_means_try_them_again(tmp_path):
    gm = manager(tmp_path / "guards.json")
    sample = gm.sample(CONSENSUS)
    for identity in sample:
        gm.mark_failed(identity)
    assert gm.primary() == []
    assert gm.pick().identity.hex() == sample[0]
    assert len(events(gm, "guards_retry_all")) == 1


def test_no_guards(tmp_path):
    gm = manager(tmp_path / "guards.json")
    with pytest.raises(NoGuardAvailable):
        gm.pick()
    gm.sample(OTHERS)
    with pytest.raises(NoGuardAvailable):
        gm.pick()


def test_large_network_samples_a_bounded_set_and_tops_it_up(tmp_path):
    network = [relay(n) for n in range(1, 201)]
    gm = manager(tmp_path / "guards.json")
    assert len(gm.sample(network)) == MIN_FILTERED_SAMPLE
    for identity in gm.sample(network)[:5]:
        gm.mark_failed(identity)
    assert len(gm.sample(network)) == MIN_FILTERED_SAMPLE + 5  # usable sample kept at its minimum
    for identity in gm.sample(network):
        gm.mark_failed(identity)
    assert len(gm.sample(network)) == 40  # but never over 20% of the network's guards


def test_sampling_is_bandwidth_weighted(tmp_path):
    heavy, light = relay(1, bandwidth=1_000_000), relay(2, bandwidth=1)
    firsts = [manager(tmp_path / f"g{seed}.json", seed=seed).sample([light, heavy])[0] for seed in range(50)]
    assert firsts.count(heavy.identity.hex()) >= 48


@pytest.mark.parametrize("content", [
    b"\x00\xff garbage",
    b"{not json",
    b"[]",
    b'{"version": 2, "sampled": [], "confirmed": []}',
    b'{"version": 1, "sampled": ["abc"], "confirmed": []}',
    b'{"version": 1, "sampled": ["' + b"01" * 32 + b'", "' + b"01" * 32 + b'"], "confirmed": []}',
    b'{"version": 1, "sampled": [], "confirmed": ["' + b"01" * 32 + b'"]}',
    b'{"version": 1, "sampled": [], "confirmed": [], "extra": 1}',
], ids=["binary", "truncated", "list", "version", "short-id", "duplicate", "unsampled-confirmed",
        "extra-key"])
def test_corrupt_state_is_counted_moved_aside_and_resampled(tmp_path, content):
    path = tmp_path / "guards.json"
    path.write_bytes(content)
    gm = manager(path)
    assert gm.test_metrics.value("errors_total", kind="guard_state_corrupt") == 1
    assert events(gm, "guard_state_corrupt")[0]["path"] == str(path)
    assert (tmp_path / "guards.json.corrupt").read_bytes() == content
    sample = gm.sample(CONSENSUS)
    assert len(sample) == 10
    assert json.loads(path.read_text())["sampled"] == sample  # a good file replaces it
    assert manager(path).test_metrics.value("errors_total", kind="guard_state_corrupt") == 0


def test_interrupted_write_keeps_the_old_state(tmp_path, monkeypatch):
    path = tmp_path / "guards.json"
    gm = manager(path)
    gm.sample(CONSENSUS[:2])
    saved = path.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    gm.sample(CONSENSUS)  # draws new guards: the write fails
    assert path.read_bytes() == saved
    assert not path.with_name("guards.json.tmp").exists()
    assert gm.test_metrics.value("errors_total", kind="guard_state_unsaved") == 1
    assert len(gm.primary()) == 3  # the guards in memory are still right
