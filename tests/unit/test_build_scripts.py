"""The scripts that build the node image and prepare CI, where they meet the host's apt: another apt or dpkg
holding the dpkg lock (unattended-upgrades after boot, a second build) makes them wait, not fail."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
APT_INSTALL = REPO / "images" / "node" / "apt-install.sh"
LOCK = Path("/var/lib/dpkg/lock-frontend")
HOLD = 3.0  # seconds the test keeps the lock, as another apt would


# a command line that runs `apt-get [OPTION...] install` (not a comment or a message that names it)
APT_GET_INSTALL = re.compile(r"(^|[;&|{(]|\bthen|\belse)\s*(\w+=\S*\s+)*apt-get(\s+-\S+)*\s+install\b",
                             re.MULTILINE)


def test_the_build_and_ci_install_packages_through_apt_install():
    for script in (REPO / "images" / "node" / "build-base.sh", REPO / ".ci" / "run"):
        code = "\n".join(line.split("#")[0] for line in script.read_text().splitlines())
        assert "apt-install.sh" in code, script
        assert not APT_GET_INSTALL.search(code), f"{script} runs apt-get install: it fails on a held lock"
    assert APT_GET_INSTALL.search("x || { apt-get update -q && apt-get install -y -q debootstrap >&2; }")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("apt-get") is None or not LOCK.exists(),
                    reason="needs root and Debian's apt, as the image build has when it installs debootstrap")
def test_apt_install_waits_for_another_apt_to_let_go_of_the_lock():
    with LOCK.open("w") as lock:
        fcntl.lockf(lock, fcntl.LOCK_EX)  # apt and dpkg lock it the same way (fcntl)
        release = threading.Timer(HOLD, fcntl.lockf, (lock, fcntl.LOCK_UN))
        release.start()
        started = time.monotonic()
        try:
            # dpkg is always installed and --no-upgrade keeps it as it is: nothing on the host changes
            result = subprocess.run([str(APT_INSTALL), "--no-upgrade", "dpkg"], capture_output=True,
                                    text=True, timeout=300)
        finally:
            release.cancel()
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started >= HOLD - 0.5  # it waited for the lock ...
    assert "Could not get lock" in result.stderr  # ... as apt said, and did not fail
    assert "Unable to acquire" not in result.stderr
