"""The link-layer shaper's model (nodes/net/shaper.py): due times, loss as a retransmission timeout, the
token bucket, blackholes, combined rules, seeded draws, and rules that are refused."""

import math
import random

import pytest

from nodes.net.shaper import CELL_BYTES, MIN_RTO, Effect, LinkRule, RuleError, ShapedQueue, Shaper, parse_rule


def queue(seed: str = "s") -> ShapedQueue:
    return ShapedQueue(random.Random(seed))


def test_delay_holds_each_batch_and_keeps_order():
    q = queue()
    q.push(["a"], Effect(delay=0.1), now=10.0)
    q.push(["b", "c"], Effect(delay=0.1), now=10.05)
    assert q.pop_due(10.09) == []
    assert q.next_due() == pytest.approx(10.1)
    assert q.pop_due(10.1) == ["a"]
    assert q.pop_due(10.2) == ["b", "c"]
    assert not q and q.cells == 0


def test_jitter_varies_due_times_but_never_reorders():
    q = queue()
    for i in range(200):
        q.push([i], Effect(delay=0.1, jitter=0.05), now=i * 0.001)
    dues = [due for due, _ in q.batches]
    assert dues == sorted(dues)
    gaps = {round(due - i * 0.001, 6) for i, (due, _) in enumerate(q.batches)}
    assert len(gaps) > 50  # drawn, not constant
    assert all(0.05 - 1e-9 <= due - i * 0.001 for i, (due, _) in enumerate(q.batches))


def test_loss_costs_a_retransmission_timeout_never_a_cell():
    q = queue()
    effect = Effect(delay=0.1, jitter=0.02, loss=1.0)
    assert effect.rto == pytest.approx(max(MIN_RTO, 2 * 0.1 + 4 * 0.02))
    q.push(["a", "b"], effect, now=0.0)
    assert q.next_due() == pytest.approx(0.1 + effect.rto, abs=0.021)
    assert q.delayed_by_loss == 1
    assert q.pop_due(10.0) == ["a", "b"]
    assert Effect(delay=0.01).rto == MIN_RTO


def test_loss_rate_per_cell_matches_the_probability():
    q = queue()
    for i in range(2000):
        q.push([i], Effect(loss=0.1), now=float(i))
    assert 140 < q.delayed_by_loss < 260  # 10% of 2000 = 200


def test_rate_is_a_token_bucket():
    q = queue()
    rate = 10 * CELL_BYTES  # ten cells a second
    q.push(list(range(10)), Effect(rate=rate), now=0.0)
    q.push(list(range(5)), Effect(rate=rate), now=0.5)  # queued behind the first second's worth
    assert q.next_due() == pytest.approx(1.0)
    assert q.pop_due(1.0) == list(range(10))
    assert q.next_due() == pytest.approx(1.5)
    q.pop_due(2.0)
    q.push([1], Effect(rate=rate), now=5.0)  # an idle bucket does not bank credit beyond now
    assert q.next_due() == pytest.approx(5.1)


def test_blackhole_holds_until_released():
    q = queue()
    q.push(["a"], Effect(blackhole=True), now=1.0)
    q.push(["b"], Effect(blackhole=True), now=2.0)
    assert q.next_due() == math.inf
    assert q.pop_due(1e9) == []
    q.release_held(now=3.0)
    q.push(["c"], None, now=3.5)
    assert q.pop_due(3.5) == ["a", "b", "c"]


def test_same_seed_same_draws():
    def dues(seed):
        q = queue(seed)
        for i in range(50):
            q.push([i], Effect(delay=0.1, jitter=0.05, loss=0.2), now=i * 0.01)
        return [due for due, _ in q.batches]

    assert dues("x") == dues("x")
    assert dues("x") != dues("y")


def test_rules_combine_per_peer_and_static_ones_survive_clear():
    changes = []
    shaper = Shaper(seed="n", rules=[LinkRule("geo", frozenset({"10.0.0.2"}), delay=0.08, static=True)])
    shaper.on_change(lambda: changes.append(1))
    assert shaper.active
    shaper.set_rule(LinkRule("chaos", delay=0.1, jitter=0.02, loss=0.02, rate=1000))
    shaper.set_rule(LinkRule("more", loss=0.5, rate=500))
    both = shaper.effect("10.0.0.2")
    assert both.delay == pytest.approx(0.18) and both.jitter == pytest.approx(0.02)
    assert both.loss == pytest.approx(1 - 0.98 * 0.5) and both.rate == 500
    assert shaper.effect("10.0.0.9").delay == pytest.approx(0.1)
    assert shaper.clear() == ["chaos", "more"]
    assert shaper.effect("10.0.0.9") is None and shaper.effect("10.0.0.2").delay == pytest.approx(0.08)
    assert shaper.clear(["geo", "nope"]) == ["geo"]
    assert not shaper.active and len(changes) == 4


def test_parse_rule_and_its_errors():
    rule = parse_rule({"id": "r", "peers": ["10.0.0.3"], "delay": 0.1, "jitter": 0.02, "loss": 0.02,
                       "rate": 125000, "blackhole": False})
    assert rule == LinkRule("r", frozenset({"10.0.0.3"}), 0.1, 0.02, 0.02, 125000.0)
    assert parse_rule({"id": "r", "peers": "all"}).peers == frozenset()
    bad = [({"peers": "all"}, "id"), ({"id": "r", "delay": -1}, "delay"), ({"id": "r", "loss": 2}, "loss"),
           ({"id": "r", "delay": 0.01, "jitter": 0.02}, "jitter"), ({"id": "r", "peers": "some"}, "peers"),
           ({"id": "r", "blackhole": 1}, "blackhole"), ({"id": "r", "static": True}, "unknown"),
           ({"id": "r", "delay": True}, "delay"), ("rule", "object")]
    for data, word in bad:
        with pytest.raises(RuleError, match=word):
            parse_rule(data)
