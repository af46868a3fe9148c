"""Run a stock tor process (Debian's package) beside a lab: start it with a torrc, wait for its bootstrap,
read its warnings, stop it.

Readiness comes from tor's own log ("Bootstrapped 100%"), polled with a short interval and bounded by a
deadline; a tor that exits early fails at once with the end of its log. `warnings()` returns every `[warn]`
line, which is how C tor reports documents, certificates and cells it did not like.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

POLL = 0.1
_BOOTSTRAP = re.compile(r"Bootstrapped (\d+)%")


class TorError(RuntimeError):
    """tor is missing, exited, or did not bootstrap in time; the message carries the end of its log."""


def tor_binary() -> str:
    path = shutil.which("tor")
    if path is None:
        raise TorError("no `tor` on PATH: install Debian's package (`apt-get install tor`)")
    return path


class TorProcess:
    """One tor with its own directory `workdir` (torrc, data directory, log)."""

    def __init__(self, workdir: str | Path, torrc: str, *, env: Mapping[str, str] | None = None) -> None:
        self.workdir = Path(workdir)
        self.env = dict(env) if env is not None else None  # the process's environment (None: ours)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.torrc_path = self.workdir / "torrc"
        self.log_path = self.workdir / "notice.log"
        self.torrc_path.write_text(torrc)
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0

    def start(self) -> None:
        self.started_at = time.monotonic()
        stdout = open(self.workdir / "stdout.log", "wb")  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen(
            [tor_binary(), "-f", str(self.torrc_path), "--Log", f"notice file {self.log_path}",
             "--RunAsDaemon", "0"],
            stdout=stdout, stderr=subprocess.STDOUT, cwd=self.workdir, env=self.env, start_new_session=True)
        stdout.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def bootstrap_percent(self) -> int:
        found = _BOOTSTRAP.findall(self.log())
        return int(found[-1]) if found else 0

    def wait_bootstrapped(self, timeout: float) -> float:
        """Seconds from start to "Bootstrapped 100%"; TorError if tor exits or the deadline passes."""
        assert self.process is not None, "start() first"
        deadline = time.monotonic() + timeout
        while True:
            if self.bootstrap_percent() == 100:
                return time.monotonic() - self.started_at
            if self.process.poll() is not None:
                raise TorError(f"tor exited with status {self.process.returncode} before bootstrapping:\n"
                               + self.tail())
            if time.monotonic() > deadline:
                raise TorError(f"tor did not bootstrap within {timeout:.0f} s (at "
                               f"{self.bootstrap_percent()}%):\n" + self.tail())
            time.sleep(POLL)

    def warnings(self) -> list[str]:
        return [line for line in self.log().splitlines() if "[warn]" in line or "[err]" in line]

    def tail(self, lines: int = 40) -> str:
        """The end of tor's log (of its stdout when it logged nothing: it failed before opening the log)."""
        text = self.log() or (self.workdir / "stdout.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGINT (tor's clean shutdown), SIGKILL if it lingers. Idempotent."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> TorProcess:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
