"""A stock tor as a child process of the node, on Trio: started with a torrc, its log (tor's stdout, where
the torrc sends it) read line by line and handed on, the last lines kept for when it exits.

tor leaves with the node: cancelling `run` sends SIGTERM and, after a grace period, SIGKILL; and
`__OwningControllerProcess` makes tor exit by itself should the node die without a chance to do that.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import deque
from collections.abc import Callable

import trio

TERM_GRACE = 5.0  # seconds from SIGTERM to SIGKILL when the node stops
TAIL_LINES = 30
MAX_LOG_LINE = 16384


class TorNotFound(Exception):
    """No tor binary: the node image installs Debian's package (images/node/)."""


class TorExited(Exception):
    """tor ended by itself. `exit_status` is the node's exit status (tor's own, or 128 + signal)."""

    def __init__(self, returncode: int, tail: list[str]) -> None:
        self.returncode = returncode
        self.exit_status = returncode if returncode >= 0 else 128 - returncode
        self.tail = tail
        how = f"status {returncode}" if returncode >= 0 else f"signal {-returncode}"
        super().__init__(f"tor exited with {how}: {exit_cause(tail)}")


def exit_cause(tail: list[str]) -> str:
    """What a reader needs first: tor's last [err] line with the [warn] just before it (tor explains a
    refused torrc in a warning, then says "Reading config failed"), else its last line."""
    errors = [i for i, line in enumerate(tail) if "[err]" in line]
    if not errors:
        return tail[-1] if tail else "(its log is empty)"
    last = errors[-1]
    warning = next((tail[i] for i in range(last - 1, -1, -1) if "[warn]" in tail[i]), None)
    return f"{warning} / {tail[last]}" if warning else tail[last]


def tor_binary() -> str:
    path = shutil.which("tor")
    if path is None:
        raise TorNotFound("no `tor` on PATH: the node image installs Debian's package (make image)")
    return path


class TorChild:
    def __init__(self, torrc_path: str, *, on_line: Callable[[str], None], binary: str | None = None) -> None:
        self.torrc_path = torrc_path
        self.binary = binary or tor_binary()
        self.on_line = on_line
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.pid: int | None = None

    def command(self) -> list[str]:
        # no defaults torrc: only our torrc counts, whatever the package ships in /etc/tor
        return [self.binary, "-f", self.torrc_path, "--defaults-torrc", os.devnull,
                "--__OwningControllerProcess", str(os.getpid())]

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Run tor until it exits (TorExited unless its status is 0: then return) or we are cancelled."""
        process = await trio.lowlevel.open_process(self.command(), stdin=subprocess.DEVNULL,
                                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.pid = process.pid
        try:
            task_status.started(process.pid)
            assert process.stdout is not None
            await self._read_log(process.stdout)
            await process.wait()
        finally:
            with trio.CancelScope(shield=True):
                await _stop(process)
        if process.returncode != 0:
            raise TorExited(process.returncode, list(self.tail))

    async def _read_log(self, stdout: trio.abc.ReceiveStream) -> None:
        buffer = b""
        while chunk := await stdout.receive_some(65536):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            if len(buffer) > MAX_LOG_LINE:  # a line without end: hand on what we have
                lines.append(buffer)
                buffer = b""
            for raw in lines:
                line = raw.decode("utf-8", "replace").rstrip("\r")
                self.tail.append(line)
                self.on_line(line)
        if buffer:
            line = buffer.decode("utf-8", "replace")
            self.tail.append(line)
            self.on_line(line)


async def _stop(process: trio.Process) -> None:
    if process.returncode is None:
        process.terminate()
        with trio.move_on_after(TERM_GRACE):
            await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()
    if process.stdout is not None:
        await process.stdout.aclose()
