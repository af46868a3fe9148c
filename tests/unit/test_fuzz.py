"""Random and mutated bytes into every parser raise only the RemoteProtocolError family."""

import pytest

from tests.fuzz.driver import all_targets, fuzz_target

TARGETS = all_targets()


def test_every_parser_is_registered():
    assert len(TARGETS) >= 10, "fuzz targets went missing"


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
def test_bad_input_only_typed_errors(target):
    for seed in target.seeds:  # seeds must be valid, or the mutations test nothing deep
        target.parse(seed)
    outcome = fuzz_target(target, cases=3000, seed=7)
    assert outcome.untyped == 0, "\n".join(outcome.first_untyped)
    assert outcome.typed > 0
