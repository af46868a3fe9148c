"""Link impairments in the orchestrator's words (tc-style units: `100ms`, `2%`, `10mbit`) and what they
become on a node: shaping rules for its link-layer shaper (nodes/net/shaper.py), which the nodes get through
their config (the topology's `links:`) or the control call (chaos). One module, so the topology and chaos
read units the same way."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from .topology import Topology

TIME: Final = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s)")
RATE: Final = re.compile(r"(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)")
PERCENT: Final = re.compile(r"(\d+(?:\.\d+)?)%")
_SECONDS: Final = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
# tc's units: "bit" rates are bits per second, "bps" rates BYTES per second (tc(8))
_BYTES_PER_SECOND: Final = {"bit": 1 / 8, "kbit": 1000 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8,
                            "bps": 1.0, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9}


def seconds(text: str) -> float:
    """A tc time ("100ms", "1.5s", "250us") in seconds; ValueError otherwise."""
    m = TIME.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"expected a time such as 100ms, got {text!r}")
    return float(m.group(1)) * _SECONDS[m.group(2)]


def bytes_per_second(text: str) -> float:
    """A tc rate ("10mbit", "256kbit", "1mbps") in bytes per second; ValueError otherwise."""
    m = RATE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"expected a rate such as 10mbit, got {text!r}")
    return float(m.group(1)) * _BYTES_PER_SECOND[m.group(2)]


def fraction(text: str | float) -> float:
    """A loss: "2%" or a number of percent (2) as a fraction (0.02); ValueError outside 0..100%."""
    if isinstance(text, str):
        m = PERCENT.fullmatch(text.strip())
        if m is None:
            raise ValueError(f"expected a percentage such as 2%, got {text!r}")
        value = float(m.group(1))
    else:
        value = float(text)
    if not 0 <= value <= 100:
        raise ValueError(f"a loss is 0% to 100%, got {value:g}%")
    return value / 100


def rule(rule_id: str, peers: Iterable[str] | None, *, delay: float = 0.0, jitter: float = 0.0,
         loss: float = 0.0, rate: float = 0.0, blackhole: bool = False) -> dict:
    """A shaper rule as JSON data (nodes.net.shaper.parse_rule reads it): `peers` None means every peer."""
    data: dict = {"id": rule_id, "peers": "all" if peers is None else sorted(set(peers))}
    for key, value in (("delay", delay), ("jitter", jitter), ("loss", loss), ("rate", rate)):
        if value:
            data[key] = round(value, 9)
    if blackhole:
        data["blackhole"] = True
    return data


def link_rules(topology: Topology, name: str, addresses: Mapping[str, str] | None = None) -> tuple[dict, ...]:
    """The static rules node `name` starts with: for each of the topology's `links:` it is on, one rule for
    the nodes on the other side (at `addresses`, by default at every address of theirs)."""

    def reach(peer: str) -> list[str]:
        if addresses is not None:
            return [addresses[peer]]
        return [str(i.address) for i in topology.node(peer).interfaces]

    rules = []
    for i, link in enumerate(topology.links):
        a, b = link.between
        others = (set(b) if name in a else set()) | (set(a) if name in b else set())
        peers = {address for peer in others - {name} for address in reach(peer)}
        if peers:
            rules.append(rule(f"link{i}", peers, delay=link.latency, jitter=link.jitter, loss=link.loss,
                              rate=link.bandwidth))
    return tuple(rules)
