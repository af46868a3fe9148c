"""The docker backend: every node its own container of the node image, on the topology's Docker networks.

The only module of onionlab that imports docker-py. `up` makes, in this order, everything labelled with the
run's id (`onionlab.run`) and with who made it (`onionlab.owner-*`):

    networks    one bridge per topology network, `onionlab-<run>-<network>`, with the topology's subnet; when
                another network of the engine holds it (a second lab of the same topology), the next free
                subnet of the same size in its private block, every node keeping its host part (unless
                `exact_subnets`, or a service of the lab forwards to an address in it)
    volumes     one per node, `onionlab-<run>-<node>`: its data dir, /var/lib/onionlab/<node> in every
                container that mounts it (config.json, and the keys the node makes)
    init        a one-shot container of the node image (`python -m nodes init`, nodes/init.py) with every
                volume mounted: it makes the authorities' identity keys, writes every node's config.json
                from the plan (orchestrator/plan.py, passed in $ONIONLAB_PLAN) and hands the volumes to the
                node user (uid 10001). Key material never leaves the run's volumes.
    containers  one per node, `onionlab-<run>-<node>` (hostname: the node's name) running
                `ROLE --config /var/lib/onionlab/<node>/config.json` (`tor --config ...` for a node that a
                stock tor plays, `impl: tor`: the same image and labels, plus onionlab.impl) at its static
                address on each of its networks, as uid 10001 with every capability dropped,
                no-new-privileges and a read-only root file system, within the node's memory and pids limits
                (topology settings `memory`, `pids`). A client's SOCKS port is published on the host's
                127.0.0.1 only, at a port Docker picks (RunNode.socks).

and then waits until every node's /status says ready (readiness.py), showing progress. A container that
exits meanwhile stops the wait at once with the cause from its own log (its last `fatal: ` line). Whatever
makes `up` fail, Ctrl-C included, everything of the run is removed again (the containers' logs are first
saved in `<run dir>/logs/`, where `onionlab logs` finds them).

The orchestrator reaches /status at the containers' addresses when the engine runs on this Linux host (its
bridges are the host's interfaces); elsewhere (rootless Docker, Docker Desktop, a remote engine) the control
ports are published on 127.0.0.1 too (RunNode.control).

`down` removes every container, network and volume labelled with the run's id. `reap` removes every run
whose `up` is over without being complete (the orchestrator crashed or was killed mid-`up`) and every run
whose state file is gone: see `reap`.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network
from pathlib import Path

import docker
import docker.errors
import requests
from docker.models.containers import Container

from nodes.__main__ import FATAL_PREFIX
from orchestrator import readiness
from orchestrator.plan import DATA_ROOT, INIT_MEMORY, INIT_PIDS, make_plan
from orchestrator.signals import signals_deferred
from orchestrator.topology import Node, Topology

from . import (
    BackendError,
    NodeFailed,
    RunInfo,
    RunNode,
    StartFailed,
    default_run_dir,
    failure_reason,
    read_state,
    write_state,
)
from .base import FAULT_KINDS, NEEDS_NETEM, SHAPING_FAULTS, Progress

# -- labels: on every object the backend makes -------------------------------------------------------------
RUN = "onionlab.run"  # the run id; `onionlab.run` alone (the key) selects everything of every run
NODE = "onionlab.node"  # containers and volumes: the node's name ("init" for the init container)
ROLE = "onionlab.role"  # containers and volumes: the node's role ("init" for the init container)
IMPL = "onionlab.impl"  # node containers: what plays the node (onionlab, or tor for a stock tor)
NETWORK = "onionlab.network"  # networks: the topology's name for it
TOPOLOGY = "onionlab.topology"  # the topology file
LAB = "onionlab.lab"  # the topology's name
RUN_DIR = "onionlab.run-dir"  # where the run's state file lives (on the owner's host)
OWNER_PID = "onionlab.owner-pid"  # the orchestrator process running `up`
OWNER_START = "onionlab.owner-start"  # its start time (clock ticks since boot): a reused PID is not it
OWNER_HOST = "onionlab.owner-host"  # the host it runs on
OWNER_BOOT = "onionlab.owner-boot"  # that host's boot id: after a reboot no owner is alive
EXTRA_LABELS_ENV = "ONIONLAB_LABELS"  # "k=v,k2=v2": labels added to every object (tests, CI)

INIT = "init"
NODE_USER = "10001:10001"  # the node image's user (images/node/Dockerfile)
PLAN_ENV = "ONIONLAB_PLAN"
MAX_PLAN_BYTES = 120_000  # an environment variable must stay under Linux's MAX_ARG_STRLEN (128 KiB)
INIT_TIMEOUT = 60.0
STOP_TIMEOUT = 10  # seconds from SIGTERM to SIGKILL in `down`
STATUS_TIMEOUT = 1.0  # `status` asks every node once; a node slower than this is not ready
TAIL_LINES = 20
LOGS_DIR = "logs"
PARALLEL = 4  # engine calls in flight while creating and starting containers
CHECK_EVERY = 0.5  # seconds between two looks at the containers' states while waiting for readiness
PRIVATE_BLOCKS = tuple(IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
SUBNET_TRIES = 5  # subnets tried per network when others keep taking them (labs starting side by side)


# -- who owns a run ----------------------------------------------------------------------------------------


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), "" when unknown."""
    try:
        return Path("/proc", str(pid), "stat").read_text().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return ""


def owner_labels() -> dict[str, str]:
    pid = os.getpid()
    return {OWNER_PID: str(pid), OWNER_START: _process_start(pid), OWNER_HOST: socket.gethostname(),
            OWNER_BOOT: _boot_id()}


def owner_alive(labels: dict[str, str]) -> bool | None:
    """Is the orchestrator that made an object with these labels still running? None: it runs on another
    host (or this host cannot tell), so nobody here can know."""
    if labels.get(OWNER_HOST) != socket.gethostname():
        return None
    boot = _boot_id()
    if boot and labels.get(OWNER_BOOT) and labels[OWNER_BOOT] != boot:
        return False  # this host rebooted since
    try:
        pid = int(labels.get(OWNER_PID, ""))
    except ValueError:
        return False
    if not Path("/proc/self").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    start = _process_start(pid)
    if not start:
        return False  # no such process
    recorded = labels.get(OWNER_START)
    return not recorded or recorded == start


def _extra_labels() -> dict[str, str]:
    text = os.environ.get(EXTRA_LABELS_ENV, "").strip()
    labels = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BackendError(f"${EXTRA_LABELS_ENV}: expected KEY=VALUE[,KEY=VALUE...], found {item!r}")
        if key.startswith("onionlab.") and not key.startswith("onionlab.test"):
            raise BackendError(f"${EXTRA_LABELS_ENV}: {key} is onionlab's own label")
        labels[key] = value
    return labels


