"""Host names to the IP addresses that documents carry.

Descriptors and consensus lines carry IP addresses, but a Docker Swarm stack plans with service names (Swarm
gives tasks their addresses at deploy time): relays resolve their own name once at start, and authorities
resolve every authority's name for the dir-source lines of each consensus they compute.
"""

from __future__ import annotations

import ipaddress
import socket

import trio


def is_canonical_ip(address: str) -> bool:
    try:
        return str(ipaddress.ip_address(address)) == address
    except ValueError:
        return False


async def resolve_ip(host: str, port: int | None = None) -> str:
    """`host` if it is an IP address, else its first IPv4 (else IPv6) address. OSError when it does not
    resolve."""
    if is_canonical_ip(host):
        return host
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    ips = [str(ipaddress.ip_address(info[4][0])) for info in infos
           if info[0] in (socket.AF_INET, socket.AF_INET6)]
    if not ips:
        raise OSError(f"{host!r} resolves to no IP address")
    ips.sort(key=lambda ip: ipaddress.ip_address(ip).version)  # IPv4 first
    return ips[0]
