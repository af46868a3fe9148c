"""The node image (images/node): who it runs as, what it holds, and that a real node in it becomes healthy."""

from __future__ import annotations

import ipaddress
import json
import os
import random
import re
import tarfile
import time
from pathlib import Path

import docker
import pytest
from docker.models.containers import Container
from docker.models.images import Image

from nodes.config import ROLES, AuthorityRef, NodeConfig, Timing
from nodes.init import make_authority_keys

pytestmark = pytest.mark.docker

NODE_UID = 10001
MAX_SIZE = 250 * 2**20  # a guard against bloat: the image is about 150 MB on either base
HEALTHY_WITHIN = 60.0  # the first health check runs 5 s (the interval) after start
# a PEM private key block with a body (crypto libraries contain the bare header strings). Not searched: ELF
# binaries, where GnuTLS (under apt) carries the published keys of its FIPS self-tests.
PEM_PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----\r?\n[A-Za-z0-9+/=\r\n]{40}")


def run(client: docker.DockerClient, labels: dict[str, str], command: list[str] | None = None, *,
        entrypoint: list[str] | None = None) -> tuple[int, str]:
    """Run a container of the node image without network to completion: (exit code, stdout + stderr)."""
    container = client.containers.run("onionlab/node:latest", command, entrypoint=entrypoint, detach=True,
                                      labels=labels, network_mode="none")
    status = container.wait(timeout=60)["StatusCode"]
    output = container.logs(stdout=True, stderr=True).decode()
    container.remove(v=True)
    return status, output


def python(client: docker.DockerClient, labels: dict[str, str], code: str) -> tuple[int, str]:
    return run(client, labels, ["-c", code], entrypoint=["python3"])


def test_runs_as_uid_10001(docker_client, node_image: Image, labels):
    assert node_image.attrs["Config"]["User"] == f"{NODE_UID}:{NODE_UID}"
    status, output = python(docker_client, labels, "import os; print(os.getuid(), os.getgid())")
    assert (status, output.split()) == (0, [str(NODE_UID), str(NODE_UID)])


@pytest.mark.parametrize("command", [None, ["--help"]], ids=["default-command", "help"])
def test_help_names_every_role(docker_client, node_image: Image, labels, command):
    status, output = run(docker_client, labels, command)
    assert status == 0, output
    assert "usage: python -m nodes" in output
    for role in ROLES:
        assert role in output


def test_node_software_and_only_its_dependencies(docker_client, node_image: Image, labels):
    code = """
import importlib.util, sys
import cryptography, h11, trio
import nodes.core, nodes.net.link, nodes.roles.authority
absent = [m for m in ("orchestrator", "yaml", "docker", "pip") if importlib.util.find_spec(m)]
print(sys.version_info[:2], nodes.core.__file__, absent)
"""
    status, output = python(docker_client, labels, code)
    assert status == 0, output
    assert output.split("\n")[0] == "(3, 11) /app/nodes/core/__init__.py []"


def test_no_private_key_in_code_or_data_dir(docker_client, node_image: Image, labels):
    code = """
import os, stat
hits = []
for top in ("/app", "/var/lib/onionlab"):
    for root, _, files in os.walk(top):
        paths = [os.path.join(root, f) for f in files]
        hits += [p for p in paths if b"PRIVATE KEY" in open(p, "rb").read()]
data = os.stat("/var/lib/onionlab")
print(hits, os.listdir("/var/lib/onionlab"), data.st_uid, oct(stat.S_IMODE(data.st_mode)))
"""
    status, output = python(docker_client, labels, code)
    assert status == 0, output
    assert output.strip() == f"[] [] {NODE_UID} 0o700"  # no key, an empty data dir that only the node can use


def test_no_pem_private_key_in_any_layer(node_image: Image, tmp_path: Path):
    saved = tmp_path / "image.tar"
    with saved.open("wb") as f:
        for chunk in node_image.save(named=True):
            f.write(chunk)
    found, scanned = [], 0
    with tarfile.open(saved) as image:
        for member in image:
            if not (member.isfile() and member.name.endswith((".tar", "/layer")) or "/blobs/" in member.name):
                continue
            with tarfile.open(fileobj=image.extractfile(member)) as layer:
                for entry in layer:
                    if entry.isfile():
                        scanned += 1
                        content = layer.extractfile(entry).read()
                        if not content.startswith(b"\x7fELF") and PEM_PRIVATE_KEY.search(content):
                            found.append(f"{member.name}: {entry.name}")
    assert scanned > 1000  # the layers were really read
    assert found == []


def test_healthcheck_and_size(node_image: Image):
    health = node_image.attrs["Config"]["Healthcheck"]
    assert health["Test"][0] == "CMD" and "/status" in health["Test"][-1]
    assert node_image.attrs["Config"]["Entrypoint"] == ["python3", "-m", "nodes"]
    size = node_image.attrs["Size"]
    print(f"\nonionlab/node:latest is {size / 2**20:.1f} MiB")
    assert size < MAX_SIZE


