"""The client's petname table (nodes/core/petnames.py): `NAME.pet` -> the onion address it names.

The table lives in a JSON file (NodeConfig.petnames_file; the orchestrator writes it from the topology's
`petnames:`). It is read again whenever its modification time or size changes, checked at most once per
lookup, so a user can edit it in a running lab and the next connection sees the change. A file that does not
parse is refused whole: the table it had stays (or none, at start), an event `petnames_rejected` says why
and errors_total{kind="petnames_file"} counts it; the client keeps serving. A missing file is an empty table.
"""

from __future__ import annotations

import os
from pathlib import Path

from nodes.core.errors import DecodeError
from nodes.core.petnames import SUFFIX, parse_table
from nodes.core.socks5 import ReplyCode

from .events import EventLog
from .metrics import Metrics
from .socks import ConnectFailed


class UnknownPetname(ConnectFailed):
    """`NAME.pet` is not in the table. HOST_UNREACHABLE (0x04), as tor answers for a name it cannot
    resolve: the onion-service codes 0xF0-0xF7 all speak of a service, and this name names none."""

    reply = ReplyCode.HOST_UNREACHABLE


class PetnameTable:
    def __init__(self, path: str | os.PathLike[str] | None, metrics: Metrics, events: EventLog) -> None:
        self.path = Path(path) if path else None
        self.metrics = metrics
        self.events = events
        self.names: dict[str, str] = {}
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) of the file the table is from
        metrics.describe("petname_lookups_total", "counter", "NAME.pet lookups by result (resolved, unknown)")
        self.reload()

    def resolve(self, host: str) -> str:
        """The onion address `host` (NAME.pet, any case) names; UnknownPetname when the table has no NAME."""
        self.reload()
        name = host.lower().removesuffix(SUFFIX)
        onion = self.names.get(name)
        if onion is None:
            self.metrics.inc("petname_lookups_total", result="unknown")
            self.events.emit("petname_unknown", name=host)
            raise UnknownPetname(f"{host}: no such petname in {self.path or 'the table (no file)'} "
                                 f"(names: {', '.join(sorted(self.names)) or 'none'})")
        self.metrics.inc("petname_lookups_total", result="resolved")
        self.events.emit("petname_resolved", name=host, onion=onion)
        return onion

    def reload(self) -> None:
        """Read the file again when it changed since the last look."""
        if self.path is None:
            return
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            if self._seen is not None or self.names:
                self.names, self._seen = {}, None
                self.events.emit("petnames_loaded", path=str(self.path), names=0)
            return
        except OSError as e:
            self._reject(f"cannot read: {e.strerror or e}")
            return
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen == self._seen:
            return
        self._seen = seen
        try:
            self.names = parse_table(self.path.read_text(errors="replace"))
        except (DecodeError, OSError) as e:
            self._reject(str(e))
            return
        self.events.emit("petnames_loaded", path=str(self.path), names=len(self.names))

    def _reject(self, why: str) -> None:
        self.metrics.inc("errors_total", kind="petnames_file")
        self.events.emit("petnames_rejected", path=str(self.path), error=why, kept=len(self.names))