# -- the engine ----------------------------------------------------------------------------------------------


def connect() -> docker.DockerClient:
    """A client of the engine DOCKER_HOST (or the default socket) names; BackendError when none answers."""
    try:
        client = docker.from_env()
        client.ping()
    except (docker.errors.DockerException, requests.RequestException) as e:
        raise BackendError(f"no Docker engine answers ({e}); start one, or use `--backend local`") from None
    return client


def _api_error(e: docker.errors.APIError) -> str:
    return str(e.explanation or e)


@dataclass
class ReapReport:
    """What `reap` did: runs removed (run id -> why) and runs left alone (run id -> why)."""

    removed: dict[str, str] = field(default_factory=dict)
    kept: dict[str, str] = field(default_factory=dict)
    containers: int = 0
    networks: int = 0
    volumes: int = 0


class DockerBackend:
    name = "docker"

    def __init__(self, run_dir: str | os.PathLike[str] | None = None, *,
                 labels: dict[str, str] | None = None, exact_subnets: bool = False) -> None:
        self.run_dir = Path(run_dir if run_dir is not None else default_run_dir()).absolute()
        self.extra_labels = {**_extra_labels(), **(labels or {})}
        self.exact_subnets = exact_subnets  # a taken subnet fails `up` instead of moving the network
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = connect()
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- the verbs -------------------------------------------------------------------------------------------

    def up(self, topology: Topology, *, timeout: float = 60.0, progress: Progress | None = None) -> RunInfo:
        """Make the run's networks, volumes and containers and wait until every node is ready. A container
        that exits meanwhile raises NodeFailed at once, with its own log; on any failure everything of the
        run is removed (the containers' logs are saved in the run dir first)."""
        say = progress or (lambda _: None)
        self._check_images(topology)  # connects first: BackendError when no engine answers
        self._prepare_run_dir()
        run_id = secrets.token_hex(4)
        info = self._plan(topology, run_id)
        labels = {RUN: run_id, TOPOLOGY: topology.source, LAB: topology.name, RUN_DIR: str(self.run_dir),
                  **owner_labels(), **self.extra_labels}
        write_state(info)  # first: `reap` and `down` find the run from here on
        try:
            moved: list[str] = []
            topology = self._create_networks(topology, run_id, labels, moved.append)
            info.nodes = self._plan(topology, run_id).nodes  # the addresses on the networks as made
            write_state(info)
            say("networks: " + ", ".join(f"{self._network_name(run_id, n.name)} ({n.subnet})"
                                         for n in topology.networks))
            for line in moved:
                say(line)
            self._create_volumes(info, labels)
            self._init(topology, info, labels, say)
            started = time.monotonic()
            self._start_nodes(topology, info, labels)
            write_state(info)
            say(f"started {len(info.nodes)} containers in {time.monotonic() - started:.1f} s "
                f"(onionlab-{run_id}-*), authorities first")
            statuses = self._wait_ready(info, timeout, say)
        except BaseException as failure:
            with signals_deferred():  # a second Ctrl-C or SIGTERM must not leave half the run behind
                try:
                    self._save_logs(run_id)
                    self._remove_run(run_id)
                except (BackendError, docker.errors.DockerException, requests.RequestException) as e:
                    failure.add_note(f"while removing run {run_id}: {e}")
                info.failed = failure_reason(failure)  # `status` says so instead of listing dead nodes
                write_state(info)
            raise
        for node in info.nodes:
            if node.role == "onion_service":
                node.onion = statuses[node.name].get("onion")
        info.complete = True
        write_state(info)
        return info

    def status(self) -> dict:
        """{"nodes": [{name, role, address, ready}], "onion_services": [{name, onion, ports}],
        "authorities": [readiness.authority_entries], "clients": [{name, socks}]}, asking every running
        node's /status once."""
        info = self._state()
        running = {c.labels.get(NODE) for c in self._containers(info.run_id, status="running")}
        live = {n.name: self._fetch(n) if n.name in running else None for n in info.nodes}
        return {
            "nodes": [{"name": n.name, "role": n.role, "address": n.address,
                       "ready": readiness.is_ready(live[n.name])} for n in info.nodes],
            "onion_services": [{"name": n.name, "onion": (live[n.name] or {}).get("onion") or n.onion,
                                "ports": (live[n.name] or {}).get("ports") or n.services}
                               for n in info.nodes if n.role == "onion_service"],
            "authorities": readiness.authority_entries(info.nodes, live),
            # the address published on this host, not the one the client listens on in its container
            "clients": [{"name": n.name, "socks": n.socks} for n in info.nodes if n.role == "client"],
        }

    def down(self, keep: bool = False) -> list[str]:
        """Stop and remove every container of the run, then its networks and volumes (all by label), and the
        run dir unless `keep`. Returns the names of the nodes that were still running."""
        info = read_state(self.run_dir)
        if info is None:
            return []
        stopped = []
        if info.run_id:
            running = self._containers(info.run_id, status="running")
            stopped = sorted((c.labels.get(NODE, c.name) for c in running), key=_order(info))
            self._remove_run(info.run_id, stop=True, save_logs=keep)
        if not keep:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        return stopped

    def logs(self, name: str) -> str:
        """The node's events (stdout) and then its diagnostics (stderr), each under a `==> ... <==` header:
        from its container, or from the copy saved when `up` failed."""
        info = self._state()
        info.node(name)
        container = self._container(info, name)
        if container is not None:
            out = container.logs(stdout=True, stderr=False).decode(errors="replace")
            err = container.logs(stdout=False, stderr=True).decode(errors="replace")
            where = f"container {container.name}"
        else:
            saved = self.run_dir / LOGS_DIR
            if not (saved / f"{name}.stdout").exists():
                raise BackendError(f"{name} has no container any more and no saved logs in {saved}")
            out = (saved / f"{name}.stdout").read_text(errors="replace")
            err = (saved / f"{name}.stderr").read_text(errors="replace")
            where = str(saved / name)
        return f"==> {where}: stdout (events) <==\n{out}\n==> {where}: stderr <==\n{err}"

    def memory(self) -> dict[str, dict[str, int]]:
        """Each running node's memory as `docker stats` has it: {"usage": bytes counted against the container
        (page cache included), "rss": anonymous memory (cgroup v2 `anon`, v1 `rss`)}."""
        info = self._state()
        found = {}
        for container in self._containers(info.run_id, status="running"):
            name = container.labels.get(NODE)
            if name is None or name == INIT:
                continue
            stats = container.stats(stream=False).get("memory_stats") or {}
            detail = stats.get("stats") or {}
            found[name] = {"usage": int(stats.get("usage") or 0),
                           "rss": int(detail.get("anon", detail.get("rss", 0)))}
        return found

    def reap(self, *, everything: bool = False) -> ReapReport:
        """Remove what no live orchestrator answers for: every object labelled `onionlab.run` whose run

        - was never marked complete (its state file says so, or is gone) while the orchestrator that made it
          is dead (crashed, killed or rebooted away mid-`up`), or
        - was complete, but its state file no longer names it (the run dir was removed: nothing can `down`
          it any more).

        A run whose owner runs on another host is left alone (nobody here can tell) unless `everything`,
        which removes every onionlab run on this engine. Returns what was removed and what was kept, why."""
        report = ReapReport()
        runs: dict[str, dict[str, str]] = {}
        for labels in self._labelled():
            runs.setdefault(labels[RUN], labels)
        for run_id, labels in sorted(runs.items()):
            why = "--all" if everything else _reap_reason(run_id, labels)
            if why.startswith("keep: "):
                report.kept[run_id] = why.removeprefix("keep: ")
                continue
            counts = self._remove_run(run_id)
            report.containers += counts[0]
            report.networks += counts[1]
            report.volumes += counts[2]
            report.removed[run_id] = why
            run_dir = labels.get(RUN_DIR)
            if run_dir and labels.get(OWNER_HOST) == socket.gethostname():
                _forget_run(Path(run_dir), run_id)
        return report

    # -- for tests and the pytest plugin: acting on one node -------------------------------------------------

    def exec(self, name: str, command: list[str] | str) -> tuple[int, str]:
        """Run `command` in the node's container: (exit code, stdout and stderr)."""
        container = self._running_container(name)
        code, output = container.exec_run(command, user=NODE_USER)
        return code, output.decode(errors="replace")

    def kill(self, name: str, signal: str = "SIGKILL") -> None:
        """Send `signal` to the node (its container's main process)."""
        try:
            self._running_container(name).kill(signal=signal)
        except docker.errors.APIError as e:
            raise BackendError(f"{name}: sending {signal} failed: {_api_error(e)}") from None

    def restart(self, name: str, *, timeout: float = 60.0) -> dict:
        """Restart the node's container (or start it again when it was killed) and wait until it is ready;
        returns its /status. The SOCKS port of a client may be published at another host port afterwards:
        the state file is updated."""
        info = self._state()
        node = info.node(name)
        container = self._container(info, name)
        if container is None:
            raise BackendError(f"{name} has no container in run {info.run_id}")
        container.restart(timeout=STOP_TIMEOUT)
        self._read_ports(container, node)
        write_state(info)
        try:
            statuses = readiness.wait_until_ready([_endpoint(node)], timeout=timeout,
                                                  check=self._exit_check(info))
        except readiness.ReadinessTimeout as e:
            raise StartFailed(f"{e}\n{self._tail_report(info, name, 5)}") from None
        return statuses[name]

    # -- chaos (orchestrator/chaos.py): faults on one node, each with its undo ------------------------------

    def supported_faults(self) -> frozenset[str]:
        """Every fault kind: containers have processes to signal and freeze, and links of their own."""
        return FAULT_KINDS

    def fault_problem(self, fault: str) -> str | None:
        """Why `fault` cannot run on this host (shaping needs tc, root and the engine here), or None."""
        if fault not in FAULT_KINDS:
            return f"no fault named {fault!r}"
        if fault in SHAPING_FAULTS:
            return self.shaping_problem(netem=fault in NEEDS_NETEM)
        return None

    def node_state(self, name: str) -> dict:
        """The container's state and networks (container_state) and its veths' root qdisc kinds."""
        return {**self.container_state(name), "qdiscs": sorted(set(self.qdiscs(name).values()))}

    def node_status(self, name: str) -> dict | None:
        """The node's /status now, or None when it does not answer."""
        return self._fetch(self._state().node(name))

    def node_metrics(self, name: str) -> list[tuple[str, dict[str, str], float]] | None:
        """The node's /metrics samples now (readiness.parse_metrics), or None when it does not answer."""
        endpoint = _endpoint(self._state().node(name))
        return readiness.fetch_metrics(endpoint.host, endpoint.port, timeout=STATUS_TIMEOUT)

    def container_state(self, name: str) -> dict:
        """{"status": running|paused|exited|..., "networks": {topology network: address}} of the node's
        container ("missing" and no networks when it has none)."""
        info = self._state()
        info.node(name)
        container = self._container(info, name)
        if container is None:
            return {"status": "missing", "networks": {}}
        return {"status": container.status, "networks": self._attached(info, container)}

    def stop(self, name: str, *, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds (`docker stop`)."""
        self._running_container(name).stop(timeout=int(timeout))

    def start(self, name: str, *, timeout: float = 60.0, wait: bool = True) -> dict | None:
        """Start the node's container again when it is not running (after kill or stop) and, when `wait`,
        wait until the node is ready; returns its /status (None without `wait`). Only this node's own exit
        stops the wait early: other nodes may be down on purpose meanwhile. A client's SOCKS port may be
        published at another host port afterwards: the state file is updated."""
        info = self._state()
        node = info.node(name)
        container = self._container(info, name)
        if container is None:
            raise BackendError(f"{name} has no container in run {info.run_id}")
        if container.status == "paused":
            container.unpause()
        elif container.status != "running":
            container.start()
        self._read_ports(container, node)
        write_state(info)
        if not wait:
            return None
        return self._wait_node(info, name, container, timeout)

    def pause(self, name: str) -> None:
        """Freeze every process of the node (cgroup freezer, `docker pause`): its sockets stay open, it
        answers nothing."""
        self._running_container(name).pause()

    def unpause(self, name: str) -> None:
        info = self._state()
        container = self._container(info, name)
        if container is not None and container.status == "paused":
            container.unpause()

    def disconnect(self, name: str, network: str | None = None) -> dict[str, str]:
        """Take the node off `network` (a topology network name; default: every network it is on): a
        partition. Returns {network: address} of what it was on, for `connect`."""
        info = self._state()
        info.node(name)
        container = self._container(info, name)
        if container is None:
            raise BackendError(f"{name} has no container in run {info.run_id}")
        attached = self._attached(info, container)
        if network is not None:
            if network not in attached:
                raise BackendError(f"{name} is not on network {network} (it is on: "
                                   f"{', '.join(attached) or 'none'})")
            attached = {network: attached[network]}
        for net in attached:
            try:
                self.client.networks.get(self._network_name(info.run_id, net)).disconnect(container)
            except docker.errors.APIError as e:
                raise BackendError(f"{name}: disconnecting from {net} failed: {_api_error(e)}") from None
        return attached

    def connect(self, name: str, network: str, address: str) -> None:
        """Put the node back on `network` at `address` (undoes `disconnect`); nothing when it is on it."""
        info = self._state()
        container = self._container(info, name)
        if container is None:
            raise BackendError(f"{name} has no container in run {info.run_id}")
        if network in self._attached(info, container):
            return
        try:
            self.client.networks.get(self._network_name(info.run_id, network)).connect(
                container, ipv4_address=address)
        except docker.errors.APIError as e:
            raise BackendError(f"{name}: connecting to {network} at {address} failed: {_api_error(e)}"
                               ) from None

    def shaping_problem(self, netem: bool = False) -> str | None:
        """Why traffic shaping (tc on the host side of the containers' veths) cannot work here, or None.
        `netem`: the fault needs the netem qdisc (delay, loss), which some kernels lack."""
        missing = [tool for tool in ("tc", "ip", "nsenter") if shutil.which(tool) is None]
        if platform.system() != "Linux":
            return "shaping needs Linux: tc runs on the host side of the containers' veth interfaces"
        if missing:
            return f"shaping needs {', '.join(missing)} on this host (iproute2, util-linux)"
        if os.geteuid() != 0:
            return "shaping needs root on this host (tc on the containers' veth interfaces)"
        if not self._reach_directly():
            return ("shaping needs the Docker engine on this host's network (the containers' veths are not "
                    "interfaces here: rootless Docker, Docker Desktop or a remote engine)")
        return _netem_problem() if netem else None

    def host_interfaces(self, name: str, network: str | None = None) -> dict[str, str]:
        """{topology network: host-side veth name} of the node's running container: the peer of each of
        its interfaces, found by the interface's iflink in the container's network namespace."""
        info = self._state()
        info.node(name)
        container = self._container(info, name)
        if container is None or container.status not in ("running", "paused"):
            raise BackendError(f"{name} is not running, so it has no interfaces")
        pid = (container.attrs.get("State") or {}).get("Pid")
        inside = _run(["nsenter", "-t", str(pid), "-n", "ip", "-o", "link", "show"])
        peers = {}  # MAC -> peer ifindex
        for line in inside.splitlines():
            fields_ = line.split()
            if len(fields_) > 1 and "@if" in fields_[1] and "link/ether" in fields_:
                mac = fields_[fields_.index("link/ether") + 1].lower()
                peers[mac] = fields_[1].rstrip(":").split("@if")[1]
        host = {}
        for line in _run(["ip", "-o", "link", "show"]).splitlines():
            index, _, rest = line.partition(": ")
            host[index.strip()] = rest.split(":")[0].split("@")[0]
        found = {}
        networks = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
        by_docker_name = {self._network_name(info.run_id, n): n for n in self._attached(info, container)}
        for docker_name, settings in networks.items():
            net = by_docker_name.get(docker_name)
            peer = peers.get((settings.get("MacAddress") or "").lower())
            if net is None or (network is not None and net != network):
                continue
            if peer is None or peer not in host:
                raise BackendError(f"{name}: no host-side veth found for its interface on {net}")
            found[net] = host[peer]
        if network is not None and not found:
            raise BackendError(f"{name} is not on network {network}")
        return found

    def shape(self, name: str, qdisc: list[str], network: str | None = None) -> list[str]:
        """Put `tc qdisc replace dev VETH root QDISC...` on the host side of the node's interfaces (on
        `network`, default every one): it shapes the traffic towards the node. Returns the veths."""
        veths = list(self.host_interfaces(name, network).values())
        done = []
        try:
            for veth in veths:
                _run(["tc", "qdisc", "replace", "dev", veth, "root", *qdisc])
                done.append(veth)
        except BaseException:
            self.unshape(done)
            raise
        return veths

    @staticmethod
    def unshape(veths: list[str]) -> list[str]:
        """Remove the root qdisc of each veth (back to the default); one that is gone (its container was
        restarted or removed) needs nothing. Returns those whose qdisc was removed."""
        removed = []
        for veth in veths:
            if not Path("/sys/class/net", veth).exists():
                continue
            result = subprocess.run(["tc", "qdisc", "del", "dev", veth, "root"], capture_output=True,
                                    text=True)
            if result.returncode == 0:
                removed.append(veth)
            elif Path("/sys/class/net", veth).exists() and _qdisc_kind(veth) in SHAPING_QDISCS:
                raise BackendError(f"tc qdisc del dev {veth} root: {result.stderr.strip()}")
        return removed

    def qdiscs(self, name: str) -> dict[str, str]:
        """{host-side veth: kind of its root qdisc} of the node's running container ({} when not running)."""
        try:
            veths = self.host_interfaces(name).values()
        except BackendError:
            return {}
        return {veth: _qdisc_kind(veth) for veth in veths}

    def _attached(self, info: RunInfo, container: Container) -> dict[str, str]:
        """{topology network: address} the container is on now."""
        container.reload()
        prefix = f"onionlab-{info.run_id}-"
        networks = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
        return {net.removeprefix(prefix): ((settings.get("IPAMConfig") or {}).get("IPv4Address")
                                           or settings.get("IPAddress") or "")
                for net, settings in networks.items() if net.startswith(prefix)}

    def _wait_node(self, info: RunInfo, name: str, container: Container, timeout: float) -> dict:
        def exited() -> None:
            container.reload()
            if container.status in ("exited", "dead"):
                lines = _log_lines(container)
                raise NodeFailed(name, f"{name} ({container.name}) exited again: {_cause(lines)}\n"
                                       f"{_report(f'{name} ({container.name})', lines[-TAIL_LINES:])}")

        try:
            statuses = readiness.wait_until_ready([_endpoint(info.node(name))], timeout=timeout, check=exited)
        except readiness.ReadinessTimeout as e:
            raise StartFailed(f"{e}\n{self._tail_report(info, name, 5)}") from None
        return statuses[name]

    # -- up, step by step ------------------------------------------------------------------------------------

    @staticmethod
    def _network_name(run_id: str, network: str) -> str:
        return f"onionlab-{run_id}-{network}"

    @staticmethod
    def _object_name(run_id: str, node: str) -> str:
        return f"onionlab-{run_id}-{node}"

    def _state(self) -> RunInfo:
        info = read_state(self.run_dir)
        if info is None:
            raise BackendError(f"no lab is running here (no state file in {self.run_dir}); start one with "
                               "`onionlab up`")
        if info.backend != self.name or not info.run_id:
            raise BackendError(f"{self.run_dir} holds a {info.backend} run, not a docker one")
        return info

    def _check_images(self, topology: Topology) -> None:
        for image in sorted({n.image for n in topology.nodes}):
            try:
                self.client.images.get(image)
            except docker.errors.ImageNotFound:
                hint = " (build it with `make image`)" if image.startswith("onionlab/node") else ""
                raise BackendError(f"image {image} is not on this Docker engine{hint}; onionlab never pulls"
                                   ) from None

    def _prepare_run_dir(self) -> None:
        """An empty run dir: a previous run's files go, unless that run still has containers."""
        old = read_state(self.run_dir)
        if old is not None:
            if old.backend == self.name and old.run_id and self._containers(old.run_id):
                raise BackendError(f"a lab is already running from {self.run_dir} (run {old.run_id}); stop "
                                   "it with `onionlab down` first")
            if old.backend != self.name and any(n.pid for n in old.nodes):
                raise BackendError(f"{self.run_dir} holds a {old.backend} run; stop it with `onionlab down` "
                                   "first")
            shutil.rmtree(self.run_dir)
        elif self.run_dir.exists() and any(self.run_dir.iterdir()):
            raise BackendError(f"{self.run_dir} is not empty and holds no onionlab run; remove it or choose "
                               "another run dir ($ONIONLAB_RUN_DIR)")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / ".gitignore").write_text("# onionlab run files\n*\n")

    def _plan(self, topology: Topology, run_id: str) -> RunInfo:
        nodes_ = []
        for node in topology.nodes:
            ports = {key: value for key in ("control_port", "or_port", "dir_port", "socks_port")
                     if (value := getattr(node, key)) is not None}
            nodes_.append(RunNode(name=node.name, role=node.role, address=str(node.address()), ports=ports,
                                  services=[s.port for s in node.services], impl=node.impl,
                                  container=self._object_name(run_id, node.name)))
        return RunInfo(backend=self.name, run_dir=str(self.run_dir), topology=topology.source,
                       lab=topology.name, nodes=nodes_, run_id=run_id)

    def _create_networks(self, topology: Topology, run_id: str, labels: dict[str, str],
                         say: Progress) -> Topology:
        """Make the run's networks; returns the topology as made. A network whose subnet another network of
        the engine holds moves to a free subnet of the same size (choose_subnet), its nodes keeping their
        host parts, and `say` tells; unless `exact_subnets`, or a service forwards to an address in it."""
        pinned = _pinned_networks(topology)
        moves: dict[str, IPv4Network] = {}
        for network in topology.networks:
            name = self._network_name(run_id, network.name)
            subnet, tried = network.subnet, []
            while True:
                ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(
                    subnet=str(subnet), gateway=str(subnet.network_address + 1))])
                try:
                    self.client.networks.create(name, driver="bridge", ipam=ipam, check_duplicate=True,
                                                labels={**labels, NETWORK: network.name})
                    break
                except docker.errors.APIError as e:
                    message = _api_error(e)
                    if "overlap" not in message.lower():
                        raise BackendError(f"network {network.name} ({subnet}): {message}") from None
                    users = self._subnet_users(subnet)
                    if self.exact_subnets or network.name in pinned or len(tried) >= SUBNET_TRIES:
                        why = (f"; {network.name} stays on it since {pinned[network.name]}"
                               if network.name in pinned else "")
                        message += (f" (used by {', '.join(users)})" if users else "") + why + (
                            "; another lab of this topology may be running: `onionlab down` it, or give this "
                            "one other subnets")
                        raise BackendError(f"network {network.name} ({subnet}): {message}") from None
                    tried.append((subnet, users))
                    others = [n.subnet for n in topology.networks if n is not network]
                    free = choose_subnet(network.subnet, [*self._engine_subnets(), *others, *moves.values(),
                                                          *(s for s, _ in tried), *_host_routes()])
                    if free is None:
                        raise BackendError(f"network {network.name} ({network.subnet}): taken (by "
                                           f"{', '.join(users) or 'another network'}), and no free subnet of "
                                           "its size is left in its private block") from None
                    subnet = free
            if subnet != network.subnet:
                moves[network.name] = subnet
                first, users = tried[0]
                say(f"network {network.name}: {first} is taken (by {', '.join(users) or 'another network'}); "
                    f"using {subnet} instead")
        return relocate(topology, moves)

    def _engine_subnets(self) -> list[IPv4Network]:
        found = []
        for net in self.client.networks.list():
            for pool in (net.attrs.get("IPAM") or {}).get("Config") or []:
                try:
                    subnet = ip_network(pool.get("Subnet", ""), strict=False)
                except ValueError:
                    continue
                if subnet.version == 4:
                    found.append(subnet)
        return found

    def _subnet_users(self, subnet: IPv4Network) -> list[str]:
        """The networks of this engine whose subnets overlap `subnet`."""
        users = []
        for net in self.client.networks.list():
            for pool in (net.attrs.get("IPAM") or {}).get("Config") or []:
                try:
                    if ip_network(pool.get("Subnet", ""), strict=False).overlaps(subnet):
                        users.append(net.name)
                except ValueError:
                    continue
        return users

    def _create_volumes(self, info: RunInfo, labels: dict[str, str]) -> None:
        for node in info.nodes:
            self.client.volumes.create(self._object_name(info.run_id, node.name),
                                       labels={**labels, NODE: node.name, ROLE: node.role})

    def _init(self, topology: Topology, info: RunInfo, labels: dict[str, str], say: Progress) -> None:
        """The one-shot init container: keys and configs into the volumes, then the volumes to the node user.
        It runs as root (fresh volumes are root's) with only the capabilities that needs."""
        plan = make_plan(topology, socks_address="0.0.0.0").to_json()
        if len(plan) > MAX_PLAN_BYTES:
            raise BackendError(f"the plan of {len(topology.nodes)} nodes is {len(plan)} bytes, more than one "
                               f"environment variable can hold ({MAX_PLAN_BYTES})")
        dirs = [f"{DATA_ROOT}/{n.name}" for n in info.nodes]
        script = ('python3 -m nodes.init --plan-env "$1" --out "$2" && shift 2 && chmod 0700 "$@" '
                  '&& chown -R 10001:10001 "$@"')
        volumes = {self._object_name(info.run_id, n.name): {"bind": d, "mode": "rw"}
                   for n, d in zip(info.nodes, dirs, strict=True)}
        image = topology.nodes[0].image
        name = self._object_name(info.run_id, INIT)
        try:
            container = self.client.containers.create(
                image, ["init", PLAN_ENV, DATA_ROOT, *dirs], entrypoint=["sh", "-c", script],
                name=name, hostname=INIT, user="0:0", environment={PLAN_ENV: plan}, volumes=volumes,
                network_mode="none", cap_drop=["ALL"], cap_add=["CHOWN", "DAC_OVERRIDE"],
                security_opt=["no-new-privileges:true"], read_only=True, **_limits(INIT_MEMORY, INIT_PIDS),
                labels={**labels, NODE: INIT, ROLE: INIT})
            container.start()
            code = container.wait(timeout=INIT_TIMEOUT)["StatusCode"]
        except requests.exceptions.ConnectionError:
            raise StartFailed(f"init ({name}) did not finish within {INIT_TIMEOUT:g} s") from None
        except docker.errors.APIError as e:
            raise BackendError(f"init ({name}): {_api_error(e)}") from None
        out = container.logs(stdout=True, stderr=False).decode(errors="replace")
        err = container.logs(stdout=False, stderr=True).decode(errors="replace")
        if code != 0:
            lines = (err or out).splitlines()
            raise NodeFailed(INIT, f"init ({name}) exited with status {code}: {_cause(lines)}\n"
                                   f"{_report(f'init ({name})', lines[-TAIL_LINES:])}")
        authorities = sum(n.role == "authority" for n in info.nodes)
        say(f"init: {len(info.nodes)} configs and {authorities} authority identity keys written into the "
            "run's volumes")
        container.remove(v=True)

    def _start_nodes(self, topology: Topology, info: RunInfo, labels: dict[str, str]) -> None:
        """Create every container (attached to all its networks), then start them all, authorities first.
        Nobody waits for the authorities: relays retry their uploads and everyone their consensus fetch
        with a short backoff, and starting the node processes side by side is what saves time (each one's
        Python start-up takes a core for a moment). A few engine calls at a time, since each takes a few
        tenths of a second. Returns once no call is in flight, even on Ctrl-C, so that the cleanup after a
        failure sees every container."""
        direct = self._reach_directly()
        planned = dict(zip((n.name for n in info.nodes), topology.nodes, strict=True))
        order = sorted(info.nodes, key=lambda n: n.role != "authority")
        pool = ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="onionlab-docker")
        try:
            made = pool.map(lambda n: self._create_node(planned[n.name], n, info, labels, direct), info.nodes)
            created = dict(zip((n.name for n in info.nodes), made, strict=True))
            list(pool.map(lambda n: self._start_node(info, n, created[n.name]), order))
            for node in info.nodes:
                self._read_ports(created[node.name], node)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _create_node(self, planned: Node, node: RunNode, info: RunInfo, labels: dict[str, str],
                     direct: bool) -> Container:
        primary, *others = planned.interfaces
        published = {}
        if node.role == "client":
            published[f"{node.ports['socks_port']}/tcp"] = ("127.0.0.1", None)  # the host's loopback only
        if not direct:
            published[f"{node.ports['control_port']}/tcp"] = ("127.0.0.1", None)
        primary_net = self._network_name(info.run_id, primary.network)
        try:
            container = self.client.containers.create(
                planned.image, [node.command, "--config", f"{DATA_ROOT}/{node.name}/config.json"],
                name=node.container, hostname=node.name, user=NODE_USER,
                volumes={self._object_name(info.run_id, node.name):
                         {"bind": f"{DATA_ROOT}/{node.name}", "mode": "rw"}},
                network=primary_net,
                networking_config={primary_net: self.client.api.create_endpoint_config(
                    ipv4_address=str(primary.address))},
                ports=published, cap_drop=["ALL"], security_opt=["no-new-privileges:true"],
                read_only=True, tmpfs={"/tmp": "size=16m,mode=1777"}, **_limits(planned.memory, planned.pids),
                log_config={"type": "json-file", "config": {"max-size": "20m", "max-file": "2"}},
                labels={**labels, NODE: node.name, ROLE: node.role, IMPL: node.impl})
            for interface in others:
                self.client.networks.get(self._network_name(info.run_id, interface.network)).connect(
                    container, ipv4_address=str(interface.address))
        except docker.errors.APIError as e:
            raise BackendError(f"{node.name}: creating its container failed: {_api_error(e)}") from None
        return container

    def _start_node(self, info: RunInfo, node: RunNode, container: Container) -> None:
        try:
            container.start()
        except docker.errors.APIError as e:
            raise NodeFailed(node.name, f"{node.name} ({node.container}) did not start: {_api_error(e)}"
                             f"\n{self._tail_report(info, node.name, TAIL_LINES)}") from None

    def _read_ports(self, container: Container, node: RunNode) -> None:
        """Record where Docker published the node's ports on this host."""
        container.reload()
        ports = container.attrs["NetworkSettings"].get("Ports") or {}

        def published(port: int) -> str | None:
            bindings = ports.get(f"{port}/tcp") or []
            return next((f"{b['HostIp']}:{b['HostPort']}" for b in bindings if b.get("HostPort")), None)

        if node.role == "client":
            node.socks = published(node.ports["socks_port"])
        node.control = published(node.ports["control_port"])

    def _reach_directly(self) -> bool:
        """Can this process reach containers at their addresses? Yes when the engine runs on this Linux host
        as root (its bridges are this host's interfaces); not with rootless Docker, Docker Desktop or a remote
        engine. ONIONLAB_DOCKER_CONTROL=published|direct decides instead."""
        choice = os.environ.get("ONIONLAB_DOCKER_CONTROL", "")
        if choice in ("published", "direct"):
            return choice == "direct"
        if platform.system() != "Linux" or not self.client.api.base_url.startswith("http+docker://localhost"):
            return False
        info = self.client.info()
        rootless = any("rootless" in option for option in info.get("SecurityOptions") or [])
        return not rootless and "Docker Desktop" not in (info.get("OperatingSystem") or "")

    def _wait_ready(self, info: RunInfo, timeout: float, say: Progress) -> dict[str, dict]:
        started = time.monotonic()
        reached: dict[str, set[str]] = {}
        total = len(info.nodes)

        def on_change(name: str, condition: str | None, value: bool) -> None:
            if condition is None:
                if not value:
                    say(f"{name}: stopped answering /status")
                return
            have = reached.setdefault(condition, set())
            (have.add if value else have.discard)(name)
            say(f"{name}: {condition} ({len(have)} node{'s' if len(have) != 1 else ''})" if value
                else f"{name}: lost {condition}")

        endpoints = [_endpoint(n) for n in info.nodes]
        try:
            statuses = readiness.wait_until_ready(endpoints, timeout=timeout, on_change=on_change,
                                                  check=self._exit_check(info))
        except readiness.ReadinessTimeout as e:
            tails = "\n".join(self._tail_report(info, name, 5) for name in e.waiting)
            raise StartFailed(f"{e}\n{tails}") from None
        say(f"all {total} nodes ready in {time.monotonic() - started:.1f} s")
        return statuses

    def _exit_check(self, info: RunInfo) -> Callable[[], None]:
        """A readiness check: raise NodeFailed, with the container's own log, when a node's container has
        stopped. Asks the engine at most every CHECK_EVERY seconds."""
        last = 0.0

        def check() -> None:
            nonlocal last
            if time.monotonic() - last < CHECK_EVERY:
                return
            last = time.monotonic()
            for container in self._containers(info.run_id, status=["exited", "dead"]):
                name = container.labels.get(NODE, container.name)
                if name == INIT:
                    continue
                node = info.node(name)
                state = container.attrs.get("State") or {}
                if not state:
                    container.reload()
                    state = container.attrs["State"]
                code = state.get("ExitCode")
                how = ("was killed by the kernel (out of memory)" if state.get("OOMKilled")
                       else f"exited with status {code}")
                lines = _log_lines(container)
                addresses = ", ".join(str(a) for a in _addresses(container)) or node.address
                raise NodeFailed(name, f"{name} ({node.role}, container {container.name} on {addresses}) "
                                       f"{how}: {_cause(lines)}\n"
                                       f"{_report(f'{name} ({container.name})', lines[-TAIL_LINES:])}")

        return check

    # -- looking things up -----------------------------------------------------------------------------------

    def _containers(self, run_id: str | None, status: str | list[str] | None = None) -> list[Container]:
        if not run_id:
            return []
        filters: dict = {"label": f"{RUN}={run_id}"}
        if status is not None:
            filters["status"] = status
        return self.client.containers.list(all=True, filters=filters)

    def _container(self, info: RunInfo, name: str) -> Container | None:
        found = self.client.containers.list(all=True, filters={"label": [f"{RUN}={info.run_id}",
                                                                         f"{NODE}={name}"]})
        return found[0] if found else None

    def _running_container(self, name: str) -> Container:
        info = self._state()
        info.node(name)
        container = self._container(info, name)
        if container is None:
            raise BackendError(f"{name} has no container in run {info.run_id}")
        if container.status != "running":
            raise BackendError(f"{name} ({container.name}) is not running: {container.status}")
        return container

    def _fetch(self, node: RunNode) -> dict | None:
        endpoint = _endpoint(node)
        return readiness.fetch_status(endpoint.host, endpoint.port, timeout=STATUS_TIMEOUT)

    def _labelled(self) -> Iterator[dict[str, str]]:
        """The labels of every container, network and volume carrying `onionlab.run`, of any run."""
        for container in self.client.containers.list(all=True, filters={"label": RUN}):
            yield container.labels
        for network in self.client.networks.list(filters={"label": RUN}):
            yield network.attrs.get("Labels") or {}
        for volume in self.client.volumes.list(filters={"label": RUN}):
            yield volume.attrs.get("Labels") or {}

    def _tail_report(self, info: RunInfo, name: str, lines: int) -> str:
        container = self._container(info, name)
        if container is None:
            return f"{name}: no container"
        return _report(f"{name} ({container.name})", _log_lines(container)[-lines:])

    # -- removing --------------------------------------------------------------------------------------------

    def _save_logs(self, run_id: str) -> None:
        """Copy every container's stdout and stderr of the run into <run dir>/logs/ before they go."""
        containers = self._containers(run_id)
        if not containers:
            return
        saved = self.run_dir / LOGS_DIR
        saved.mkdir(parents=True, exist_ok=True)
        for container in containers:
            name = container.labels.get(NODE, container.name)
            try:
                (saved / f"{name}.stdout").write_bytes(container.logs(stdout=True, stderr=False))
                (saved / f"{name}.stderr").write_bytes(container.logs(stdout=False, stderr=True))
            except docker.errors.NotFound:
                continue

    def _remove_run(self, run_id: str, *, stop: bool = False,
                    save_logs: bool = False) -> tuple[int, int, int]:
        """Remove every container (stopped gracefully first when `stop`, its logs saved in the run dir first
        when `save_logs`), network and volume labelled with the run id; (containers, networks, volumes)
        removed. Raises BackendError if any is left."""
        selector = {"label": f"{RUN}={run_id}"}
        containers = self.client.containers.list(all=True, filters=selector)
        if stop:
            for container in containers:
                if container.status == "running":
                    try:
                        container.stop(timeout=STOP_TIMEOUT)
                    except docker.errors.NotFound:
                        pass
        if save_logs:
            self._save_logs(run_id)
        removed = [0, 0, 0]
        for container in containers:
            removed[0] += _gone_or(lambda c=container: c.remove(force=True, v=True))
        for network in self.client.networks.list(filters=selector):
            removed[1] += _gone_or(network.remove)
        for volume in self.client.volumes.list(filters=selector):
            removed[2] += _gone_or(lambda v=volume: v.remove(force=True))
        left = (len(self.client.containers.list(all=True, filters=selector)),
                len(self.client.networks.list(filters=selector)),
                len(self.client.volumes.list(filters=selector)))
        if any(left):
            raise BackendError(f"run {run_id}: {left[0]} containers, {left[1]} networks and {left[2]} "
                               "volumes are left after removing them (did something create more meanwhile?)")
        return removed[0], removed[1], removed[2]


