"""orchestrator/compose.py's Swarm stack export and `onionlab export stack`: the structure of the file (no
Docker here: tests/docker/test_swarm.py deploys it on a single-node swarm)."""

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from orchestrator import cli
from orchestrator.backends.swarm.material import make_material
from orchestrator.backends.swarm.stackfile import render_stack as backend_stack
from orchestrator.compose import (
    INIT_CAPS,
    NODE_UID,
    STACK_PLAN_TARGET,
    WAIT_CONFIG_SECONDS,
    ComposeError,
    export_stack,
    render_stack,
    stack_plan,
)
from orchestrator.plan import DATA_ROOT, Plan
from orchestrator.topology import load_topology, parse_topology

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "topologies" / "default.yaml"
MULTI = ROOT / "topologies" / "multi-network.yaml"
SOURCE = "topologies/default.yaml"

TWO_CLIENTS = """\
name: twoclients
networks:
  init-isolated: {subnet: 10.99.0.0/24}
nodes:
  - {name: auth, role: authority}
  - {name: init, role: relay}
  - {name: relay, role: relay, count: 2}
  - {name: hs, role: onion_service, services: [{port: 80, target: http}]}
  - {name: client-a, role: client}
  - {name: client-b, role: client}
"""


@pytest.fixture(scope="module")
def stack() -> dict:
    return yaml.safe_load(render_stack(load_topology(DEFAULT), SOURCE))


def node_services(stack: dict) -> dict[str, dict]:
    return {name: s for name, s in stack["services"].items() if s["labels"]["onionlab.role"] != "init"}


def test_header_says_generated_and_how_to_deploy():
    text = render_stack(load_topology(DEFAULT), SOURCE, "lab-stack.yml")
    lines = text.splitlines()
    assert lines[0].startswith(f"# Generated from {SOURCE} by `onionlab export stack`. Do not edit by hand")
    assert lines[1] == f"# then run: onionlab export stack {SOURCE} -o lab-stack.yml"
    assert "docker stack deploy -c lab-stack.yml NAME" in text
    assert "127.0.0.1 only" in text  # says that Swarm publishes on every host address
    assert text == render_stack(load_topology(DEFAULT), SOURCE, "lab-stack.yml")  # deterministic


def test_every_service_uses_dnsrr_and_a_restart_policy(stack):
    assert stack["version"] == "3.9"
    for name, service in stack["services"].items():
        deploy = service["deploy"]
        assert deploy["endpoint_mode"] == "dnsrr", name
        expected = "none" if name == "init" else "on-failure"
        assert deploy["restart_policy"]["condition"] == expected, name
        assert "depends_on" not in service and "restart" not in service  # Swarm ignores both
        assert deploy["labels"] == service["labels"]


def test_one_attachable_overlay_network_with_the_topology_subnet_and_no_static_ips(stack):
    topology = load_topology(DEFAULT)
    (network,) = topology.networks
    spec = stack["networks"][network.name]
    assert (spec["driver"], spec["attachable"]) == ("overlay", True)
    assert spec["ipam"]["config"] == [{"subnet": str(network.subnet)}]
    assert stack["networks"]["init-isolated"] == {"driver": "overlay", "internal": True,
                                                  "labels": stack["networks"]["init-isolated"]["labels"]}
    for name, service in node_services(stack).items():
        assert service["networks"] == {network.name: {"aliases": [f"{name}.{network.name}"]}}, name
        assert "healthcheck" not in service, name  # one network: the image's check asks its hostname
    assert stack["services"]["init"]["networks"] == ["init-isolated"]
    text = render_stack(topology, SOURCE)
    assert "ipv4_address" not in text and "network_mode" not in text
    for node in topology.nodes:  # no node's topology address appears anywhere (subnets only)
        assert not re.search(rf"\b{re.escape(str(node.address()))}\b", text), node.name


