"""nodes.init: a plan becomes every node's config plus the authorities' keys, and nothing else."""

import json
import stat
from pathlib import Path

import pytest

from nodes.config import load_config
from nodes.init import PlanError, main, parse_plan, render_state
from nodes.net.node_keys import load_or_create_authority_keys, load_or_create_node_keys
from orchestrator.plan import make_plan
from orchestrator.topology import load_topology

DEFAULT = Path(__file__).resolve().parents[2] / "topologies" / "default.yaml"


def _plan(tmp_path) -> str:
    return make_plan(load_topology(DEFAULT), data_root=tmp_path).to_json()


def test_render_state_makes_keys_and_fills_every_config(tmp_path):
    configs = render_state(_plan(tmp_path), tmp_path)
    authorities = [c for c in configs.values() if c.role == "authority"]
    assert len(configs) == 11 and len(authorities) == 3
    for name, config in configs.items():
        assert load_config(tmp_path / name / "config.json") == config
        assert all(len(bytes.fromhex(a.v3ident)) == len(bytes.fromhex(a.fingerprint)) == 20
                   for a in config.authorities)
        assert len({a.v3ident for a in config.authorities} | {a.fingerprint for a in config.authorities}) == 6
    keys = tmp_path / "auth1" / "keys"
    for name in ("identity.key", "ntor.key", "rsa_identity.pem", "authority_identity.pem",
                 "authority_signing.pem"):
        assert stat.S_IMODE((keys / name).stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    # the fingerprints are those of the keys init made
    auth1 = configs["relay1"].authorities[0]
    assert auth1.v3ident == load_or_create_authority_keys(tmp_path / "auth1").v3ident
    assert auth1.fingerprint == load_or_create_node_keys(tmp_path / "auth1").fingerprint
    # only authorities get keys from init; relays and services make their own at first start
    assert not (tmp_path / "relay1" / "keys").exists()
    # the config files hold public fingerprints only
    config_text = (tmp_path / "auth1" / "config.json").read_text()
    assert "PRIVATE" not in config_text and (keys / "identity.key").read_bytes().hex() not in config_text


def test_a_second_run_keeps_the_identities(tmp_path):
    first = render_state(_plan(tmp_path), tmp_path)
    second = render_state(_plan(tmp_path), tmp_path)
    assert first == second


@pytest.mark.parametrize("text, message", [
    ("not json", "not JSON"),
    ('{"format": 2, "lab": "x", "nodes": []}', '"format": 1'),
    ('{"format": 1, "lab": "x", "nodes": []}', "non-empty list"),
])
def test_bad_plans_are_refused_with_the_reason(text, message):
    with pytest.raises(PlanError, match=message):
        parse_plan(text)


def test_a_plan_with_an_identity_filled_in_is_refused(tmp_path):
    data = json.loads(_plan(tmp_path))
    data["nodes"][3]["authorities"][0]["v3ident"] = "00" * 20
    with pytest.raises(PlanError, match="must be blank"):
        parse_plan(json.dumps(data))


def test_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PLAN", _plan(tmp_path / "state"))
    assert main(["--plan-env", "PLAN", "--out", str(tmp_path / "state")]) == 0
    assert "wrote 11 node configs" in capsys.readouterr().out
    assert main(["--plan-env", "NOT_SET", "--out", str(tmp_path)]) == 2
    assert "fatal: environment variable NOT_SET is not set" in capsys.readouterr().err


def test_per_node_settings_reach_the_node_configs(tmp_path):
    from orchestrator.topology import parse_topology

    topology = parse_topology("""
name: overrides
roles:
  relay: {bandwidth: 2000000}
nodes:
  - {name: auth, role: authority, count: 3}
  - {name: relay, role: relay, count: 3}
  - {name: slow, role: relay, bandwidth: 50000, descriptor_refresh: 5}
  - {name: hs, role: onion_service, intro_points: 2, guards: 2, services: [{port: 80, target: http}]}
""")
    configs = {c.name: c for c in make_plan(topology, data_root=tmp_path).nodes}
    assert (configs["relay1"].bandwidth, configs["relay1"].timing.descriptor_refresh) == (2_000_000, 30)
    assert (configs["slow"].bandwidth, configs["slow"].timing.descriptor_refresh) == (50_000, 5)
    assert (configs["hs"].intro_points, configs["hs"].guards) == (2, 2)
    assert configs["slow"].timing.voting_interval == configs["auth1"].timing.voting_interval


def test_a_300_node_plan_is_read_from_a_file(tmp_path, capsys):
    """The docker backend hands init the plan as a file: a 300-node plan is more than an environment variable
    may hold (128 KiB), and init takes it whole."""
    large = Path(__file__).resolve().parents[2] / "topologies" / "large.yaml"
    plan = make_plan(load_topology(large), data_root=tmp_path / "state").to_json()
    assert len(plan) > 128 * 1024
    (tmp_path / "plan.json").write_text(plan)
    assert main(["--plan", str(tmp_path / "plan.json"), "--out", str(tmp_path / "state")]) == 0
    assert "wrote 300 node configs" in capsys.readouterr().out
    assert load_config(tmp_path / "state" / "relay280" / "config.json").timing.voting_interval == 60
    assert main(["--plan", str(tmp_path / "missing.json"), "--out", str(tmp_path / "state")]) == 1
    assert "missing.json" in capsys.readouterr().err