def choose_subnet(wanted: IPv4Network, taken: Iterable[IPv4Network]) -> IPv4Network | None:
    """`wanted` when no subnet of `taken` overlaps it; else the first subnet of the same size after it in
    its private block (10/8, 172.16/12, 192.168/16), wrapping around, that overlaps none; None when there is
    none, or `wanted` lies in no private block."""
    taken = list(taken)
    if not any(wanted.overlaps(t) for t in taken):
        return wanted
    block = next((b for b in PRIVATE_BLOCKS if wanted.subnet_of(b)), None)
    if block is None or block == wanted:
        return None
    size = wanted.num_addresses
    count = block.num_addresses // size
    start = (int(wanted.network_address) - int(block.network_address)) // size
    for step in range(1, count):
        offset = ((start + step) % count) * size
        candidate = IPv4Network((int(block.network_address) + offset, wanted.prefixlen))
        if not any(candidate.overlaps(t) for t in taken):
            return candidate
    return None


def relocate(topology: Topology, moves: dict[str, IPv4Network]) -> Topology:
    """The topology with networks moved to other subnets of the same size: each node's address on a moved
    network keeps its offset in the subnet."""
    if not moves:
        return topology
    old = {n.name: n.subnet for n in topology.networks}

    def moved(network: str, address: IPv4Address) -> IPv4Address:
        if network not in moves:
            return address
        return moves[network].network_address + (int(address) - int(old[network].network_address))

    networks = tuple(dataclasses.replace(n, subnet=moves.get(n.name, n.subnet)) for n in topology.networks)
    nodes = tuple(dataclasses.replace(node, interfaces=tuple(
        dataclasses.replace(i, address=moved(i.network, i.address)) for i in node.interfaces))
        for node in topology.nodes)
    return dataclasses.replace(topology, networks=networks, nodes=nodes)


