"""Load an HTML or SVG file in headless Chromium and report what it rendered: the DOM after load, every
console message and page error at level error, failed loads, and a PNG screenshot of the whole page.

    result = render(Path("flow.svg"))
    assert not result.errors, result.errors
    assert result.dom.count('class="panel"') == 6
    Path("shot.png").write_bytes(result.png)

It speaks the DevTools protocol over --remote-debugging-pipe (file descriptors 3 and 4, NUL-terminated JSON
messages), which reports console errors, unlike --dump-dom and --screenshot. `require_chromium()` fails the
test under CI=true when Chromium is missing and skips it elsewhere (tests/conftest.py's rule for tools).
"""

from __future__ import annotations

import base64
import fcntl
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BINARIES = ("chromium", "chromium-browser", "google-chrome")
TIMEOUT = 60.0


@dataclass
class RenderResult:
    dom: str  # document.documentElement.outerHTML after the load event
    errors: list[str] = field(default_factory=list)  # console errors, uncaught exceptions, failed loads
    png: bytes = b""
    width: int = 0  # of the page's content, CSS pixels
    height: int = 0


class RenderError(Exception):
    """Chromium did not start, answer or load the page in time."""


def find_chromium() -> str | None:
    return next((path for name in BINARIES if (path := shutil.which(name))), None)


def require_chromium() -> str:
    path = find_chromium()
    if path is None:
        message = "no headless Chromium (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}. CI=true: failing instead of skipping.", pytrace=False)
        pytest.skip(message)
    return path


class _Pipe:
    """The browser end of --remote-debugging-pipe: commands out, replies and events back."""

    def __init__(self, proc: subprocess.Popen, send_fd: int, recv_fd: int, deadline: float) -> None:
        self.proc, self.send_fd, self.recv_fd, self.deadline = proc, send_fd, recv_fd, deadline
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []

    def _read_message(self) -> dict:
        while b"\0" not in self.buffer:
            if time.monotonic() > self.deadline:
                raise RenderError("Chromium did not answer in time")
            chunk = os.read(self.recv_fd, 65536)
            if not chunk:
                raise RenderError(f"Chromium closed the pipe (exit status {self.proc.poll()})")
            self.buffer += chunk
        message, _, self.buffer = self.buffer.partition(b"\0")
        return json.loads(message)

    def call(self, method: str, session: str | None = None, **params: object) -> dict:
        self.next_id += 1
        request: dict = {"id": self.next_id, "method": method, "params": params}
        if session:
            request["sessionId"] = session
        os.write(self.send_fd, json.dumps(request).encode() + b"\0")
        while True:
            message = self._read_message()
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RenderError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str) -> dict:
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        while True:
            message = self._read_message()
            if message.get("method") == method:
                return message
            self.events.append(message)


def _errors(events: list[dict]) -> list[str]:
    out = []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append("console: " + " ".join(str(a.get("value", a.get("description", "")))
                                                for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            exception = details.get("exception", {}).get("description") or details.get("text")
            out.append(f"exception: {exception}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            out.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".rstrip())
    return out


def render(path: Path, *, width: int = 1400, timeout: float = TIMEOUT) -> RenderResult:
    """Render the file at `path` (HTML or SVG) in a fresh headless Chromium and return what it made of it."""
    binary = require_chromium()
    deadline = time.monotonic() + timeout
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()
    with tempfile.TemporaryDirectory(prefix="onionlab-chromium-") as profile:
        # the child gets the two pipe ends as fds 3 (reads commands) and 4 (writes replies); moved up first
        # so that neither dup2 overwrites the other's source. Python's own fds are not inherited.
        def child_fds() -> None:
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_r, from_browser_w)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        proc = subprocess.Popen(
            [binary, "--headless", "--disable-gpu", "--no-sandbox", "--remote-debugging-pipe",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
             f"--user-data-dir={profile}", f"--window-size={width},900", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=False, preexec_fn=child_fds)
        os.close(to_browser_r)
        os.close(from_browser_w)
        pipe = _Pipe(proc, to_browser_w, from_browser_r, deadline)
        try:
            return _load(pipe, path.resolve(), width)
        finally:
            try:
                pipe.call("Browser.close")
            except (RenderError, OSError):
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            os.close(to_browser_w)
            os.close(from_browser_r)


def _load(pipe: _Pipe, path: Path, width: int) -> RenderResult:
    targets = pipe.call("Target.getTargets")["targetInfos"]
    page = next(t["targetId"] for t in targets if t["type"] == "page")
    session = pipe.call("Target.attachToTarget", targetId=page, flatten=True)["sessionId"]
    for domain in ("Page", "Runtime", "Log"):
        pipe.call(f"{domain}.enable", session)
    pipe.call("Page.navigate", session, url=path.as_uri())
    pipe.wait_for("Page.loadEventFired")
    dom = pipe.call("Runtime.evaluate", session, expression="document.documentElement.outerHTML",
                    returnByValue=True)["result"]["value"]
    size = pipe.call("Runtime.evaluate", session, returnByValue=True, expression=(
        "(() => { const e = document.documentElement, b = e.getBoundingClientRect();"
        " return e instanceof SVGElement ? [b.width, b.height] : [e.scrollWidth, e.scrollHeight] })()"
    ))["result"]["value"]
    w, h = max(math.ceil(size[0]), 1), max(math.ceil(size[1]), 1)
    pipe.call("Emulation.setDeviceMetricsOverride", session, width=w, height=h,
              deviceScaleFactor=1, mobile=False)
    shot = pipe.call("Page.captureScreenshot", session, format="png", captureBeyondViewport=True)
    return RenderResult(dom=dom, errors=_errors(pipe.events), png=base64.b64decode(shot["data"]), width=w,
                        height=h)
