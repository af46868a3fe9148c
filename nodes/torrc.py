"""torrc text for a stock tor (C tor, Debian's package) in an onionlab lab: the one builder behind both
`onionlab export torrc` (orchestrator/torrc.py, from the running lab's /status) and `python -m nodes tor`
(nodes/roles/tor_node.py, from the node's NodeConfig). Pure text: no I/O, no orchestrator import.

A private network needs only `TestingTorNetwork 1` (short intervals, private addresses allowed) and one
`DirAuthority` line per authority naming its v3 identity (the key that certifies its consensus-signing key)
and its relay identity (the RSA key its OR port proves in CERTS).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict

from nodes.config import NodeConfig

ROLES = ("client", "onion_service", "relay")  # what a torrc of this module can make a tor be
AUTHORITY_FIELDS = ("address", "or_port", "dir_port", "v3ident", "fingerprint")
NODE_TOR_DIR = "tor"  # a tor node's DataDirectory, under its data_dir
NODE_HS_DIR = "hs"  # an onion service's HiddenServiceDir, under the DataDirectory (tor makes its keys there)


class TorrcError(ValueError):
    """A torrc cannot be written from what we know (an authority without its identities, a bad role)."""


def nickname(name: str) -> str:
    """A tor nickname: 1-19 letters and digits (auth-1 -> auth1)."""
    return "".join(ch for ch in name if ch.isascii() and ch.isalnum())[:19] or "onionlab"


def dir_authority_lines(authorities: Iterable[Mapping]) -> list[str]:
    """`DirAuthority NICK orport=P no-v2 v3ident=V3 ADDRESS:DIRPORT FINGERPRINT`, one per authority (mappings
    with the fields of AuthorityRef, as an authority's /status or a NodeConfig has them)."""
    lines = []
    for a in authorities:
        missing = [k for k in AUTHORITY_FIELDS if not a.get(k)]
        if missing:
            raise TorrcError(f"authority {a.get('name', '?')} has not reported {', '.join(missing)} yet: "
                             "is the lab ready? (`onionlab status`)")
        lines.append(f"DirAuthority {nickname(a['name'])} orport={a['or_port']} no-v2 v3ident={a['v3ident']} "
                     f"{a['address']}:{a['dir_port']} {a['fingerprint']}")
    if not lines:
        raise TorrcError("the lab has no authorities")
    return lines


def build_torrc(authorities: Iterable[Mapping], *, header: str, role: str = "client",
                data_directory: str = "tor-data", socks_port: str = "127.0.0.1:9050",
                control_port: str | None = None, control_port_file: str | None = None,
                log: str | None = None, entry_guards: int | None = None, service_dir: str | None = None,
                service_ports: Iterable[tuple[int, str]] = (), intro_points: int | None = None,
                relay: Mapping | None = None, disable_network: bool = False) -> str:
    """The whole torrc. `role` client: a SocksPort; onion_service: HiddenServiceDir and HiddenServicePort
    lines (`service_ports`: (virtual port, "HOST:PORT" target)); relay: `relay_lines(**relay)`.
    `control_port` gets cookie authentication; `log` is a Log line's value ("notice stdout");
    `disable_network`: tor stays off the network until a controller says `SETCONF DisableNetwork=0`."""
    if role not in ROLES:
        raise TorrcError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    lines = [
        f"# {header}",
        "TestingTorNetwork 1",
        *dir_authority_lines(authorities),
        f"DataDirectory {data_directory}",
        f"SocksPort {socks_port}" if role == "client" else "SocksPort 0",
        "ClientUseIPv6 0",
        "ProtocolWarnings 1",  # a testbed wants to hear about every protocol violation tor sees
    ]
    if entry_guards:
        lines.append(f"NumEntryGuards {entry_guards}")
    if disable_network:
        lines.append("DisableNetwork 1")
    if control_port:
        lines += [f"ControlPort {control_port}", "CookieAuthentication 1"]
        if control_port_file:
            lines.append(f"ControlPortWriteToFile {control_port_file}")
    if log:
        lines.append(f"Log {log}")
    if role == "onion_service":
        if not service_dir:
            raise TorrcError("an onion service needs a HiddenServiceDir")
        lines.append(f"HiddenServiceDir {service_dir}")
        ports = list(service_ports) or [(80, "127.0.0.1:8080")]
        lines += [f"HiddenServicePort {virtual} {target}" for virtual, target in ports]
        if intro_points:
            lines.append(f"HiddenServiceNumIntroductionPoints {intro_points}")
    if role == "relay":
        if not relay:
            raise TorrcError("a relay needs its nickname, address and OR port")
        lines += relay_lines(**relay)
    return "\n".join(lines) + "\n"


def relay_lines(*, nickname: str, address: str, or_port: int) -> list[str]:
    """What makes a tor a lab relay (not an exit, not a directory cache), listening and advertising
    `address:or_port`.

    DirCache 0: a directory cache fetches the "ns" consensus flavour, which onionlab's authorities do not
    serve (only the microdesc one: C tor would warn at every 404); without it the relay also refuses
    BEGIN_DIR, so it gets neither V2Dir nor HSDir. AssumeReachable 1: it publishes at once instead of after
    its own reachability self-test; our authorities still test its OR port before listing it Running.
    """
    return [f"Nickname {nickname}", f"Address {address}", f"ORPort {address}:{or_port}", "DirCache 0",
            "ExitRelay 0", "ExitPolicy reject *:*", "AssumeReachable 1", "ContactInfo onionlab lab relay"]


def node_paths(config: NodeConfig) -> dict[str, str]:
    """Where a tor node keeps its files under its data_dir: the torrc, tor's DataDirectory, the file tor
    writes its control port into, the cookie it authenticates controllers with, and an onion service's
    HiddenServiceDir with the hostname file tor writes there."""
    base = config.data_dir.rstrip("/")
    tor_dir = f"{base}/{NODE_TOR_DIR}"
    return {"torrc": f"{base}/torrc", "data_directory": tor_dir,
            "control_port_file": f"{tor_dir}/control-port", "cookie": f"{tor_dir}/control_auth_cookie",
            "service_dir": f"{tor_dir}/{NODE_HS_DIR}", "hostname": f"{tor_dir}/{NODE_HS_DIR}/hostname"}


def node_torrc(config: NodeConfig, service_ports: Iterable[tuple[int, str]] = ()) -> str:
    """The torrc of a tor node (`impl: tor`): a client's SOCKS port where the config says, an onion
    service's HiddenServicePort lines (`service_ports`, made by the node: it serves the built-in targets
    itself), a relay's OR port; a control port on 127.0.0.1 at a port tor picks and writes into a file
    (several tor nodes share 127.0.0.1 in the local backend), cookie authentication, tor's log on its
    stdout, which the node reads, and DisableNetwork 1: the node lifts it once the lab has a consensus."""
    if config.role not in ROLES:
        raise TorrcError(f"a tor node cannot run role {config.role}")
    paths = node_paths(config)
    return build_torrc(
        [asdict(a) for a in config.authorities],
        header=f"written by `python -m nodes tor` for {config.name}",
        role=config.role, data_directory=paths["data_directory"],
        # ExtendedErrors: SOCKS replies 0xF0..0xF7 name the failed onion-service step, as our client's do
        socks_port=f"{config.socks_address or config.address}:{config.socks_port} ExtendedErrors",
        control_port="127.0.0.1:auto", control_port_file=paths["control_port_file"], log="notice stdout",
        entry_guards=config.guards, service_dir=paths["service_dir"], service_ports=service_ports,
        intro_points=config.intro_points, disable_network=True,  # until the lab has a consensus (tor_node)
        relay={"nickname": nickname(config.name), "address": config.address, "or_port": config.or_port})
