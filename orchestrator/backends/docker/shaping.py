"""Shaping: tc qdiscs on both sides of the containers' veths (the bandwidth, delay and loss faults): on the
host side (the traffic towards the node) and, through nsenter into the container's network namespace, on the
node's side (the traffic it sends). The node image gains no privilege: tc runs on the host, as root.

An interface is named by its host-side veth ("veth1a2b3c") or, on the node's side, as "PID:IFNAME" (the
interface IFNAME in the network namespace of process PID, the container's main process): a container that
restarts gets a new namespace, and the qdisc went with the old one."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

from .. import BackendError
from .engine import Engine

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


def qdisc_command(interface: str, verb: str, qdisc: list[str] | None = None) -> list[str]:
    """`tc qdisc VERB dev IF root [QDISC...]`, run in the node's network namespace (nsenter) for an
    interface named "PID:IFNAME", on the host for a host-side veth."""
    pid, colon, dev = interface.partition(":")
    prefix = ["nsenter", "-t", pid, "-n"] if colon else []
    return [*prefix, "tc", "qdisc", verb, "dev", dev if colon else interface, "root", *(qdisc or [])]


def _exists(interface: str) -> bool:
    """Is the interface still there: a host veth, or a node's side in its process's network namespace (a
    restarted container has a new namespace; a partitioned one lost the interface, and its qdisc with it)?"""
    pid, colon, dev = interface.partition(":")
    if colon:
        try:
            lines = Path("/proc", pid, "net", "dev").read_text().splitlines()[2:]
        except OSError:
            return False
        return any(line.split(":", 1)[0].strip() == dev for line in lines)
    return Path("/sys/class/net", interface).exists()


def _qdisc_kind(veth: str) -> str:
    """The kind of the interface's root qdisc ("noqueue" by default), "" when tc cannot tell."""
    result = subprocess.run(qdisc_command(veth, "show"), capture_output=True, text=True)
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


class Shaping(Engine):
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
        return {net: veth for net, (veth, _) in self._links(name, network).items()}

    def _links(self, name: str, network: str | None = None) -> dict[str, tuple[str, str]]:
        """{topology network: (host-side veth, the node's side as "PID:IFNAME")}."""
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
                inside_name, _, peer_index = fields_[1].rstrip(":").partition("@if")
                peers[mac] = (peer_index, inside_name)
        host = {}
        for line in _run(["ip", "-o", "link", "show"]).splitlines():
            index, _, rest = line.partition(": ")
            host[index.strip()] = rest.split(":")[0].split("@")[0]
        found = {}
        networks = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
        by_docker_name = {self._network_name(info.run_id, n): n for n in self._attached(info, container)}
        for docker_name, settings in networks.items():
            net = by_docker_name.get(docker_name)
            peer, inside_name = peers.get((settings.get("MacAddress") or "").lower(), (None, ""))
            if net is None or (network is not None and net != network):
                continue
            if peer is None or peer not in host:
                raise BackendError(f"{name}: no host-side veth found for its interface on {net}")
            found[net] = (host[peer], f"{pid}:{inside_name}")
        if network is not None and not found:
            raise BackendError(f"{name} is not on network {network}")
        return found

    def interfaces(self, name: str, network: str | None = None, direction: str = "both") -> list[str]:
        """The host-side veths (they shape the traffic towards the node: "in") and the node's side of its
        links ("PID:IFNAME", in its network namespace: what it sends, "out"), on `network` (default all)."""
        links = self._links(name, network).values()
        return ([veth for veth, _ in links] if direction in ("both", "in") else []) + \
               ([inside for _, inside in links] if direction in ("both", "out") else [])

    def shape(self, name: str, qdisc: list[str], network: str | None = None,
              direction: str = "both") -> list[str]:
        """Put `tc qdisc replace dev IF root QDISC...` on the node's `interfaces`. Returns them."""
        interfaces = self.interfaces(name, network, direction)
        done = []
        try:
            for interface in interfaces:
                _run(qdisc_command(interface, "replace", qdisc))
                done.append(interface)
        except BaseException:
            self.unshape(done)
            raise
        return interfaces

    @staticmethod
    def unshape(veths: list[str]) -> list[str]:
        """Remove the root qdisc of each interface (back to the default); one that is gone (its container
        was restarted or removed) needs nothing. Returns those whose qdisc was removed."""
        removed = []
        for interface in veths:
            if not _exists(interface):
                continue
            result = subprocess.run(qdisc_command(interface, "del"), capture_output=True, text=True)
            if result.returncode == 0:
                removed.append(interface)
            elif _exists(interface) and (":" in interface or _qdisc_kind(interface) in SHAPING_QDISCS):
                raise BackendError(f"{' '.join(qdisc_command(interface, 'del'))}: {result.stderr.strip()}")
        return removed

    def qdiscs(self, name: str) -> dict[str, str]:
        """{interface: kind of its root qdisc} of both sides of the node's running container's links ({}
        when not running)."""
        try:
            interfaces = [i for pair in self._links(name).values() for i in pair]
        except BackendError:
            return {}
        return {interface: _qdisc_kind(interface) for interface in interfaces}
