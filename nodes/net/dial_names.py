"""Where to dial a relay that advertises an address on a network we are not on, when addresses are known
only at run time (a Docker Swarm stack with several overlay networks).

A relay lists one address, its address on its first network. On the docker backend the plan knows every
address, and tells a node that shares only another network with the relay where to reach it instead
(NodeConfig.address_map: advertised address -> reached address). Swarm assigns the addresses when it starts
the tasks, so the plan names the relay instead: NodeConfig.dial_names maps its nickname to the host name that
reaches it on the network we share (its service's alias there, `<node>.<network>`). When we dial an address,
the consensus says whose it is; if that nickname is in dial_names, we dial what its name resolves to now (a
restarted relay has new addresses on every network, and resolving at each dial follows it).

The link handshake still checks the relay's identity (the caller's node ID), so a nickname that points at the
wrong name fails the link; it never gives a circuit another relay.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol

from .addresses import resolve_ip
from .events import EventLog


class Listed(Protocol):
    """A consensus entry, as far as dialling it goes."""

    nickname: str
    address: str
    or_port: int


class DialNames:
    def __init__(self, names: Mapping[str, str], listed: Callable[[], Iterable[Listed]], events: EventLog,
                 resolve: Callable[[str], Awaitable[str]] = resolve_ip) -> None:
        self.names = dict(names)  # nickname -> host name
        self.listed = listed  # the relays of the consensus we hold now
        self.events = events
        self.resolve = resolve

    def name_for(self, address: str, port: int) -> str | None:
        """The host name to dial instead of `address`: the name of the relay the consensus lists at
        (address, port)."""
        for entry in self.listed():
            if (entry.address, entry.or_port) == (address, port) and entry.nickname in self.names:
                return self.names[entry.nickname]
        return None

    async def dial_address(self, address: str, port: int) -> str:
        """The address to dial for (address, port): `address` unless a relay we reach by name is listed
        there. A name that does not resolve (the relay's task is gone) leaves the listed address, which fails
        to connect."""
        name = self.name_for(address, port)
        if name is None:
            return address
        try:
            return await self.resolve(name)
        except OSError as e:
            self.events.emit("dial_name_unresolved", address=address, name=name, error=str(e))
            return address


class View(Protocol):
    @property
    def routers(self) -> Iterable[Listed]: ...


def dial_names_for(names: Mapping[str, str], view: Callable[[], View | None],
                   events: EventLog) -> DialNames | None:
    """DialNames over the consensus that `view()` holds now (None: none yet); None when the plan names no
    relay (every run but a Swarm one with several networks)."""
    if not names:
        return None
    return DialNames(names, lambda: () if (current := view()) is None else current.routers, events)