def _pinned_networks(topology: Topology) -> dict[str, str]:
    """{network: why} for the networks a lab cannot move: an onion service forwards to an address in it."""
    pinned = {}
    for node in topology.nodes:
        for service in node.services:
            host = (service.address or ("", 0))[0]
            try:
                address = ip_address(host)
            except ValueError:
                continue
            for network in topology.networks:
                if address in network.subnet:
                    pinned.setdefault(network.name, f"{node.name} forwards to {service.target}")
    return pinned


def _host_routes() -> list[IPv4Network]:
    """The IPv4 routes of this host but the default one (/proc/net/route): a moved network avoids them."""
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return []
    routes = []
    for line in lines:
        fields_ = line.split()
        try:
            dest, mask = (IPv4Address(int.from_bytes(bytes.fromhex(fields_[i]), "little")) for i in (1, 7))
            route = IPv4Network(f"{dest}/{mask}", strict=False)
        except (IndexError, ValueError):
            continue
        if route.prefixlen:
            routes.append(route)
    return routes


def _limits(memory: int | None, pids: int | None) -> dict[str, int]:
    """A container's memory limit (swap included, so no swapping past it) and pids limit."""
    found = {}
    if memory is not None:
        found.update(mem_limit=memory, memswap_limit=memory)
    if pids is not None:
        found["pids_limit"] = pids
    return found


