"""What the tests with a stock tor on the host share: a local-backend lab run through the `onionlab` CLI,
`export torrc`, and the judgement of tor's warnings."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from orchestrator.tor_process import TorProcess

REPO = Path(__file__).resolve().parents[2]
ONIONLAB = [sys.executable, "-m", "orchestrator.cli"]
# tor warns about its own configuration whatever network it joins: nothing about our documents or cells
BENIGN_WARNINGS = (
    "TestingTorNetwork is set",  # "... only advised if you are building a testing Tor network!"
    "You have used DirAuthority",  # "... to specify alternate directory authorities"
    "You are running Tor as root",  # CI runs as root
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalLab:
    """`onionlab` commands against one run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.env = {**os.environ, "ONIONLAB_RUN_DIR": str(run_dir)}

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*ONIONLAB, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def status(self) -> dict:
        done = self.run("status", "--json", timeout=30)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def export_torrc(self, path: Path, *args: str) -> str:
        done = self.run("export", "torrc", *args, "-o", str(path), timeout=30)
        assert done.returncode == 0, done.stderr
        return path.read_text()


@contextlib.contextmanager
def local_lab(run_dir: Path, topology: str = "default.yaml") -> Iterator[LocalLab]:
    """A lab up on the local backend for the block, down after it (asserting both)."""
    lab = LocalLab(run_dir)
    up = lab.run("up", "--backend", "local", "--timeout", "90", str(REPO / "topologies" / topology),
                 timeout=180)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield lab
    finally:
        down = lab.run("down")
        assert down.returncode == 0, down.stderr


def unexpected_warnings(tor: TorProcess) -> list[str]:
    return [w for w in tor.warnings() if not any(b in w for b in BENIGN_WARNINGS)]


def report_run(tor: TorProcess, *, bootstrap_s: float, first_s: float, bulk_s: float, bulk: int) -> None:
    """Print what a run with a stock tor measured (JSON), and fail on any warning tor logged that is not
    known to be benign."""
    print(json.dumps({"tor_bootstrap_s": round(bootstrap_s, 2), "first_fetch_s": round(first_s, 2),
                      "bulk_1MB_s": round(bulk_s, 2), "bulk_MBps": round(bulk / bulk_s / 1e6, 2)}))
    warnings = unexpected_warnings(tor)
    assert not warnings, "tor warned:\n" + "\n".join(warnings)