def test_every_node_waits_for_its_config_in_its_volume_as_the_node_user(stack):
    topology = load_topology(DEFAULT)
    services = node_services(stack)
    assert list(services) == [n.name for n in topology.nodes]
    for node in topology.nodes:
        service = services[node.name]
        data_dir = f"{DATA_ROOT}/{node.name}"
        assert service["hostname"] == node.name
        assert service["command"] == [node.role, "--config", f"{data_dir}/config.json",
                                      "--wait-config", str(WAIT_CONFIG_SECONDS)]
        assert service["volumes"] == [f"state-{node.name}:{data_dir}", {"type": "tmpfs", "target": "/tmp"}]
        assert service["user"] == str(NODE_UID)
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert "security_opt" not in service  # docker stack deploy ignores it (20.10)
    assert set(stack["volumes"]) == {f"state-{n.name}" for n in topology.nodes}


def test_only_clients_publish_socks_in_host_mode(stack):
    for name, service in node_services(stack).items():
        if name == "client":
            assert service["ports"] == [{"target": 9050, "published": "${ONIONLAB_CLIENT_SOCKS_PORT:-9050}",
                                         "protocol": "tcp", "mode": "host"}]
        else:
            assert "ports" not in service, name


def test_init_makes_keys_as_the_node_user_with_minimal_capabilities(stack):
    init = stack["services"]["init"]
    assert init["user"] == "0" and init["read_only"] is True
    assert init["cap_drop"] == ["ALL"] and init["cap_add"] == list(INIT_CAPS)
    assert init["healthcheck"] == {"disable": True}
    script = shlex.split(init["entrypoint"][2])
    assert f"--reuid={NODE_UID}" in script and "--clear-groups" in script
    assert script[-4:] == ["--plan", STACK_PLAN_TARGET, "--out", "/state"]


def test_the_plan_reaches_init_as_a_swarm_config_with_service_names_and_blank_identities(tmp_path):
    topology = load_topology(DEFAULT)
    target = tmp_path / "lab-stack.yml"
    stack = yaml.safe_load(export_stack(topology, SOURCE, target))
    assert "environment" not in stack["services"]["init"]  # no 128 KiB limit from an environment variable
    assert stack["services"]["init"]["configs"] == [{"source": "plan", "target": STACK_PLAN_TARGET,
                                                      "mode": 0o444}]
    assert stack["configs"]["plan"]["file"] == "./lab-stack.plan.json"
    plan = Plan.from_json((tmp_path / "lab-stack.plan.json").read_text())
    assert plan == stack_plan(topology)
    for config in plan.nodes:
        assert config.address == config.name  # a node's address is its hostname
        assert config.listen_address == "0.0.0.0" and config.address_map == {}
        assert all(ref.v3ident == ref.fingerprint == "" and ref.address == ref.name
                   for ref in config.authorities)
    assert plan.node("client").socks_address == "0.0.0.0"


def test_no_key_material_in_the_file():
    text = render_stack(load_topology(DEFAULT), SOURCE)
    assert "identity.key" not in text and "PRIVATE" not in text
    assert not re.search(r"\b[0-9a-fA-F]{40,}\b", text)  # no hex key or fingerprint


def test_a_multi_network_stack_has_an_overlay_per_network_and_the_backends_aliases(tmp_path):
    """Each topology network an attachable overlay with its subnet; every node service on exactly its own
    networks with the alias `<node>.<network>` on each, the same as the swarm backend's stack file."""
    topology = load_topology(MULTI)
    stack = yaml.safe_load(render_stack(topology, "topologies/multi-network.yaml"))
    for network in topology.networks:
        spec = stack["networks"][network.name]
        assert (spec["driver"], spec["attachable"]) == ("overlay", True)
        assert spec["ipam"]["config"] == [{"subnet": str(network.subnet)}]
    assert set(stack["networks"]) == {"north", "south", "init-isolated"}
    assert stack["services"]["init"]["networks"] == ["init-isolated"]
    services = node_services(stack)
    assert services["relay1"]["networks"] == {"north": {"aliases": ["relay1.north"]},
                                              "south": {"aliases": ["relay1.south"]}}
    assert services["hs"]["networks"] == {"south": {"aliases": ["hs.south"]}}
    assert services["client"]["networks"] == {"north": {"aliases": ["client.north"]}}
    material = make_material(stack_plan(topology), tmp_path, "secret")
    ports = {n.name: {"control_port": 20000 + n.index} for n in topology.nodes}
    backend = json.loads(backend_stack(topology, material, ports, {}))
    for node in topology.nodes:
        assert services[node.name]["networks"] == backend["services"][node.name]["networks"], node.name
        # Swarm's DNS answers for an alias once the task is healthy; the image's check asks that name
        assert services[node.name]["healthcheck"] == {"disable": True}, node.name


