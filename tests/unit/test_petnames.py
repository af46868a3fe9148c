"""Petnames: names and tables (nodes/core/petnames.py), the client's table that follows its file
(nodes/net/petnames.py), `petnames:` in a topology (every problem with its position), the plan, and the
files nodes.init writes (the onion service's key made up front, the client's table naming its address)."""

from __future__ import annotations

import io
import json
import os

import pytest

from nodes.config import load_config
from nodes.core.ed25519 import Signer
from nodes.core.errors import DecodeError
from nodes.core.onion_address import encode_onion_address
from nodes.core.petnames import name_problem, onion_problem, parse_table
from nodes.core.socks5 import Atyp, ConnectRequest, ReplyCode
from nodes.init import PlanError, parse_plan, render_state
from nodes.net.events import EventLog
from nodes.net.metrics import Metrics
from nodes.net.node_keys import HS_IDENTITY_KEY, KEYS_DIR, load_or_create_seed
from nodes.net.petnames import PetnameTable, UnknownPetname
from nodes.net.socks import is_onion, reply_code
from orchestrator.plan import Plan, make_plan
from orchestrator.topology import TopologyError, parse_topology

ONION = encode_onion_address(Signer.from_seed(bytes(range(32))).public_key) + ".onion"
LAB = """\
name: lab
nodes:
  - {name: auth, role: authority, count: 3}
  - {name: relay, role: relay, count: 3}
  - name: hs
    role: onion_service
    services: [{port: 80, target: http}]
  - {name: client, role: client}
"""


def problems(petnames: str) -> list[str]:
    with pytest.raises(TopologyError) as info:
        parse_topology(LAB + petnames, "lab.yaml")
    return [str(p) for p in info.value.problems]


# -- names and tables ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["shop", "my-shop", "docs.shop", "a", "x1"])
def test_good_names(name):
    assert name_problem(name) is None


@pytest.mark.parametrize(("name", "why"), [("Shop", "lowercase DNS labels"), ("shop.pet", "without .pet"),
                                           ("-shop", "lowercase DNS labels"), ("shop..x", "lowercase DNS"),
                                           ("x.onion", "cannot end in .onion"), ("", "lowercase DNS")])
def test_bad_names(name, why):
    assert why in name_problem(name)


def test_onion_addresses():
    assert onion_problem(ONION) is None
    assert "ending in .onion" in onion_problem(ONION[:-6])
    broken = ("b" if ONION[0] != "b" else "c") + ONION[1:]
    assert "not a valid v3 onion address" in onion_problem(broken)


def test_tables():
    assert parse_table(json.dumps({"shop": ONION.upper()[:-6] + ".onion"})) == {"shop": ONION}
    with pytest.raises(DecodeError, match="not JSON"):
        parse_table("{")
    with pytest.raises(DecodeError, match="expected a JSON object"):
        parse_table("[]")
    with pytest.raises(DecodeError) as both:
        parse_table(json.dumps({"Bad": ONION, "ok": "nope.onion", "n": 3}))
    assert all(what in str(both.value) for what in ("'Bad'", "'nope.onion'", "'n': expected an onion"))


# -- the client's table --------------------------------------------------------------------------------------


class Events(EventLog):
    def __init__(self) -> None:
        super().__init__("client", "client", out=io.StringIO())

    def names(self) -> list[str]:
        return [json.loads(line)["event"] for line in self._out.getvalue().splitlines()]


def test_the_table_follows_its_file(tmp_path):
    path = tmp_path / "petnames.json"
    metrics, events = Metrics(), Events()
    table = PetnameTable(path, metrics, events)  # no file yet: an empty table
    with pytest.raises(UnknownPetname) as unknown:
        table.resolve("shop.pet")
    assert reply_code(unknown.value) == ReplyCode.HOST_UNREACHABLE == 0x04
    assert metrics.value("petname_lookups_total", result="unknown") == 1
    path.write_text(json.dumps({"shop": ONION}))
    assert table.resolve("Shop.PET") == ONION  # read again: it changed
    assert metrics.value("petname_lookups_total", result="resolved") == 1
    path.write_text('{"shop": "garbage"}')  # refused whole: the table it had stays, and it is counted
    assert table.resolve("shop.pet") == ONION
    assert metrics.value("errors_total", kind="petnames_file") == 1
    path.write_text(json.dumps({"store": ONION}))
    os.utime(path, ns=(1, 1))  # an edit the clock cannot tell apart: the size still changed
    assert table.resolve("store.pet") == ONION
    with pytest.raises(UnknownPetname, match="names: store"):
        table.resolve("shop.pet")
    path.unlink()
    with pytest.raises(UnknownPetname):
        table.resolve("store.pet")
    assert events.names() == ["petname_unknown", "petnames_loaded", "petname_resolved", "petnames_rejected",
                              "petname_resolved", "petnames_loaded", "petname_resolved", "petname_unknown",
                              "petnames_loaded", "petname_unknown"]


