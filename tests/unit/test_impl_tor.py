"""`impl: tor` from the topology to the command that starts the node: the node config, its torrc, the plan,
both backends' commands and labels, the compose and stack exports, the graph. No Docker, no tor here
(tests/net/test_tor_node.py runs tor, tests/docker/test_tor_node.py the image)."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from nodes.config import AuthorityRef, ConfigError, NodeConfig, command_word, parse_config
from nodes.torrc import TorrcError, node_paths, node_torrc
from orchestrator.backends import RunInfo, RunNode
from orchestrator.backends import docker as docker_backend
from orchestrator.backends.local import LocalBackend
from orchestrator.compose import render_compose, render_stack
from orchestrator.graph import render_graph
from orchestrator.plan import make_plan
from orchestrator.topology import load_topology

ROOT = Path(__file__).resolve().parents[2]
TOR_CLIENT = ROOT / "topologies" / "tor-client.yaml"
AUTH = AuthorityRef("auth1", "10.78.0.2", 9030, 9001, "A" * 40, "B" * 40)


def tor_config(**overrides) -> NodeConfig:
    base = dict(name="torclient", role="client", impl="tor", address="10.78.0.13",
                data_dir="/var/lib/onionlab/torclient", control_port=9052, socks_port=9050,
                socks_address="0.0.0.0", guards=1, authorities=(AUTH,))
    return NodeConfig(**{**base, **overrides})


# -- the node config ------------------------------------------------------------------------------------


def test_config_round_trips_impl_and_names_its_command():
    config = tor_config()
    assert parse_config(config.to_json()) == config and config.command == "tor"
    assert parse_config(tor_config(impl="onionlab").to_json()).command == "client"
    assert command_word("relay", "onionlab") == "relay" and command_word("client", "tor") == "tor"
    old = json.loads(config.to_json())
    del old["impl"]  # a config written before impl existed is an onionlab node
    assert parse_config(json.dumps(old)).impl == "onionlab"


@pytest.mark.parametrize("impl, role, message", [
    ("arti", "client", "impl: expected one of ('onionlab', 'tor'), got 'arti'"),
    ("tor", "authority", "impl: tor cannot run role authority (only relay, onion_service, client)"),
])
def test_config_refuses_what_no_impl_can_play(impl, role, message):
    with pytest.raises(ConfigError) as refused:
        parse_config(tor_config(impl=impl, role=role).to_json(), "x.json")
    assert str(refused.value) == f"x.json: {message}"


# -- its torrc ------------------------------------------------------------------------------------------


def test_node_torrc():
    lines = node_torrc(tor_config()).splitlines()
    assert lines[0] == "# written by `python -m nodes tor` for torclient"
    assert lines[1:] == [
        "TestingTorNetwork 1",
        f"DirAuthority auth1 orport=9001 no-v2 v3ident={'A' * 40} 10.78.0.2:9030 {'B' * 40}",
        "DataDirectory /var/lib/onionlab/torclient/tor",
        "SocksPort 0.0.0.0:9050 ExtendedErrors",
        "ClientUseIPv6 0",
        "ProtocolWarnings 1",
        "NumEntryGuards 1",
        "DisableNetwork 1",  # until the lab has a consensus: the node lifts it through the control port
        "ControlPort 127.0.0.1:auto",
        "CookieAuthentication 1",
        "ControlPortWriteToFile /var/lib/onionlab/torclient/tor/control-port",
        "Log notice stdout",
    ]
    assert "SocksPort 10.78.0.13:9050 ExtendedErrors" in node_torrc(tor_config(socks_address=""))
    assert node_paths(tor_config())["cookie"] == "/var/lib/onionlab/torclient/tor/control_auth_cookie"


def test_relay_node_torrc_listens_and_advertises_its_address_and_caches_no_directory():
    lines = node_torrc(tor_config(name="tor-relay-1", role="relay", or_port=9001)).splitlines()
    assert "SocksPort 0" in lines and not any(line.startswith("HiddenService") for line in lines)
    assert lines[-8:] == ["Nickname torrelay1", "Address 10.78.0.13", "ORPort 10.78.0.13:9001", "DirCache 0",
                          "ExitRelay 0", "ExitPolicy reject *:*", "AssumeReachable 1",
                          "ContactInfo onionlab lab relay"]


def test_onion_service_node_torrc_points_tor_at_the_targets_the_node_serves():
    config = tor_config(name="torhs", role="onion_service", intro_points=2,
                        data_dir="/var/lib/onionlab/torhs")
    lines = node_torrc(config, [(80, "127.0.0.1:40001"), (7, "127.0.0.1:40002")]).splitlines()
    assert "SocksPort 0" in lines
    assert lines[-4:] == ["HiddenServiceDir /var/lib/onionlab/torhs/tor/hs",
                          "HiddenServicePort 80 127.0.0.1:40001", "HiddenServicePort 7 127.0.0.1:40002",
                          "HiddenServiceNumIntroductionPoints 2"]
    assert node_paths(config)["hostname"] == "/var/lib/onionlab/torhs/tor/hs/hostname"


def test_node_torrc_needs_the_authorities_identities():
    with pytest.raises(TorrcError, match="auth1 has not reported v3ident, fingerprint"):
        node_torrc(tor_config(authorities=(AuthorityRef("auth1", "10.78.0.2", 9030, 9001),)))


# -- plan, backends, exports ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def topology():
    return load_topology(TOR_CLIENT)


def test_the_plan_carries_impl_to_the_node_config(topology):
    plan = make_plan(topology, socks_address="0.0.0.0")
    assert {c.name: c.impl for c in plan.nodes if c.impl != "onionlab"} == {"torclient": "tor"}
    tor = plan.node("torclient")
    assert (tor.role, tor.command, tor.socks_address, tor.socks_port) == ("client", "tor", "0.0.0.0", 9050)
    assert [a.name for a in tor.authorities] == ["auth1", "auth2", "auth3"]
    assert type(plan).from_json(plan.to_json()) == plan


def test_compose_and_stack_start_tor_nodes_with_tor(topology):
    compose = yaml.safe_load(render_compose(topology, "topologies/tor-client.yaml"))["services"]
    stack = yaml.safe_load(render_stack(topology, "topologies/tor-client.yaml"))["services"]
    for services in (compose, stack):
        config = "/var/lib/onionlab/torclient/config.json"
        assert services["torclient"]["command"][:3] == ["tor", "--config", config]
        assert services["client"]["command"][0] == "client"
        assert services["torclient"]["labels"]["onionlab.role"] == "client"
        assert services["torclient"]["ports"]  # its SOCKS port is published like any client's


def test_graph_says_who_plays_a_node(topology):
    assert "torclient<br/>client (tor)" in render_graph(topology, "mermaid")
    assert '"torclient\\nclient (tor)"' in render_graph(topology, "dot")


class _FakeEngine:
    """Just enough of docker-py for DockerBackend._create_node: records what it was asked to create."""

    def __init__(self) -> None:
        self.created: list[dict] = []
        self.api = SimpleNamespace(create_endpoint_config=lambda **kw: kw)
        self.containers = SimpleNamespace(create=self._create)

    def _create(self, image, command, **kwargs):
        self.created.append({"image": image, "command": command, **kwargs})
        return SimpleNamespace(name=kwargs["name"])


def test_docker_backend_runs_the_same_image_with_the_tor_command_and_labels(topology, tmp_path):
    backend = docker_backend.DockerBackend(tmp_path)
    backend._client = _FakeEngine()
    info = backend._plan(topology, "abcd1234")
    node = info.node("torclient")
    assert (node.impl, node.command) == ("tor", "tor")
    backend._create_node(topology.node("torclient"), node, info, {"onionlab.run": "abcd1234"}, direct=True)
    (created,) = backend._client.created
    assert created["image"] == "onionlab/node:latest"
    assert created["command"] == ["tor", "--config", "/var/lib/onionlab/torclient/config.json"]
    assert created["labels"] == {"onionlab.run": "abcd1234", "onionlab.node": "torclient",
                                 "onionlab.role": "client", "onionlab.impl": "tor"}
    assert created["ports"] == {"9050/tcp": ("127.0.0.1", None)}
    assert created["read_only"] and created["cap_drop"] == ["ALL"] and created["user"] == "10001:10001"


def test_local_backend_runs_python_m_nodes_tor(topology, tmp_path, monkeypatch):
    started = []

    class FakePopen:
        def __init__(self, argv, **kwargs):
            started.append(argv)
            self.pid = 4242 + len(started)

    monkeypatch.setattr("orchestrator.backends.local.subprocess.Popen", FakePopen)
    backend = LocalBackend(tmp_path)
    info = backend._plan(topology)
    for node in info.nodes:
        (tmp_path / "nodes" / node.name).mkdir(parents=True)
    backend._start(info, [info.node("client"), info.node("torclient")])
    assert [argv[3:5] for argv in started] == [["client", "--config"], ["tor", "--config"]]
    assert info.node("torclient").impl == "tor"


def test_state_files_from_before_impl_still_load():
    old = {"name": "c", "role": "client", "address": "127.0.0.2", "ports": {"control_port": 9052}}
    node = RunInfo.from_dict({"backend": "local", "run_dir": "/x", "topology": "t", "lab": "l",
                              "nodes": [old]}).nodes[0]
    assert node == RunNode(**old) and node.command == "client"