def _deps_stage_image(build_log: str) -> str | None:
    """The image the Dockerfile's dependencies stage (FROM ... AS deps) ended in, from the legacy builder's
    output (`Step N/M : ...` then ` ---> ID` per step); None when the build used BuildKit."""
    found, inside = None, False
    for line in build_log.splitlines():
        if re.match(r"Step \d+/\d+ : FROM ", line):
            if inside:
                break
            inside = line.rstrip().endswith(" AS deps")
        elif inside and (match := re.fullmatch(r" ---> ([0-9a-f]{12,64})", line.rstrip())):
            found = match.group(1)
        elif inside and line.startswith("Successfully built"):
            break
    return found


def test_the_build_leaves_no_dangling_image(docker_client, image_build, node_image: Image):
    """The legacy builder keeps a multi-stage build's dependencies stage as an untagged image (about 160 MB)
    after every build that changes it; build-image.sh names it instead, and removes replaced ones."""
    stage = _deps_stage_image(image_build.stderr)
    if stage is not None:  # the legacy builder (BuildKit keeps no stage images)
        try:
            tags = docker_client.images.get(stage).tags
        except docker.errors.ImageNotFound:
            tags = ["(removed)"]
        assert tags, f"the build left its dependencies stage {stage} as a dangling image"
    dangling = docker_client.images.list(filters={"dangling": True, "label": "onionlab.build-stage=deps"})
    assert dangling == []


def _network(client: docker.DockerClient, labels: dict[str, str]):
    """A labelled bridge network with a subnet of our own, so the node can have a fixed address."""
    for _ in range(20):
        subnet = ipaddress.ip_network(f"10.{random.randint(200, 250)}.{random.randint(0, 255)}.0/24")
        ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=str(subnet))])
        try:
            return client.networks.create(f"onionlab-test-{labels['onionlab.test.case']}", driver="bridge",
                                          ipam=ipam, labels=labels), subnet
        except docker.errors.APIError as e:
            if "overlap" not in str(e).lower():
                raise
    pytest.fail("no free /24 in 10.200.0.0-10.250.255.0 for the test network")


def _wait_healthy(container: Container) -> dict:
    deadline = time.monotonic() + HEALTHY_WITHIN
    while True:
        container.reload()
        state = container.attrs["State"]
        health = state["Health"]
        if health["Status"] == "healthy":
            return health
        if not state["Running"] or health["Status"] == "unhealthy" or time.monotonic() > deadline:
            pytest.fail(f"container {state['Status']}, health {health['Status']}: {health['Log'][-1:]}\n"
                        f"{container.logs().decode()[-3000:]}", pytrace=False)
        time.sleep(0.2)  # polling the engine for a condition, not waiting for readiness blindly


def test_authority_becomes_healthy(docker_client, node_image: Image, labels, tmp_path: Path):
    """An authority with its config and keys mounted (as `nodes init` makes them), on a network of its own, as
    the orchestrator runs one: the image's HEALTHCHECK finds the control port through the config and reports
    healthy."""
    network, subnet = _network(docker_client, labels)
    address = str(subnet.network_address + 10)
    data = tmp_path / "data"
    v3ident, fingerprint = make_authority_keys(data)
    config = NodeConfig(name="auth1", role="authority", address=address, data_dir="/var/lib/onionlab",
                        control_port=9052, or_port=9001, dir_port=9030, timing=Timing(),
                        authorities=(AuthorityRef("auth1", address, 9030, 9001, v3ident, fingerprint),))
    (tmp_path / "config.json").write_text(config.to_json())
    user = None
    if os.geteuid() == 0:  # the node runs as 10001: the data dir must be its own (0600 keys, 0700 dirs)
        for path in (data, *data.rglob("*")):
            os.chown(path, NODE_UID, NODE_UID)
    else:  # we cannot chown: run the node as us instead, as the orchestrator would have to
        user = f"{os.getuid()}:{os.getgid()}"
    data.chmod(0o700)

    container = docker_client.containers.run(
        "onionlab/node:latest", ["authority", "--config", "/etc/onionlab/config.json"], detach=True,
        labels=labels, user=user, network=network.name,
        networking_config={network.name: docker_client.api.create_endpoint_config(ipv4_address=address)},
        volumes={str(tmp_path / "config.json"): {"bind": "/etc/onionlab/config.json", "mode": "ro"},
                 str(data): {"bind": "/var/lib/onionlab", "mode": "rw"}})
    health = _wait_healthy(container)
    assert health["Log"][-1]["ExitCode"] == 0

    status, output = container.exec_run(
        ["python3", "-c", f"import urllib.request as u; print(u.urlopen('http://{address}:9052/status').read()"
                          ".decode())"])
    assert status == 0, output
    status = json.loads(output)
    assert (status["role"], status["name"], status["v3ident"], status["fingerprint"]) == (
        "authority", "auth1", v3ident, fingerprint)
    events = [json.loads(line) for line in container.logs(stderr=False).decode().splitlines()]
    assert any(e["event"] == "authority_started" for e in events)
