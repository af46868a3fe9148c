"""The workload (verified fetches through a client's SOCKS port), the sampler of the lab's state and the
watch of a restarted node's readiness, each a thread that writes into the history."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final

from .. import readiness
from ..backends.base import FaultBackend
from ..flow import (
    SocksRefused,
    fresh_credentials,
    parse_events,
    read_pattern,
    socks_connect,
)
from .history import History

LAB_STATE_EVERY: Final = 2.0  # seconds between two samples of the lab's state


def fetch_once(socks: str | None, onion: str, *, port: int, n_bytes: int, timeout: float,
               credentials: tuple[bytes, bytes] | None = None) -> dict:
    """One verified fetch of /bytes/n_bytes with these SOCKS credentials (default: fresh ones, a new
    rendezvous): {ok, result, socks_reply, bytes, error}; result: ok, wrong_bytes, short, socks_refused,
    timeout, error or no_socks."""
    if socks is None:
        return {"ok": False, "result": "no_socks", "socks_reply": None, "bytes": 0,
                "error": "the client publishes no SOCKS port (is it running?)"}
    deadline = time.monotonic() + timeout
    reply, good = None, 0
    try:
        credentials = credentials or fresh_credentials("chaos")
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


def credentials_for(policy: str, fetchers: int) -> Callable[[int], tuple[bytes, bytes] | None]:
    """fetcher -> its SOCKS credentials under `policy` (scenario.CREDENTIALS); None: fresh ones each fetch."""
    if policy == "fresh":
        return lambda fetcher: None
    shared = fresh_credentials("chaos-shared")
    own = [fresh_credentials(f"chaos-{i}") for i in range(fetchers)]
    return {"shared": lambda fetcher: shared, "per_fetcher": lambda fetcher: own[fetcher],
            "mixed": lambda fetcher: own[fetcher] if fetcher % 2 else shared}[policy]


class WorkloadThread(threading.Thread):
    """`concurrency` fetchers side by side (threads), each starting a fetch every `interval` seconds (right
    after the last one when that was slower), `fetches` times each (None: until stopped). `fetch(fetcher)`
    does one; every fetch is a `fetch` record (with `fetcher` when there are several)."""

    def __init__(self, history: History, fetch: Callable[[int], dict], interval: float,
                 say: Callable[[str], None], *, concurrency: int = 1, fetches: int | None = None) -> None:
        super().__init__(name="onionlab-chaos-workload", daemon=True)
        self.history, self.fetch, self.interval, self.say = history, fetch, interval, say
        self.concurrency, self.fetches = concurrency, fetches
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self._count = 0
        self._lock = threading.Lock()

    def run(self) -> None:
        fetchers = [threading.Thread(target=self._fetcher, args=(i,), name=f"onionlab-chaos-fetcher-{i}",
                                     daemon=True) for i in range(self.concurrency)]
        for t in fetchers:
            t.start()
        for t in fetchers:
            t.join()

    def _fetcher(self, fetcher: int) -> None:
        try:
            done, next_start = 0, self.history.now()
            while not self.stopping.is_set() and (self.fetches is None or done < self.fetches):
                if next_start > self.history.now() and self.stopping.wait(next_start - self.history.now()):
                    break
                start = self.history.now()
                result = self.fetch(fetcher)
                end = self.history.now()
                with self._lock:
                    n, self._count = self._count, self._count + 1
                extra = {"fetcher": fetcher} if self.concurrency > 1 else {}
                self.history.record("fetch", n=n, start=start, end=end,
                                    latency_ms=round(1000 * (end - start), 1), **extra, **result)
                self.say(f"fetch {n}: " + ("ok" if result["ok"] else f"FAILED ({result['result']}: "
                                           f"{result['error']})") + f", {1000 * (end - start):.0f} ms")
                done += 1
                next_start = max(start + self.interval, self.history.now())
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which stops the run
            self.error = e
            self.stopping.set()


def lab_state(backend: FaultBackend, service: str, client: str, relays: Sequence[str],
              secrets: Sequence[str] = ()) -> dict:
    """The fields of a `lab_state` record: `intro_points`, for each intro point the service's /status lists,
    whether a relay holds the service's circuit under its auth key (does it answer clients? None for an intro
    point on a tor relay, which cannot tell; `intro_points` None: the service does not answer); `guards`,
    the service's and the client's guards ({node: {primary, order}}, a node that does not answer left out);
    `links_from`, the addresses each relay has a link from now (its /status); `service_seen_by`, the relays
    whose /status contains one of `secrets` (what names the service: its onion address, its identity key)."""
    status = backend.node_status(service)
    relay_status = {relay: backend.node_status(relay) or {} for relay in relays}
    seen_by = sorted(relay for relay, st in relay_status.items()
                     if any(secret in json.dumps(st) for secret in secrets))
    intro = None
    if status is not None:
        held = {key for st in relay_status.values() for key in st.get("intro_auth_keys", ())}
        # a tor relay does not say which intro circuits it holds: None, unknown (not "not held")
        silent = {relay for relay, st in relay_status.items() if st.get("impl") == "tor"}
        intro = {name: None if name in silent else key in held
                 for name, key in (status.get("intro_auth_keys") or {}).items()}
    guards = {}
    for node, st in ((service, status), (client, backend.node_status(client))):
        if st is not None and st.get("guards"):
            guards[node] = {"primary": st["guards"].get("primary") or [],
                            "order": st["guards"].get("order") or []}
    links_from = {relay: st["links_from"] for relay, st in relay_status.items() if "links_from" in st}
    return {"intro_points": intro, "guards": guards, "links_from": links_from,
            "service_seen_by": seen_by}


# what node_events keeps of each node's events: every relay event (what relays learn is what the anonymity
# checker judges), and of the other nodes their links and consensuses
KEPT_EVENTS: Final = ("link_up", "consensus_received", "consensus_refused",
                      # why a service or a client was unreachable: its intro points and descriptors
                      "intro_established", "intro_lost", "intro_failed", "intro_rotated",
                      "descriptor_published", "descriptor_upload_failed", "introduce_sent", "introduce_nack",
                      "descriptor_refetch", "descriptor_stale", "descriptor_fetched",
                      "descriptor_fetch_failed")


def node_events(backend: FaultBackend, nodes: Sequence[tuple[str, str]], since: float,
                until: float) -> tuple[list[dict], list[str]]:
    """The events the lab's nodes emitted between the wall-clock times `since` and `until` that the invariant
    checkers judge (KEPT_EVENTS, and every event of a relay), and the nodes whose events could not be read."""
    events, missing = [], []
    for name, role in nodes:
        try:
            text = backend.logs(name)
        except Exception:  # noqa: BLE001 - a node whose log is gone: the checkers say they cannot judge it
            missing.append(name)
            continue
        events += [e for e in parse_events(text) if since <= e["ts"] <= until
                   and (role == "relay" or e.get("event") in KEPT_EVENTS)]
    return events, missing


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


class ReadyWatch(threading.Thread):
    """After a killed or stopped node is started again: waits until its /status says it is ready, off the
    run's main loop (so the schedule's other faults start and end on time), then records a `ready` record and
    calls `on_ready` (a restarted client publishes its SOCKS port anew). The fault itself ended at the start:
    the time the node takes to come back counts towards the lab's recovery."""

    POLL: Final = 0.2

    def __init__(self, history: History, backend: FaultBackend, node: str, op: int, timeout: float,
                 on_ready: Callable[[], None]) -> None:
        super().__init__(name=f"onionlab-chaos-ready-{node}", daemon=True)
        self.history, self.backend, self.node, self.op = history, backend, node, op
        self.timeout, self.on_ready = timeout, on_ready
        self.started_at = history.now()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            deadline = time.monotonic() + self.timeout
            while not readiness.is_ready(self.backend.node_status(self.node)):
                if time.monotonic() >= deadline:
                    self.history.record("ready", op=self.op, node=self.node, ok=False,
                                        error=f"not ready within {self.timeout:g} s of its start")
                    return
                time.sleep(self.POLL)
            self.on_ready()
            self.history.record("ready", op=self.op, node=self.node, ok=True,
                                after=round(self.history.now() - self.started_at, 1))
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which stops the run
            self.error = e
