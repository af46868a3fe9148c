"""A moderately large lab on the local backend (issue 10): 40 node processes come up, every relay stays in
the consensus, Running, across two further voting rounds (the regression for "listed, then dropped again
within seconds"), and a fetch through an onion service works. About two minutes; run it under the shared
lock (docs/scale.md): it is more than 30 processes.
"""

import time
import urllib.request

from nodes.core.consensus import parse_consensus
from nodes.core.netview import Flag
from nodes.net.dirclient import CONSENSUS_PATH
from orchestrator.backends.local import LocalBackend
from orchestrator.flow import check_reachable
from orchestrator.scale import ready_timeout
from orchestrator.topology import parse_topology

RELAYS = 34
TOPOLOGY = f"""\
name: scale40
nodes:
  - {{name: auth, role: authority, count: 3}}
  - {{name: relay, role: relay, count: {RELAYS}}}
  - {{name: hs, role: onion_service, services: [{{port: 80, target: http}}]}}
  - {{name: client, role: client, count: 2}}
"""


def _consensus(address: str, dir_port: int):
    with urllib.request.urlopen(f"http://{address}:{dir_port}{CONSENSUS_PATH}", timeout=10) as answer:
        return parse_consensus(answer.read()).unchecked


def test_a_40_node_lab_keeps_every_relay_in_the_consensus_and_fetches_through_an_onion(tmp_path):
    topology = parse_topology(TOPOLOGY)
    interval = topology.timing.voting_interval
    backend = LocalBackend(tmp_path / "run")
    try:
        info = backend.up(topology, timeout=ready_timeout(len(topology.nodes), interval))
        relays = {n.address for n in info.nodes if n.role == "relay"}
        auth = info.node("auth1")

        # the consensus as published now and at the next two rounds: every relay, Running
        seen = []
        deadline = time.monotonic() + 4 * interval
        while len(seen) < 3:
            assert time.monotonic() < deadline, f"rounds seen: {[c.valid_after for c in seen]}"
            consensus = _consensus(auth.address, auth.ports["dir_port"])
            if not seen or consensus.valid_after > seen[-1].valid_after:
                seen.append(consensus)
                running = {r.address for r in consensus.routers if str(Flag.Running) in r.flags}
                assert running == relays, f"round {consensus.valid_after}: {len(running)} of {RELAYS} Running"
            time.sleep(1)
        assert seen[-1].valid_after - seen[0].valid_after == 2 * interval

        status = backend.status()
        (service,) = status["onion_services"]
        for client in status["clients"]:
            check_reachable(client["socks"], service["onion"], deadline=time.monotonic() + 30)
    finally:
        backend.down()
