"""Shaping: tc qdiscs on the host side of the containers' veths (the bandwidth, delay and loss faults)."""

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
