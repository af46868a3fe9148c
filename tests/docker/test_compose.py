"""The checked-in docker-compose.yml on a real engine: `docker compose up -d` and `docker-compose up -d`
(each one the machine has: both are tested where both exist) bring up the default lab with no other step,
and `down -v` removes all of it; the README's compose lines run as they are written.

The file is used as it is checked in. A second file (-f) made from it only adds this session's test labels
to every service, network and volume, so that the conftest's cleanup and stale-object reaper find them; it
repeats each network and volume definition whole, because docker-compose v1 replaces top-level entries
instead of merging them. The project name is unique per test. The file's subnet (10.77.0.0/24) is fixed, so
an `onionlab up` of the default topology or another compose lab on this engine would clash with it: the
test waits for such a network to go away, then fails naming it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import yaml

from orchestrator import readiness
from orchestrator.compose import socks_variable
from orchestrator.topology import Topology, load_topology
from tests.docker.helpers import drop_stale_endpoints, free_port, wait_for_free_subnets

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
TOPOLOGY = REPO / "topologies" / "default.yaml"
PROJECT_LABEL = "com.docker.compose.project"
COMPOSE_ENV = "ONIONLAB_COMPOSE"  # e.g. "docker-compose" to test only v1 when both are installed
README = REPO / "README.md"
READY_TIMEOUT = 120.0  # every node of the default lab ready; about 15 s on 2 cores
FETCH_TIMEOUT = 60.0
COMMAND_TIMEOUT = 300


def compose_commands() -> list[list[str]]:
    """Every Compose that answers here: `docker compose` (v2) and `docker-compose` (v1); $ONIONLAB_COMPOSE
    instead when set."""
    candidates = [os.environ[COMPOSE_ENV].split()] if os.environ.get(COMPOSE_ENV) else [
        ["docker", "compose"], ["docker-compose"]]
    found = []
    for command in candidates:
        if shutil.which(command[0]) is None:
            continue
        probe = subprocess.run([*command, "version"], capture_output=True, text=True, timeout=60)
        if probe.returncode == 0:
            found.append(command)
    return found


COMPOSES = compose_commands()  # the test ids say which ran: [docker compose], [docker-compose]


def no_compose() -> None:
    message = "neither `docker compose` nor `docker-compose` works here"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}. CI=true: failing instead of skipping.", pytrace=False)
    pytest.skip(message)


def readme_compose_lines() -> list[str]:
    """The shell block under the README's `## docker compose`."""
    section = README.read_text().split("\n## docker compose\n", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return block.splitlines()


@dataclass
class ComposeLab:
    command: list[str]
    project: str
    files: list[Path]
    env: dict[str, str]
    topology: Topology
    socks_port: int
    client: docker.DockerClient

    def run(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
        argv = [*self.command, "--project-name", self.project]
        for file in self.files:
            argv += ["--file", str(file)]
        return subprocess.run([*argv, *args], cwd=REPO, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def containers(self) -> dict[str, docker.models.containers.Container]:
        found = self.client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={self.project}"})
        return {c.labels.get("com.docker.compose.service", c.name): c for c in found}

    def logs(self, service: str, lines: int = 30) -> str:
        result = self.run("logs", "--no-color", "--tail", str(lines), service, timeout=60)
        return (result.stdout + result.stderr).strip()

    def leftovers(self) -> tuple[int, int, int]:
        selector = {"label": f"{PROJECT_LABEL}={self.project}"}
        return (len(self.client.containers.list(all=True, filters=selector)),
                len(self.client.networks.list(filters=selector)),
                len(self.client.volumes.list(filters=selector)))


def label_override(labels: dict[str, str], compose: dict) -> dict:
    """A compose file that adds `labels` to every object of `compose`, keeping each definition whole."""
    def labelled(spec: dict | None) -> dict:
        spec = dict(spec or {})
        spec["labels"] = {**(spec.get("labels") or {}), **labels}
        return spec

    return {"networks": {name: labelled(spec) for name, spec in compose["networks"].items()},
            "volumes": {name: labelled(spec) for name, spec in compose["volumes"].items()},
            "services": {name: {"labels": labels} for name in compose["services"]}}


@pytest.fixture(params=COMPOSES or [None], ids=lambda c: " ".join(c) if c else "none")
def compose_lab(request, docker_client, node_image, labels, tmp_path) -> Iterator[ComposeLab]:
    if request.param is None:
        no_compose()
    with _compose_lab(request.param, docker_client, labels, tmp_path) as lab:
        yield lab


@contextlib.contextmanager
def _compose_lab(command, docker_client, labels, tmp_path) -> Iterator[ComposeLab]:
    """A compose lab of the checked-in file under a project name of its own, with the test's labels; it is
    taken down (`down -v`) at the end whatever happened."""
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    override = tmp_path / "test-labels.yml"
    override.write_text(yaml.safe_dump(label_override(labels, compose), sort_keys=False))
    topology = load_topology(TOPOLOGY)
    socks_port = free_port()
    env = {**os.environ, socks_variable(topology.node("client")): str(socks_port)}
    lab = ComposeLab(command, f"onionlabtest{uuid.uuid4().hex[:10]}", [COMPOSE_FILE, override], env, topology,
                     socks_port, docker_client)
    wait_for_free_subnets(docker_client, [n.subnet for n in topology.networks], "docker-compose.yml")
    try:
        yield lab
    finally:
        down = lab.run("down", "--volumes", "--remove-orphans", "--timeout", "5")
        if down.returncode != 0 and "active endpoints" in down.stderr:  # Docker 20.10's stale endpoint
            drop_stale_endpoints(docker_client, f"{lab.project}_")
            down = lab.run("down", "--volumes", "--remove-orphans", "--timeout", "5")
        assert down.returncode == 0, f"`down -v` failed:\n{down.stdout}{down.stderr}"


def test_compose_file_is_valid_for_this_compose(compose_lab: ComposeLab):
    result = compose_lab.run("config", "--quiet", timeout=60)
    assert result.returncode == 0, result.stderr


def test_compose_up_brings_up_the_default_lab_and_down_removes_it(compose_lab: ComposeLab):
    lab = compose_lab
    started = time.monotonic()
    up = lab.run("up", "--detach")
    assert up.returncode == 0, f"{' '.join(lab.command)} up failed:\n{up.stdout}{up.stderr}\n" + "\n".join(
        lab.logs(name) for name in ("init", *(n.name for n in lab.topology.nodes)))

    containers = lab.containers()
    init = containers["init"]
    init.reload()
    assert (init.status, init.attrs["State"]["ExitCode"]) == ("exited", 0), lab.logs("init")
    assert set(containers) == {"init", *(n.name for n in lab.topology.nodes)}

    def no_node_exited() -> None:
        for name, container in lab.containers().items():
            container.reload()
            if name != "init" and container.status in ("exited", "dead"):
                raise AssertionError(f"{name} exited with status {container.attrs['State']['ExitCode']}:\n"
                                     f"{lab.logs(name)}")

    endpoints = [readiness.Endpoint(n.name, str(n.address()), n.control_port) for n in lab.topology.nodes]
    statuses = readiness.wait_until_ready(endpoints, timeout=READY_TIMEOUT, check=no_node_exited)
    ready_after = time.monotonic() - started

    # the authorities' identities are the keys init made in their volumes (init prints their fingerprints)
    init_log = lab.logs("init", lines=100)
    for auth in lab.topology.nodes_by_role("authority"):
        status = statuses[auth.name]
        assert status["conditions"]["consensus"] is True
        assert f"{auth.name} {status['v3ident']} {status['fingerprint']}" in init_log
    for relay in lab.topology.nodes_by_role("relay"):
        assert statuses[relay.name]["ready"] is True

    # every node runs as 10001 with nothing but its own volume mounted, its SOCKS only on the host's loopback
    for name, container in lab.containers().items():
        if name == "init":
            continue
        assert container.attrs["Config"]["User"] == "10001:10001"
        node = lab.topology.node(name)
        host = container.attrs["HostConfig"]
        assert (host["Memory"], host["MemorySwap"], host["PidsLimit"]) == (node.memory, node.memory,
                                                                           node.pids)
        mounts = [(m["Type"], m["Destination"]) for m in container.attrs["Mounts"]]
        assert mounts == [("volume", f"/var/lib/onionlab/{name}")], mounts
        bindings = container.attrs["HostConfig"]["PortBindings"] or {}
        if name == "client":
            assert bindings == {"9050/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(lab.socks_port)}]}
        else:
            assert bindings == {}

    # the onion's page through the client's published SOCKS port (curl, as a user would)
    onion = statuses["hs"]["onion"]
    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("curl is not installed: this test fetches the onion's page with it", pytrace=False)
    deadline, delay = time.monotonic() + FETCH_TIMEOUT, 0.2
    while True:  # ready means published; a first fetch may still race the HSDirs' copies
        page = subprocess.run([curl, "--silent", "--show-error", "--max-time", "20", "--socks5-hostname",
                               f"127.0.0.1:{lab.socks_port}", f"http://{onion}/"], capture_output=True,
                              timeout=60)
        if page.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(delay)
        delay = min(2 * delay, 2.0)
    assert page.returncode == 0, (f"curl through 127.0.0.1:{lab.socks_port} failed: {page.stderr.decode()}\n"
                                  f"{lab.logs('client')}\n{lab.logs('hs')}")
    assert page.stdout.startswith(b"<!doctype html>") and onion.encode() in page.stdout
    print(f"\ncompose lab {lab.project} ({' '.join(lab.command)}): every node ready after "
          f"{ready_after:.1f} s, page of {onion} fetched after {time.monotonic() - started:.1f} s")

    down = lab.run("down", "--volumes", "--remove-orphans", "--timeout", "5")
    assert down.returncode == 0, down.stderr
    assert lab.leftovers() == (0, 0, 0)


def test_readme_compose_lines_run_as_written(docker_client, node_image, labels, tmp_path):
    """The README's block, in bash as a user would paste it: it picks v2 or v1 itself, brings the lab up,
    fetches the onion's page through curl and takes it all down. Only what a test must change is changed:
    the project name, the files (this session's labels added) and the SOCKS port come from the environment,
    and the port in the curl line is the free one the client publishes on."""
    if not COMPOSES:
        no_compose()
    lines = readme_compose_lines()
    picked = subprocess.run(["bash", "-c", f'{lines[0]}\necho "${{compose:-}}"'], capture_output=True,
                            text=True, timeout=60)
    command = picked.stdout.split() or COMPOSES[0]  # which one the README uses, for the cleanup
    with _compose_lab(command, docker_client, labels, tmp_path) as lab:
        script = "\n".join(lines).replace("127.0.0.1:9050", f"127.0.0.1:{lab.socks_port}")
        env = {**lab.env, "COMPOSE_PROJECT_NAME": lab.project, "COMPOSE_FILE": ":".join(map(str, lab.files)),
               "COMPOSE_PATH_SEPARATOR": ":"}
        result = subprocess.run(["bash", "-e", "-c", script], cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=COMMAND_TIMEOUT + READY_TIMEOUT)
        assert result.returncode == 0, f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        assert result.stdout.startswith("<!doctype html>") and ".onion" in result.stdout, result.stdout[:500]
        assert lab.leftovers() == (0, 0, 0)  # `down -v` took everything
    print(f"\nthe README's compose lines ran with `{' '.join(command)}`")
