"""The client's table of live rendezvous circuits: one per (onion, SOCKS credentials), reused while alive,
dropped when dead, and never more than MAX_RENDEZVOUS_CIRCUITS (the oldest is closed)."""

import io

import trio

from nodes.net import hs_client
from nodes.net.events import EventLog
from nodes.net.hs_client import OnionClient
from nodes.net.metrics import Metrics

ONION = "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd.onion"


class FakeCircuit:
    def __init__(self, n: int) -> None:
        self.circ_id = n
        self.error = None
        self.closed = False

    async def open_stream(self, target: str, port: int):
        return (self.circ_id, port)

    async def aclose(self) -> None:
        self.closed = True
        self.error = trio.BrokenResourceError("closed by us")


def _client(monkeypatch) -> tuple[OnionClient, list[FakeCircuit]]:
    client = OnionClient(circuits=None, guards=None, directory=None, metrics=Metrics(),
                         events=EventLog("c", "client", io.StringIO()))
    built: list[FakeCircuit] = []

    async def rendezvous(identity: bytes, onion: str) -> FakeCircuit:
        await trio.lowlevel.checkpoint()
        built.append(FakeCircuit(len(built)))
        return built[-1]

    monkeypatch.setattr(client, "_rendezvous", rendezvous)
    return client, built


async def test_reuse_per_credentials_and_dead_circuits_are_replaced(monkeypatch):
    client, built = _client(monkeypatch)
    assert await client.connect(ONION, 80, b"a") == (0, 80)
    assert await client.connect(ONION, 81, b"a") == (0, 81)  # reused
    assert await client.connect(ONION, 80, b"b") == (1, 80)  # other credentials: another rendezvous
    built[0].error = trio.BrokenResourceError("the RP went away")
    assert await client.connect(ONION, 80, b"a") == (2, 80)  # the dead one is replaced
    assert [isolation for _, isolation in client.rendezvous] == [b"b", b"a"]  # oldest first
    assert client.metrics.value("rendezvous_reused_total") == 1


async def test_concurrent_connects_with_one_key_share_one_setup(monkeypatch):
    client, built = _client(monkeypatch)
    async with trio.open_nursery() as nursery:
        for port in range(5):
            nursery.start_soon(client.connect, ONION, port, b"same")
    assert len(built) == 1


async def test_the_table_is_bounded_and_the_oldest_circuit_closed(monkeypatch):
    monkeypatch.setattr(hs_client, "MAX_RENDEZVOUS_CIRCUITS", 3)
    client, built = _client(monkeypatch)
    for i in range(5):
        await client.connect(ONION, 80, str(i).encode())
    assert len(client.rendezvous) == 3
    assert [c.closed for c in built] == [True, True, False, False, False]
    assert len(client._locks) == 3
