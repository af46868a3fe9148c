"""A node played by a stock tor (`impl: tor`, Debian's package): `python -m nodes tor --config FILE`.

The node writes a torrc from its NodeConfig (nodes/torrc.py), runs tor as its child (nodes/net/tor_child.py)
and is, to the orchestrator, a node like any other: /status and /metrics on its control port, JSON events on
stdout, tor's own log on stderr. Readiness and events come from tor's control port (nodes/net/torcontrol.py,
cookie authentication): GETINFO status/bootstrap-phase once, then STATUS_CLIENT BOOTSTRAP events, and CIRC,
CIRC_MINOR, STREAM and HS_DESC events translated into the flow's events (nodes/core/tor_events.py).

/status conditions:  bootstrapped          tor reports 100% (it can build circuits)
                     descriptor_uploaded   onion service: an HSDir took its descriptor (HS_DESC UPLOADED);
                                           relay: an authority accepted its descriptor (STATUS_SERVER
                                           ACCEPTED_SERVER_DESCRIPTOR)
                     listed                relay: the latest consensus lists it (GETINFO ns/id/FP, asked
                                           after every CONSENSUS_ARRIVED)
                     weighted              relay: with a weight from the bandwidth tor observed (a new
                                           tor relay reports none until its bandwidth self-test)

An onion service's built-in targets (http, echo) are served by the node itself on 127.0.0.1 at ports the
OS picks (nodes/net/targets.py serve_local_targets); tor's HiddenServicePort lines point there, and each
connection tor opens is a stream opened at the service (`stream_opened`). tor makes the service's key in
its HiddenServiceDir at first start; the node reads the onion address from the hostname file.

If tor exits, so does the node, with tor's status and the end of tor's log on stderr. tor plays clients,
onion services and relays (nodes/config.py IMPL_ROLES).
"""

from __future__ import annotations

import functools
import os
import re
import sys
from pathlib import Path

import trio

from nodes.config import NodeConfig
from nodes.core.errors import RemoteProtocolError
from nodes.core.tor_events import SUBSCRIBED, Translator
from nodes.core.torcontrol import (
    Bootstrap,
    bootstrap_of,
    parse_bootstrap,
    parse_control_port_file,
    quoted_list,
)
from nodes.net.dirclient import CONSENSUS_PATH
from nodes.net.events import EventLog
from nodes.net.httpio import HttpError, request_tcp
from nodes.net.metrics import Metrics
from nodes.net.status import serve_status
from nodes.net.targets import ServiceInfo, Target, serve_local_targets, serve_target
from nodes.net.tor_child import TorChild, TorExited
from nodes.net.torcontrol import CommandRefused, TorControl, open_control
from nodes.torrc import node_paths, node_torrc

CONTROL_WAIT = 60.0  # seconds for tor to open its control port (it does within a second or two)
CONTROL_GRACE = 5.0  # after the control connection ends: how long tor gets to exit before that is an error
POLL_MIN, POLL_MAX = 0.02, 0.5
# A new tor relay's first descriptor reports the bandwidth it has observed: none, before its bandwidth
# self-test; the authorities list it with weight 1 (kB/s), so paths almost never use it. About a minute after
# start it publishes what the self-test observed (~50 kB/s on loopback): then it is `weighted`.
UNOBSERVED_WEIGHT = 1
_WEIGHT = re.compile(r"^w Bandwidth=([0-9]+)", re.M)
CONSENSUS_POLL_MAX = 2.0  # between asking the authorities whether they have a consensus yet
DIR_TIMEOUT = 5.0
# warnings every tor of a lab prints at start, by the lab's design (a container publishes SocksPort on
# 0.0.0.0): not news for /status' last_warning
EXPECTED_WARNINGS = ("TestingTorNetwork is set", "alternate directory authorities", "running Tor as root",
                     "for SocksPort. Other people on the Internet",
                     "DirCache is disabled and we are configured as a relay")  # relays: nodes/torrc.py


