"""orchestrator.torrc: the torrc a stock tor needs to join a running lab."""

import pytest

from orchestrator.torrc import TorrcError, check_timing, torrc

AUTH = {"name": "auth-1", "address": "127.0.0.2", "or_port": 9001, "dir_port": 9030,
        "v3ident": "A" * 40, "fingerprint": "B" * 40}


def test_client_torrc_has_testing_network_dir_authorities_and_socks():
    text = torrc([AUTH, {**AUTH, "name": "auth2", "address": "127.0.0.3"}], socks_port="127.0.0.1:19050",
                 data_directory="/tmp/d")
    lines = text.splitlines()
    assert "TestingTorNetwork 1" in lines
    assert f"DirAuthority auth1 orport=9001 no-v2 v3ident={'A' * 40} 127.0.0.2:9030 {'B' * 40}" in lines
    assert sum(line.startswith("DirAuthority ") for line in lines) == 2
    assert "SocksPort 127.0.0.1:19050" in lines and "DataDirectory /tmp/d" in lines


def test_onion_service_torrc():
    text = torrc([AUTH], role="onion_service", service_dir="/tmp/hs", service_ports=[(80, "127.0.0.1:8000")])
    assert "HiddenServiceDir /tmp/hs" in text and "HiddenServicePort 80 127.0.0.1:8000" in text
    assert "SocksPort 0" in text


def test_an_authority_without_its_identities_yet_is_a_clear_error():
    with pytest.raises(TorrcError, match="auth-1 has not reported v3ident"):
        torrc([{**AUTH, "v3ident": None}])
    with pytest.raises(TorrcError, match="no authorities"):
        torrc([])
    with pytest.raises(TorrcError, match="role"):
        torrc([AUTH], role="relay")


def test_timing_below_tors_floor_is_refused():
    check_timing(10)
    with pytest.raises(TorrcError, match="voting_interval: 10"):
        check_timing(4)
