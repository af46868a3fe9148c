"""orchestrator/compose.py and `onionlab export compose`: the checked-in docker-compose.yml is the export of
topologies/default.yaml, and the structure of what is exported (no Docker here: tests/docker/test_compose.py
runs the file)."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

from orchestrator import cli
from orchestrator.compose import (
    INIT_CAPS,
    NODE_UID,
    PLAN_VARIABLE,
    ComposeError,
    _q,
    display_source,
    export_compose,
    render_compose,
    socks_host_ports,
)
from orchestrator.plan import DATA_ROOT, Plan, make_plan
from orchestrator.topology import load_topology, parse_topology

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "topologies" / "default.yaml"
MULTI = ROOT / "topologies" / "multi-network.yaml"
CHECKED_IN = ROOT / "docker-compose.yml"
SOURCE = "topologies/default.yaml"

TWO_CLIENTS = """\
name: twoclients
nodes:
  - {name: auth, role: authority}
  - {name: init, role: relay}
  - {name: relay, role: relay, count: 2}
  - {name: hs, role: onion_service, services: [{port: 80, target: http}]}
  - {name: client-a, role: client}
  - {name: client-b, role: client}
"""


def compose_of(path: Path, source: str = SOURCE) -> dict:
    return yaml.safe_load(render_compose(load_topology(path), source))


@pytest.fixture(scope="module")
def default() -> dict:
    return compose_of(DEFAULT)


def node_services(compose: dict) -> dict[str, dict]:
    return {name: s for name, s in compose["services"].items() if s["labels"]["onionlab.role"] != "init"}


# --------------------------------------------------------------------------------------- the checked-in file


def test_checked_in_compose_file_is_the_export_of_the_default_topology():
    expected = render_compose(load_topology(DEFAULT), SOURCE)
    assert CHECKED_IN.read_text() == expected, (
        "docker-compose.yml has drifted from topologies/default.yaml; regenerate it with\n"
        "  .venv/bin/onionlab export compose topologies/default.yaml -o docker-compose.yml")


def test_header_says_generated_and_not_to_edit():
    first = CHECKED_IN.read_text().splitlines()[:2]
    assert first[0].startswith(f"# Generated from {SOURCE} by `onionlab export compose`")
    assert "Do not edit by hand" in first[0]
    assert first[1] == f"# then run: onionlab export compose {SOURCE} -o docker-compose.yml"


def test_export_is_deterministic():
    assert render_compose(load_topology(DEFAULT), SOURCE) == render_compose(load_topology(DEFAULT), SOURCE)


# ------------------------------------------------------------------------------------------------ structure


def test_networks_have_the_topology_subnets(default):
    for path in (DEFAULT, MULTI):
        topology = load_topology(path)
        networks = compose_of(path)["networks"]
        assert list(networks) == [n.name for n in topology.networks]
        for network in topology.networks:
            spec = networks[network.name]
            assert spec["driver"] == "bridge"
            ipam = [{"subnet": str(network.subnet), "gateway": str(network.gateway)}]
            assert spec["ipam"]["config"] == ipam
            assert spec["labels"]["onionlab.network"] == network.name


def test_every_node_is_a_service_with_its_volume_address_and_command():
    for path in (DEFAULT, MULTI):
        topology = load_topology(path)
        compose = compose_of(path)
        services = node_services(compose)
        assert list(services) == [n.name for n in topology.nodes]
        for node in topology.nodes:
            service = services[node.name]
            data_dir = f"{DATA_ROOT}/{node.name}"
            assert service["image"] == node.image
            assert service["command"] == [node.role, "--config", f"{data_dir}/config.json"]
            assert service["depends_on"] == {"init": {"condition": "service_completed_successfully"}}
            assert service["volumes"] == [f"state-{node.name}:{data_dir}"]  # its own volume, nobody else's
            addresses = {i.network: {"ipv4_address": str(i.address)} for i in node.interfaces}
            assert service["networks"] == addresses
            assert "user" not in service  # the image's user 10001
            assert (service["cap_drop"], service["security_opt"]) == (["ALL"], ["no-new-privileges:true"])
            assert "cap_add" not in service and "privileged" not in service
            assert service["read_only"] is True
            assert service["labels"] == {"onionlab.lab": topology.name, "onionlab.topology": SOURCE,
                                         "onionlab.node": node.name, "onionlab.role": node.role}
        assert set(compose["volumes"]) == {f"state-{n.name}" for n in topology.nodes}


def test_every_object_is_labelled_and_none_claims_a_run(default):
    objects = [*default["networks"].values(), *default["volumes"].values(), *default["services"].values()]
    for obj in objects:
        assert obj["labels"]["onionlab.lab"] == "default"
        assert obj["labels"]["onionlab.topology"] == SOURCE
        assert "onionlab.run" not in obj["labels"]  # `onionlab reap` removes runs; a compose lab is no run


def test_only_clients_publish_ports_and_only_on_loopback(default):
    published = {name: s["ports"] for name, s in default["services"].items() if "ports" in s}
    assert published == {"client": ["127.0.0.1:${ONIONLAB_CLIENT_SOCKS_PORT:-9050}:9050"]}
    for ports in published.values():
        assert all(port.startswith("127.0.0.1:") for port in ports)
    assert "expose" not in str(default)


def test_init_service_makes_keys_as_the_node_user_with_minimal_privileges(default):
    init = default["services"]["init"]
    topology = load_topology(DEFAULT)
    assert init["user"] == "0"  # fresh named volumes are root-owned: init must chown them first
    assert (init["cap_drop"], init["cap_add"]) == (["ALL"], list(INIT_CAPS))
    assert init["security_opt"] == ["no-new-privileges:true"]
    assert (init["network_mode"], init["restart"], init["read_only"]) == ("none", "no", True)
    assert init["volumes"] == [f"state-{n.name}:/state/{n.name}" for n in topology.nodes]
    shell, flag, script = init["entrypoint"]
    assert (shell, flag) == ("sh", "-c")
    chown, run = script.split(" && ")
    mounts = [f"/state/{n.name}" for n in topology.nodes]
    assert shlex.split(chown) == ["chown", f"{NODE_UID}:{NODE_UID}", *mounts]
    assert shlex.split(run) == ["exec", "setpriv", f"--reuid={NODE_UID}", f"--regid={NODE_UID}",
                                "--clear-groups", "python3", "-m", "nodes.init", "--plan-env", PLAN_VARIABLE,
                                "--out", "/state"]
    assert init["labels"]["onionlab.role"] == "init"


def test_init_gets_the_run_plan_with_blank_identities(default):
    topology = load_topology(DEFAULT)
    plan = Plan.from_json(default["services"]["init"]["environment"][PLAN_VARIABLE])
    assert plan == make_plan(topology, socks_address="0.0.0.0")
    assert all(ref.v3ident == ref.fingerprint == "" for node in plan.nodes for ref in node.authorities)
    assert [n.data_dir for n in plan.nodes] == [f"{DATA_ROOT}/{n.name}" for n in topology.nodes]
    client = plan.node("client")
    assert (client.socks_address, client.socks_port) == ("0.0.0.0", 9050)


def test_no_key_material_in_the_file():
    text = CHECKED_IN.read_text()
    assert not re.search(r"[0-9a-fA-F]{32,}", text)  # no hex key (fingerprints are 40 hex digits)
    assert not re.search(r"[A-Za-z0-9+/]{40,}={0,2}", text)  # no base64 blob
    assert "PRIVATE KEY" not in text and '"v3ident": ""' in text and '"fingerprint": ""' in text


def test_dollar_signs_are_escaped_from_compose_interpolation():
    assert _q("a$b") == '"a$$b"'
    assert _q("${X:-1}", interpolate=True) == '"${X:-1}"'
    assert _q(9050) == "9050"
    with pytest.raises(TypeError):
        _q(True)


def test_init_service_renamed_when_a_node_is_called_init_and_socks_ports_do_not_clash():
    topology = parse_topology(TWO_CLIENTS)
    compose = yaml.safe_load(render_compose(topology, "lab.yaml"))
    services = compose["services"]
    assert services["init_"]["labels"]["onionlab.role"] == "init"
    assert services["init"]["labels"]["onionlab.role"] == "relay"
    for name in ("auth", "init", "relay1", "hs", "client-a"):
        assert services[name]["depends_on"] == {"init_": {"condition": "service_completed_successfully"}}
    assert socks_host_ports(topology) == {"client-a": 9050, "client-b": 9051}
    assert services["client-a"]["ports"] == ["127.0.0.1:${ONIONLAB_CLIENT_A_SOCKS_PORT:-9050}:9050"]
    assert services["client-b"]["ports"] == ["127.0.0.1:${ONIONLAB_CLIENT_B_SOCKS_PORT:-9051}:9050"]


def test_multi_homed_nodes_get_an_address_on_each_network():
    compose = compose_of(MULTI)
    assert compose["services"]["relay1"]["networks"] == {"north": {"ipv4_address": "10.78.1.5"},
                                                         "south": {"ipv4_address": "10.78.2.5"}}
    assert compose["services"]["hs"]["networks"] == {"south": {"ipv4_address": "10.78.2.11"}}


def test_header_names_cannot_break_the_file():
    with pytest.raises(ComposeError):
        render_compose(load_topology(DEFAULT), "a\nb")


def test_display_source(tmp_path):
    assert display_source(tmp_path / "x" / "lab.yaml", tmp_path) == "x/lab.yaml"
    assert display_source(Path("/elsewhere/lab.yaml"), tmp_path) == "/elsewhere/lab.yaml"


# ------------------------------------------------------------------------------------------------------ CLI


def test_cli_export_to_stdout_and_to_a_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert cli.main(["export", "compose"]) == 0
    assert capsys.readouterr().out == CHECKED_IN.read_text()
    target = (tmp_path / "lab.yml").resolve()
    assert cli.main(["export", "compose", str(MULTI), "-o", str(target)]) == 0
    assert "wrote" in capsys.readouterr().out
    text = target.read_text()
    assert text == render_compose(load_topology(MULTI), "topologies/multi-network.yaml", str(target))
    assert text.splitlines()[1] == ("# then run: onionlab export compose topologies/multi-network.yaml "
                                    f"-o {target}")


def test_cli_export_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: lab\nnodes: []\n")
    assert cli.main(["export", "compose", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err
    assert cli.main(["export", "compose", str(DEFAULT), "-o", str(tmp_path / "no" / "such" / "dir.yml")]) == 1
    assert "cannot write" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["export"])
    assert exit_.value.code == 2


def test_export_compose_writes_atomically(tmp_path):
    target = tmp_path / "docker-compose.yml"
    target.write_text("old")
    text = export_compose(load_topology(DEFAULT), SOURCE, target)
    assert target.read_text() == text and [p.name for p in tmp_path.iterdir()] == ["docker-compose.yml"]


def test_every_service_has_memory_and_pids_limits(default):
    topology = load_topology(DEFAULT)
    for node in topology.nodes:
        service = default["services"][node.name]
        memory = {"authority": "192m"}.get(node.role, "256m")
        assert (service["mem_limit"], service["memswap_limit"], service["pids_limit"]) == \
            (memory, memory, 128)
    init = default["services"]["init"]
    assert (init["mem_limit"], init["memswap_limit"], init["pids_limit"]) == ("256m", "256m", 64)
    custom = yaml.safe_load(render_compose(parse_topology(TWO_CLIENTS.replace(
        "{name: client-a, role: client}", "{name: client-a, role: client, memory: 1g, pids: 300}")), SOURCE))
    assert (custom["services"]["client-a"]["mem_limit"], custom["services"]["client-a"]["pids_limit"]) == \
        ("1g", 300)
