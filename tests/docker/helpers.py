"""Helpers the docker tests share: a free host port, and waiting for a subnet another lab holds."""

from __future__ import annotations

import ipaddress
import socket
import time

import docker
import pytest

CLASH_WAIT = 180.0  # how long another lab on the same subnet may keep it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clashing_networks(client: docker.DockerClient, subnets: list[ipaddress.IPv4Network]) -> list[str]:
    """The engine's networks whose IPv4 subnet overlaps one of `subnets`, each with its onionlab labels."""
    found = []
    for network in client.networks.list(greedy=True):
        for config in (network.attrs.get("IPAM") or {}).get("Config") or []:
            try:
                theirs = ipaddress.ip_network(config.get("Subnet", ""), strict=False)
            except ValueError:
                continue
            if any(theirs.version == 4 and theirs.overlaps(mine) for mine in subnets):
                labels = ", ".join(f"{k}={v}" for k, v in sorted((network.attrs.get("Labels") or {}).items())
                                   if k.startswith(("onionlab.", "com.docker.compose.project")))
                found.append(f"{network.name} ({theirs}; {labels or 'no onionlab labels'})")
    return found


def wait_for_free_subnets(client: docker.DockerClient, subnets: list[ipaddress.IPv4Network],
                          what: str) -> None:
    """Another lab on these subnets (an `onionlab up`, a compose lab or stack) would clash: wait for it to go,
    with backoff, then fail naming the networks."""
    deadline = time.monotonic() + CLASH_WAIT
    delay = 0.5
    while clash := clashing_networks(client, subnets):
        if time.monotonic() > deadline:
            needed = ", ".join(map(str, subnets))
            pytest.fail(f"{what} needs {needed}, but after {CLASH_WAIT:g} s these networks still use it: "
                        f"{'; '.join(clash)}. Stop that lab (`onionlab down`, `docker compose down -v`, "
                        "`docker stack rm`) and run the test again.", pytrace=False)
        time.sleep(delay)
        delay = min(2 * delay, 5.0)


def drop_stale_endpoints(client: docker.DockerClient, prefix: str, tries: int = 10) -> None:
    """Remove the networks whose names start with `prefix` (a compose project's) that outlived their
    containers: call it once the project's containers are gone, so every endpoint left is stale. Docker 20.10
    sometimes keeps an endpoint of a removed container, and the network then refuses removal with "has active
    endpoints" (moby/moby#37018): the endpoints are disconnected by force and the removal tried again with
    backoff."""
    delay = 0.2
    for _ in range(tries):
        networks = [n for n in client.networks.list() if n.name.startswith(prefix)]
        if not networks:
            return
        for network in networks:
            network.reload()
            for endpoint in list(network.attrs.get("Containers") or {}):
                try:
                    client.api.disconnect_container_from_network(endpoint, network.id, force=True)
                except docker.errors.APIError:
                    pass  # gone meanwhile
            try:
                network.remove()
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError:
                continue
        time.sleep(delay)
        delay = min(2 * delay, 2.0)
