"""The onion service: establishes introduction points, publishes its descriptor to the HSDirs, answers
introductions at the clients' rendezvous points and serves their streams (nodes.net.hs_service).

Its identity key lives in `<data_dir>/keys/hs_identity.key` (made by `nodes init`, or on first start), so the
onion address stays the same across restarts; its guards in `<data_dir>/guards.json`. /status conditions:

    consensus                   we hold a consensus that is still valid
    intro_points_established    every intro point slot (config.intro_points) holds a live intro circuit
    descriptor_published        an HSDir of the current time period accepted our latest descriptor

The control call `{"command": "reset_guards", "guards": N, "seed": S}` forgets the guard sample and starts
over with N guards (0: none, a fresh first hop per circuit), drawn with a PRNG seeded with S (optional): the
guard-discovery attack's trials (docs/attack.md).
"""

from __future__ import annotations

import functools
from pathlib import Path

import trio

from nodes.config import ConfigError, NodeConfig
from nodes.core.ed25519 import Signer
from nodes.net.hs_service import OnionService
from nodes.net.node_keys import HS_IDENTITY_KEY, KEYS_DIR, load_or_create_seed
from nodes.net.origin import OriginStack
from nodes.net.status import serve_status
from nodes.net.targets import TargetError, make_target, parse_target


def _targets(config: NodeConfig, service: OnionService) -> dict:
    if not config.services:
        raise ConfigError(f"{config.name}: an onion service needs at least one entry in services")
    targets = {}
    for s in config.services:
        try:
            parse_target(s.target)
        except TargetError as e:
            raise ConfigError(f"{config.name}: services: port {s.port}: {e}") from None
        targets[s.port] = make_target(s.target, service.info)
    return targets


async def serve(config: NodeConfig, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Run the onion service until cancelled. `task_status.started(service)` once its ports listen."""
    stack = OriginStack(config, "onion_service")
    identity = Signer.from_seed(load_or_create_seed(Path(config.data_dir, KEYS_DIR, HS_IDENTITY_KEY)))
    service = OnionService(identity, n_intro_points=config.intro_points, targets={}, circuits=stack.circuits,
                           guards=stack.guards, directory=stack.directory, metrics=stack.metrics,
                           events=stack.events)
    service.targets = _targets(config, service)

    def status() -> dict:
        conditions = {"consensus": stack.has_consensus(),
                      "intro_points_established": service.enough_intro_points(),
                      "descriptor_published": service.descriptor_published()}
        return {"role": "onion_service", **stack.status(), "onion": service.onion + ".onion",
                "ports": sorted(service.targets), "ready": all(conditions.values()), "conditions": conditions,
                **service.status()}

    def reset_guards(guards: object = None, seed: object = None) -> dict:
        if type(guards) is not int or not 0 <= guards <= 1000:
            raise ValueError("guards: 0 (none) to 1000")
        if seed is not None and type(seed) is not int:
            raise ValueError("seed: an integer")
        service.guards = stack.reset_guards(guards, seed)
        return {"guards": service.guards.status()}

    async with trio.open_nursery() as nursery:
        stack.control.add_action("reset_guards", reset_guards, ("guards", "seed"))
        service.control_port = await nursery.start(functools.partial(
            serve_status, config.bind_address, config.control_port, status, stack.metrics,
            control=stack.control))
        await nursery.start(stack.run)
        nursery.start_soon(service.run)
        stack.events.emit("onion_service_started", onion=service.onion + ".onion",
                          ports=sorted(service.targets), control_port=service.control_port)
        task_status.started(service)
