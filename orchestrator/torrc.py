"""torrc text for a real tor (C tor, Debian's package) that joins a running onionlab lab.

The lab's authorities speak Tor's link handshake and dir-spec documents, so a stock tor needs only what any
private Tor network needs: `TestingTorNetwork 1` (short voting intervals, private addresses allowed, no
distinct-subnet rule) and one `DirAuthority` line per authority, naming its v3 identity (the key that signs
the consensus) and its relay identity (the RSA key its OR port proves in CERTS). Both come from the
authorities' /status, so the text is always the running lab's.

C tor's floor that a lab must respect for tor to join (docs/tor-interop.md): a voting interval of at least
10 s under TestingTorNetwork (ns_parse.c: MIN_VOTE_INTERVAL_TESTING). The HS time period needs no check: both
sides derive it from the voting interval (24 of them, as C tor does under TestingTorNetwork).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

TOR_MIN_VOTING_INTERVAL = 10
ROLES = ("client", "onion_service")


class TorrcError(ValueError):
    """The lab cannot be joined by tor as it runs (e.g. its voting interval is below tor's floor)."""


def dir_authority_lines(authorities: Iterable[Mapping]) -> list[str]:
    """`DirAuthority NAME orport=P no-v2 v3ident=V3 ADDRESS:DIRPORT FINGERPRINT` for each authority, from the
    fields of its /status."""
    lines = []
    for a in authorities:
        missing = [k for k in ("address", "or_port", "dir_port", "v3ident", "fingerprint") if not a.get(k)]
        if missing:
            raise TorrcError(f"authority {a.get('name', '?')} has not reported {', '.join(missing)} yet: "
                             "is the lab ready? (`onionlab status`)")
        nickname = "".join(ch for ch in a["name"] if ch.isalnum())[:19]
        lines.append(f"DirAuthority {nickname} orport={a['or_port']} no-v2 v3ident={a['v3ident']} "
                     f"{a['address']}:{a['dir_port']} {a['fingerprint']}")
    if not lines:
        raise TorrcError("the lab has no authorities")
    return lines


def check_timing(voting_interval: int) -> None:
    if voting_interval < TOR_MIN_VOTING_INTERVAL:
        raise TorrcError(f"the lab votes every {voting_interval} s; tor refuses a consensus with a voting "
                         f"interval under {TOR_MIN_VOTING_INTERVAL} s even with TestingTorNetwork. Start the "
                         f"lab with `timing: {{voting_interval: {TOR_MIN_VOTING_INTERVAL}}}` in its topology "
                         "(the default)")


def torrc(authorities: Iterable[Mapping], *, role: str = "client", data_directory: str = "tor-data",
          socks_port: str = "127.0.0.1:9050", control_port: str | None = None, log_file: str | None = None,
          service_dir: str | None = None, service_ports: Iterable[tuple[int, str]] = ()) -> str:
    """The whole torrc. `role` client: a SocksPort; onion_service: HiddenServiceDir and HiddenServicePort
    lines (`service_ports`: (virtual port, "HOST:PORT" target))."""
    if role not in ROLES:
        raise TorrcError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    lines = [
        "# made by `onionlab export torrc`: joins the running lab as a " + role.replace("_", " "),
        "TestingTorNetwork 1",
        *dir_authority_lines(authorities),
        f"DataDirectory {data_directory}",
        f"SocksPort {socks_port}" if role == "client" else "SocksPort 0",
        "ClientUseIPv6 0",
        "ProtocolWarnings 1",  # a testbed wants to hear about every protocol violation tor sees
    ]
    if control_port:
        lines += [f"ControlPort {control_port}", "CookieAuthentication 1"]
    if log_file:
        lines.append(f"Log notice file {log_file}")
    if role == "onion_service":
        if not service_dir:
            raise TorrcError("an onion service needs a HiddenServiceDir")
        lines.append(f"HiddenServiceDir {service_dir}")
        ports = list(service_ports) or [(80, "127.0.0.1:8080")]
        lines += [f"HiddenServicePort {virtual} {target}" for virtual, target in ports]
    return "\n".join(lines) + "\n"
