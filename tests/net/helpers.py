"""An in-process test network on 127.0.0.1: relays (ChannelManager + RelayEngine) and clients, real TLS.

    async with trio.open_nursery() as nursery:
        relays = [await start_relay(nursery, f"relay{i}", dir_handler=echo) for i in range(4)]
        client = await start_client(nursery)
        circuit = await client.circuits.build([r.status for r in relays[:3]])
        ...
        nursery.cancel_scope.cancel()
"""

from __future__ import annotations

import io
import json
import os
import textwrap
import time
from dataclasses import dataclass

import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import rsa

from nodes.core import ed25519, tor_rsa
from nodes.core.cells import Cell, Command, Created2
from nodes.core.hs_ntor import public_key
from nodes.core.link_certs import LinkIdentity, make_link_identity
from nodes.core.netview import Relay
from nodes.net import tls
from nodes.net.channels import Channel, ChannelManager
from nodes.net.circuits import CircuitManager
from nodes.net.events import EventLog
from nodes.net.link import Link
from nodes.net.metrics import Metrics
from nodes.net.relay_engine import RelayEngine, RelayKeys, StreamHandler, onion_service_handlers

HOST = "127.0.0.1"
FLAGS = frozenset({"Running", "Valid", "Fast", "Stable", "Guard", "HSDir"})


class Events(EventLog):
    """An EventLog that keeps its records in memory for assertions."""

    def __init__(self, node: str, role: str) -> None:
        super().__init__(node, role, out=io.StringIO())

    def records(self, event: str | None = None) -> list[dict]:
        lines = self._out.getvalue().splitlines()
        return [r for r in map(json.loads, lines) if event is None or r["event"] == event]


@dataclass
class TestRelay:
    __test__ = False  # not a pytest class
    name: str
    signer: ed25519.Signer
    keys: RelayKeys
    link: LinkIdentity
    metrics: Metrics
    events: Events
    channels: ChannelManager
    engine: RelayEngine | None  # None for a hand-made (hostile) relay
    status: Relay

    def errors(self, kind: str) -> float:
        return self.metrics.value("errors_total", kind=kind)

    def outbound(self) -> list[Channel]:
        return [c for c in self.channels.channels if c.initiator]


@dataclass
class TestClient:
    __test__ = False
    name: str
    metrics: Metrics
    events: Events
    channels: ChannelManager
    circuits: CircuitManager

    def errors(self, kind: str) -> float:
        return self.metrics.value("errors_total", kind=kind)


def make_keys() -> tuple[ed25519.Signer, RelayKeys, LinkIdentity]:
    """A relay's identities (Ed25519 and RSA), ntor key, and the link identity its OR port proves."""
    signer = ed25519.Signer.from_seed(os.urandom(32))
    rsa_identity = rsa.generate_private_key(tor_rsa.PUBLIC_EXPONENT, tor_rsa.IDENTITY_BITS)
    secret = os.urandom(32)
    node_id = tor_rsa.fingerprint(rsa_identity.public_key())
    keys = RelayKeys(signer.public_key, secret, public_key(secret), node_id)
    link = make_link_identity(rsa_identity, signer, os.urandom(32), int(time.time()), os.urandom)
    return signer, keys, link


def router_status(name: str, keys: RelayKeys, port: int) -> Relay:
    return Relay(name, keys.node_id, keys.identity, keys.ntor_public, HOST, port, 0, 1000, FLAGS, "")


async def start_relay(nursery: trio.Nursery, name: str, *, dir_handler: StreamHandler | None = None,
                      onion_services: bool = True) -> TestRelay:
    signer, keys, link = make_keys()
    metrics, events = Metrics(), Events(name, "relay")
    channels = ChannelManager(link, metrics, events, address=HOST)
    handlers = onion_service_handlers(metrics, events) if onion_services else {}
    engine = RelayEngine(channels, keys, metrics, events, handlers=handlers, dir_handler=dir_handler)
    port = await nursery.start(channels.serve, HOST, 0)
    return TestRelay(name, signer, keys, link, metrics, events, channels, engine,
                     router_status(name, keys, port))


