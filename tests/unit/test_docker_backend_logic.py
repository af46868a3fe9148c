"""The docker backend's decisions that need no engine: who owns a run, what reap does with it, which log line
is the cause, the extra labels from the environment."""

import subprocess
import sys

import pytest

from orchestrator.backends import BackendError, RunInfo, RunNode, write_state
from orchestrator.backends import docker as backend


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_owner_alive():
    mine = backend.owner_labels()
    assert backend.owner_alive(mine) is True
    assert backend.owner_alive({**mine, backend.OWNER_PID: str(dead_pid())}) is False
    assert backend.owner_alive({**mine, backend.OWNER_START: "1"}) is False  # the PID was reused
    assert backend.owner_alive({**mine, backend.OWNER_BOOT: "another-boot"}) is False  # rebooted since
    assert backend.owner_alive({**mine, backend.OWNER_HOST: "elsewhere.example"}) is None


def _state(run_dir, run_id, complete):
    run_dir.mkdir()
    write_state(RunInfo("docker", str(run_dir), "lab.yaml", "lab",
                        [RunNode("auth1", "authority", "10.0.0.2", {"control_port": 9052})],
                        run_id=run_id, complete=complete))


def test_reap_reasons(tmp_path):
    dead = {**backend.owner_labels(), backend.OWNER_PID: str(dead_pid())}
    assert backend._reap_reason("r1", backend.owner_labels()).startswith("keep: its orchestrator")
    assert backend._reap_reason("r1", {**dead, backend.OWNER_HOST: "other"}).startswith("keep: made on host")

    complete, half, other = tmp_path / "complete", tmp_path / "half", tmp_path / "other"
    _state(complete, "r1", True)
    _state(half, "r2", False)
    _state(other, "r9", True)  # the run dir now holds another run
    assert backend._reap_reason("r1", {**dead, backend.RUN_DIR: str(complete)}).startswith(
        "keep: a complete run")
    assert backend._reap_reason("r2", {**dead, backend.RUN_DIR: str(half)}).endswith("died during `up`")
    assert backend._reap_reason("r3", {**dead, backend.RUN_DIR: str(other)}).endswith(
        "no state file names it")
    assert backend._reap_reason("r4", {**dead, backend.RUN_DIR: str(tmp_path / "gone")}).endswith(
        "no state file names it")

    backend._forget_run(other, "r3")  # not that run's dir any more: kept
    assert other.exists()
    backend._forget_run(half, "r2")
    assert not half.exists()


def test_cause_is_the_last_fatal_line():
    lines = ["Traceback (most recent call last):", "fatal: first", "OSError: boom", "fatal: OSError: boom",
             "after"]
    assert backend._cause(lines) == "OSError: boom"
    assert backend._cause(["starting", "KeyError: 'x'", ""]) == "KeyError: 'x'"
    assert backend._cause([]) == "(its logs are empty)"


def test_extra_labels(monkeypatch):
    monkeypatch.setenv(backend.EXTRA_LABELS_ENV, "onionlab.test=1, ci.job=42")
    assert backend._extra_labels() == {"onionlab.test": "1", "ci.job": "42"}
    monkeypatch.setenv(backend.EXTRA_LABELS_ENV, "novalue")
    with pytest.raises(BackendError, match="expected KEY=VALUE"):
        backend._extra_labels()
    monkeypatch.setenv(backend.EXTRA_LABELS_ENV, "onionlab.run=x")
    with pytest.raises(BackendError, match="onionlab's own label"):
        backend._extra_labels()