def test_a_multi_network_plan_names_nodes_by_network_and_dials_relays_by_name(tmp_path):
    topology = load_topology(MULTI)
    export_stack(topology, "topologies/multi-network.yaml", tmp_path / "lab-stack.yml")
    plan = Plan.from_json((tmp_path / "lab-stack.plan.json").read_text())
    assert plan == stack_plan(topology)  # the swarm backend's plan
    assert plan.node("relay1").address == "relay1.north"
    assert plan.node("hs").dial_names["relay1"] == "relay1.south"
    assert [a.address for a in plan.node("hs").authorities] == ["auth1.south", "auth2.south", "auth3.south"]
    assert all(n.address_map == {} for n in plan.nodes)


def test_relays_that_the_consensus_cannot_tell_apart_are_refused_with_several_networks():
    relays = "  - {name: relay, role: relay, count: 6}"
    text = MULTI.read_text().replace(relays, relays + "\n  - {name: relay-1, role: relay}")
    with pytest.raises(ComposeError, match=r"relays with the same nickname \(relay1\)"):
        render_stack(parse_topology(text, "clash.yaml"), "clash.yaml")


def test_inits_network_is_renamed_when_any_topology_network_takes_its_name():
    text = MULTI.read_text().replace("south", "init-isolated")
    stack = yaml.safe_load(render_stack(parse_topology(text, "taken.yaml"), "taken.yaml"))
    assert set(stack["networks"]) == {"north", "init-isolated", "init-isolated-"}
    assert stack["services"]["init"]["networks"] == ["init-isolated-"]


def test_init_and_its_network_renamed_when_taken_and_socks_ports_do_not_clash():
    stack = yaml.safe_load(render_stack(parse_topology(TWO_CLIENTS, "two.yaml"), "two.yaml"))
    assert stack["services"]["init_"]["labels"]["onionlab.role"] == "init"
    assert stack["services"]["init"]["labels"]["onionlab.role"] == "relay"
    assert set(stack["networks"]) == {"init-isolated", "init-isolated-"}
    assert stack["services"]["init_"]["networks"] == ["init-isolated-"]
    published = [s["ports"][0]["published"] for s in stack["services"].values() if "ports" in s]
    assert published == ["${ONIONLAB_CLIENT_A_SOCKS_PORT:-9050}", "${ONIONLAB_CLIENT_B_SOCKS_PORT:-9051}"]


def test_cli_export_stack(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert cli.main(["export", "stack"]) == 0
    assert capsys.readouterr().out == render_stack(load_topology(DEFAULT), SOURCE)
    target = (tmp_path / "stack.yml").resolve()
    assert cli.main(["export", "stack", str(DEFAULT), "-o", str(target)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert target.read_text() == render_stack(load_topology(DEFAULT), SOURCE, str(target))
    assert cli.main(["export", "stack", str(MULTI)]) == 0
    assert capsys.readouterr().out == render_stack(load_topology(MULTI), "topologies/multi-network.yaml")
    assert not list(tmp_path.glob(".*.tmp"))


def test_export_stack_writes_atomically(tmp_path):
    target = tmp_path / "stack.yml"
    target.write_text("old")
    assert export_stack(load_topology(DEFAULT), SOURCE, target) == target.read_text()
    with pytest.raises(ComposeError, match="cannot write"):
        export_stack(load_topology(DEFAULT), SOURCE, tmp_path / "no" / "dir" / "stack.yml")


def test_every_service_has_memory_and_pids_limits(stack):
    topology = load_topology(DEFAULT)
    for node in topology.nodes:
        limits = stack["services"][node.name]["deploy"]["resources"]["limits"]
        assert limits == {"memory": {"authority": "192M"}.get(node.role, "256M"), "pids": 128}
    assert stack["services"]["init"]["deploy"]["resources"]["limits"] == {"memory": "256M", "pids": 64}
    assert stack["version"] == "3.9"  # the first stack file version with a pids limit
