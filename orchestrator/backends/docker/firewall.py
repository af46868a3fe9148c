"""Partitions by netfilter rules (one-way partitions, partitions between given nodes, splits into groups):
iptables DROP rules in a node's network namespace, entered from the host with nsenter, so the node image
and its containers gain no privilege.

Every rule carries the comment `onionlab:<run id>:<pid>:<start>` naming the lab and the orchestrator
process that made it (its pid and start time), so that undo, `onionlab chaos --heal` and `onionlab reap`
remove exactly ours: reap removes those whose process is gone. A rule cuts one direction of one pair of
addresses:

    both   INPUT -s PEER -j DROP and OUTPUT -d PEER -j DROP: nothing passes either way
    in     INPUT -s PEER -m conntrack --ctdir ORIGINAL -j DROP: the connections the peer opens to the node
           are cut (new and established); the node's own connections to the peer still work, replies too
    out    OUTPUT -d PEER -m conntrack --ctdir ORIGINAL -j DROP: the connections the node opens to the peer

A one-way cut is by connection, not by packet: dropping every packet one way would break TCP both ways (no
ACK comes back), so "in" and "out" could not be told apart. Without peers the rules match every address but
the loopback interface's.
"""

from __future__ import annotations

import os
import platform
import shlex
import shutil
from collections.abc import Sequence
from typing import Final

from .. import BackendError
from .engine import RUN, Engine, process_start
from .shaping import _run

TAG_PREFIX: Final = "onionlab:"
DIRECTIONS: Final = ("both", "in", "out")
_TOOLS: Final = ("iptables", "nsenter", "unshare")
_probed: list[str | None] = []


def rule_tag(run_id: str, pid: int | None = None) -> str:
    """The comment on every rule this process makes for the run: `onionlab:<run id>:<pid>:<start>`."""
    pid = os.getpid() if pid is None else pid
    return f"{TAG_PREFIX}{run_id}:{pid}:{process_start(pid) or 0}"


def tag_owner_alive(tag: str) -> bool:
    """Does the process that made a rule with this tag still run (same pid, same start time)?"""
    parts = tag.removeprefix(TAG_PREFIX).split(":")
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    start = process_start(int(parts[1]))
    return bool(start) and start == parts[2]


