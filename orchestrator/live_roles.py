"""The roles the nodes of a running lab play right now, from their /status: who is an intro point (of which
service), an HSDir (of which service, for which time period), whose guard, and the live rendezvous circuits.
`onionlab graph --live` draws them on the topology.

Relays appear in the statuses by nickname (nodes.roles.relay.nickname_for of the node name); everything here
is by node name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from nodes.roles.relay import nickname_for


@dataclass(slots=True)
class RendezvousCircuit:
    owner: str  # the client or onion service that built it
    path: list[str]  # first hop first; the last is the rendezvous point
    onion: str | None = None  # the service a client's circuit reaches


@dataclass(slots=True)
class LiveRoles:
    ready: dict[str, bool] = field(default_factory=dict)
    intro_point_of: dict[str, list[str]] = field(default_factory=dict)  # relay -> services
    hsdir_of: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # relay -> (service, period)
    guard_of: dict[str, list[str]] = field(default_factory=dict)  # relay -> clients and services
    rendezvous: list[RendezvousCircuit] = field(default_factory=list)
    addresses: dict[str, str] = field(default_factory=dict)  # where each runs (local backend: 127.0.0.x)

    def lines(self, name: str) -> list[str]:
        """What `name` is right now, one short line each, for a node's label."""
        out = []
        if name in self.ready and not self.ready[name]:
            out.append("NOT READY")
        if name in self.intro_point_of:
            out.append("intro point of " + ", ".join(self.intro_point_of[name]))
        periods: dict[str, list[str]] = {}
        for service, period in self.hsdir_of.get(name, []):
            periods.setdefault(service, []).append(period)
        for service, nums in periods.items():
            out.append(f"HSDir of {service}: {', '.join(nums)}")  # the time periods it holds
        if name in self.guard_of:
            out.append("guard of " + ", ".join(self.guard_of[name]))
        rps = [c.owner for c in self.rendezvous if c.path and c.path[-1] == name]
        if rps:
            out.append("rendezvous point of " + ", ".join(sorted(set(rps))))
        return out


def live_roles(names: Iterable[str], status_of: Callable[[str], dict | None], *,
               addresses: dict[str, str] | None = None) -> LiveRoles:
    """Ask every node for its /status (`status_of` returns None for one that does not answer); `addresses`:
    where each node runs, when the backend knows."""
    names = list(names)
    name_of = {nickname_for(n): n for n in names}

    def node(nickname: object) -> str:
        return name_of.get(str(nickname), str(nickname))

    roles = LiveRoles(addresses=dict(addresses or {}))
    for name in names:
        status = status_of(name)
        roles.ready[name] = bool(status and status.get("ready"))
        if not status:
            continue
        for relay in status.get("intro_points") or []:
            roles.intro_point_of.setdefault(node(relay), []).append(name)
        for period, relays in sorted((status.get("descriptor_hsdirs") or {}).items()):
            for relay in relays:
                roles.hsdir_of.setdefault(node(relay), []).append((name, str(period)))
        for relay in (status.get("guards") or {}).get("primary") or []:
            roles.guard_of.setdefault(node(relay), []).append(name)
        for circuit in status.get("rendezvous") or []:
            if isinstance(circuit, dict):  # a client's: {onion, path}
                roles.rendezvous.append(RendezvousCircuit(name, [node(h) for h in circuit.get("path", [])],
                                                          circuit.get("onion")))
            else:  # a service's: the path
                roles.rendezvous.append(RendezvousCircuit(name, [node(h) for h in circuit]))
    return roles
