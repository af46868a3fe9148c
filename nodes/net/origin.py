"""What every node that builds its own circuits (onion services, clients) runs: links, circuits, guards and
a consensus that follows the authorities. The roles compose it with their own part of the flow."""

from __future__ import annotations

import os
import random
from pathlib import Path

import trio

from nodes.config import NodeConfig

from . import clock
from .channels import ChannelManager
from .circuits import CircuitManager
from .control import node_control
from .dial_names import dial_names_for
from .events import EventLog
from .guards import GuardManager, NoGuards, Rng
from .hs_paths import FollowingDirectoryClient, usable
from .metrics import Metrics

GUARD_STATE = "guards.json"  # in the node's data directory: the same guards after a restart


class OriginStack:
    def __init__(self, config: NodeConfig, role: str) -> None:
        self.config = config
        self.events = EventLog(config.name, role)
        self.metrics = Metrics()
        # No link identity: circuit-building nodes are not relays; on links they are clients (tor-spec 4)
        self.control = node_control(config.name, config.data_dir, config.shaping, self.metrics, self.events)
        self.channels = ChannelManager(None, self.metrics, self.events, address=config.address,
                                       address_map=config.address_map, shaper=self.control.shaper,
                                       source_address=config.source_address,
                                       dial_names=dial_names_for(config.dial_names,
                                                                 lambda: self.directory.current, self.events))
        self.circuits = CircuitManager(self.channels, self.metrics, self.events)
        self.guards = self.make_guards(config.guards)
        self.directory = FollowingDirectoryClient(config.authorities, self.metrics, self.events,
                                                  on_consensus=lambda c: self.guards.sample(usable(c)),
                                                  voting_interval=config.timing.voting_interval)

    def make_guards(self, n_guards: int, rng: Rng = os.urandom) -> GuardManager | NoGuards:
        """Guards from the state file, or none at all (`guards: 0`: a fresh first hop per circuit)."""
        if n_guards == 0:
            return NoGuards(metrics=self.metrics, events=self.events, rng=rng)
        return GuardManager(Path(self.config.data_dir, GUARD_STATE), n_guards, rng, metrics=self.metrics,
                            events=self.events)

    def reset_guards(self, n_guards: int, seed: int | None = None) -> GuardManager | NoGuards:
        """Forget the guard sample (its state file too) and start over with `n_guards` (0: none), sampled from
        the consensus we hold: what a fresh install of the node would do. With `seed`, the guard draws (or,
        without guards, every first-hop draw) come from a PRNG seeded with it, so that a trial of the attack
        can be repeated on the same consensus (docs/attack.md); middles stay random."""
        Path(self.config.data_dir, GUARD_STATE).unlink(missing_ok=True)
        rng = os.urandom if seed is None else random.Random(seed).randbytes
        self.guards = self.make_guards(n_guards, rng)
        if self.directory.current is not None:
            self.guards.sample(usable(self.directory.current))
        self.events.emit("guards_reset", guards=n_guards, seed=seed)
        return self.guards

    def has_consensus(self) -> bool:
        c = self.directory.current
        return c is not None and clock.wall() < c.valid_until

    def status(self) -> dict:
        return {"name": self.config.name, "address": self.config.address,
                "circuits": len(self.circuits.circuits), "links": len(self.channels.channels),
                "guards": self.guards.status(), "live_circuits": self.live_circuits()}

    def live_circuits(self) -> list[dict]:
        """Each open circuit's id, purpose and relays (first hop first): what chaos targets such as
        `path of NODE` resolve from."""
        return sorted(({"circ_id": c.circ_id, "purpose": c.purpose, "path": [r.nickname for r in c.path]}
                       for c in self.circuits.circuits if c.error is None), key=lambda c: c["circ_id"])

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Links and the directory client (which resamples the guards on every consensus), until cancelled."""
        Path(self.config.data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.channels.run)
            await nursery.start(self.directory.run)
            task_status.started()
