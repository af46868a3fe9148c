"""A controller of a tor over its control port, on Trio: commands with their replies, and the asynchronous
events in between. Parsing is nodes/core/torcontrol.py's; this module only moves bytes.

One reader task splits what tor sends: events go to `events` (a memory channel), replies to whichever
command waits (commands take turns under a lock, so replies come in order). Every command is bounded by a
timeout, after which the connection takes no more commands (a late reply would answer the wrong one); a
closed connection ends the reader and fails the waiting command with ControlClosed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from nodes.core.errors import RemoteProtocolError
from nodes.core.torcontrol import (
    ControlParser,
    Reply,
    TorEvent,
    authenticate_command,
    encode_command,
    getinfo_values,
    parse_event,
)

COMMAND_TIMEOUT = 10.0
EVENT_BUFFER = 1000  # events waiting for the consumer; the reader waits when it is full
READ_SIZE = 65536


class ControlClosed(Exception):
    """The control connection ended (tor exited or closed it)."""


class CommandRefused(Exception):
    """tor answered a command with an error status (5xx); the message carries its text."""

    def __init__(self, command: str, reply: Reply) -> None:
        self.status = reply.status
        super().__init__(f"{command}: tor answered {reply.status} {reply.text}")


class TorControl:
    def __init__(self, stream: trio.abc.Stream, *, timeout: float = COMMAND_TIMEOUT) -> None:
        self._stream = stream
        self._timeout = timeout
        self._parser = ControlParser()
        self._lock = trio.Lock()
        self._reply_in, self._replies = trio.open_memory_channel[Reply](1)
        self._event_in, self.events = trio.open_memory_channel[TorEvent](EVENT_BUFFER)
        self.bad_events = 0  # events that did not parse (counted, skipped: the connection stays usable)
        self._out_of_step = False  # a command timed out: replies no longer match commands

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Read until the connection ends or the parser meets garbage (RemoteProtocolError propagates)."""
        task_status.started()
        async with self._reply_in, self._event_in:
            while data := await self._stream.receive_some(READ_SIZE):
                self._parser.receive_data(data)
                while (reply := self._parser.next_reply()) is not None:
                    if not reply.is_event:
                        await self._reply_in.send(reply)
                        continue
                    try:
                        event = parse_event(reply)
                    except RemoteProtocolError:
                        self.bad_events += 1
                        continue
                    await self._event_in.send(event)

    async def command(self, keyword: str, *args: str) -> Reply:
        """Send one command and return its reply; CommandRefused for a 4xx/5xx answer."""
        line = encode_command(keyword, *args)
        return await self._exchange(keyword, line)

    async def _exchange(self, what: str, line: bytes) -> Reply:
        async with self._lock:
            if self._out_of_step:
                raise ControlClosed(f"{what}: an earlier command timed out; its reply would pass for ours")
            try:
                with trio.fail_after(self._timeout):
                    await self._stream.send_all(line)
                    reply = await self._replies.receive()
            except trio.EndOfChannel:
                raise ControlClosed(f"{what}: the control connection closed before the reply") from None
            except trio.TooSlowError:
                self._out_of_step = True
                raise
        if not reply.ok:
            raise CommandRefused(what, reply)
        return reply

    async def authenticate(self, cookie: bytes) -> None:
        await self._exchange("AUTHENTICATE", authenticate_command(cookie))

    async def getinfo(self, *keys: str) -> dict[str, str]:
        return getinfo_values(await self.command("GETINFO", *keys))

    async def setevents(self, *names: str) -> None:
        await self.command("SETEVENTS", *names)

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self._stream)


@asynccontextmanager
async def open_control(stream: trio.abc.Stream, *,
                       timeout: float = COMMAND_TIMEOUT) -> AsyncIterator[TorControl]:
    """A TorControl over `stream` with its reader running; the stream is closed on the way out."""
    control = TorControl(stream, timeout=timeout)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(control.run)
            yield control
            nursery.cancel_scope.cancel()
    finally:
        await control.aclose()
