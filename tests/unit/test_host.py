"""orchestrator/host.py and `onionlab host check|tune`: what a lab in containers needs of the kernel's
neighbour table, against a fake /proc/sys."""

from __future__ import annotations

import pytest

from orchestrator import cli, host
from orchestrator.topology import parse_topology

LARGE = """\
name: big
networks: {onionnet: {subnet: 10.79.0.0/23}}
nodes:
  - {name: auth, role: authority, count: 5}
  - {name: relay, role: relay, count: 280}
  - {name: hs, role: onion_service, count: 10, services: [{port: 80, target: http}]}
  - {name: client, role: client, count: 5}
"""


@pytest.fixture
def sysctl(tmp_path, monkeypatch):
    neigh = tmp_path / "net/ipv4/neigh/default"
    neigh.mkdir(parents=True)
    (neigh / "gc_thresh3").write_text("1024\n")
    (neigh / "gc_thresh2").write_text("512\n")
    monkeypatch.setattr(host, "SYSCTL_ROOT", tmp_path)
    return neigh


def test_the_need_grows_with_authorities_times_relays():
    large = parse_topology(LARGE)
    # 2 x 5 authorities x (280 relays + 5 authorities) + 8 x 300 nodes
    assert host.neighbour_entries(large) == 2 * 5 * 285 + 8 * 300 == 5250
    assert host.neighbour_entries(parse_topology(LARGE.replace("count: 5}\n  - {name: relay", "count: 3}\n"
                                                                "  - {name: relay"))) < 5250


def test_check_tune_and_undo(sysctl):
    large = parse_topology(LARGE)
    lines, ok = host.check_lines(large)
    assert not ok
    assert lines[0] == "net.ipv4.neigh.default.gc_thresh3: have 1024, need 5250: TOO LOW: `onionlab host " \
                       "tune` raises it"
    assert "gc_thresh2: have 512, need 5250: low (advice" in lines[1]
    changes = host.tune(large)
    assert [(c.name, c.old, c.new) for c in changes] == [(host.HARD, 1024, 10500), (host.SOFT, 512, 5250)]
    assert (sysctl / "gc_thresh3").read_text() == "10500\n"
    assert host.undo_command(changes) == ("sudo sysctl -w net.ipv4.neigh.default.gc_thresh3=1024 "
                                          "net.ipv4.neigh.default.gc_thresh2=512")
    assert host.check_lines(large)[1] is True
    assert host.tune(large) == []  # nothing left to raise
    (sysctl / "gc_thresh3").write_text("50000\n")
    assert host.tune(large) == []  # never lowers a setting


def test_a_host_without_the_settings_is_not_refused(tmp_path):
    large = parse_topology(LARGE)
    assert host.refusal(large, tmp_path / "none") is None  # not Linux: nothing to judge
    assert "unknown" in host.check_lines(large, tmp_path / "none")[0][0]


def test_cli_host_check_and_tune(sysctl, capsys, tmp_path):
    topology = tmp_path / "big.yaml"
    topology.write_text(LARGE)
    assert cli.main(["host", "check", str(topology)]) == 1
    out = capsys.readouterr().out
    assert "about 5250 neighbour-table entries" in out and "TOO LOW" in out
    assert f"sudo onionlab host tune {topology}" in out
    assert cli.main(["host", "tune", str(topology)]) == 0
    out = capsys.readouterr().out
    assert "set net.ipv4.neigh.default.gc_thresh3 = 10500 (was 1024)" in out
    assert "undo: sudo sysctl -w net.ipv4.neigh.default.gc_thresh3=1024" in out
    assert cli.main(["host", "check", str(topology)]) == 0
    assert cli.main(["host", "tune", str(topology)]) == 0
    assert "nothing to change" in capsys.readouterr().out


def test_cli_host_tune_without_permission_exits_1(sysctl, capsys, tmp_path, monkeypatch):
    def refuse(path, text):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(host, "_write", refuse)
    topology = tmp_path / "big.yaml"
    topology.write_text(LARGE)
    assert cli.main(["host", "tune", str(topology)]) == 1
    assert "run it as root" in capsys.readouterr().err
