"""The swarm backend (`onionlab up --backend swarm`) and `onionlab export stack` on a real single-node Docker
Swarm. The backend: up (keys as Swarm secrets, configs as Swarm configs), status, flow through the onion,
kill and start of a relay (same identity: its volume keeps its keys), pause and unpause (through a one-shot
service on its host, none left after), stop, and down leaving no service, secret, config, network or volume
of the run; a two-network lab. The export: `docker stack deploy` of the
default topology's stack, and of the two-network one's, brings up the lab with no other step, curl reaches
the onion's page through the client's published SOCKS port, and `docker stack rm` (plus removing the
stack's volumes) takes all of it away.

The engine is left as it was found: when it is not in Swarm mode, the test runs `docker swarm init` (on
127.0.0.1, else on another address of this machine) and `docker swarm leave --force` at the end, and removes
the docker_gwbridge network that Swarm made if there was none before. Docker 20.10 can leave the ingress
sandbox's endpoint (gateway_ingress-sbox) on docker_gwbridge after `swarm leave`, so that removing it says
"has active endpoints": that endpoint is disconnected by force (also one that an earlier run left, before
`swarm init`), and a docker_gwbridge that still cannot go is left with a warning, not a failure (the next
`swarm init` reuses it). An engine already in Swarm mode (a manager) is used as it is and left in it. The
stack name is unique per test; a second stack file adds this session's test labels to every service's
containers so that the conftest's reaper finds leftovers.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import shutil
import subprocess
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
import yaml

from orchestrator.backends import read_state
from orchestrator.backends.swarm import SwarmBackend
from orchestrator.compose import export_stack, socks_variable
from orchestrator.flow import run_flow
from orchestrator.topology import Topology, load_topology
from tests.docker.conftest import IMAGE
from tests.docker.helpers import free_port, wait_for_free_subnets

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
TOPOLOGY = REPO / "topologies" / "default.yaml"
STACK_LABEL = "com.docker.stack.namespace"
GWBRIDGE = "docker_gwbridge"
INGRESS_ENDPOINT = "gateway_ingress-sbox"  # the ingress sandbox's endpoint on docker_gwbridge
GWBRIDGE_TRIES = 6  # removing docker_gwbridge after `swarm leave`: about 6 s of tries with backoff
COMMAND_TIMEOUT = 300
PAGE_TIMEOUT = 240.0  # deploy to the onion's page; about 25 s on 2 cores
REMOVE_TIMEOUT = 120.0


def docker_cli(*args: str, env: dict[str, str] | None = None, timeout: float = COMMAND_TIMEOUT,
               check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"`docker {' '.join(args)}` exited {result.returncode}:\n{result.stdout}"
                             f"{result.stderr}")
    return result


def swarm_state(client: docker.DockerClient) -> tuple[str, bool]:
    info = client.info()["Swarm"]
    return info.get("LocalNodeState", ""), bool(info.get("ControlAvailable"))


def local_addresses() -> list[str]:
    """127.0.0.1, then this machine's other IPv4 addresses (for an engine that refuses loopback)."""
    found = ["127.0.0.1"]
    result = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=10, check=False)
    found += [a for a in result.stdout.split() if ipaddress.ip_address(a).version == 4 and a not in found]
    return found


@pytest.fixture(scope="module")
def swarm(docker_client: docker.DockerClient) -> Iterator[docker.DockerClient]:
    """An engine in Swarm mode as a manager; initialised (and left again afterwards) only when it was not."""
    state, manager = swarm_state(docker_client)
    if state == "active" and not manager:
        pytest.fail("this engine is a Swarm worker: a stack can only be deployed on a manager", pytrace=False)
    created = state != "active"
    had_gwbridge = bool(docker_client.networks.list(names=[GWBRIDGE]))
    if created and had_gwbridge:
        drop_stale_ingress_endpoint(docker_client)  # no swarm, so no ingress sandbox: a leftover of a leave
    if created:
        errors = []
        for address in local_addresses():
            result = docker_cli("swarm", "init", "--advertise-addr", address, check=False)
            if result.returncode == 0:
                break
            errors.append(f"{address}: {result.stderr.strip()}")
        else:
            pytest.fail("`docker swarm init` failed on every local address: " + "; ".join(errors),
                        pytrace=False)
    try:
        yield docker_client
    finally:
        if created:
            docker_cli("swarm", "leave", "--force")
            assert swarm_state(docker_client)[0] == "inactive"
            if not had_gwbridge:
                remove_gwbridge(docker_client)


