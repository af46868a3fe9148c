"""The reliability suite (orchestrator/chaos/suite.py: topologies/chaos/) against real containers: one lab
of the default topology (3 authorities, 6 relays, hs, client) on a free /24 for the whole module, every
scenario once, one after another (each undoes its faults and the next waits until the onion answers). A
checker that fails fails the test with the run's summary. Then nothing of the lab is left.

About 21 minutes on two cores (random-chaos alone is 3 minutes)."""

from __future__ import annotations

import pytest

from orchestrator import chaos
from orchestrator.backends import read_state
from orchestrator.backends.docker import DockerBackend
from orchestrator.chaos.suite import SUITE, load_suite

from ..chaos_suite import assert_scenario_passes, suite_lab
from .conftest import SESSION, SESSION_LABEL, TEST_LABEL, _remove_labelled
from .test_docker_backend import free_subnet

pytestmark = pytest.mark.docker

UP_TIMEOUT = 120


@pytest.fixture(scope="module")
def lab(docker_client, node_image, tmp_path_factory):
    base = tmp_path_factory.mktemp("suite")
    case = f"suite-{SESSION}"
    labels = {TEST_LABEL: "1", SESSION_LABEL: SESSION, "onionlab.test.case": case}
    backend = DockerBackend(base / "run", labels=labels)
    try:
        backend.up(suite_lab(free_subnet(docker_client), "chaossuite"), timeout=UP_TIMEOUT)
        names = [n["name"] for n in backend.status()["nodes"]]
        before = chaos.lab_snapshot(backend, names)
        yield backend, base
        # every container running on its networks at its addresses, no qdisc, no journal: as it was found
        assert chaos.compare_snapshots(before, chaos.lab_snapshot(backend, names)) == []
        assert not (backend.run_dir / chaos.JOURNAL).exists()
        run_id = read_state(backend.run_dir).run_id
        backend.down()
        run = f"onionlab.run={run_id}"
        assert not docker_client.containers.list(all=True, filters={"label": run})
        assert not docker_client.networks.list(filters={"label": run})
    finally:
        try:
            if read_state(backend.run_dir) is not None:  # a failure above: take it down here
                backend.down()
        finally:
            _remove_labelled(docker_client, f"onionlab.test.case={case}")


@pytest.mark.parametrize("scenario", load_suite(SUITE), ids=lambda s: s.name)
def test_scenario(lab, scenario) -> None:
    backend, base = lab
    assert_scenario_passes(scenario, backend, base / "histories")