def consensus_weight(entry: str) -> int:
    """The `w Bandwidth=N` of a consensus entry (GETINFO ns/id/...), 0 when there is none."""
    found = _WEIGHT.search(entry)
    return int(found.group(1)) if found else 0


class ControlLost(Exception):
    """tor closed its control connection but kept running."""


class TorNode:
    def __init__(self, config: NodeConfig, *, binary: str | None = None) -> None:
        self.config = config
        self.paths = node_paths(config)
        self.binary = binary
        self.metrics = Metrics()
        self.events = EventLog(config.name, config.role)
        self.translator = Translator()
        self.bootstrap = Bootstrap(0, "starting", "Starting")
        self.socks = f"{config.socks_address or config.address}:{config.socks_port}"
        self.version: str | None = None
        self.pid: int | None = None
        self.last_warning: str | None = None
        self.tor_done = trio.Event()
        self.descriptors_uploaded = 0  # HS_DESC UPLOADED (service) / ACCEPTED_SERVER_DESCRIPTOR (relay)
        self.fingerprint: str | None = None  # a relay's, from GETINFO fingerprint
        self.listed = False
        self.weight = 0  # kB/s: its consensus weight (the `w Bandwidth=` of its entry)
        self.intro_circuits: dict[str, str] = {}  # an onion service's established intro circuits -> relay
        self.new_consensus = trio.Event()
        self.metrics.describe("tor_bootstrap_percent", "gauge", "tor's bootstrap progress (100: ready)")

    def conditions(self) -> dict[str, bool]:
        conditions = {"bootstrapped": self.bootstrap.done}
        if self.config.role in ("onion_service", "relay"):
            conditions["descriptor_uploaded"] = self.descriptors_uploaded > 0
        if self.config.role == "relay":
            conditions["listed"] = self.listed
            conditions["weighted"] = self.weight > UNOBSERVED_WEIGHT
        return conditions

    def status(self) -> dict:
        conditions = self.conditions()
        status = {"role": self.config.role, "impl": "tor", "name": self.config.name,
                  "address": self.config.address, "ready": all(conditions.values()), "conditions": conditions,
                  "bootstrap": self.bootstrap.progress, "bootstrap_tag": self.bootstrap.tag,
                  "bootstrap_warning": self.bootstrap.warning, "tor_pid": self.pid,
                  "tor_version": self.version, "last_warning": self.last_warning}
        if self.config.role == "client":
            status["socks"] = self.socks
        elif self.config.role == "onion_service":
            status.update(onion=self.onion(), ports=sorted(s.port for s in self.config.services),
                          descriptors_uploaded=self.descriptors_uploaded,
                          intro_points=sorted(set(self.intro_circuits.values())))
        else:
            status.update(fingerprint=self.fingerprint, or_port=self.config.or_port,
                          descriptors_accepted=self.descriptors_uploaded, consensus_weight=self.weight)
        return status

    def onion(self) -> str | None:
        """The service's address, once tor has written it (at start, before it bootstraps)."""
        try:
            return Path(self.paths["hostname"]).read_text().strip() or None
        except OSError:
            return None

    # -- files --------------------------------------------------------------------------------------------

    def prepare(self, service_ports: list[tuple[int, str]]) -> str:
        """Write the torrc (atomically) and make tor's DataDirectory (0700: tor insists); the torrc's path."""
        text = node_torrc(self.config, service_ports)
        Path(self.config.data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        data = Path(self.paths["data_directory"])
        data.mkdir(mode=0o700, exist_ok=True)
        data.chmod(0o700)
        # a previous run's port and cookie are not ours: tor writes both anew, and until it has, reading the
        # old cookie fails authentication (a restarted node did, and exited)
        Path(self.paths["control_port_file"]).unlink(missing_ok=True)
        Path(self.paths["cookie"]).unlink(missing_ok=True)
        torrc = Path(self.paths["torrc"])
        tmp = torrc.with_name(f".torrc.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, torrc)
        return str(torrc)

    def on_log(self, line: str) -> None:
        """One line of tor's log: onto our stderr (diagnostics), counted by severity."""
        print(f"tor: {line}", file=sys.stderr, flush=True)
        for severity in ("warn", "err"):
            if f"[{severity}]" in line:
                self.metrics.inc("tor_log_lines_total", severity=severity)
                if not any(expected in line for expected in EXPECTED_WARNINGS):
                    self.last_warning = line

    async def control_address(self) -> tuple[str, int]:
        """Where tor's control port listens, once tor has written it and its cookie (backoff, deadline)."""
        port_file, cookie = Path(self.paths["control_port_file"]), Path(self.paths["cookie"])
        delay = POLL_MIN
        with trio.fail_after(CONTROL_WAIT):
            while not (port_file.exists() and cookie.exists()):
                await trio.sleep(delay)
                delay = min(2 * delay, POLL_MAX)
        return parse_control_port_file(port_file.read_text())

    async def wait_for_consensus(self) -> None:
        """Until an authority serves a consensus (backoff, no deadline: `up` has its own). tor starts with
        DisableNetwork 1 and gets the network only then (enable_network): a tor that asks before the lab's
        first consensus warns at every 404 and backs off between tries; asked after, it bootstraps in
        seconds."""
        delay = POLL_MIN
        while True:
            for authority in self.config.authorities:
                try:
                    status, _, _ = await request_tcp(authority.address, authority.dir_port, "HEAD",
                                                     CONSENSUS_PATH, timeout=DIR_TIMEOUT)
                except (OSError, HttpError, trio.TooSlowError):
                    continue
                if status == 200:
                    self.events.emit("consensus_available", authority=authority.name)
                    return
            await trio.sleep(delay)
            delay = min(2 * delay, CONSENSUS_POLL_MAX)

    async def enable_network(self, control: TorControl) -> None:
        await self.wait_for_consensus()
        await control.command("SETCONF", "DisableNetwork=0")

    # -- the control connection --------------------------------------------------------------------------

    def set_bootstrap(self, bootstrap: Bootstrap) -> None:
        self.bootstrap = bootstrap
        self.metrics.set("tor_bootstrap_percent", bootstrap.progress)

    async def attach(self, control: TorControl) -> None:
        """Authenticate, subscribe, then read the state the events will update from here on."""
        await control.authenticate(Path(self.paths["cookie"]).read_bytes())
        await control.setevents(*SUBSCRIBED)  # before GETINFO: no change falls between the two
        info = await control.getinfo("status/bootstrap-phase", "net/listeners/socks", "version")
        self.set_bootstrap(parse_bootstrap(info["status/bootstrap-phase"]))
        self.socks = next(iter(quoted_list(info["net/listeners/socks"])), self.socks)
        self.version = info["version"]
        if self.config.role == "relay":
            self.fingerprint = (await control.getinfo("fingerprint"))["fingerprint"]
            self.new_consensus.set()  # it may have one already

    async def watch_listing(self, control: TorControl) -> None:
        """A relay: after each new consensus, ask tor whether it lists this relay (552 when it does not)."""
        while True:
            await self.new_consensus.wait()
            self.new_consensus = trio.Event()
            try:
                entry = (await control.getinfo(f"ns/id/{self.fingerprint}"))[f"ns/id/{self.fingerprint}"]
            except CommandRefused:
                entry = None
            listed, weight = entry is not None, consensus_weight(entry or "")
            if (listed, weight) != (self.listed, self.weight):
                self.listed, self.weight = listed, weight
                self.events.emit("relay_listed" if listed else "relay_unlisted", fingerprint=self.fingerprint,
                                 weight=weight)

    def note(self, name: str, fields: dict) -> None:
        """What an emitted event changes in the node's own state."""
        if name in ("descriptor_published", "descriptor_uploaded"):
            self.descriptors_uploaded += 1
        elif name == "intro_established":
            self.intro_circuits[str(fields["circuit"])] = str(fields["intro"])
        elif name == "intro_lost":
            self.intro_circuits.pop(str(fields["circuit"]), None)
        elif name == "consensus_received":
            self.new_consensus.set()

    async def consume(self, control: TorControl) -> None:
        """Tor's events -> our events, until the connection ends."""
        async for event in control.events:
            self.metrics.inc("tor_events_total", event=event.name)
            try:
                if event.name == "STATUS_CLIENT" and event.positional[1:2] == ("BOOTSTRAP",):
                    self.set_bootstrap(bootstrap_of(event.positional, event.keywords))
                emitted = self.translator.translate(event)
            except RemoteProtocolError as e:
                self.metrics.inc("errors_total", kind=e.kind)
                self.events.emit("error", kind=e.kind, detail=f"tor {event.name} event: {e}")
                continue
            for name, fields in emitted:
                self.note(name, fields)
                self.events.emit(name, **fields)

    async def control(self, status_port: int, task_status) -> None:
        """Connect to tor's control port and translate its events until the connection ends."""
        host, control_port = await self.control_address()
        async with open_control(await trio.open_tcp_stream(host, control_port)) as control:
            await self.attach(control)
            name, fields = self.started_event(status_port)
            self.events.emit(name, **fields)
            task_status.started(self)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.enable_network, control)
                if self.config.role == "relay":
                    nursery.start_soon(self.watch_listing, control)
                await self.consume(control)
                nursery.cancel_scope.cancel()

    def started_event(self, status_port: int) -> tuple:
        """(name, fields) of the event that says this node is up, as our own nodes of the role say it."""
        common = {"control_port": status_port, "impl": "tor", "version": self.version}
        if self.config.role == "relay":
            return "relay_started", {**common, "fingerprint": self.fingerprint,
                                     "or_port": f"{self.config.address}:{self.config.or_port}"}
        if self.config.role == "onion_service":
            return "service_started", {**common, "onion": self.onion(),
                                       "ports": sorted(s.port for s in self.config.services)}
        return "client_started", {**common, "socks": self.socks}

    # -- an onion service's targets ------------------------------------------------------------------------

    async def serve_stream(self, target: Target, stream: trio.abc.Stream, port: int) -> None:
        """One stream tor opened to a built-in target (as hs_service serves ours)."""
        self.metrics.inc("streams_total", port=str(port), result="opened")
        self.events.emit("stream_opened", onion=self.onion(), port=port)
        await serve_target(target, stream, port, self.metrics, self.events)

    # -- the whole node ----------------------------------------------------------------------------------

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                port = await nursery.start(serve_status, self.config.bind_address, self.config.control_port,
                                           self.status, self.metrics)
                services = [(s.port, s.target) for s in self.config.services]
                forwards = await nursery.start(functools.partial(
                    serve_local_targets, services, lambda: ServiceInfo(self.config.name, self.onion() or ""),
                    serve_stream=self.serve_stream)) if self.config.role == "onion_service" else []
                torrc = self.prepare(forwards)
                child = TorChild(torrc, on_line=self.on_log, binary=self.binary)

                async def run_tor(task_status=trio.TASK_STATUS_IGNORED) -> None:
                    try:
                        await child.run(task_status=task_status)
                    finally:
                        self.tor_done.set()
                    nursery.cancel_scope.cancel()  # tor stopped cleanly (status 0): so does the node

                self.pid = await nursery.start(run_tor)
                self.events.emit("tor_started", pid=self.pid, binary=child.binary, torrc=torrc)
                try:
                    await self.control(port, task_status)
                    failure: Exception = ControlLost("tor closed its control connection but is still running")
                except Exception as e:  # if tor has exited, that is the cause (decided below), not this
                    failure = e
                with trio.move_on_after(CONTROL_GRACE):
                    await self.tor_done.wait()  # tor is exiting: its outcome (run_tor) decides ours
                if not self.tor_done.is_set():
                    raise failure
                await trio.sleep_forever()
        except* TorExited as group:
            for e in group.exceptions:
                print(f"==> the last {len(e.tail)} lines of tor's log <==", file=sys.stderr)
                print("\n".join(e.tail), file=sys.stderr, flush=True)
            raise


async def serve(config: NodeConfig, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Run the tor node until cancelled or tor exits. `task_status.started(node)` once tor's control port
    answers and /status is served."""
    await TorNode(config).serve(task_status=task_status)
