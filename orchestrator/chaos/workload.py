"""The workload (verified fetches through a client's SOCKS port) and the sampler of the lab's state, each a
thread that writes into the history."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Final

from ..backends.base import FaultBackend
from ..flow import (
    SocksRefused,
    fresh_credentials,
    read_pattern,
    socks_connect,
)
from .history import History

LAB_STATE_EVERY: Final = 2.0  # seconds between two samples of the lab's state


def fetch_once(socks: str | None, onion: str, *, port: int, n_bytes: int, timeout: float) -> dict:
    """One verified fetch of /bytes/n_bytes with fresh SOCKS credentials (a new rendezvous): {ok, result,
    socks_reply, bytes, error}; result: ok, wrong_bytes, short, socks_refused, timeout, error or no_socks."""
    if socks is None:
        return {"ok": False, "result": "no_socks", "socks_reply": None, "bytes": 0,
                "error": "the client publishes no SOCKS port (is it running?)"}
    deadline = time.monotonic() + timeout
    reply, good = None, 0
    try:
        credentials = fresh_credentials("chaos")
        with socks_connect(socks, onion, port, credentials=credentials, timeout=timeout) as sock:
            reply = 0
            good, wrong = read_pattern(sock, onion, n_bytes, deadline=deadline)
    except SocksRefused as e:
        return {"ok": False, "result": "socks_refused", "socks_reply": e.code, "bytes": 0, "error": str(e)}
    except TimeoutError:
        return {"ok": False, "result": "timeout", "socks_reply": reply, "bytes": good,
                "error": f"no answer within {timeout:g} s"}
    except OSError as e:
        return {"ok": False, "result": "error", "socks_reply": reply, "bytes": good,
                "error": f"{type(e).__name__}: {e}"}
    if wrong is not None:
        return {"ok": False, "result": "wrong_bytes", "socks_reply": 0, "bytes": good,
                "error": f"byte {wrong} does not match the pattern"}
    if good != n_bytes:
        return {"ok": False, "result": "short", "socks_reply": 0, "bytes": good,
                "error": f"the stream ended after {good} of {n_bytes} bytes"}
    return {"ok": True, "result": "ok", "socks_reply": 0, "bytes": good, "error": None}


class WorkloadThread(threading.Thread):
    def __init__(self, history: History, fetch: Callable[[], dict], interval: float,
                 say: Callable[[str], None]) -> None:
        super().__init__(name="onionlab-chaos-workload", daemon=True)
        self.history, self.fetch, self.interval, self.say = history, fetch, interval, say
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            n, next_start = 0, self.history.now()
            while not self.stopping.is_set():
                if next_start > self.history.now() and self.stopping.wait(next_start - self.history.now()):
                    break
                start = self.history.now()
                result = self.fetch()
                end = self.history.now()
                self.history.record("fetch", n=n, start=start, end=end,
                                    latency_ms=round(1000 * (end - start), 1), **result)
                self.say(f"fetch {n}: " + ("ok" if result["ok"] else f"FAILED ({result['result']}: "
                                           f"{result['error']})") + f", {1000 * (end - start):.0f} ms")
                n += 1
                next_start = max(start + self.interval, self.history.now())
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which stops the run
            self.error = e


def lab_state(backend: FaultBackend, service: str, client: str, relays: Sequence[str]) -> dict:
    """The fields of a `lab_state` record: `intro_points`, for each intro point the service's /status lists,
    whether a relay holds the service's circuit under its auth key (does it answer clients? None for an intro
    point on a tor relay, which cannot tell; `intro_points` None: the service does not answer); `nacks`, the
    NACKs the client's /metrics count per intro point (None: no answer)."""
    status = backend.node_status(service)
    intro = None
    if status is not None:
        relay_status = {relay: backend.node_status(relay) or {} for relay in relays}
        held = {key for s in relay_status.values() for key in s.get("intro_auth_keys", ())}
        # a tor relay does not say which intro circuits it holds: None, unknown (not "not held")
        silent = {relay for relay, s in relay_status.items() if s.get("impl") == "tor"}
        intro = {name: None if name in silent else key in held
                 for name, key in (status.get("intro_auth_keys") or {}).items()}
    metrics = backend.node_metrics(client)
    nacks = None if metrics is None else {
        labels.get("intro", "?"): value for name, labels, value in metrics
        if name == "onionlab_introductions_total" and labels.get("result") == "nack"}
    return {"intro_points": intro, "nacks": nacks}


class LabSampler(threading.Thread):
    """Records `sample()` as a `lab_state` record every LAB_STATE_EVERY seconds until stopped."""

    def __init__(self, history: History, sample: Callable[[], dict]) -> None:
        super().__init__(name="onionlab-chaos-sampler", daemon=True)
        self.history, self.sample = history, sample
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while True:
                self.history.record("lab_state", **self.sample())
                if self.stopping.wait(LAB_STATE_EVERY):
                    break
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which stops the run
            self.error = e
