"""The history of a run: one JSON object a line; where histories go, and keeping them when `down` runs."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Final

HISTORIES: Final = Path(".onionlab", "chaos")  # below the current directory; `down` never removes it
OLD_HISTORIES: Final = "chaos"  # in the run dir, where histories went by default before


class History:
    """What happened, one JSON object a line: every record has t (seconds since the run's start, a monotonic
    clock), ts (wall clock) and type (run, baseline, fault, fetch, cleanup, verdict, end)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.records: list[dict] = []
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._file = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("w", encoding="utf-8")

    def now(self) -> float:
        return round(time.monotonic() - self._t0, 3)

    def restart_clock(self) -> None:
        self._t0 = time.monotonic()

    def record(self, type_: str, **fields: Any) -> dict:
        with self._lock:
            record = {"t": self.now(), "ts": round(time.time(), 3), "type": type_, **fields}
            self.records.append(record)
            if self._file is not None:
                self._file.write(json.dumps(record, sort_keys=False) + "\n")
                self._file.flush()
            return record

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_history(path: str | os.PathLike[str]) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def default_history(name: str, seed: int) -> Path:
    """Where a run's history goes without --history: `.onionlab/chaos/NAME-seedN-TIME.jsonl` below the
    current directory, outside the run dir, so that `onionlab down` leaves it."""
    return Path.cwd() / HISTORIES / f"{name}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"


def keep_histories(run_dir: str | os.PathLike[str]) -> tuple[int, Path]:
    """Move the files of `<run dir>/chaos/` (histories and reports that runs wrote there) to the histories
    directory before the run dir goes; a name that is taken there gets a numbered suffix. Returns (how many
    files were moved, where to)."""
    source, target = Path(run_dir, OLD_HISTORIES), Path.cwd() / HISTORIES
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else []
    for path in files:
        dest = target / path.relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        n = 1
        while dest.exists():
            dest = dest.with_name(f"{path.stem}.{n}{path.suffix}")
            n += 1
        shutil.move(path, dest)
    return len(files), target
