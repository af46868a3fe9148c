"""The client: a SOCKS5 port (nodes.net.socks) whose onion connections go through the rendezvous flow
(nodes.net.hs_client); NAME.pet is looked up in the petname file (config.petnames_file, reread when it
changes: nodes.net.petnames). Guards persist in `<data_dir>/guards.json`. The control call's `newnym`
forgets the onion-service client state, as tor's SIGNAL NEWNYM does (OnionClient.newnym); `attack` makes an
onion service build one more rendezvous circuit, marked (nodes.net.attack_client). /status conditions:

    consensus         we hold a consensus that is still valid
    socks_listening   the SOCKS port accepts connections
"""

from __future__ import annotations

import functools

import trio

from nodes.config import NodeConfig
from nodes.net.attack_client import GuardDiscovery
from nodes.net.hs_client import OnionClient
from nodes.net.origin import OriginStack
from nodes.net.petnames import PetnameTable
from nodes.net.socks import serve_socks
from nodes.net.status import serve_status


async def serve(config: NodeConfig, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Run the client until cancelled. `task_status.started(client)` once SOCKS and status listen."""
    stack = OriginStack(config, "client")
    petnames = PetnameTable(config.petnames_file or None, stack.metrics, stack.events)
    client = OnionClient(circuits=stack.circuits, guards=stack.guards, directory=stack.directory,
                         metrics=stack.metrics, events=stack.events, petnames=petnames)
    attack = GuardDiscovery(client, stack.events)
    socks_host = config.socks_address or config.address
    socks: dict[str, int] = {}

    def status() -> dict:
        conditions = {"consensus": stack.has_consensus(), "socks_listening": "port" in socks}
        return {"role": "client", **stack.status(),
                "socks": f"{socks_host}:{socks['port']}" if socks else None,
                "ready": all(conditions.values()), "conditions": conditions, **client.status(),
                **({"attack": attack.status()} if attack.started else {})}

    async with trio.open_nursery() as nursery:
        stack.control.add_action("newnym", client.newnym)
        attack.nursery = nursery
        stack.control.add_action("attack", attack.start, ("onion", "rendezvous", "port", "cells"))
        client.control_port = await nursery.start(functools.partial(
            serve_status, config.bind_address, config.control_port, status, stack.metrics,
            control=stack.control))
        await nursery.start(stack.run)
        socks["port"] = await nursery.start(serve_socks, socks_host, config.socks_port, client.connect,
                                            stack.metrics, stack.events)
        stack.events.emit("client_started", socks=f"{socks_host}:{socks['port']}",
                          control_port=client.control_port)
        task_status.started(client)
