"""The relay: carries circuits, and at their ends acts as introduction point, rendezvous point and HSDir;
keeps its descriptor at the authorities and itself in the consensus.

Ports (config.address): the OR port (TLS links; every circuit through or to this relay) and the control port
(/status, /metrics). There is no dir port: directory requests reach the relay as BEGIN_DIR streams on a
circuit, and answering them (nodes.net.hsdir) is what makes it an HSDir.

config.address may be a host name (a Docker Swarm stack plans with service names, since Swarm gives tasks
their addresses at deploy time; with several networks, the name on its first network): `serve` resolves it
once at start, trying again for a while if it does not resolve yet, and the relay advertises and checks the
IP it got (a descriptor carries an IP address). A restarted task resolves its name again.

Keys live in `<data_dir>/keys/` (nodes.net.node_keys): made on first start, reused afterwards, so a restart
keeps the identity. The relay uploads a fresh descriptor to every authority at start and every
`config.timing.descriptor_refresh` seconds (retrying with backoff while no authority accepts it), and keeps a
verified consensus with the directory client. /status conditions, all true when the relay is usable:

    descriptor_uploaded   at least one authority accepted our descriptor
    consensus             we hold a consensus that is still valid
    listed                that consensus lists us, with our current address, OR port and onion key
"""

from __future__ import annotations

import dataclasses
import functools
import re
import time

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nodes.config import ConfigError, NodeConfig
from nodes.core.link_certs import LinkIdentity
from nodes.core.server_descriptor import ServerDescriptor, make_server_descriptor
from nodes.net import clock
from nodes.net.addresses import is_canonical_ip, resolve_ip
from nodes.net.adversary import AdversaryObserver
from nodes.net.channels import ChannelManager
from nodes.net.control import node_control
from nodes.net.dial_names import dial_names_for
from nodes.net.dirclient import DirectoryClient
from nodes.net.events import EventLog
from nodes.net.hsdir import HsDirStore
from nodes.net.metrics import Metrics
from nodes.net.node_keys import NodeKeys, link_identity, load_or_create_node_keys
from nodes.net.relay_engine import IntroPoint, RelayEngine, onion_service_handlers
from nodes.net.status import serve_status

DEFAULT_BANDWIDTH = 1_000_000  # bytes/s advertised (NodeConfig.bandwidth's default); Fast needs 100 kB/s
PLATFORM = "onionlab 0.1.0 relay"
# The subprotocols we implement (tor-spec 9): C tor picks relays for each job by these. No TAP (Relay=1),
# no circuit padding machines (Padding), no ntor v3 or congestion control (Relay=3-4, FlowCtrl=2), no
# directory caching of consensuses (DirCache), no intro DoS extension (HSIntro=5).
PROTO = ("Cons=1-2 Desc=1-2 FlowCtrl=1 HSDir=2 HSIntro=4 HSRend=2 Link=4-5 LinkAuth=3 Microdesc=1-2 "
         "Relay=2")
UPLOAD_RETRY_MIN = 0.25  # seconds before retrying an upload no authority accepted; doubles up to the max
UPLOAD_RETRY_MAX = 10.0
RESOLVE_WAIT = 60.0  # seconds a relay tries to resolve its address name at start
RESOLVE_RETRY_MIN = 0.1
RESOLVE_RETRY_MAX = 2.0


async def resolve_address(config: NodeConfig, *, wait: float | None = None) -> NodeConfig:
    """`config` with a host-name address replaced by its first IPv4 (else IPv6) address; an IP address is
    kept as it is. A name that does not resolve is tried again for up to `wait` seconds (Swarm adds a task
    to its DNS once the task runs, which may be just after we start; default RESOLVE_WAIT); then
    ConfigError."""
    wait = RESOLVE_WAIT if wait is None else wait
    retry = RESOLVE_RETRY_MIN
    with trio.move_on_after(wait):
        while True:
            try:
                ip = await resolve_ip(config.address, config.or_port or None)
                return config if ip == config.address else dataclasses.replace(config, address=ip)
            except OSError as e:
                error = e
            await trio.sleep(retry)
            retry = min(2 * retry, RESOLVE_RETRY_MAX)
    raise ConfigError(f"{config.name}: cannot resolve address {config.address!r} (for {wait:g} s): "
                      f"{error}")