def drop_stale_ingress_endpoint(client: docker.DockerClient) -> None:
    """Disconnect gateway_ingress-sbox from docker_gwbridge by force (moby/moby#37018): outside Swarm mode it
    is what `swarm leave` failed to take away, and it keeps the network from being removed."""
    try:
        client.api.disconnect_container_from_network(INGRESS_ENDPOINT, GWBRIDGE, force=True)
    except docker.errors.APIError:  # not there: nothing to do
        pass


def remove_gwbridge(client: docker.DockerClient) -> None:
    """Remove the docker_gwbridge that `swarm init` made, after the swarm is left. A container of someone
    else's on it keeps it; an "active endpoints" refusal with none listed is the ingress endpoint that Docker
    20.10 leaves: dropped by force, then tried again with backoff. Whatever still keeps it only warns: the
    engine stays usable (the next `swarm init` reuses the network), and it is not this test's result."""
    delay, why = 0.2, ""
    for _ in range(GWBRIDGE_TRIES):
        found = client.networks.list(names=[GWBRIDGE])
        if not found:
            return
        network = found[0]
        network.reload()
        users = set(network.attrs.get("Containers") or {}) - {"ingress-sbox"}
        if users:
            why = f"containers use it: {', '.join(sorted(users))}"
            break
        try:
            network.remove()
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as e:
            why = str(e.explanation or e)
            if "active endpoints" not in why:
                break
            drop_stale_ingress_endpoint(client)
        time.sleep(delay)
        delay = min(2 * delay, 2.0)
    warnings.warn(f"{GWBRIDGE} is left in place ({why}); the next `docker swarm init` reuses it",
                  stacklevel=2)


class Stack:
    def __init__(self, client: docker.DockerClient, name: str, topology: Topology, socks_port: int) -> None:
        self.client, self.name, self.topology, self.socks_port = client, name, topology, socks_port

    def selector(self) -> dict[str, str]:
        return {"label": f"{STACK_LABEL}={self.name}"}

    def logs(self, node: str, lines: int = 40) -> str:
        result = docker_cli("service", "logs", "--raw", "--no-trunc", "--tail", str(lines),
                            f"{self.name}_{node}", check=False, timeout=60)
        return f"--- {node}:\n{(result.stdout + result.stderr).strip()}"

    def diagnostics(self) -> str:
        ps = docker_cli("stack", "ps", "--no-trunc", self.name, check=False, timeout=60)
        return "\n".join([ps.stdout + ps.stderr, *(self.logs(n) for n in ("init", "hs", "client"))])

    def leftovers(self) -> tuple[int, int, int]:
        """The stack's containers, networks and volumes (low-level calls: the high-level lists inspect each
        object, which races with Swarm removing it)."""
        api = self.client.api
        return (len(api.containers(all=True, quiet=True, filters=self.selector())),
                len(api.networks(filters=self.selector())),
                len(api.volumes(filters=self.selector()).get("Volumes") or []))

    def remove(self) -> None:
        """`docker stack rm`, wait until its containers and networks are gone, then remove its volumes."""
        docker_cli("stack", "rm", self.name, check=False)
        deadline, delay = time.monotonic() + REMOVE_TIMEOUT, 0.2
        while True:
            containers, networks, _ = self.leftovers()
            if not containers and not networks:
                for volume in self.client.api.volumes(filters=self.selector()).get("Volumes") or []:
                    try:
                        self.client.api.remove_volume(volume["Name"], force=True)
                    except docker.errors.NotFound:
                        pass
                    except docker.errors.APIError:  # still in use by a container on its way out: retry
                        pass
                if self.leftovers() == (0, 0, 0):
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"after {REMOVE_TIMEOUT:g} s stack {self.name} still has (containers, "
                                     f"networks, volumes) = {self.leftovers()}")
            time.sleep(delay)
            delay = min(2 * delay, 2.0)


def label_override(labels: dict[str, str], stack: dict) -> dict:
    """A second stack file: `labels` on every service's containers (the services keep their own labels)."""
    return {"version": stack["version"],
            "services": {name: {"labels": {**spec.get("labels", {}), **labels}}
                         for name, spec in stack["services"].items()}}