def _gone_or(remove: Callable[[], object]) -> int:
    """1 after removing, 0 when it was gone already."""
    try:
        remove()
    except docker.errors.NotFound:
        return 0
    return 1


def _reap_reason(run_id: str, labels: dict[str, str]) -> str:
    """Why a run is to be removed, or "keep: why not"."""
    alive = owner_alive(labels)
    if alive is None:
        return f"keep: made on host {labels.get(OWNER_HOST)!r}, not this one ({socket.gethostname()})"
    if alive:
        return f"keep: its orchestrator (pid {labels.get(OWNER_PID)}) is running"
    run_dir = labels.get(RUN_DIR)
    try:
        state = read_state(run_dir) if run_dir else None
    except BackendError:
        state = None
    if state is not None and state.run_id == run_id:
        if state.complete:
            return f"keep: a complete run, recorded in {run_dir} (`onionlab down --run-dir {run_dir}`)"
        return f"its orchestrator (pid {labels.get(OWNER_PID)}) died during `up`"
    return f"its orchestrator (pid {labels.get(OWNER_PID)}) is gone and no state file names it"


def _forget_run(run_dir: Path, run_id: str) -> None:
    """Remove a reaped run's run dir, if it is still that run's."""
    try:
        state = read_state(run_dir)
    except BackendError:
        return
    if state is not None and state.run_id == run_id:
        shutil.rmtree(run_dir, ignore_errors=True)


