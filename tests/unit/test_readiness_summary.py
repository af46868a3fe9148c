"""A large lab's `up` says counts, not a line per node and condition (orchestrator/readiness.py)."""

from orchestrator.readiness import ConditionCounts


def test_counts_per_condition_at_most_every_few_seconds_and_at_once_when_a_node_stops_answering():
    said = []
    counts = ConditionCounts(said.append, {**{f"relay{i}": "relay" for i in range(4)}, "client": "client"},
                             every=3600)
    for i in range(3):
        counts(f"relay{i}", None, True)
        if i < 2:  # a condition is heard of once true (readiness.wait_until_ready)
            counts(f"relay{i}", "listed", True)
    counts("client", None, True)
    assert said == []  # within the interval: nothing yet
    counts.flush()
    assert said == ["answering 4/5 · listed 2/4"]
    counts("relay0", None, False)
    assert said[-1] == "relay0: stopped answering /status"
    counts("relay0", "listed", False)
    counts.flush()
    assert said[-1] == "answering 3/5 · listed 1/4"
    counts.flush()  # nothing changed: no line
    assert len(said) == 3
