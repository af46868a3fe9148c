"""nodes.net.torcontrol and the tor node's use of it, against a fake control port over trio memory streams:
commands get their replies while events arrive in between, refusals and a closed connection are errors,
and the node's /status follows tor's bootstrap (GETINFO first, then STATUS_CLIENT events)."""

import json

import pytest
import trio
import trio.testing

from nodes.config import AuthorityRef, NodeConfig
from nodes.net.torcontrol import CommandRefused, ControlClosed, open_control
from nodes.roles.tor_node import TorNode

COOKIE = bytes(range(32))
BOOTSTRAP_5 = 'NOTICE BOOTSTRAP PROGRESS=5 TAG=conn SUMMARY="Connecting to a relay"'


class FakeTor:
    """The tor side of a control connection: answers the commands it knows, can push events."""

    def __init__(self, stream: trio.abc.Stream, bootstrap: str = BOOTSTRAP_5) -> None:
        self.stream = stream
        self.bootstrap = bootstrap
        self.commands: list[str] = []
        self.authenticated = False

    async def send(self, text: str) -> None:
        await self.stream.send_all(text.replace("\n", "\r\n").encode())

    async def serve(self) -> None:
        buffer = b""
        while data := await self.stream.receive_some(4096):
            buffer += data
            while b"\r\n" in buffer:
                line, buffer = buffer.split(b"\r\n", 1)
                await self.answer(line.decode())
        await self.stream.aclose()

    async def answer(self, line: str) -> None:
        self.commands.append(line)
        keyword, _, rest = line.partition(" ")
        if keyword == "AUTHENTICATE":
            self.authenticated = rest == COOKIE.hex()
            await self.send("250 OK\n" if self.authenticated else "515 Authentication failed\n")
        elif not self.authenticated:
            await self.send("514 Authentication required.\n")
        elif keyword == "SETEVENTS":
            # an event racing the reply, as tor's can
            await self.send(f"650 STATUS_CLIENT {self.bootstrap}\n250 OK\n")
        elif keyword == "GETINFO":
            values = {"status/bootstrap-phase": self.bootstrap, "version": "0.4.9.11",
                      "net/listeners/socks": '"10.0.0.9:9050"'}
            unknown = [k for k in rest.split() if k not in values]
            if unknown:
                await self.send(f'552 Unrecognized key "{unknown[0]}"\n')
            else:
                await self.send("".join(f"250-{k}={values[k]}\n" for k in rest.split()) + "250 OK\n")
        else:
            await self.send(f'510 Unrecognized command "{keyword}"\n')


def node_config(tmp_path) -> NodeConfig:
    return NodeConfig(name="torclient", role="client", impl="tor", address="10.0.0.9",
                      data_dir=str(tmp_path / "torclient"), control_port=9052, socks_port=9050,
                      authorities=(AuthorityRef("auth1", "10.0.0.2", 9030, 9001, "A" * 40, "B" * 40),))


async def test_commands_get_their_replies_and_events_flow_between():
    ours, theirs = trio.testing.memory_stream_pair()
    tor = FakeTor(theirs)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tor.serve)
        async with open_control(ours) as control:
            await control.authenticate(COOKIE)
            await control.setevents("STATUS_CLIENT")
            info = await control.getinfo("version", "status/bootstrap-phase")
            assert info == {"version": "0.4.9.11", "status/bootstrap-phase": BOOTSTRAP_5}
            event = await control.events.receive()
            assert (event.name, event.positional, event.keywords["PROGRESS"]) == (
                "STATUS_CLIENT", ("NOTICE", "BOOTSTRAP"), "5")
            with pytest.raises(CommandRefused, match='552 Unrecognized key "nonsense"') as refused:
                await control.getinfo("nonsense")
            assert refused.value.status == 552
            await tor.send("650 BAD \"unterminated\n")  # an event that does not parse: counted, skipped
            await tor.send("650 STATUS_CLIENT NOTICE CONSENSUS_ARRIVED\n")
            assert (await control.events.receive()).positional == ("NOTICE", "CONSENSUS_ARRIVED")
            assert control.bad_events == 1
    assert tor.commands[:2] == [f"AUTHENTICATE {COOKIE.hex()}", "SETEVENTS STATUS_CLIENT"]


async def test_a_wrong_cookie_is_refused():
    ours, theirs = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(FakeTor(theirs).serve)
        async with open_control(ours) as control:
            with pytest.raises(CommandRefused, match="515"):
                await control.authenticate(bytes(32))


async def test_a_closed_connection_fails_the_waiting_command():
    ours, theirs = trio.testing.memory_stream_pair()

    async def hang_up() -> None:
        await theirs.receive_some(4096)  # read the command, then leave without an answer
        await theirs.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hang_up)
        async with open_control(ours) as control:
            with pytest.raises(ControlClosed):
                await control.getinfo("version")
            with pytest.raises(trio.EndOfChannel):
                await control.events.receive()


async def test_a_silent_tor_times_the_command_out(autojump_clock):
    ours, _theirs = trio.testing.memory_stream_pair()
    async with open_control(ours, timeout=3) as control:
        with pytest.raises(trio.TooSlowError):
            await control.getinfo("version")
        with pytest.raises(ControlClosed, match="an earlier command timed out"):
            await control.getinfo("version")


def test_a_restarted_node_waits_for_the_new_cookie_not_the_old_one(tmp_path):
    """A tor node killed and started again found the last run's cookie before tor wrote its new one and
    failed to authenticate ("515 Authentication failed"), exiting: prepare() removes both files."""
    node = TorNode(node_config(tmp_path), binary="/bin/true")
    node.prepare([])
    old = [tmp_path / "torclient" / "tor" / name for name in ("control_auth_cookie", "control-port")]
    for path in old:
        path.write_bytes(b"from the last run")
    node.prepare([])
    assert not any(path.exists() for path in old)


async def test_the_node_status_follows_tors_bootstrap(tmp_path, capsys):
    node = TorNode(node_config(tmp_path), binary="/bin/true")
    node.prepare([])
    (tmp_path / "torclient" / "tor" / "control_auth_cookie").write_bytes(COOKIE)
    assert node.status()["ready"] is False and node.status()["bootstrap"] == 0
    ours, theirs = trio.testing.memory_stream_pair()
    tor = FakeTor(theirs)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tor.serve)
        async with open_control(ours) as control:
            await node.attach(control)
            status = node.status()
            assert (status["bootstrap"], status["ready"], status["socks"], status["tor_version"]) == (
                5, False, "10.0.0.9:9050", "0.4.9.11")
            nursery.start_soon(node.consume, control)
            await tor.send('650 STATUS_CLIENT NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"\n'
                           f"650 HS_DESC RECEIVED {'a' * 56} NO_AUTH $AA~relay4 key\n"
                           "650 STATUS_CLIENT NOTICE BOOTSTRAP PROGRESS=x\n")
            await trio.testing.wait_all_tasks_blocked()
            status = node.status()
            assert status["ready"] is True and status["conditions"] == {"bootstrapped": True}
            assert status | {"impl": "tor", "role": "client", "name": "torclient", "bootstrap": 100} == status
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in events] == ["bootstrap", "bootstrap", "descriptor_fetched", "error"]
    assert (events[2]["hsdir"], events[2]["node"], events[2]["role"]) == ("relay4", "torclient", "client")
    assert events[3]["kind"] == "decode"
    assert node.metrics.value("tor_bootstrap_percent") == 100