def test_socks_lets_petnames_through_to_the_client():
    assert is_onion(ConnectRequest("shop.pet", 80, Atyp.DOMAINNAME))
    assert not is_onion(ConnectRequest("shop.example", 80, Atyp.DOMAINNAME))


# -- the topology --------------------------------------------------------------------------------------------


def test_topology_petnames():
    topology = parse_topology(LAB + f"petnames:\n  shop: hs\n  far.away: {ONION}\n", "lab.yaml")
    assert dict(topology.petnames) == {"shop": "hs", "far.away": ONION}
    assert parse_topology(json.dumps(topology.to_dict())) == topology
    assert dict(parse_topology(LAB).petnames) == {}


def test_topology_petname_problems_have_positions():
    assert problems("petnames:\n  shop: relay1\n  Bad: hs\n  web: hss\n  ok.pet: hs\n  raw: abc.onion\n"
                    "  num: 3\n") == [
        "lab.yaml:10:9: petnames.shop: node relay1 is a relay, not an onion_service (onion services: hs)",
        "lab.yaml:11:3: petnames.Bad: 'Bad': expected lowercase DNS labels (letters, digits, -) separated by "
        "dots",
        "lab.yaml:12:8: petnames.web: no node named 'hss' (did you mean 'hs'?); or give a full v3 onion "
        "address",
        "lab.yaml:13:3: petnames.ok.pet: 'ok.pet': write the name without .pet (it is added: 'ok' is reached "
        "as ok.pet)",
        "lab.yaml:14:8: petnames.raw: 'abc.onion': not a valid v3 onion address: " +
        onion_problem("abc.onion").split("address: ", 1)[1],
        "lab.yaml:15:8: petnames.num: expected an onion service node's name or a v3 onion address"]
    assert problems("petnames: [shop]\n") == ["lab.yaml:9:11: petnames: expected a mapping, got a list"]


# -- the plan and nodes.init ---------------------------------------------------------------------------------


def test_plan_and_init_write_each_clients_table(tmp_path):
    topology = parse_topology(LAB + f"petnames:\n  shop: hs\n  far: {ONION}\n", "lab.yaml")
    plan = make_plan(topology, addresses={n.name: f"127.0.0.{i + 2}" for i, n in enumerate(topology.nodes)},
                     data_root=tmp_path)
    assert Plan.from_json(plan.to_json()) == plan and plan.petnames == {"shop": "hs", "far": ONION}
    assert plan.node("client").petnames_file == str(tmp_path / "client" / "petnames.json")
    assert plan.node("hs").petnames_file == ""
    configs = render_state(plan.to_json(), tmp_path)
    table = json.loads((tmp_path / "client" / "petnames.json").read_text())
    seed = load_or_create_seed(tmp_path / "hs" / KEYS_DIR / HS_IDENTITY_KEY)  # the file the service loads
    assert table == {"far": ONION, "shop": encode_onion_address(Signer.from_seed(seed).public_key) + ".onion"}
    assert load_config(tmp_path / "client" / "config.json") == configs["client"]
    assert render_state(plan.to_json(), tmp_path)  # a second run keeps the service's key, so its address
    assert json.loads((tmp_path / "client" / "petnames.json").read_text()) == table


@pytest.mark.parametrize(("petnames", "message"), [
    ({"shop": "relay1"}, "petnames: shop: 'relay1': expected a v3 onion address"),
    ({"Shop": "hs"}, "petnames: Shop: 'Shop': expected lowercase"),
    ([1], "petnames: expected an object")])
def test_plans_with_bad_petnames_are_refused(tmp_path, petnames, message):
    topology = parse_topology(LAB, "lab.yaml")
    data = json.loads(make_plan(topology).to_json())
    with pytest.raises(PlanError, match=message):
        parse_plan(json.dumps({**data, "petnames": petnames}))
