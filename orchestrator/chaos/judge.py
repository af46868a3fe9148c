"""Which checkers judge a run: those that always do, and those the scenario lists, with its settings."""

from __future__ import annotations

from collections.abc import Sequence

from .checkers import (
    Verdict,
    check_availability,
    check_faults,
    check_lab_state,
    check_next_fetch,
    check_no_wrong_bytes,
    check_recovers,
)
from .invariants import check_anonymity, check_consensus_health, check_next_guard
from .scenario import Checkers


def judge(history: Sequence[dict], checkers: Checkers) -> list[Verdict]:
    verdicts = [check_no_wrong_bytes(history), check_faults(history),
                check_lab_state(history, grace=checkers.lab_state_grace,
                                max_nacks=checkers.lab_state_max_nacks),
                check_anonymity(history),
                check_consensus_health(history, fresh_within=checkers.consensus_fresh_within,
                                       stalled_after=checkers.consensus_stalled_after)]
    if checkers.availability_min is not None or checkers.availability_after_heal is not None:
        verdicts.append(check_availability(history, min_ok=checkers.availability_min,
                                           after_heal=checkers.availability_after_heal,
                                           grace=checkers.availability_grace))
    if checkers.recovers_within is not None:
        verdicts.append(check_recovers(history, within=checkers.recovers_within))
    if checkers.next_guard:
        verdicts.append(check_next_guard(history))
    if checkers.next_fetch:
        verdicts.append(check_next_fetch(history))
    return verdicts
