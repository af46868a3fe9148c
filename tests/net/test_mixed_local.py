"""topologies/mixed.yaml on the local backend, Debian's tor from PATH playing two relays, an onion service and
a client beside onionlab's nodes: every client x every service fetches / and 1 MB, every byte checked, and
`onionlab flow` shows the six steps (tests/mixed_pairings.py). No tor node may warn about anything but its
own configuration and the lab's start (docs/tor-interop.md lists both).

There is no skip: without `tor` on PATH the test fails, saying so (`.ci/run` installs it).
"""

import json

from orchestrator.backends.local import LocalBackend
from orchestrator.topology import load_topology
from orchestrator.tor_process import tor_binary
from tests.mixed_pairings import check_every_pairing

from .tor_lab import BENIGN_WARNINGS, REPO

UP_TIMEOUT = 300
# what a tor node of a lab prints by design or while the lab starts (docs/tor-interop.md)
LAB_WARNINGS = (*BENIGN_WARNINGS, "DirCache is disabled and we are configured as a relay",
                "No available nodes when trying to choose node")
TOR_NODES = ("torrelay1", "torrelay2", "torhs", "torclient")


def test_mixed_lab_every_pairing(tmp_path, capsys):
    tor_binary()  # fails loudly when tor is missing
    backend = LocalBackend(tmp_path / "run")
    try:
        backend.up(load_topology(REPO / "topologies" / "mixed.yaml"), timeout=UP_TIMEOUT)
        figures = check_every_pairing(backend, tmp_path / "run", capsys)
        warnings = [line for name in TOR_NODES for line in backend.logs(name).splitlines()
                    if "tor: " in line and ("[warn]" in line or "[err]" in line)
                    and not any(w in line for w in LAB_WARNINGS)]
        assert not warnings, "tor warned:\n" + "\n".join(warnings)
        with capsys.disabled():
            print(json.dumps({"bulk_1MB_s": figures}))
    finally:
        backend.down()