def partition_rules(tag: str, direction: str, peers: Sequence[str] | None,
                    own: Sequence[str] | None = None) -> list[list[str]]:
    """The rules (chain first, then the matches and the target) that cut the node from `peers` (addresses;
    None: every address but the loopback's) in `direction`; `own`: only the node's traffic at these addresses
    of its own (its address on one network), None: all of it."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}")
    if peers is not None and not peers:
        raise ValueError("no peer addresses to cut the node from")
    chains = [c for c, d in (("INPUT", "in"), ("OUTPUT", "out")) if direction in (d, "both")]
    rules = []
    for chain in chains:
        for peer in peers or [None]:
            for mine in own or [None]:
                # in the order `iptables -S` lists them (source, destination, interface), so that a rule
                # can be found in a listing as it was written
                source, destination = (peer, mine) if chain == "INPUT" else (mine, peer)
                rule = [chain, *(["-s", f"{source}/32"] if source else []),
                        *(["-d", f"{destination}/32"] if destination else []),
                        *([] if peer else ["!", "-i" if chain == "INPUT" else "-o", "lo"]),
                        "-m", "comment", "--comment", tag]
                if direction != "both":
                    rule += ["-m", "conntrack", "--ctdir", "ORIGINAL"]
                rules.append([*rule, "-j", "DROP"])
    return rules


def tagged_rules(listing: str) -> list[list[str]]:
    """The rules of an `iptables -S` listing that carry an onionlab tag, as partition_rules writes them
    (chain first)."""
    found = []
    for line in listing.splitlines():
        words = shlex.split(line)
        if len(words) > 2 and words[0] == "-A" and any(w.startswith(TAG_PREFIX) for w in words):
            found.append(words[1:])
    return found


def rule_comment(rule: Sequence[str]) -> str:
    return next((rule[i + 1] for i, w in enumerate(rule[:-1]) if w == "--comment"), "")


def _probe() -> str | None:
    """None when iptables with the comment and conntrack matches works in a network namespace of our own
    (`unshare --net`, gone when the command ends), else what fails. Asked once per process."""
    if not _probed:
        try:
            _run(["unshare", "--net", "iptables", "-w", "-A", "OUTPUT", "-m", "comment", "--comment",
                  TAG_PREFIX + "probe", "-m", "conntrack", "--ctdir", "ORIGINAL", "-j", "DROP"])
            _probed.append(None)
        except BackendError as e:
            _probed.append(f"iptables does not work in a network namespace here ({e})")
    return _probed[0]


class Firewall(Engine):
    def firewall_problem(self) -> str | None:
        """Why partitions by rules (iptables in the containers' network namespaces) cannot work here, or
        None: they need Linux, root, iptables, nsenter and unshare on this host, the engine on it, and an
        iptables with the comment and conntrack matches (tried in a namespace of our own). Asked once."""
        if "_firewall_checked" not in self.__dict__:
            self.__dict__["_firewall_checked"] = self._firewall_problem()
        return self.__dict__["_firewall_checked"]

    def _firewall_problem(self) -> str | None:
        if platform.system() != "Linux":
            return "partitions by rules need Linux: iptables runs in the containers' network namespaces"
        missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
        if missing:
            return f"partitions by rules need {', '.join(missing)} on this host (iptables, util-linux)"
        if os.geteuid() != 0:
            return "partitions by rules need root on this host (iptables in the containers' namespaces)"
        if not self._reach_directly():
            return ("partitions by rules need the Docker engine on this host (rootless Docker, Docker "
                    "Desktop or a remote engine keep the containers' network namespaces out of reach)")
        return _probe()

    def firewall_rules(self, name: str, direction: str, peers: list[str] | None = None,
                       network: str | None = None) -> list[list[str]]:
        """The rules that cut the node from `peers` (node names; None: from everyone) in `direction` (both,
        in, out), on `network` only when given; nothing is changed (add_rules applies them)."""
        info = self._state()
        own = None
        if network is not None:
            addresses = self.container_addresses(name)
            if network not in addresses:
                raise BackendError(f"{name} is not on network {network} (it is on: "
                                   f"{', '.join(addresses) or 'none'})")
            own = [addresses[network]]
        peer_addresses = None
        if peers is not None:
            peer_addresses = sorted({a for peer in peers
                                     for a in self.container_addresses(peer).values() if a})
            if not peer_addresses:
                raise BackendError(f"{', '.join(peers) or 'no node'}: no address to cut {name} from")
        return partition_rules(rule_tag(info.run_id), direction, peer_addresses, own)

    def add_rules(self, name: str, rules: list[list[str]]) -> None:
        """Insert each rule at the top of its chain in the node's network namespace; on a failure the ones
        added are removed again."""
        done: list[list[str]] = []
        try:
            for rule in rules:
                self._iptables(name, ["-I", *rule])
                done.append(rule)
        except BaseException:
            self.remove_rules(name, done)
            raise

    def remove_rules(self, name: str, rules: list[list[str]]) -> int:
        """Delete each rule from the node's network namespace; a rule that is gone (the container restarted,
        so its namespace is new) needs nothing. Returns how many were deleted."""
        present = self.node_rules(name)
        removed = 0
        for rule in rules:
            if rule in present:
                self._iptables(name, ["-D", *rule])
                removed += 1
        return removed

    def node_rules(self, name: str) -> list[list[str]]:
        """The onionlab rules in the node's network namespace now ([] when it is not running)."""
        pid = self._netns_pid(name)
        if pid is None:
            return []
        return tagged_rules(_run(["nsenter", "-t", str(pid), "-n", "iptables", "-w", "-S"]))

    def sweep_rules(self, *, everything: bool = False) -> int:
        """`reap`: remove the onionlab rules in every running container of any run whose maker (the process
        in the tag) is gone, or every one with `everything`. Nothing when rules cannot work here. Returns how
        many were removed."""
        if self.firewall_problem() is not None:
            return 0
        removed = 0
        for container in self.client.containers.list(filters={"label": RUN, "status": "running"}):
            pid = (container.attrs.get("State") or {}).get("Pid")
            try:
                listing = _run(["nsenter", "-t", str(pid), "-n", "iptables", "-w", "-S"]) if pid else ""
                for rule in tagged_rules(listing):
                    if everything or not tag_owner_alive(rule_comment(rule)):
                        _run(["nsenter", "-t", str(pid), "-n", "iptables", "-w", "-D", *rule])
                        removed += 1
            except BackendError:  # it stopped meanwhile: its namespace, and the rules, are gone
                continue
        return removed

    def container_addresses(self, name: str) -> dict[str, str]:
        """{topology network: address} the node's container has (its static addresses, stopped or not)."""
        info = self._state()
        info.node(name)
        container = self._container(info, name)
        if container is None:
            raise BackendError(f"{name} has no container in run {info.run_id}")
        return self._attached(info, container)

    def _netns_pid(self, name: str) -> int | None:
        info = self._state()
        container = self._container(info, name)
        if container is None or container.status not in ("running", "paused"):
            return None
        return (container.attrs.get("State") or {}).get("Pid") or None

    def _iptables(self, name: str, args: list[str]) -> None:
        pid = self._netns_pid(name)
        if pid is None:
            raise BackendError(f"{name} is not running, so it has no network namespace to put rules in")
        _run(["nsenter", "-t", str(pid), "-n", "iptables", "-w", *args])
