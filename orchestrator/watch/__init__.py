"""`onionlab watch`: a live terminal view of the running lab (rich), refreshed from every node's /status and
/metrics every --interval seconds. snapshot.py collects (no rendering), render.py draws (no I/O); this module
runs the loop: `--once` prints one frame (`--json`: the snapshot as JSON) and exits; q or Ctrl-C quits."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

from rich.console import Console
from rich.live import Live

from orchestrator.backends.base import FaultBackend
from orchestrator.signals import signal_of

from .keys import quit_pressed
from .render import render
from .snapshot import Snapshot, collect

__all__ = ["Snapshot", "collect", "render", "watch"]


def watch(backend: FaultBackend, args: argparse.Namespace) -> int:
    if args.interval <= 0:
        print("onionlab: --interval must be more than 0 seconds", file=sys.stderr)
        return 2
    if args.once:
        snapshot = collect(backend)
        if args.json:
            print(json.dumps(snapshot.to_dict(), indent=2))
        else:
            Console(width=max(Console().width, 140)).print(render(snapshot))
        return 0
    if args.json:
        print("onionlab: --json needs --once (one snapshot)", file=sys.stderr)
        return 2
    try:
        with quit_pressed() as pressed, Live(render(snapshot := collect(backend)), auto_refresh=False,
                                            screen=sys.stdout.isatty()) as live:
            next_at = time.monotonic() + args.interval
            while not pressed():
                if time.monotonic() >= next_at:
                    snapshot = collect(backend, snapshot)
                    live.update(render(snapshot), refresh=True)
                    next_at = time.monotonic() + args.interval
                time.sleep(0.05)
    except KeyboardInterrupt as e:
        if signal_of(e) is not signal.SIGINT:
            raise
    return 0
