"""`onionlab chaos` against real containers: a lab of 3 authorities, 4 relays, an onion service and a client
on 10.79.0.0/24 (or a free /24 when that is taken). One scenario kills the service's intro point and starts
it again (and squeezes its guard with tbf and partitions a relay meanwhile): the history shows the faults, the
checkers pass, the onion is reachable again and nothing is left in place. Then `onionlab chaos` gets SIGTERM
while four faults are in place: it exits 143 (128 + SIGTERM) having undone every one. The lab is always
taken down. A delay, a loss on one link and a clock skew run whatever the kernel has (netem or not)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from ipaddress import ip_network

import pytest

from orchestrator import chaos, report
from orchestrator.backends.base import LINK_LAYER, QDISC
from orchestrator.backends.docker import SHAPING_QDISCS, DockerBackend
from orchestrator.flow import check_reachable
from orchestrator.topology import parse_topology

from .conftest import REPO, SESSION, SESSION_LABEL, TEST_LABEL, _remove_labelled
from .test_docker_backend import free_subnet

pytestmark = pytest.mark.docker

UP_TIMEOUT = 120
PREFERRED = ip_network("10.79.0.0/24")


def lab_text(subnet) -> str:
    return textwrap.dedent(f"""\
        name: chaostest
        networks:
          labnet: {{subnet: {subnet}}}
        timing: {{voting_interval: 10}}
        nodes:
          - {{name: auth, role: authority, count: 3}}
          - {{name: relay, role: relay, count: 4}}
          - name: hs
            role: onion_service
            services:
              - {{port: 80, target: http}}
          - {{name: client, role: client}}
        """)


@pytest.fixture(scope="module")
def lab(docker_client, node_image, tmp_path_factory):
    used = [ip_network(p["Subnet"]) for net in docker_client.networks.list()
            for p in (net.attrs.get("IPAM") or {}).get("Config") or [] if ":" not in p.get("Subnet", ":")]
    subnet = PREFERRED if not any(PREFERRED.overlaps(u) for u in used) else free_subnet(docker_client)
    base = tmp_path_factory.mktemp("chaos")
    (base / "lab.yaml").write_text(lab_text(subnet))
    case = uuid.uuid4().hex[:12]
    labels = {TEST_LABEL: "1", SESSION_LABEL: SESSION, "onionlab.test.case": case}
    backend = DockerBackend(base / "run", labels=labels)
    try:
        topology = parse_topology((base / "lab.yaml").read_text(), str(base / "lab.yaml"))
        backend.up(topology, timeout=UP_TIMEOUT)
        yield backend, base
    finally:
        try:
            backend.down()
        finally:
            _remove_labelled(docker_client, f"onionlab.test.case={case}")


def assert_nothing_left(docker_client, backend: DockerBackend) -> None:
    """Every container of the run running (not paused), on its network at its address, no shaping qdisc."""
    status = backend.status()
    info = json.loads((backend.run_dir / "state.json").read_text())
    for node in info["nodes"]:
        state = backend.container_state(node["name"])
        assert state == {"status": "running", "networks": {"labnet": node["address"]}}, node["name"]
        kinds = set(backend.qdiscs(node["name"]).values())
        assert kinds and not kinds & set(SHAPING_QDISCS), (node["name"], kinds)
    containers = docker_client.containers.list(all=True, filters={"label": f"onionlab.run={info['run_id']}"})
    assert {c.status for c in containers} == {"running"}
    assert not (backend.run_dir / chaos.JOURNAL).exists()
    service, client = status["onion_services"][0], status["clients"][0]
    assert check_reachable(client["socks"], service["onion"], deadline=time.monotonic() + 60) > 0


SCENARIO = textwrap.dedent("""\
    name: kill-intro-point-test
    seed: 5
    duration: 40
    workload: {bytes: 20000, interval: 1, timeout: 10}
    faults:
      - {fault: kill, target: intro point, at: 2, for: 8}
      - {fault: bandwidth, target: service guard, rate: 512kbit, at: 14, for: 5}
      - {fault: partition, target: random relay, at: 14, for: 5}
    checkers:
      availability: {min: 0.5, after_heal: 0.8, grace: 5}
      recovers: {within: 25}
    """)


def test_kill_the_intro_point_and_recover(lab, docker_client):
    backend, base = lab
    intro_points = set(backend.node_status("hs")["intro_points"])
    assert len(intro_points) == 3
    lines: list[str] = []
    result = chaos.run_scenario(chaos.parse_scenario(SCENARIO), backend, history_path=base / "h.jsonl",
                                say=lines.append)
    summary = report.render_summary(result.history)
    print("\n" + "\n".join(lines) + "\n\n" + summary)
    history = chaos.read_history(base / "h.jsonl")
    assert history == json.loads(json.dumps(result.history))

    starts = [r for r in history if r["type"] == "fault" and r["event"] == "start"]
    ends = [r for r in history if r["type"] == "fault" and r["event"] == "end"]
    assert [(r["fault"], r["ok"]) for r in starts] == [("kill", True), ("bandwidth", True),
                                                       ("partition", True)]
    kill = starts[0]
    assert kill["node"] in intro_points and 2 <= kill["t"] < 4
    assert kill["chosen_from"].startswith("intro points of hs: ")
    kill_end = next(r for r in ends if r["op"] == kill["op"])
    assert kill_end["ok"] and kill_end["why"] == "scheduled" and kill_end["detail"] == "started again"
    assert 10 <= kill_end["t"] < 11  # on time: its readiness is watched off the run's main loop
    ready = next(r for r in history if r["type"] == "ready" and r["op"] == kill["op"])
    assert ready["ok"] and ready["node"] == kill["node"] and 0 < ready["after"] < 30
    shaped = starts[1]
    assert shaped["undo"]["qdisc"].startswith("tbf rate 512kbit") and shaped["undo"]["veths"]
    assert {r["why"] for r in ends} == {"scheduled"} and all(r["ok"] for r in ends)
    fetches = [r for r in history if r["type"] == "fetch"]
    assert len(fetches) >= 15 and not [f for f in fetches if f["result"] == "wrong_bytes"]
    # while the intro point was dead, fetches still arrived or failed with a SOCKS reply, never wrong bytes;
    # after the last heal the onion answers again
    assert any(f["ok"] and f["start"] > r["t"] for f in fetches for r in ends)
    assert {v.name: v.ok for v in result.verdicts} == {"no_wrong_bytes": True, "faults": True,
                                                       "lab_state": True, "anonymity": True,
                                                       "consensus_health": True, "availability": True,
                                                       "recovers": True}, summary
    # the killed intro point was replaced at once: no later sample lists an intro point no relay holds
    assert any(r["type"] == "lab_state" and r["intro_points"] for r in history)
    assert result.ok
    assert_nothing_left(docker_client, backend)


def test_sigterm_undoes_every_fault(lab, docker_client):
    backend, base = lab
    scenario = base / "long.yaml"
    scenario.write_text(textwrap.dedent("""\
        name: long
        duration: 120
        faults:
          - {fault: kill, target: random relay, at: 1, for: 100}
          - {fault: pause, target: random relay, at: 1, for: 100}
          - {fault: partition, target: random relay, at: 1, for: 100}
          - {fault: bandwidth, target: random relay, rate: 1mbit, at: 1, for: 100}
        """))
    process = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "chaos", str(scenario), "--run-dir",
                                str(backend.run_dir), "--history", str(base / "long.jsonl")], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not any("op 3: bandwidth" in line for line in output):
            line = process.stdout.readline()
            if not line:
                break
            output.append(line)
        assert any("op 3: bandwidth" in line for line in output), "".join(output)
        assert (backend.run_dir / chaos.JOURNAL).exists()  # four faults in place, journalled
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
            chaos.heal(backend)
    text = "".join(output) + rest
    print(text)
    assert process.returncode == 143, text
    assert "cleanup: every fault undone, the lab is as it was" in text
    history = chaos.read_history(base / "long.jsonl")
    types = [r["type"] for r in history]
    assert "interrupted" in types
    ends = [r for r in history if r["type"] == "fault" and r["event"] == "end"]
    assert sorted(r["fault"] for r in ends) == ["bandwidth", "kill", "partition", "pause"]
    assert {r["why"] for r in ends} == {"cleanup"} and all(r["ok"] for r in ends)
    assert history[-1]["type"] == "end" and history[-1]["interrupted"]
    # the killed relay was started again without waiting: give it its readiness, then look
    killed = next(r["node"] for r in ends if r["fault"] == "kill")
    backend.start(killed, timeout=60)
    assert_nothing_left(docker_client, backend)


def test_delay_loss_and_skew_run_with_or_without_netem(lab, docker_client):
    """delay and loss run here whatever the kernel: tc netem qdiscs on both sides of the veths where it has
    netem, else the nodes' link-layer shaper through their control call (this machine has no netem); skew
    always through the control call. The run's secret reached every node through its volume, not through
    its environment."""
    backend, base = lab
    secret = (backend.run_dir / "control.secret").read_text().strip()
    run = json.loads((backend.run_dir / "state.json").read_text())["run_id"]
    for container in docker_client.containers.list(filters={"label": f"onionlab.run={run}"}):
        assert secret not in json.dumps(container.attrs), container.name  # not in docker inspect
    path, why = backend.shaping_path("delay", {})
    assert path == (QDISC if backend.shaping_problem(netem=True) is None else LINK_LAYER)
    scenario = chaos.parse_scenario(textwrap.dedent("""\
        name: lag
        duration: 14
        workload: {bytes: 5000, interval: 1, timeout: 20}
        faults:
          - {fault: delay, target: relay1, delay: 100ms, jitter: 10ms, loss: 2, at: 1, for: 8}
          - {fault: loss, target: relay2, peer: relay3, percent: 5, at: 1, for: 8}
          - {fault: skew, target: hs, offset: 600, at: 1, for: 8}
        """))
    lines: list[str] = []
    result = chaos.run_scenario(scenario, backend, history_path=base / "lag.jsonl", say=lines.append)
    summary = report.render_summary(result.history)
    print("\n" + "\n".join(lines) + "\n\n" + summary)
    assert result.ok, summary
    how = "tc qdiscs" if path == QDISC else "link-layer shaper"
    assert f"delay via {how} ({why})" in lines
    assert "loss on one link via link-layer shaper (a fault on one link is a rule in the two nodes' link " \
           "layers)" in lines
    history = chaos.read_history(base / "lag.jsonl")
    ends = {r["fault"]: r for r in history if r["type"] == "fault" and r["event"] == "end"}
    starts = {r["fault"]: r for r in history if r["type"] == "fault" and r["event"] == "start"}
    nodes = [n["name"] for n in backend.status()["nodes"]]
    if path == LINK_LAYER:  # a rule on relay1 for every peer, one on every peer for relay1: all removed
        assert {e["node"] for e in starts["delay"]["undo"]["shaper_rules"]} == set(nodes)
        assert ends["delay"]["detail"] == f"link-layer rules removed from {len(nodes)} node(s)"
    else:  # both sides of relay1's veth: the host's and its own (in its network namespace)
        assert any(":" in i for i in starts["delay"]["undo"]["veths"])
    assert ends["loss"]["detail"] == "link-layer rules removed from 2 node(s)"
    assert ends["skew"]["detail"] == "clock true again (was +600 s)"
    for name in nodes:
        status = backend.node_status(name)
        assert status["shaping"] == [] and status["clock_offset"] == 0.0, name
    assert_nothing_left(docker_client, backend)
