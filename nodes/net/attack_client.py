"""The attacking client of the guard-discovery attack (Øverlier and Syverson; seed, step five): one control
call, one more rendezvous circuit the service must build.

    {"command": "attack", "onion": ONION, "rendezvous": NICKNAME, "port": PORT, "cells": N}

starts an attempt in the background and answers its number at once; /status's `attack` tells when it has
finished. An attempt sets up a fresh rendezvous at the named relay (one of the adversary's, so the adversary
knows which circuit is the service's), introduces itself, and once joined sends the mark: N DROP cells to the
service's virtual hop at once (nodes/core/attack_signature.py). Then it opens a stream to PORT and waits for
the answer (CONNECTED or END): the service answers only after the DROP cells before it have arrived, so when
the attempt is done every relay of the service's circuit has seen the whole mark. The circuit is closed.
"""

from __future__ import annotations

import trio

from nodes.core.attack_signature import BURST_CELLS
from nodes.core.relay import Drop

from .events import EventLog
from .hs_client import OnionClient
from .hs_paths import CIRCUIT_FAILURES, STREAM_FAILURES
from .socks import ConnectFailed

KEEP = 32  # finished attempts shown in /status
MAX_CELLS = 1000


class GuardDiscovery:
    def __init__(self, client: OnionClient, events: EventLog) -> None:
        self.client = client
        self.events = events
        self.nursery: trio.Nursery | None = None  # the role's: attempts outlive the control request
        self.started = 0
        self.running: set[int] = set()
        self.finished: list[dict] = []

    def start(self, onion: object = None, rendezvous: object = None, port: object = None,
              cells: object = BURST_CELLS) -> dict:
        """The control action. ValueError (a 400) for a malformed request."""
        if not isinstance(onion, str) or not isinstance(rendezvous, str):
            raise ValueError("needs onion and rendezvous (a relay's nickname)")
        if type(port) is not int or not 0 < port < 65536:
            raise ValueError("needs port: a virtual port of the service")
        if type(cells) is not int or not 0 < cells <= MAX_CELLS:
            raise ValueError(f"cells: 1 to {MAX_CELLS}")
        if self.nursery is None:
            raise ValueError("the client is not running yet")
        self.started += 1
        n = self.started
        self.running.add(n)
        self.nursery.start_soon(self._attempt, n, onion.removesuffix(".onion"), rendezvous, port, cells)
        return {"attempt": n}

    async def _attempt(self, n: int, onion: str, rendezvous: str, port: int, cells: int) -> None:
        began = trio.current_time()
        record: dict = {"attempt": n, "rendezvous": rendezvous, "ok": False}
        try:
            circuit = await self.client.rendezvous_via(onion + ".onion", rendezvous)
            try:
                record["path"] = [r.nickname for r in circuit.path]
                for _ in range(cells):
                    await circuit.send(Drop())
                try:
                    stream = await circuit.open_stream("", port)
                    await stream.aclose()
                except STREAM_FAILURES:
                    pass  # an END answers too: it came after the mark
                record["ok"] = True
            finally:
                await circuit.aclose()
        except (ConnectFailed, *CIRCUIT_FAILURES, *STREAM_FAILURES) as e:
            record["error"] = f"{type(e).__name__}: {e}"
        finally:
            record["seconds"] = round(trio.current_time() - began, 4)
            self.running.discard(n)
            self.finished = [*self.finished, record][-KEEP:]
            self.events.emit("attack_attempt", **record)

    def status(self) -> dict:
        return {"started": self.started, "running": sorted(self.running), "finished": self.finished}