def _endpoint(node: RunNode) -> readiness.Endpoint:
    if node.control:
        host, _, port = node.control.rpartition(":")
        return readiness.Endpoint(node.name, host, int(port))
    return readiness.Endpoint(node.name, node.address, node.ports["control_port"])


def _order(info: RunInfo) -> Callable[[str], int]:
    names = [n.name for n in info.nodes]
    return lambda name: names.index(name) if name in names else len(names)


def _addresses(container: Container) -> list[str]:
    networks = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
    return [n["IPAMConfig"]["IPv4Address"] for n in networks.values()
            if (n.get("IPAMConfig") or {}).get("IPv4Address")]


def _log_lines(container: Container) -> list[str]:
    """The container's stderr, or its stdout when stderr is empty."""
    for stdout, stderr in ((False, True), (True, False)):
        text = container.logs(stdout=stdout, stderr=stderr, tail=200).decode(errors="replace")
        if text.strip():
            return text.splitlines()
    return []


def _cause(lines: list[str]) -> str:
    """The real cause: the last `fatal: ` line, else the last line that says anything."""
    fatal = [line for line in lines if line.startswith(FATAL_PREFIX)]
    if fatal:
        return fatal[-1].removeprefix(FATAL_PREFIX)
    return next((line for line in reversed(lines) if line.strip()), "(its logs are empty)")