async def start_hostile_relay(nursery: trio.Nursery, name: str, *, forge: bool) -> TestRelay:
    """A relay that answers every CREATE2 with a CREATED2 of random bytes (`forge`, a forged ntor reply) or
    never answers at all."""
    signer, keys, link = make_keys()
    metrics, events = Metrics(), Events(name, "relay")
    channels = ChannelManager(link, metrics, events, address=HOST)

    def on_create(channel: Channel, cell: Cell):
        async def run(inbox):
            create = await inbox.receive()
            if forge:
                created = Created2(os.urandom(64))
                await channel.send([Cell(create.circ_id, Command.CREATED2, created.encode())])
            async for _ in inbox:
                pass
        return run

    channels.on_create = on_create
    port = await nursery.start(channels.serve, HOST, 0)
    return TestRelay(name, signer, keys, link, metrics, events, channels, None,
                     router_status(name, keys, port))


async def start_client(nursery: trio.Nursery, name: str = "client", **circuit_options) -> TestClient:
    metrics, events = Metrics(), Events(name, "client")
    channels = ChannelManager(None, metrics, events, address=HOST)
    await nursery.start(channels.run)
    circuits = CircuitManager(channels, metrics, events, **circuit_options)
    return TestClient(name, metrics, events, channels, circuits)


async def echo(stream) -> None:
    """A directory handler that sends back whatever it receives."""
    while data := await stream.receive_some(65536):
        await stream.send_all(data)


async def exchange(stream, payload: bytes, chunk: int = 16384) -> bytes:
    """Send `payload` while receiving as many bytes back (concurrently, as an echo needs)."""
    received = bytearray()

    async def sender():
        for i in range(0, len(payload), chunk):
            await stream.send_all(payload[i:i + chunk])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        while len(received) < len(payload):
            data = await stream.receive_some(65536)
            if not data:
                break
            received += data
    return bytes(received)


async def open_link(port: int, *, expected_node_id: bytes | None = None, host: str = HOST) -> Link:
    """A raw link to a relay's OR port, as any initiator opens it: TLS, then Tor's link handshake checking the
    relay's CERTS against the TLS certificate (and `expected_node_id`)."""
    stream = await tls.open_tls_stream(host, port, tls.client_context())
    link = Link(stream, initiator=True)
    await link.handshake(now=int(time.time()), peer_tls_cert_der=stream.peer_cert_der(),
                         expected_node_id=expected_node_id)
    return link


class StoreCircuit:
    """What an onion service's upload and a client's fetch need of a circuit to an HSDir: BEGIN_DIR streams
    answered by that HSDir's store (an HsDirStore), each in a task of `nursery`."""

    def __init__(self, nursery: trio.Nursery, store) -> None:
        self.nursery, self.store = nursery, store
        self.circ_id, self.path = 1, []  # what the events name

    async def open_dir_stream(self):
        client, server = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self.store.handle_stream, server)
        return client

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def small_lab(name: str, subnet: str, *, relays: int, intro_points: int) -> str:
    """A topology for a whole lab on loopback: 3 authorities, `relays` relays, an onion service `hs` (a web
    server on port 80) and a `client`, with the default lab's timing and ports."""
    return textwrap.dedent(f"""\
        name: {name}
        networks:
          lab: {{subnet: {subnet}}}
        timing: {{voting_interval: 10, vote_delay: 2, dist_delay: 2}}
        defaults: {{image: onionlab/node:latest, control_port: 9052}}
        roles:
          authority: {{or_port: 9001, dir_port: 9030}}
          relay: {{or_port: 9001}}
          onion_service: {{intro_points: {intro_points}, guards: 1}}
          client: {{socks_port: 9050, guards: 1}}
        nodes:
          - {{name: auth, role: authority, count: 3}}
          - {{name: relay, role: relay, count: {relays}}}
          - name: hs
            role: onion_service
            services:
              - {{port: 80, target: http}}
          - {{name: client, role: client}}
        """)