@pytest.fixture
def deploy(swarm, node_image, labels, tmp_path) -> Iterator[Callable[[Path], Stack]]:
    """deploy(TOPOLOGY): `onionlab export stack` of it (the plan next to the file), `docker stack deploy`;
    every stack deployed is removed afterwards and must leave nothing."""
    deployed: list[Stack] = []

    def deploy_(path: Path) -> Stack:
        topology = on_test_image(load_topology(path))
        stack_file = tmp_path / f"{topology.name}-stack.yml"
        text = export_stack(topology, path.relative_to(REPO).as_posix(), stack_file)  # and the plan
        override = tmp_path / f"{topology.name}-test-labels.yml"
        override.write_text(yaml.safe_dump(label_override(labels, yaml.safe_load(text)), sort_keys=False))
        lab = Stack(swarm, f"olt{uuid.uuid4().hex[:10]}", topology, free_port())
        wait_for_free_subnets(swarm, [n.subnet for n in topology.networks], "the stack")
        env = {**os.environ, socks_variable(topology.node("client")): str(lab.socks_port)}
        deployed.append(lab)  # removed even when the deploy fails half-way
        deploy = docker_cli("stack", "deploy", "--compose-file", str(stack_file), "--compose-file",
                            str(override), lab.name, env=env, check=False)
        assert deploy.returncode == 0, f"docker stack deploy failed:\n{deploy.stdout}{deploy.stderr}"
        assert "unsupported" not in deploy.stdout + deploy.stderr, deploy.stdout + deploy.stderr
        return lab

    try:
        yield deploy_
    finally:
        for lab in deployed:
            lab.remove()
    assert [lab.leftovers() for lab in deployed] == [(0, 0, 0)] * len(deployed)


def onion_address(lab: Stack) -> str | None:
    result = docker_cli("service", "logs", "--raw", "--no-trunc", f"{lab.name}_hs", check=False, timeout=60)
    for line in result.stdout.splitlines():
        if '"onion_service_started"' in line:
            try:
                return json.loads(line)["onion"]
            except (ValueError, KeyError):
                continue
    return None


