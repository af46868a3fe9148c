"""torrc text for a real tor (C tor, Debian's package) that joins a running onionlab lab.

The text itself comes from nodes/torrc.py, the builder that tor nodes of a lab (`impl: tor`) use too; this
module adds what only the orchestrator knows: the running lab's authorities and its timing.

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

from nodes.torrc import TorrcError, build_torrc, dir_authority_lines

__all__ = ["ROLES", "TOR_MIN_VOTING_INTERVAL", "TorrcError", "check_timing", "dir_authority_lines", "torrc"]

TOR_MIN_VOTING_INTERVAL = 10
# what a person's own tor joins a lab as (a relay is a lab node: `impl: tor` in the topology)
ROLES = ("client", "onion_service")


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
        raise TorrcError(f"role must be one of {', '.join(ROLES)}, not {role!r} (a tor relay joins a lab as "
                         "a node of its topology: `impl: tor`)")
    return build_torrc(authorities, header=f"made by `onionlab export torrc`: joins the running lab as a "
                       f"{role.replace('_', ' ')}", role=role, data_directory=data_directory,
                       socks_port=socks_port, control_port=control_port,
                       log=f"notice file {log_file}" if log_file else None, service_dir=service_dir,
                       service_ports=service_ports)
