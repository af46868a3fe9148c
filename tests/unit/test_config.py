"""Node config files: round trip, and errors that name the file and the field."""

import pytest

from nodes.config import AuthorityRef, ConfigError, NodeConfig, ServicePort, load_config, parse_config


def _config(**overrides):
    base = dict(name="hs", role="onion_service", address="127.0.0.5", data_dir="/tmp/hs", control_port=9030,
                authorities=(AuthorityRef("auth1", "127.0.0.2", 7000, "ab" * 32),),
                services=(ServicePort(80, "http"), ServicePort(7, "echo")))
    return NodeConfig(**{**base, **overrides})


def test_round_trip(tmp_path):
    config = _config()
    path = tmp_path / "hs.json"
    path.write_text(config.to_json())
    assert load_config(path) == config


def test_links_come_from_the_node_address_unless_it_listens_everywhere():
    assert _config().source_address == "127.0.0.5"  # the local backend: not the kernel's 127.0.0.1
    assert _config(listen_address="0.0.0.0").source_address is None  # a container: the kernel picks


@pytest.mark.parametrize("text, message", [
    ("{", "x.json:1:2: not JSON"),
    ("[]", "expected a JSON object"),
    ('{"name": "a"}', "missing"),
    ('{"name": "a", "role": "relay", "address": "x", "data_dir": "d", "control_port": 1, "authorities": [],'
     ' "colour": "red"}', "unknown field(s) ['colour']"),
    ('{"name": "a", "role": "exit", "address": "x", "data_dir": "d", "control_port": 1, "authorities": []}',
     "role: expected one of"),
    ('{"name": "a", "role": "relay", "address": "x", "data_dir": "d", "control_port": 1,'
     ' "authorities": [{"name": "a"}]}', "authorities[0]"),
])
def test_errors_name_file_and_field(text, message):
    with pytest.raises(ConfigError, match=None) as info:
        parse_config(text, "x.json")
    assert message in str(info.value)
    assert str(info.value).startswith("x.json")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.json")