def _report(who: str, lines: list[str]) -> str:
    body = "\n".join(f"  | {line}" for line in lines) if lines else "  (its logs are empty)"
    return f"last lines of {who}'s log:\n{body}"


# -- shaping: tc on this host ------------------------------------------------------------------------------

SHAPING_QDISCS = ("tbf", "netem", "htb")  # what a fault puts on a veth; a veth's default is noqueue
_netem_checked: list[str | None] = []


def _run(command: list[str]) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BackendError(f"{' '.join(command)}: {e}") from None
    if result.returncode != 0:
        why = result.stderr.strip() or f"exit status {result.returncode}"
        raise BackendError(f"{' '.join(command)}: {why}")
    return result.stdout


def _qdisc_kind(veth: str) -> str:
    """The kind of the veth's root qdisc ("noqueue" by default), "" when tc cannot tell."""
    result = subprocess.run(["tc", "qdisc", "show", "dev", veth, "root"], capture_output=True, text=True)
    words = result.stdout.split()
    return words[1] if result.returncode == 0 and len(words) > 1 and words[0] == "qdisc" else ""


def _netem_problem() -> str | None:
    """None when this kernel has the netem qdisc, else what is missing. Asked once per process, by trying:
    a veth pair of our own (onionlab-nm-PID, removed again) gets a netem qdisc."""
    if _netem_checked:
        return _netem_checked[0]
    name = f"olnm{os.getpid() % 100000}"
    problem = None
    try:
        _run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"])
    except BackendError as e:
        problem = f"cannot test for the netem qdisc (making a veth pair to try it on failed: {e})"
    else:
        try:
            result = subprocess.run(["tc", "qdisc", "add", "dev", name, "root", "netem", "delay", "1ms"],
                                    capture_output=True, text=True)
            if result.returncode != 0:
                problem = (f"this kernel has no netem qdisc (`tc qdisc add ... netem` says: "
                           f"{result.stderr.strip() or result.returncode}); delay and loss faults need it: "
                           "load sch_netem (`modprobe sch_netem`) or use a kernel with CONFIG_NET_SCH_NETEM")
        finally:
            subprocess.run(["ip", "link", "del", name], capture_output=True)
    _netem_checked.append(problem)
    return problem