def nickname_for(name: str) -> str:
    """A descriptor nickname (1-19 of [A-Za-z0-9]) from a node name such as "relay-1"."""
    return re.sub(r"[^A-Za-z0-9]", "", name)[:19] or "onionlab"


class Relay:
    """The state of one relay; `serve` runs it. Exposed to tests through `task_status.started`."""

    def __init__(self, config: NodeConfig, node_keys: NodeKeys, *, metrics: Metrics, events: EventLog,
                 bandwidth: int = DEFAULT_BANDWIDTH) -> None:
        if not config.authorities:
            raise ConfigError(f"{config.name}: a relay needs at least one authority in its config")
        if not is_canonical_ip(config.address):  # descriptors carry a canonical IP address
            raise ConfigError(f"{config.name}: address {config.address!r} is not an IP address in canonical "
                              "form")
        self.config = config
        self.node_keys = node_keys
        self.keys = keys = node_keys.relay_keys
        self.identity = keys.identity
        self.signing_key = Ed25519PrivateKey.generate()  # medium-term: signs descriptors, certifies links
        self.link_identity: LinkIdentity = link_identity(node_keys, self.signing_key, int(clock.wall()))
        self.nickname = nickname_for(config.name)
        self.bandwidth = bandwidth
        self.metrics = metrics
        self.events = events
        self.control = node_control(config.name, config.data_dir, config.shaping, metrics, events)
        self.channels = ChannelManager(self.link_identity, metrics, events, address=config.address,
                                       address_map=config.address_map, shaper=self.control.shaper,
                                       source_address=config.source_address,
                                       dial_names=dial_names_for(config.dial_names,
                                                                 lambda: self.directory.current, events))
        self.directory = DirectoryClient(config.authorities, metrics, events,
                                         voting_interval=config.timing.voting_interval)
        self.hsdir = HsDirStore(metrics, events, documents=self.directory)  # and a directory cache (V2Dir)
        handlers = onion_service_handlers(metrics, events)
        self.intro_point: IntroPoint = handlers[IntroPoint.COMMANDS[0]]
        # an adversary's relay (topology `adversary: true`) also watches its circuits for the attack's mark
        self.adversary = (AdversaryObserver(events, metrics, self.relay_addresses) if config.adversary
                          else None)
        self._addresses: tuple[object, frozenset[str]] = (None, frozenset())
        self.engine = RelayEngine(self.channels, keys, metrics, events, handlers=handlers,
                                  dir_handler=self.hsdir.handle_stream, observer=self.adversary)
        self.or_port = config.or_port  # the bound ports, once serve() has them (config may say 0)
        self.control_port = config.control_port
        self.descriptor_uploaded = False
        self.started = time.monotonic()
        metrics.describe("descriptor_uploads_total", "counter", "descriptor upload rounds by result")
        metrics.describe("descriptor_authorities_accepted", "gauge",
                         "authorities that accepted our latest descriptor upload")

    # -- status --------------------------------------------------------------------------------------------
    def has_consensus(self) -> bool:
        c = self.directory.current
        return c is not None and clock.wall() < c.valid_until

    def listed(self) -> bool:
        """Does our consensus list this relay as it runs now (a restart may have changed the port)?"""
        c = self.directory.current
        return c is not None and any(
            r.node_id == self.keys.node_id and r.address == self.config.address and r.or_port == self.or_port
            and r.ntor_onion_key == self.keys.ntor_public for r in c.routers)

    def relay_addresses(self) -> frozenset[str]:
        """The addresses of the relays our consensus lists (cached per consensus)."""
        c = self.directory.current
        if self._addresses[0] is not c:
            self._addresses = (c, frozenset() if c is None else frozenset(r.address for r in c.routers))
        return self._addresses[1]

    def status(self) -> dict:
        conditions = {"descriptor_uploaded": self.descriptor_uploaded, "consensus": self.has_consensus(),
                      "listed": self.listed()}
        c = self.directory.current
        return {
            "role": "relay",
            "name": self.config.name,
            "nickname": self.nickname,
            "identity": self.identity.hex(),
            "fingerprint": self.node_keys.fingerprint,
            "address": self.config.address,
            "or_port": self.or_port,
            "ready": all(conditions.values()),
            "conditions": conditions,
            "circuits": len(self.engine.circuits),
            "links": len(self.channels.channels),
            # who opened the links we have now (their addresses): what `onionlab chaos` judges anonymity by
            "links_from": sorted({c.address for c in self.channels.channels if not c.initiator}),
            "hsdir_descriptors": len(self.hsdir),
            # whom we introduce to, by intro auth key: what `onionlab chaos` matches with the services' lists
            "intro_auth_keys": sorted(key.hex() for key in self.intro_point.auth_keys()),
            "consensus": None if c is None else {"valid_after": c.valid_after, "relays": len(c.routers)},
            **({"adversary": self.adversary.status()} if self.adversary is not None else {}),
        }

    # -- descriptor ----------------------------------------------------------------------------------------
    def descriptor(self, now: int) -> ServerDescriptor:
        """Our dir-spec server descriptor (nodes/core/server_descriptor.py), signed now."""
        return make_server_descriptor(
            nickname=self.nickname, address=self.config.address, or_port=self.or_port, dir_port=0,
            rsa_identity=self.node_keys.rsa_identity, ed25519_identity=self.node_keys.ed25519_identity,
            signing_key=self.signing_key, signing_cert_expires=self.link_identity.signing_cert.expires,
            ntor_secret=self.keys.ntor_secret, bandwidth=self.bandwidth, platform=PLATFORM, proto=PROTO,
            published=now, uptime=int(time.monotonic() - self.started),
            tap_onion_key=self.node_keys.tap_onion_key)

    async def upload_descriptor(self) -> int:
        """Upload a freshly signed descriptor to every authority; how many accepted it."""
        accepted = await self.directory.upload_descriptor(self.descriptor(int(clock.wall())).raw)
        self.metrics.set("descriptor_authorities_accepted", accepted)
        self.metrics.inc("descriptor_uploads_total", result="accepted" if accepted else "failed")
        if accepted:
            self.descriptor_uploaded = True
            self.events.emit("descriptor_uploaded", accepted=accepted,
                             authorities=len(self.config.authorities))
        return accepted

    async def keep_descriptor_published(self) -> None:
        """Upload now and every descriptor_refresh seconds. While some authority has not accepted it (down,
        or not up yet), retry with backoff: a majority of the authorities must list us."""
        refresh = max(1, self.config.timing.descriptor_refresh)
        while True:
            retry = UPLOAD_RETRY_MIN
            while await self.upload_descriptor() < len(self.config.authorities):
                await trio.sleep(retry)
                retry = min(2 * retry, UPLOAD_RETRY_MAX, refresh)
            await trio.sleep(refresh)


async def serve(config: NodeConfig, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Run a relay until cancelled. `task_status.started(relay)` once the OR and control ports listen."""
    config = await resolve_address(config)
    events = EventLog(config.name, "relay")
    metrics = Metrics()
    relay = Relay(config, load_or_create_node_keys(config.data_dir), metrics=metrics, events=events,
                  bandwidth=config.bandwidth)
    async with trio.open_nursery() as nursery:
        relay.or_port = await nursery.start(relay.channels.serve, config.bind_address, config.or_port)
        relay.control_port = await nursery.start(functools.partial(
            serve_status, config.bind_address, config.control_port, relay.status, metrics,
            control=relay.control))
        await nursery.start(relay.directory.run)
        nursery.start_soon(relay.keep_descriptor_published)  # after the OR port listens: authorities test it
        events.emit("relay_started", identity=relay.identity, nickname=relay.nickname,
                    address=config.address, or_port=relay.or_port, control_port=relay.control_port)
        task_status.started(relay)
