"""The reliability suite (orchestrator/chaos/suite.py) on the local backend: one lab of the default topology
as processes on 127.0.x.y for the whole module, and every scenario of the suite whose faults the local
backend has (all but partition-heal: kill, stop and pause are signals; shaping and skew the nodes' control
call), once each, one after another. A checker that fails fails the test with the run's summary; after the
last one every node runs as it did before the first. `make test-chaos-local`, not in `make test`.

About 18 minutes on two cores (random-chaos alone is 3 minutes)."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from orchestrator import chaos
from orchestrator.backends.base import CLOCK_FAULTS, PROCESS_FAULTS, SHAPING_FAULTS
from orchestrator.backends.local import LocalBackend
from orchestrator.chaos.suite import SUITE, load_suite

from ..chaos_suite import assert_scenario_passes, suite_lab

UP_TIMEOUT = 120
LOCAL = [s for s in load_suite(SUITE)
         if {spec.fault for spec in s.faults} <= PROCESS_FAULTS | SHAPING_FAULTS | CLOCK_FAULTS]


def test_the_local_suite_leaves_out_only_network_faults() -> None:
    assert {s.name for s in load_suite(SUITE)} - {s.name for s in LOCAL} == {"partition-heal"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    base = tmp_path_factory.mktemp("suite")
    backend = LocalBackend(base / "run")
    try:
        backend.up(suite_lab(ip_network("10.97.0.0/24"), "localsuite"), timeout=UP_TIMEOUT)
        names = [n["name"] for n in backend.status()["nodes"]]
        before = chaos.lab_snapshot(backend, names)
        yield backend, base
        assert chaos.compare_snapshots(before, chaos.lab_snapshot(backend, names)) == []
    finally:
        backend.down()


@pytest.mark.parametrize("scenario", LOCAL, ids=lambda s: s.name)
def test_scenario(lab, scenario) -> None:
    backend, base = lab
    assert_scenario_passes(scenario, backend, base / "histories")
