"""topologies/mixed.yaml in containers: onionlab's authorities, four onionlab relays and two tor relays, one
onion service and one client of each kind (tor nodes are Debian's tor in the same node image).

`up` waits for every node's readiness, tor's from its control port (bootstrap, descriptor uploaded, a tor
relay listed with its observed bandwidth). Then every client x every service: / and 1 MB, every byte
checked, and `onionlab flow` shows the six steps (tests/mixed_pairings.py); then
topologies/chaos/kill-intro-point.yaml runs unchanged against the lab (its first service and client,
onionlab's). The lab is always taken down.
"""

from __future__ import annotations

import json
import re

import pytest

from orchestrator import chaos, report
from orchestrator.backends.docker import DockerBackend
from orchestrator.topology import parse_topology
from tests.mixed_pairings import check_every_pairing

from .conftest import REPO
from .test_docker_backend import free_subnet

pytestmark = pytest.mark.docker

MIXED = REPO / "topologies" / "mixed.yaml"
KILL_INTRO_POINT = REPO / "topologies" / "chaos" / "kill-intro-point.yaml"
UP_TIMEOUT = 400  # the first consensus, tor's bootstrap, and a tor relay's first observed bandwidth (~1 min)


@pytest.fixture(scope="module")
def mixed_lab(docker_client, node_image, tmp_path_factory):
    base = tmp_path_factory.mktemp("mixed")
    text = re.sub(r"subnet: [0-9./]+", f"subnet: {free_subnet(docker_client)}", MIXED.read_text())
    (base / "mixed.yaml").write_text(text)
    backend = DockerBackend(base / "run", labels={"onionlab.test": "1", "onionlab.test.case": base.name})
    try:
        backend.up(parse_topology(text, str(base / "mixed.yaml")), timeout=UP_TIMEOUT, progress=print)
        yield backend, base
    except BaseException:
        if (base / "run" / "state.json").exists():
            for name in ("torrelay1", "torhs", "torclient"):
                print(f"==> {name} <==\n" + backend.logs(name)[-4000:])
        raise
    finally:
        backend.down()


def test_every_client_reaches_every_service(mixed_lab, capsys):
    backend, base = mixed_lab
    figures = check_every_pairing(backend, base / "run", capsys)
    with capsys.disabled():
        print(json.dumps({"bulk_1MB_s": figures}))


def test_kill_intro_point_passes_on_the_mixed_lab(mixed_lab):
    """The scenario unchanged: it kills one of the first service's (onionlab's) intro points, which may be a
    tor relay; circuits, paths and rendezvous points include tor relays."""
    backend, base = mixed_lab
    scenario = chaos.load_scenario(KILL_INTRO_POINT)
    lines: list[str] = []
    result = chaos.run_scenario(scenario, backend, history_path=base / "kill-intro-point.jsonl",
                                say=lines.append)
    summary = report.render_summary(result.history)
    print("\n" + "\n".join(lines) + "\n\n" + summary)
    kill = next(r for r in result.history if r["type"] == "fault" and r["event"] == "start")
    assert kill["fault"] == "kill" and kill["chosen_from"].startswith("intro points of hs")
    assert result.ok, summary