def wait_for_page(lab: Stack) -> tuple[str, float]:
    """Deployed -> init done -> nodes ready -> descriptor published -> the onion's page through the client's
    published SOCKS port (curl): the onion address and the seconds it took."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("curl is not installed: this test fetches the onion's page with it", pytrace=False)
    started = time.monotonic()
    deadline, delay = started + PAGE_TIMEOUT, 0.5
    onion, page = None, None
    while True:
        onion = onion or onion_address(lab)
        if onion is not None:
            page = subprocess.run([curl, "--silent", "--show-error", "--max-time", "20", "--socks5-hostname",
                                   f"127.0.0.1:{lab.socks_port}", f"http://{onion}/"], capture_output=True,
                                  timeout=60)
            if page.returncode == 0 and page.stdout.startswith(b"<!doctype html>"):
                break
        if time.monotonic() > deadline:
            why = "no onion_service_started in the hs logs" if onion is None else (
                f"curl exited {page.returncode}: {page.stderr.decode().strip()}")
            raise AssertionError(f"no page after {PAGE_TIMEOUT:g} s ({why})\n{lab.diagnostics()}")
        time.sleep(delay)
        delay = min(2 * delay, 2.0)
    assert onion.encode() in page.stdout
    return onion, time.monotonic() - started


def events(lab: Stack, node: str, event: str) -> list[dict]:
    """The node's events named `event` (every task's, from `docker service logs`)."""
    out = []
    for line in lab.logs(node, lines=2000).splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            record = json.loads(line)
            if record.get("event") == event:
                out.append(record)
    return out


def test_stack_deploy_brings_up_the_default_lab_and_stack_rm_removes_it(deploy):
    lab = deploy(TOPOLOGY)
    onion, fetched_after = wait_for_page(lab)

    # init ran once and succeeded; every node runs as the node user, read-only, with no capability
    containers = {c.labels["com.docker.swarm.service.name"].removeprefix(f"{lab.name}_"): c
                  for c in lab.client.containers.list(all=True, filters=lab.selector())}  # nothing is removed
    assert set(containers) == {"init", *(n.name for n in lab.topology.nodes)}
    init = containers.pop("init")
    assert (init.status, init.attrs["State"]["ExitCode"]) == ("exited", 0)
    for name, container in containers.items():
        host = container.attrs["HostConfig"]
        assert container.status == "running", name
        assert container.attrs["Config"]["User"] == "10001", name
        assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"], name
        node = lab.topology.node(name)
        assert (host["Memory"], host["PidsLimit"]) == (node.memory, node.pids), name
        assert container.attrs["Config"]["Hostname"] == name
    # the relays advertise the address Swarm gave them (resolved from their names at start)
    started = events(lab, "relay1", "relay_started")[0]
    assert ipaddress.ip_address(started["address"]) in lab.topology.networks[0].subnet
    print(f"\nstack {lab.name}: page of {onion} through port {lab.socks_port} after {fetched_after:.1f} s")


def test_stack_deploy_runs_a_two_network_lab_whose_service_links_only_over_its_own_network(deploy):
    """The export of topologies/multi-network.yaml: the client only on `north`, the onion service only on
    `south`. The page comes through; the relays advertise their `north` addresses (learned at start from
    `<relay>.north`), and the onion service linked to relays only at `south` addresses, which no consensus
    lists: it dialled them by name (dial_names)."""
    lab = deploy(REPO / "topologies" / "multi-network.yaml")
    onion, fetched_after = wait_for_page(lab)
    north, south = (n.subnet for n in lab.topology.networks)
    assert [n.name for n in lab.topology.networks] == ["north", "south"]
    for relay in lab.topology.nodes_by_role("relay"):
        advertised = {ipaddress.ip_address(e["address"]) for e in events(lab, relay.name, "relay_started")}
        assert advertised and all(a in north for a in advertised), (relay.name, advertised)
    linked = {ipaddress.ip_address(e["peer"]) for e in events(lab, "hs", "link_up")}
    assert linked and all(a in south for a in linked), linked
    print(f"\nstack {lab.name} (two networks): page of {onion} through port {lab.socks_port} after "
          f"{fetched_after:.1f} s; hs linked to {len(linked)} peers, all on south")


def on_test_image(topology: Topology) -> Topology:
    """Every node on the image the session built (IMAGE: $ONIONLAB_TEST_IMAGE, default onionlab/node:latest):
    the backend's plan must be read by the same code."""
    return dataclasses.replace(topology, nodes=tuple(dataclasses.replace(n, image=IMAGE)
                                                     for n in topology.nodes))


def run_objects(run_id: str) -> dict[str, list[str]]:
    """The swarm objects labelled with the run (services, secrets, configs, networks, volumes here)."""
    label = f"label=onionlab.run={run_id}"
    return {kind: docker_cli(kind, "ls", "-q", "--filter", label).stdout.split()
            for kind in ("service", "secret", "config", "network", "volume")}


