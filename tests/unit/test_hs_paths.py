"""nodes.net.hs_paths: the relay that link specifiers name, from the consensus or from the specifiers."""

import os
from types import SimpleNamespace

from nodes.core.netview import Relay
from nodes.core.relay import LinkSpecEd25519, LinkSpecIPv4, LinkSpecRsaId
from nodes.net.circuits import hop_spec
from nodes.net.hs_paths import relay_for

FLAGS = frozenset({"Running", "Valid", "Guard", "HSDir", "Fast", "Stable"})


def _relay(nickname: str) -> Relay:
    return Relay(nickname, os.urandom(20), os.urandom(32), os.urandom(32), "10.0.0.7", 9001, 0, 1000, FLAGS,
                 "")


def test_a_listed_relay_comes_from_the_consensus():
    listed = _relay("relay1")
    consensus = SimpleNamespace(routers=[_relay("relay0"), listed])
    assert relay_for(consensus, hop_spec(listed).link_specs(), listed.ntor_onion_key) is listed


def test_an_unlisted_relay_is_made_from_its_link_specifiers():
    newcomer = _relay("relay9")  # in the other end's consensus, not yet in ours
    made = relay_for(SimpleNamespace(routers=[_relay("relay0")]), hop_spec(newcomer).link_specs(),
                     newcomer.ntor_onion_key)
    assert (made.identity, made.ntor_onion_key, made.address, made.or_port) == (
        newcomer.identity, newcomer.ntor_onion_key, "10.0.0.7", 9001)
    assert made.nickname == "unlisted" and not made.flags


def test_a_new_onion_key_wins_over_the_consensus():
    listed = _relay("relay1")
    fresh_key = os.urandom(32)
    made = relay_for(SimpleNamespace(routers=[listed]), hop_spec(listed).link_specs(), fresh_key)
    assert made.ntor_onion_key == fresh_key and made.nickname == "relay1"


def test_specifiers_without_an_address_or_node_id_name_nothing():
    """ntor needs the node ID (legacy identity), a link an address; the Ed25519 identity is optional."""
    relay = _relay("relay1")
    consensus = SimpleNamespace(routers=[])
    no_node_id = [LinkSpecEd25519(relay.identity), LinkSpecIPv4("10.0.0.1", 1)]
    assert relay_for(consensus, no_node_id, relay.ntor_onion_key) is None
    assert relay_for(consensus, [LinkSpecRsaId(relay.node_id)], relay.ntor_onion_key) is None
    legacy_only = relay_for(consensus, [LinkSpecRsaId(relay.node_id), LinkSpecIPv4("10.0.0.1", 1)],
                            relay.ntor_onion_key)
    assert (legacy_only.node_id, legacy_only.identity, legacy_only.or_port) == (relay.node_id, None, 1)
