"""The client's tables: live rendezvous circuits, one per (onion, SOCKS credentials), reused while alive,
dropped when dead, and never more than MAX_RENDEZVOUS_CIRCUITS (the oldest is closed); and the intro points
that failed it lately, left alone for a while as Tor's client does."""

import io
import os
from types import SimpleNamespace

import pytest
import trio

from nodes.core.hs_descriptor import IntroPointDesc
from nodes.core.hs_ntor import public_key
from nodes.core.netview import Relay
from nodes.core.relay import IntroduceAck, IntroduceAckStatus
from nodes.net import hs_client
from nodes.net.circuits import CircuitBuildError, hop_spec
from nodes.net.events import EventLog
from nodes.net.hs_client import OnionClient
from nodes.net.metrics import Metrics
from nodes.net.socks import IntroFailed

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


# -- intro points that failed us -----------------------------------------------------------------------------

FLAGS = frozenset({"Running", "Valid", "Fast", "Stable", "Guard", "HSDir"})
RELAYS = [Relay(f"relay{i}", os.urandom(20), os.urandom(32), public_key(os.urandom(32)), f"10.0.0.{i + 2}",
                9001, 0, 1000, FLAGS, "") for i in range(4)]
CONSENSUS = SimpleNamespace(routers=RELAYS)


class FakeIntroCircuit:
    """A circuit to an intro point that answers INTRODUCE1 with `answer`: a status, or "silent"."""

    def __init__(self, relay: Relay, answer) -> None:
        self.relay, self.answer = relay, answer
        self.circ_id, self.path = 1, [relay]  # what the client's events name

    async def send(self, message) -> None:
        await trio.lowlevel.checkpoint()

    async def receive(self, allowed, *, timeout: float):
        if self.answer == "silent":
            await trio.sleep(timeout)
            raise trio.TooSlowError
        return SimpleNamespace(message=IntroduceAck(self.answer))

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def _introducer(monkeypatch, answers: dict[str, object]):
    """A client, a descriptor listing relay1..relay3 as intro points (in that order: tried in that order),
    and the list of intro relays asked, in order."""
    monkeypatch.setattr(hs_client._random, "shuffle", lambda points: None)
    client = OnionClient(circuits=None, guards=None, directory=None, metrics=Metrics(),
                         events=EventLog("c", "client", io.StringIO()))
    asked: list[str] = []

    async def build(consensus, relay, purpose="intro"):
        asked.append(relay.nickname)
        if answers.get(relay.nickname) == "unreachable":
            raise CircuitBuildError("no link", kind="connect", hop=2)
        return FakeIntroCircuit(relay, answers.get(relay.nickname, IntroduceAckStatus.SUCCESS))

    monkeypatch.setattr(client, "_build", build)
    points = tuple(IntroPointDesc(hop_spec(r).link_specs(), r.ntor_onion_key, os.urandom(32),
                                  public_key(os.urandom(32))) for r in RELAYS[1:])
    descriptor = SimpleNamespace(intro_points=points)
    rend = SimpleNamespace(path=[RELAYS[0]])

    async def introduce():
        return await client._introduce(CONSENSUS, descriptor, bytes(32), bytes(20), rend, ONION)

    return client, introduce, asked


async def test_an_intro_point_that_nacked_us_is_left_alone_for_two_minutes(monkeypatch, autojump_clock):
    """As Tor's client does (HS_CACHE_CLIENT_INTRO_STATE_MAX_AGE): a NACK or a timeout makes an intro point
    unusable for 120 s; the next introductions go straight to the others."""
    client, introduce, asked = _introducer(monkeypatch, {"relay1": IntroduceAckStatus.UNKNOWN_ID,
                                                         "relay2": "silent"})
    for _ in range(10):
        await introduce()
    assert asked == ["relay1", "relay2"] + ["relay3"] * 10
    assert client.metrics.value("introductions_total", intro="relay1", result="nack") == 1
    await trio.sleep(hs_client.INTRO_FAILURE_MEMORY + 1)
    asked.clear()
    await introduce()
    assert asked == ["relay1", "relay2", "relay3"]  # forgotten: asked again


async def test_an_unreachable_intro_point_is_left_alone_after_five_failures(monkeypatch, autojump_clock):
    client, introduce, asked = _introducer(monkeypatch, {"relay1": "unreachable"})
    for _ in range(8):
        await introduce()
    assert asked.count("relay1") == 5  # Tor: MAX_INTRO_POINT_REACHABILITY_FAILURES


async def test_when_every_intro_point_failed_us_the_descriptor_is_fetched_anew(monkeypatch, autojump_clock):
    client, introduce, asked = _introducer(monkeypatch, {f"relay{i}": IntroduceAckStatus.UNKNOWN_ID
                                                         for i in range(1, 4)})
    with pytest.raises(IntroFailed):
        await introduce()
    asked.clear()
    with pytest.raises(IntroFailed, match="failed us"):
        await introduce()  # nobody is asked again meanwhile
    assert asked == []


async def test_newnym_forgets_descriptors_failures_and_circuits(monkeypatch):
    client, built = _client(monkeypatch)
    await client.connect(ONION, 80, b"a")
    built[0].stream_count = 0
    closed = []
    built[0].close_nowait = lambda: closed.append(built[0])
    client.descriptors[b"k"] = object()
    client._intro_failures[b"i"] = (0.0, 1)
    assert client.newnym() == {"descriptors": 1, "rendezvous_circuits": 1}
    assert client.descriptors == {} and client._intro_failures == {} and closed == [built[0]]
    assert await client.connect(ONION, 80, b"a") == (1, 80)  # the same credentials: a new rendezvous
