"""What a lab needs of the host's kernel, what the host has, and setting it: `onionlab host check|tune`.

Linux keeps ONE neighbour (ARP) table for the network namespaces of all containers together, capped by
net.ipv4.neigh.default.gc_thresh3 (1024 by default; the per-namespace copies of the setting are ignored).
Past the cap the kernel drops packets between containers ("neighbour table overflow" in its log): votes
time out, no consensus is made, nodes stop answering. A lab needs an entry on both sides of every pair of
containers that talk: each authority tests every relay (and the other authorities), and every node links
to a few relays for its circuits and answers the host's readiness polls (NEIGHBOURS_PER_NODE).

gc_thresh2 is the soft limit: above it the kernel collects entries older than 5 s, so a lab that keeps
more than gc_thresh2 entries busy churns them (a fresh ARP exchange before many packets). `tune` sets
gc_thresh3 to twice the need (headroom for the circuits that come and go) and gc_thresh2 to the need, and
never lowers a value. The docker backend refuses a lab whose need exceeds gc_thresh3 (it would never be
ready); the local backend needs none (loopback has no neighbours).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .topology import Topology

SYSCTL_ROOT = Path("/proc/sys")
NEIGHBOURS_PER_NODE = 8  # a node's circuit links to relays, its gateway, the host's readiness polls
HARD = "net.ipv4.neigh.default.gc_thresh3"
SOFT = "net.ipv4.neigh.default.gc_thresh2"


def neighbour_entries(topology: Topology) -> int:
    """About how many neighbour-table entries the lab's containers need together (module docstring)."""
    authorities = len(topology.nodes_by_role("authority"))
    relays = len(topology.nodes_by_role("relay"))
    return 2 * authorities * (relays + authorities) + NEIGHBOURS_PER_NODE * len(topology.nodes)


@dataclass(frozen=True)
class Setting:
    """One kernel setting: what the host has, the least the lab needs, what `tune` would set."""

    name: str
    have: int | None  # None: this host has no such setting (not Linux, or not readable)
    need: int  # below this the lab fails (`required`) or runs worse
    target: int  # what `tune` writes (never below `have`)
    required: bool  # False: advice only; `up` refuses only for a required setting

    @property
    def ok(self) -> bool:
        return self.have is not None and self.have >= self.need


def _path(name: str, root: Path) -> Path:
    return root / name.replace(".", "/")


def read_setting(name: str, root: Path | None = None) -> int | None:
    try:
        return int(_path(name, root or SYSCTL_ROOT).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def settings(topology: Topology, root: Path | None = None) -> list[Setting]:
    """The host settings a lab of this topology needs in containers, with what this host has."""
    need = neighbour_entries(topology)
    hard, soft = read_setting(HARD, root), read_setting(SOFT, root)
    return [Setting(HARD, hard, need, max(hard or 0, 2 * need), required=True),
            Setting(SOFT, soft, need, max(soft or 0, need), required=False)]


def shown(source: str) -> str:
    """The topology file as a command line names it: relative to the current directory when below it."""
    try:
        return str(Path(source).resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return source


def refusal(topology: Topology, root: Path | None = None) -> str | None:
    """Why the host cannot carry this lab in containers (naming the command that fixes it), or None."""
    short = [s for s in settings(topology, root) if s.required and s.have is not None and not s.ok]
    if not short:
        return None
    source = shown(topology.source)
    what = "; ".join(f"{s.name} is {s.have}, the lab needs at least {s.need}" for s in short)
    return (f"this host cannot carry lab {topology.name!r} ({len(topology.nodes)} nodes) in containers: "
            f"{what} (the kernel's neighbour table for all containers together: past it packets between "
            "containers are dropped and the lab never gets ready). See it with `onionlab host check "
            f"{source}`, raise it with `sudo onionlab host tune {source}` (docs/scale.md)")


def check_lines(topology: Topology, root: Path | None = None) -> tuple[list[str], bool]:
    """A report line per setting (have, need, verdict) and whether the host carries the lab."""
    lines, ok = [], True
    for s in settings(topology, root):
        have = "not on this host" if s.have is None else str(s.have)
        if s.ok:
            verdict = "ok"
        elif s.have is None:
            verdict = "unknown (not Linux, or not readable): the docker backend cannot check it"
        elif s.required:
            verdict, ok = "TOO LOW: `onionlab host tune` raises it", False
        else:
            verdict = "low (advice: the lab churns its neighbour entries): `onionlab host tune` raises it"
        lines.append(f"{s.name}: have {have}, need {s.need}: {verdict}")
    return lines, ok


@dataclass(frozen=True)
class Change:
    name: str
    old: int
    new: int


def _write(path: Path, text: str) -> None:
    path.write_text(text)


def tune(topology: Topology, root: Path | None = None) -> list[Change]:
    """Raise every setting below its target (never lowers one); the changes made. Raises OSError when a
    setting cannot be written (not root, or a read-only /proc/sys as in a container)."""
    changes = []
    for s in settings(topology, root):
        if s.have is None or s.have >= s.target:
            continue
        _write(_path(s.name, root or SYSCTL_ROOT), f"{s.target}\n")
        changes.append(Change(s.name, s.have, s.target))
    return changes


def undo_command(changes: list[Change]) -> str:
    return "sudo sysctl -w " + " ".join(f"{c.name}={c.old}" for c in changes)
