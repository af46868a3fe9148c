"""Dialling a relay by name where the consensus lists it at an address we do not reach
(nodes/net/dial_names.py: a Swarm run with several overlay networks). The relay listens on 127.0.0.1 only;
the consensus lists it at 127.0.0.2, where nothing listens, and its name (`localhost`) resolves to where it
does."""

from __future__ import annotations

from dataclasses import replace

import pytest
import trio

from nodes.net.channels import ChannelError
from nodes.net.dial_names import DialNames
from tests.net.helpers import HOST, start_client, start_relay

TIMEOUT = 10.0
ELSEWHERE = "127.0.0.2"  # the relay's address as the consensus lists it: nothing listens there


async def test_the_client_dials_a_relay_it_reaches_by_name_at_what_the_name_resolves_to():
    async with trio.open_nursery() as nursery:
        relay = await start_relay(nursery, "relay1")
        other = await start_relay(nursery, "relay2")
        client = await start_client(nursery)
        listed = [replace(relay.status, address=ELSEWHERE), replace(other.status, address=ELSEWHERE)]
        port = relay.status.or_port
        with trio.fail_after(TIMEOUT):
            with pytest.raises(ChannelError):  # without the names: where it is listed, which fails
                await client.channels.get_channel(ELSEWHERE, port, relay.keys.node_id)

            client.channels.dial_names = DialNames({"relay1": "localhost"}, lambda: listed, client.events)
            channel = await client.channels.get_channel(ELSEWHERE, port, relay.keys.node_id)
            assert (channel.address, channel.port) == (HOST, port)
            assert channel.link.peer.node_id == relay.keys.node_id  # the link proved the relay's identity
            # a relay the names do not mention is dialled where it is listed
            with pytest.raises(ChannelError):
                await client.channels.get_channel(ELSEWHERE, other.status.or_port, other.keys.node_id)

            # a name that no longer resolves (the relay's task is gone): the listed address, and an event
            client.channels.dial_names = DialNames({"relay2": "no-such-node.invalid"}, lambda: listed,
                                                   client.events)
            with pytest.raises(ChannelError):
                await client.channels.get_channel(ELSEWHERE, other.status.or_port, other.keys.node_id)
        (unresolved,) = client.events.records("dial_name_unresolved")
        assert (unresolved["address"], unresolved["name"]) == (ELSEWHERE, "no-such-node.invalid")
        nursery.cancel_scope.cancel()
