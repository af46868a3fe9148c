"""The client's tables: live rendezvous circuits, one per (onion, SOCKS credentials), reused while alive,
dropped when dead, and never more than MAX_RENDEZVOUS_CIRCUITS (the oldest is closed); and the intro points
that failed it lately, left alone for a while as Tor's client does."""

import io
import os
from types import SimpleNamespace

import pytest
import trio

from nodes.core import hs_common
from nodes.core.ed25519 import Signer
from nodes.core.hs_descriptor import IntroPointDesc, build_descriptor
from nodes.core.hs_ntor import public_key
from nodes.core.netview import Relay
from nodes.core.relay import IntroduceAck, IntroduceAckStatus
from nodes.net import hs_client
from nodes.net.circuits import CircuitBuildError, hop_spec
from nodes.net.events import EventLog
from nodes.net.hs_client import OnionClient
from nodes.net.hs_paths import TimePeriod, responsible_hsdirs
from nodes.net.hsdir import HsDirStore
from nodes.net.metrics import Metrics
from nodes.net.socks import IntroFailed

from .helpers import StoreCircuit

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
                9001, 0, 1000, FLAGS, "") for i in range(6)]
# what TimePeriod.of reads besides the relays
CONSENSUS = SimpleNamespace(routers=RELAYS, valid_after=1_800_000_000, hs_period_minutes=1440,
                            hs_rotation_offset_minutes=720, shared_rand_current=None)


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
    and the list of intro relays asked, in order. `answers` by relay nickname: an IntroduceAckStatus,
    "silent" or "unreachable"; SUCCESS for the others."""
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
    descriptor = _descriptor(RELAYS[1:4])
    rend = SimpleNamespace(path=[RELAYS[0]])

    async def introduce():
        return await client._introduce(CONSENSUS, descriptor, bytes(32), bytes(20), rend, ONION)

    return client, introduce, asked


def _intro_points(intro_relays: list[Relay]) -> tuple[IntroPointDesc, ...]:
    return tuple(IntroPointDesc(hop_spec(r).link_specs(), r.ntor_onion_key, Signer.from_seed(os.urandom(32))
                                .public_key, public_key(os.urandom(32))) for r in intro_relays)


def _descriptor(intro_relays: list[Relay], revision: int = 1) -> SimpleNamespace:
    """A decrypted descriptor listing `intro_relays` as intro points, each with fresh keys."""
    return SimpleNamespace(intro_points=_intro_points(intro_relays), revision_counter=revision)


class FakeRendezvousCircuit:
    """A rendezvous point whose RENDEZVOUS2 comes right after an INTRODUCE_ACK."""

    def __init__(self) -> None:
        self.circ_id, self.path, self.error = 7, [RELAYS[0]], None

    async def receive(self, allowed, *, timeout: float):
        await trio.lowlevel.checkpoint()
        return SimpleNamespace(message=None)

    def add_virtual_hop(self, hop_crypto) -> None:
        pass

    async def open_stream(self, target: str, port: int):
        return ("stream", port)

    async def aclose(self) -> None:
        self.error = trio.BrokenResourceError("closed by us")


def _connector(monkeypatch, answers: dict[str, object], served: list):
    """_introducer's client behind connect(): the HSDirs serve `served[0]`, `served[1]`, ... (the last one
    from then on); returns the client, the intro relays asked and the descriptors fetched."""
    client, _, asked = _introducer(monkeypatch, answers)
    fetched: list = []

    async def consensus():
        return CONSENSUS

    async def fetch(consensus, period, blinded, subcredential, onion, newer_than):
        await trio.lowlevel.checkpoint()
        fetched.append(served[min(len(fetched), len(served) - 1)])
        return fetched[-1], hs_client.clock.wall() + 3600

    async def establish_rendezvous(consensus, cookie, onion, *, only=None):
        return FakeRendezvousCircuit()

    monkeypatch.setattr(client, "_consensus", consensus)
    monkeypatch.setattr(client, "_fetch", fetch)
    monkeypatch.setattr(client, "_establish_rendezvous", establish_rendezvous)
    monkeypatch.setattr(hs_client, "client_handle_rendezvous2", lambda state, message: None)
    monkeypatch.setattr(hs_client.HopCrypto, "hs_virtual", staticmethod(lambda keys, service_side: None))
    return client, asked, fetched


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


async def test_when_every_intro_point_failed_us_none_is_asked_again(monkeypatch, autojump_clock):
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


NACK = IntroduceAckStatus.UNKNOWN_ID
NACKS_A = {"relay1": NACK, "relay2": NACK, "relay3": NACK}  # descriptor A's intro points: relay1..3


async def test_a_descriptor_whose_intro_points_all_nack_is_refetched_within_the_connection(
        monkeypatch, autojump_clock):
    """The service moved its intro points (B on relay4, relay5) after we cached A: as Tor's client does, the
    same connection drops A, fetches B and is introduced through it."""
    a, b = _descriptor(RELAYS[1:4]), _descriptor(RELAYS[4:6], revision=2)
    client, asked, fetched = _connector(monkeypatch, NACKS_A, [a, b])
    assert await client.connect(ONION, 80) == ("stream", 80)
    assert asked == ["relay1", "relay2", "relay3", "relay4"]
    assert fetched == [a, b]
    assert client.metrics.value("descriptor_refetches_total") == 1
    assert [c.descriptor for c in client.descriptors.values()] == [b]


async def test_a_refetched_descriptor_with_the_same_failed_intro_points_fails_once_and_is_dropped(
        monkeypatch, autojump_clock):
    """The HSDirs still serve A: one refetch, no intro point asked twice, SOCKS 0xF2 (IntroFailed), and the
    descriptor is not cached, so the next connection fetches again: B, once the service has published it."""
    a, b = _descriptor(RELAYS[1:4]), _descriptor(RELAYS[4:6], revision=2)
    served = [a]
    client, asked, fetched = _connector(monkeypatch, NACKS_A, served)
    with pytest.raises(IntroFailed, match="INTRODUCE_ACK status"):
        await client.connect(ONION, 80)
    assert asked == ["relay1", "relay2", "relay3"]
    assert fetched == [a, a]
    assert client.metrics.value("descriptor_refetches_total") == 1
    assert client.descriptors == {}
    served[0] = b  # the service published its new intro points
    assert await client.connect(ONION, 80) == ("stream", 80)
    assert fetched == [a, a, b] and asked[3:] == ["relay4"]


async def test_a_cancelled_connect_stops_introducing(monkeypatch, autojump_clock):
    """A SOCKS connect_timeout cancels connect(): no intro point is asked after that."""
    silent = {"relay1": "silent", "relay2": "silent"}
    client, asked, _ = _connector(monkeypatch, silent, [_descriptor(RELAYS[1:4])])
    with trio.move_on_after(hs_client.INTRO_ACK_TIMEOUT + 1):
        await client.connect(ONION, 80)
    assert asked == ["relay1", "relay2"]
    await trio.sleep(3 * hs_client.INTRO_ACK_TIMEOUT)
    assert asked == ["relay1", "relay2"]


async def test_concurrent_connects_skip_intro_points_the_other_found_failed(monkeypatch, autojump_clock):
    """Two connections with other credentials: the later one does not ask again the intro points the first
    one found failed meanwhile, and takes the descriptor it refetched from the cache."""
    a, b = _descriptor(RELAYS[1:4]), _descriptor(RELAYS[4:6], revision=2)
    client, asked, fetched = _connector(monkeypatch, {"relay1": "silent", "relay2": NACK, "relay3": NACK},
                                        [a, b])

    async def later():
        await trio.sleep(hs_client.INTRO_ACK_TIMEOUT / 2)
        assert await client.connect(ONION, 80, b"later") == ("stream", 80)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.connect, ONION, 80, b"first")
        nursery.start_soon(later)
    assert asked.count("relay2") == asked.count("relay3") == 1
    assert fetched == [a, b]


async def test_a_refetch_asks_the_other_hsdirs_for_a_newer_revision(monkeypatch):
    """After a descriptor's intro points all failed us, the refetch wants a newer revision: an HSDir the
    service could not reach lately (paused, cut off) still serves the old one, and the client goes on to the
    next responsible HSDir instead of taking it again; when no HSDir has a newer one, the freshest seen."""
    identity = Signer.from_seed(os.urandom(32))
    period = TimePeriod.of(CONSENSUS)
    blinded = hs_common.blinded_signer(identity, period.num, period.length)
    subcredential = hs_common.subcredential(identity.public_key, blinded.public_key)
    signing = Signer.from_seed(os.urandom(32))

    def document(revision: int, intro_relays: list[Relay]) -> bytes:
        return build_descriptor(identity=identity, blinded=blinded, signing=signing,
                                subcredential=subcredential, revision_counter=revision,
                                intro_points=_intro_points(intro_relays),
                                now=int(hs_client.clock.wall()), rng=os.urandom)

    hsdirs = responsible_hsdirs(CONSENSUS, blinded.public_key, period, spread=hs_common.HSDIR_SPREAD_FETCH)
    stores = {r.identity: HsDirStore(Metrics(), EventLog(r.nickname, "relay", io.StringIO())) for r in RELAYS}
    for hsdir in hsdirs[:-1]:
        stores[hsdir.identity].publish(document(5, RELAYS[1:4]))
    stores[hsdirs[-1].identity].publish(document(6, RELAYS[4:6]))  # the only one the service reached lately
    monkeypatch.setattr(hs_client._random, "shuffle", lambda hsdirs: None)  # the stale ones are asked first
    client = OnionClient(circuits=None, guards=None, directory=None, metrics=Metrics(),
                         events=EventLog("c", "client", io.StringIO()))
    async with trio.open_nursery() as nursery:
        async def build(consensus, relay, purpose="hsdir"):
            return StoreCircuit(nursery, stores[relay.identity])

        monkeypatch.setattr(client, "_build", build)
        fetch = client._fetch
        assert (await fetch(CONSENSUS, period, blinded.public_key, subcredential, ONION, -1))[0] \
            .revision_counter == 5  # a first fetch takes the first valid one
        assert (await fetch(CONSENSUS, period, blinded.public_key, subcredential, ONION, 5))[0] \
            .revision_counter == 6
        assert client.metrics.value("descriptor_fetches_total", result="stale") == len(hsdirs) - 1
        assert (await fetch(CONSENSUS, period, blinded.public_key, subcredential, ONION, 6))[0] \
            .revision_counter == 6  # nobody has a newer one: the freshest seen
