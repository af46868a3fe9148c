"""The lifecycle of a run (Backend): up, status, down, logs, kill, restart, and `up` step by step."""

from __future__ import annotations

import dataclasses
import io
import secrets
import shutil
import tarfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network
from pathlib import Path

import docker
import docker.errors
import requests
from docker.models.containers import Container

from nodes.net.control import SECRET_FILE
from nodes.net.node_keys import KEYS_DIR
from orchestrator import host, readiness
from orchestrator.control import new_secret
from orchestrator.plan import DATA_ROOT, INIT_MEMORY, INIT_PIDS, make_plan
from orchestrator.signals import signals_deferred
from orchestrator.topology import Node, Topology

from .. import (
    BackendError,
    NodeFailed,
    RunInfo,
    RunNode,
    StartFailed,
    failure_reason,
    fresh_run_dir,
    lab_status,
    read_state,
    write_state,
)
from ..base import Progress
from .engine import (
    IMPL,
    INIT,
    LAB,
    LOGS_DIR,
    NETWORK,
    NODE,
    NODE_USER,
    ROLE,
    RUN,
    RUN_DIR,
    STOP_TIMEOUT,
    TAIL_LINES,
    TOPOLOGY,
    api_error,
    container_addresses,
    control_endpoint,
    log_cause,
    log_lines,
    log_report,
    node_order,
)
from .faults import Faults
from .observe import Observe
from .reaper import Reaper, owner_labels

SUBNET_TRIES = 5  # subnets tried per network when others keep taking them (labs starting side by side)
PRIVATE_BLOCKS = tuple(IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))

CHECK_EVERY = 0.5  # seconds between two looks at the containers' states while waiting for readiness
PARALLEL = 4  # engine calls in flight while creating and starting containers
# The image's HEALTHCHECK (every 5 s) starts a Python in the container each time; the engine's exec costs
# as much again. A large lab spaces them out: at most this many checks a second across the lab.
HEALTH_CHECKS_PER_SECOND = 2
# The kernel settings a lab needs (orchestrator/host.py) are read here (tests point it elsewhere).
SYSCTL_ROOT = host.SYSCTL_ROOT

INIT_TIMEOUT = 60.0
PLAN_DIR = "/plan"  # where the init container mounts the run's plan volume
PLAN_FILE = "plan.json"


