"""A node's logs through the manager (`docker service logs`, which gathers them from whichever host ran
the task, past tasks included), and a command in a node's container (only on the engine's own host)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import datetime

from .. import BackendError
from ..base import LogLine
from .engine import docker

LOG_TIMEOUT = 120.0
# `docker service logs` sometimes never ends its stream, though every line was sent (an open Docker bug:
# docker/cli#4678, moby/moby#38640; seen in tests/swarm_multi after a chaos run, for the onion service on a
# worker): a call that hangs is given up after SERVICE_LOG_TIMEOUT and made again, a new stream
SERVICE_LOG_TIMEOUT = 45.0
SERVICE_LOG_ATTEMPTS = 3


def service_logs(service: str, *, tail: int | None = None) -> tuple[str, str]:
    """(stdout, stderr) of every task the service had, in the order written per task."""
    args = ["service", "logs", "--raw", "--no-trunc"]
    if tail is not None:
        args += ["--tail", str(tail)]
    attempts = SERVICE_LOG_ATTEMPTS
    while True:
        attempts -= 1
        try:
            result = docker(*args, service, check=False, timeout=SERVICE_LOG_TIMEOUT)
        except BackendError:  # it hung (or there is no docker: then every attempt says so at once)
            if attempts == 0:
                raise
        else:
            return result.stdout, result.stderr


def _split(node: str, stream: str, line: str) -> LogLine:
    """`--timestamps` puts the RFC 3339 time first, in nanoseconds (Python reads microseconds)."""
    stamp, _, text = line.partition(" ")
    whole, dot, fraction = stamp.removesuffix("Z").partition(".")
    try:
        ts = datetime.fromisoformat(f"{whole}{dot}{fraction[:6]}+00:00").timestamp()
    except ValueError:
        return LogLine(node, stream, line, None)
    return LogLine(node, stream, text, ts)


def log_lines(service: str, node: str, stream: str, *, follow: bool = False,
              since: float | None = None) -> Iterator[LogLine | None]:
    """The node's lines on `stream`; with `follow`, None once what was written is given, then new lines
    until the service is gone."""
    args = ["docker", "service", "logs", "--raw", "--no-trunc", "--timestamps"]
    if since is not None:
        args += ["--since", f"{since:.3f}"]
    index = 1 if stream == "stdout" else 2
    done = subprocess.run([*args, service], capture_output=True, text=True, timeout=LOG_TIMEOUT, check=False)
    last = None
    for line in (done.stdout if index == 1 else done.stderr).splitlines():
        item = _split(node, stream, line)
        last = item.ts or last
        yield item
    if not follow:
        return
    yield None
    start = f"{last + 1e-6:.6f}" if last is not None else f"{since or 0:.3f}"
    with subprocess.Popen([*args[:5], "--follow", "--since", start, service], text=True,
                          stdout=subprocess.PIPE if index == 1 else subprocess.DEVNULL,
                          stderr=subprocess.PIPE if index == 2 else subprocess.DEVNULL) as proc:
        pipe = proc.stdout if index == 1 else proc.stderr
        assert pipe is not None
        try:
            for line in pipe:
                yield _split(node, stream, line.rstrip("\n"))
        finally:
            proc.kill()