def test_swarm_backend_runs_the_default_lab_with_secrets_flow_kill_restart_and_down(swarm, node_image, labels,
                                                                                     tmp_path, monkeypatch):
    monkeypatch.setenv("ONIONLAB_LABELS", ",".join(f"{k}={v}" for k, v in labels.items()))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    topology = on_test_image(load_topology(TOPOLOGY))
    backend = SwarmBackend(tmp_path / "run")
    lines: list[str] = []
    started = time.monotonic()
    info = backend.up(topology, timeout=PAGE_TIMEOUT, progress=lines.append)
    up_seconds = time.monotonic() - started
    try:
        objects = run_objects(info.run_id)
        assert len(objects["service"]) == len(topology.nodes)
        # key material: the control secret, 6 files per authority, the onion service's identity seed
        assert len(objects["secret"]) == 1 + 6 * 3 + 1
        for service in json.loads(docker_cli("service", "inspect", *objects["service"]).stdout):
            spec = service["Spec"]["TaskTemplate"]["ContainerSpec"]
            assert not spec.get("Env"), spec.get("Env")  # nothing in the environment
            assert service["Spec"]["EndpointSpec"]["Mode"] == "dnsrr"
        status = backend.status()
        assert all(n["ready"] for n in status["nodes"]), status
        (service,) = status["onion_services"]
        (client,) = status["clients"]
        result = run_flow(read_state(backend.run_dir), backend.logs, onion=service["onion"], service="hs",
                          client="client", socks=client["socks"])
        assert result.ok, (result.failed_step, result.error)

        before = backend.node_status("relay1")["fingerprint"]
        backend.kill("relay1")
        deadline = time.monotonic() + 60
        while backend.node_state("relay1")["status"] != "exited":
            assert time.monotonic() < deadline, "relay1 still runs after kill"
            time.sleep(0.5)
        assert backend.node_status("relay1") is None
        again = backend.start("relay1", timeout=120)
        assert again["conditions"] and all(again["conditions"].values())
        assert again["fingerprint"] == before  # the same keys, from its volume
        backend.pause("relay1")  # through the one-shot on its host, as kill: the cgroup freezer
        assert backend.node_state("relay1")["status"] == "paused"
        assert backend.node_status("relay1") is None  # frozen: it answers nothing
        backend.unpause("relay1")
        assert backend.node_state("relay1")["status"] == "running"
        deadline = time.monotonic() + 30
        while backend.node_status("relay1") is None:
            assert time.monotonic() < deadline, "relay1 does not answer after unpause"
            time.sleep(0.2)
        assert not [name for name in docker_cli("service", "ls", "--format", "{{.Name}}").stdout.split()
                    if name.startswith(f"ol{info.run_id}_") and name.count("_") > 1]  # no one-shot left
        backend.stop("hs", timeout=10)
        assert backend.node_state("hs")["status"] == "exited"
        assert backend.restart("hs", timeout=120)["onion"] == service["onion"]  # its key is a secret
        print(f"\nswarm backend: default lab ready in {up_seconds:.1f} s; flow {result.flow_ms:.0f} ms")
    finally:
        backend.down()
    assert run_objects(info.run_id) == {k: [] for k in ("service", "secret", "config", "network", "volume")}


def test_swarm_backend_runs_a_two_network_lab_over_two_overlay_networks(swarm, node_image, labels, tmp_path,
                                                                          monkeypatch):
    """topologies/multi-network.yaml: the client only on `north`, the onion service only on `south`, relays
    and authorities on both. The relays advertise their `north` address (learned at start from their alias
    there); the onion service reaches them on `south` by name (dial_names), so the page crosses relays that
    sit on both overlay networks."""
    monkeypatch.setenv("ONIONLAB_LABELS", ",".join(f"{k}={v}" for k, v in labels.items()))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    topology = on_test_image(load_topology(REPO / "topologies" / "multi-network.yaml"))
    backend = SwarmBackend(tmp_path / "run")
    started = time.monotonic()
    info = backend.up(topology, timeout=PAGE_TIMEOUT)
    up_seconds = time.monotonic() - started
    try:
        objects = run_objects(info.run_id)
        assert len(objects["network"]) == 2 and len(objects["service"]) == len(topology.nodes)
        status = backend.status()
        assert all(n["ready"] for n in status["nodes"]), status
        stack = f"ol{info.run_id}"
        relays = [n.name for n in topology.nodes_by_role("relay")]
        for relay in relays:  # ready means listed in the consensus at the address it advertises
            addresses = backend.node_addresses(relay)
            assert set(addresses) == {f"{stack}_north", f"{stack}_south"}, addresses
            assert backend.node_status(relay)["address"] == addresses[f"{stack}_north"]
        assert set(backend.node_addresses("hs")) == {f"{stack}_south"}
        assert set(backend.node_addresses("client")) == {f"{stack}_north"}
        (service,) = status["onion_services"]
        (client,) = status["clients"]
        result = run_flow(read_state(backend.run_dir), backend.logs, onion=service["onion"], service="hs",
                          client="client", socks=client["socks"])
        assert result.ok, (result.failed_step, result.error)
        # the onion service linked to relays at their `south` addresses, which no consensus lists; it
        # cannot reach `north` at all
        south = {backend.node_addresses(r)[f"{stack}_south"] for r in relays}
        north = {backend.node_addresses(n.name).get(f"{stack}_north") for n in topology.nodes} - {None}
        linked = {json.loads(line)["peer"] for line in backend.logs("hs").splitlines()
                  if line.startswith("{") and '"link_up"' in line}
        assert linked & south and not linked & north, (linked, south, north)
        print(f"\nswarm backend: two-network lab ready in {up_seconds:.1f} s; flow {result.flow_ms:.0f} ms")
    finally:
        backend.down()
    assert run_objects(info.run_id) == {k: [] for k in ("service", "secret", "config", "network", "volume")}
