"""The faults chaos applies to one node (FaultBackend, NetworkFaultBackend): stop, start, pause, a partition
(off its networks and back), and a look at the node; shaping is in shaping.py."""

from __future__ import annotations

import docker
import docker.errors
from docker.models.containers import Container

from orchestrator import readiness
from orchestrator.control import post_control, run_secret

from .. import (
    BackendError,
    NodeFailed,
    RunInfo,
    StartFailed,
    write_state,
)
from ..base import CLOCK_FAULTS, FAULT_KINDS, FIREWALL_FAULTS, LINK_LAYER, NEEDS_NETEM, QDISC, SHAPING_FAULTS
from .engine import (
    STATUS_TIMEOUT,
    STOP_TIMEOUT,
    TAIL_LINES,
    api_error,
    control_endpoint,
    log_cause,
    log_lines,
    log_report,
)
from .firewall import Firewall
from .shaping import Shaping


class Faults(Shaping, Firewall):
    def supported_faults(self) -> frozenset[str]:
        """Every fault kind: containers have processes to signal and freeze, and links of their own."""
        return FAULT_KINDS

    def fault_problem(self, fault: str) -> str | None:
        """Why `fault` cannot run on this host, or None. Shaping runs as tc qdiscs where this host can
        (tc, root, the engine here, netem for delay and loss), else through the nodes' control call; cuts by
        rules need iptables, nsenter and root."""
        if fault not in FAULT_KINDS:
            return f"no fault named {fault!r}"
        if fault in FIREWALL_FAULTS:
            return self.firewall_problem()
        if fault in SHAPING_FAULTS | CLOCK_FAULTS and run_secret(self.run_dir) is None \
                and (fault in CLOCK_FAULTS or self.shaping_problem(netem=fault in NEEDS_NETEM)):
            return ("the lab has no control secret (an older onionlab started it) and "
                    + ("skew needs the nodes' control call" if fault in CLOCK_FAULTS else
                       f"tc shaping cannot run here: {self.shaping_problem(netem=fault in NEEDS_NETEM)}")
                    + "; restart it with `onionlab down` and `onionlab up`")
        return None

    def shaping_path(self, fault: str, params: dict) -> tuple[str, str]:
        """tc qdiscs (netem, tbf) on both sides of the node's veths when this host can; the nodes' link-layer
        shaper otherwise, and always for a fault on one link (`peer`)."""
        if params.get("peer"):
            return LINK_LAYER, "a fault on one link is a rule in the two nodes' link layers"
        problem = self.shaping_problem(netem=fault in NEEDS_NETEM)
        if problem is None:
            return QDISC, "tc on the host side of the veths and in the node's network namespace"
        return LINK_LAYER, ("no netem here" if "netem" in problem else problem)

    def control(self, name: str, command: dict) -> dict:
        endpoint = control_endpoint(self._state().node(name))
        return post_control(endpoint.host, endpoint.port, run_secret(self.run_dir) or "", command)

    def node_addresses(self, name: str) -> dict[str, str]:
        """{topology network: address} of the node's container now (its planned address when it has none)."""
        networks = self.container_state(name)["networks"]
        return networks or {"planned": self._state().node(name).address}

    def node_state(self, name: str) -> dict:
        """The container's state and networks (container_state), its veths' root qdisc kinds and the
        onionlab firewall rules in its network namespace (none unless rules can work here)."""
        rules = self.node_rules(name) if self.firewall_problem() is None else []
        return {**self.container_state(name), "qdiscs": sorted(set(self.qdiscs(name).values())),
                "rules": [" ".join(rule) for rule in rules]}

    def node_status(self, name: str) -> dict | None:
        """The node's /status now, or None when it does not answer."""
        return self._fetch(self._state().node(name))

    def node_metrics(self, name: str) -> list[tuple[str, dict[str, str], float]] | None:
        """The node's /metrics samples now (readiness.parse_metrics), or None when it does not answer."""
        endpoint = control_endpoint(self._state().node(name))
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
                raise BackendError(f"{name}: disconnecting from {net} failed: {api_error(e)}") from None
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
            raise BackendError(f"{name}: connecting to {network} at {address} failed: {api_error(e)}"
                               ) from None

    def _wait_node(self, info: RunInfo, name: str, container: Container, timeout: float) -> dict:
        def exited() -> None:
            container.reload()
            if container.status in ("exited", "dead"):
                lines = log_lines(container)
                raise NodeFailed(name, f"{name} ({container.name}) exited again: {log_cause(lines)}\n"
                                       f"{log_report(f'{name} ({container.name})', lines[-TAIL_LINES:])}")

        try:
            statuses = readiness.wait_until_ready([control_endpoint(info.node(name))], timeout=timeout,
                                                  check=exited)
        except readiness.ReadinessTimeout as e:
            raise StartFailed(f"{e}\n{self._tail_report(info, name, 5)}") from None
        return statuses[name]