class DockerBackend(Faults, Reaper, Observe):
    def up(self, topology: Topology, *, timeout: float = 60.0, progress: Progress | None = None) -> RunInfo:
        """Make the run's networks, volumes and containers and wait until every node is ready. A container
        that exits meanwhile raises NodeFailed at once, with its own log; on any failure everything of the
        run is removed (the containers' logs are saved in the run dir first)."""
        say = progress or (lambda _: None)
        self._check_images(topology)  # connects first: BackendError when no engine answers
        self._check_host(topology)
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
        # a client's SOCKS address: the one published on this host, not the one it listens on in its container
        return lab_status(info, live, live_socks=False)

    def down(self, keep: bool = False) -> list[str]:
        """Stop and remove every container of the run, then its networks and volumes (all by label), and the
        run dir unless `keep`. Returns the names of the nodes that were still running."""
        info = read_state(self.run_dir)
        if info is None:
            return []
        stopped = []
        if info.run_id:
            running = self._containers(info.run_id, status="running")
            stopped = sorted((c.labels.get(NODE, c.name) for c in running), key=node_order(info))
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
            raise BackendError(f"{name}: sending {signal} failed: {api_error(e)}") from None

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
            statuses = readiness.wait_until_ready([control_endpoint(node)], timeout=timeout,
                                                  check=self._exit_check(info))
        except readiness.ReadinessTimeout as e:
            raise StartFailed(f"{e}\n{self._tail_report(info, name, 5)}") from None
        return statuses[name]

    def _check_images(self, topology: Topology) -> None:
        for image in sorted({n.image for n in topology.nodes}):
            try:
                self.client.images.get(image)
            except docker.errors.ImageNotFound:
                hint = " (build it with `make image`)" if image.startswith("onionlab/node") else ""
                raise BackendError(f"image {image} is not on this Docker engine{hint}; onionlab never pulls"
                                   ) from None

    def _check_host(self, topology: Topology) -> None:
        """Refuse a lab this host's kernel cannot carry (orchestrator/host.py: its neighbour table), naming
        `onionlab host tune`. Checked only when the engine runs on this Linux host: it shares our kernel."""
        if not self.client.api.base_url.startswith("http+docker://localhost"):
            return
        if (why := host.refusal(topology, SYSCTL_ROOT)) is not None:
            raise BackendError(why)

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
        fresh_run_dir(self.run_dir, old, "onionlab run files")

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
                    message = api_error(e)
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
        It runs as root (fresh volumes are root's) with only the capabilities that needs. The plan reaches it
        as a file in a volume of its own, copied in before it starts (an environment variable or argument
        could hold at most 128 KiB: about 120 nodes); that volume goes once init is done."""
        plan = make_plan(topology, socks_address="0.0.0.0").to_json()
        dirs = [f"{DATA_ROOT}/{n.name}" for n in info.nodes]
        script = ('python3 -m nodes.init --plan "$1" --out "$2" && shift 2 && chmod 0700 "$@" '
                  '&& chown -R 10001:10001 "$@"')
        plan_volume = self._object_name(info.run_id, INIT)
        self.client.volumes.create(plan_volume, labels={**labels, NODE: INIT, ROLE: INIT})
        volumes = {self._object_name(info.run_id, n.name): {"bind": d, "mode": "rw"}
                   for n, d in zip(info.nodes, dirs, strict=True)}
        volumes[plan_volume] = {"bind": PLAN_DIR, "mode": "rw"}  # rw: a read-only mount refuses the copy
        image = topology.nodes[0].image
        name = self._object_name(info.run_id, INIT)
        try:
            container = self.client.containers.create(
                image, ["init", f"{PLAN_DIR}/{PLAN_FILE}", DATA_ROOT, *dirs], entrypoint=["sh", "-c", script],
                name=name, hostname=INIT, user="0:0", volumes=volumes,
                network_mode="none", cap_drop=["ALL"], cap_add=["CHOWN", "DAC_OVERRIDE"],
                security_opt=["no-new-privileges:true"], read_only=True, **_limits(INIT_MEMORY, INIT_PIDS),
                labels={**labels, NODE: INIT, ROLE: INIT})
            secret = secret_archive(new_secret(self.run_dir))
            for d in dirs:  # into each volume before init runs: never in an environment variable or image
                container.put_archive(d, secret)
            if not container.put_archive(PLAN_DIR, _tar_file(PLAN_FILE, plan.encode())):
                raise BackendError(f"init ({name}): the engine did not take the plan file")
            container.start()
            code = container.wait(timeout=INIT_TIMEOUT)["StatusCode"]
        except requests.exceptions.ConnectionError:
            raise StartFailed(f"init ({name}) did not finish within {INIT_TIMEOUT:g} s") from None
        except docker.errors.APIError as e:
            raise BackendError(f"init ({name}): {api_error(e)}") from None
        out = container.logs(stdout=True, stderr=False).decode(errors="replace")
        err = container.logs(stdout=False, stderr=True).decode(errors="replace")
        if code != 0:
            lines = (err or out).splitlines()
            raise NodeFailed(INIT, f"init ({name}) exited with status {code}: {log_cause(lines)}\n"
                                   f"{log_report(f'init ({name})', lines[-TAIL_LINES:])}")
        authorities = sum(n.role == "authority" for n in info.nodes)
        say(f"init: {len(info.nodes)} configs and {authorities} authority identity keys written into the "
            f"run's volumes (plan: {len(plan) // 1024} KiB)")
        container.remove(v=True)
        self.client.volumes.get(plan_volume).remove()

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
                healthcheck=_health_interval(len(info.nodes)),
                read_only=True, tmpfs={"/tmp": "size=16m,mode=1777"}, **_limits(planned.memory, planned.pids),
                log_config={"type": "json-file", "config": {"max-size": "20m", "max-file": "2"}},
                labels={**labels, NODE: node.name, ROLE: node.role, IMPL: node.impl})
            for interface in others:
                self.client.networks.get(self._network_name(info.run_id, interface.network)).connect(
                    container, ipv4_address=str(interface.address))
        except docker.errors.APIError as e:
            raise BackendError(f"{node.name}: creating its container failed: {api_error(e)}") from None
        except requests.RequestException as e:  # the engine did not answer in time (ENGINE_TIMEOUT)
            raise BackendError(f"{node.name}: the Docker engine did not answer creating its container ({e})"
                               ) from None
        return container

    def _start_node(self, info: RunInfo, node: RunNode, container: Container) -> None:
        try:
            container.start()
        except docker.errors.APIError as e:
            raise NodeFailed(node.name, f"{node.name} ({node.container}) did not start: {api_error(e)}"
                             f"\n{self._tail_report(info, node.name, TAIL_LINES)}") from None
        except requests.RequestException as e:  # the engine did not answer in time (ENGINE_TIMEOUT)
            raise NodeFailed(node.name, f"{node.name} ({node.container}): the Docker engine did not answer "
                             f"its start ({e})") from None

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

        if total > readiness.SUMMARY_ABOVE:
            on_change = readiness.ConditionCounts(say, {n.name: n.role for n in info.nodes})
        endpoints = [control_endpoint(n) for n in info.nodes]
        try:
            statuses = readiness.wait_until_ready(endpoints, timeout=timeout, on_change=on_change,
                                                  check=self._exit_check(info))
        except readiness.ReadinessTimeout as e:
            if isinstance(on_change, readiness.ConditionCounts):
                on_change.flush()
            tails = "\n".join(self._tail_report(info, name, 5) for name in e.waiting)
            raise StartFailed(f"{e}\n{tails}") from None
        if isinstance(on_change, readiness.ConditionCounts):
            on_change.flush()
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
                lines = log_lines(container)
                addresses = ", ".join(str(a) for a in container_addresses(container)) or node.address
                raise NodeFailed(name, f"{name} ({node.role}, container {container.name} on {addresses}) "
                                       f"{how}: {log_cause(lines)}\n"
                                       f"{log_report(f'{name} ({container.name})', lines[-TAIL_LINES:])}")

        return check


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


def secret_archive(secret: str) -> bytes:
    """A tar of keys/control.secret (0600, in keys/ 0700, the node user's): the run's control secret as
    put_archive writes it into a node's volume."""
    uid, gid = (int(x) for x in NODE_USER.split(":"))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        folder = tarfile.TarInfo(KEYS_DIR)
        folder.type, folder.mode, folder.uid, folder.gid = tarfile.DIRTYPE, 0o700, uid, gid
        tar.addfile(folder)
        data = (secret + "\n").encode()
        entry = tarfile.TarInfo(f"{KEYS_DIR}/{SECRET_FILE}")
        entry.size, entry.mode, entry.uid, entry.gid = len(data), 0o600, uid, gid
        tar.addfile(entry, io.BytesIO(data))
    return out.getvalue()


def _health_interval(nodes: int) -> dict | None:
    """The image's health check (its test kept: an empty one inherits it) spaced out for a large lab."""
    seconds = nodes / HEALTH_CHECKS_PER_SECOND
    return None if seconds <= 5 else {"test": [], "interval": int(seconds * 1e9)}


def _tar_file(name: str, data: bytes) -> bytes:
    """A tar archive holding one file `name` (mode 0444) with `data`: what put_archive copies in."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        entry = tarfile.TarInfo(name)
        entry.size, entry.mode, entry.mtime = len(data), 0o444, int(time.time())
        tar.addfile(entry, io.BytesIO(data))
    return out.getvalue()


def _limits(memory: int | None, pids: int | None) -> dict[str, int]:
    """A container's memory limit (swap included, so no swapping past it) and pids limit."""
    found = {}
    if memory is not None:
        found.update(mem_limit=memory, memswap_limit=memory)
    if pids is not None:
        found["pids_limit"] = pids
    return found
