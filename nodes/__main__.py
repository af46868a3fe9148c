"""`python -m nodes ROLE --config FILE [--wait-config SECONDS]`: run one node until SIGTERM or SIGINT
(`python -m nodes init ...` is the one-shot of nodes/init.py). `python -m nodes tor --config FILE` runs a node
that a stock tor plays (`impl: tor` in its config; nodes/roles/tor_node.py).

`--wait-config SECONDS` is for orchestrators that cannot order start-ups (a Docker Swarm stack has no
depends_on): the config file is polled for until it exists, or the deadline passes (exit 2, as for a missing
file). nodes.init writes it atomically, so a file that exists is complete.

Exit status: 0 after a signal (or if the role returns on its own), 1 when the node crashes (traceback on
stderr, then one `fatal: ...` line naming the real cause, which the orchestrator shows first), 2 for a bad
command line or config (also a `fatal: ...` line). A node whose child process ended it (tor) exits with the
child's status instead, after the child's own log rather than our traceback. Events go to stdout (one JSON
line each), diagnostics to stderr.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import trio

from nodes.config import ConfigError, NodeConfig, load_config
from nodes.net.pages import release_file_pages
from nodes.roles import COMMANDS, serve_for

log = logging.getLogger("nodes")

FATAL_PREFIX = "fatal: "  # the orchestrator looks for the last stderr line starting with this
WAIT_POLL_MIN = 0.05  # seconds between looks for the config file (--wait-config); doubles up to the max
WAIT_POLL_MAX = 1.0


def wait_for_file(path: str | Path, timeout: float, *, clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep) -> bool:
    """Poll until `path` exists (True) or `timeout` seconds have passed (False), with backoff."""
    deadline = clock() + timeout
    delay = WAIT_POLL_MIN
    while True:
        try:
            if Path(path).exists():
                return True
        except OSError:  # e.g. a directory we may not search yet: not there for us
            pass
        left = deadline - clock()
        if left <= 0:
            return False
        sleep(min(delay, left))
        delay = min(2 * delay, WAIT_POLL_MAX)


async def run_node(serve: Callable[..., Awaitable[None]], config: NodeConfig) -> None:
    """Run `serve(config)` until it returns or a SIGTERM/SIGINT arrives; a signal cancels the root nursery."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for signum in signals:
                    log.info("%s: received %s, stopping", config.name, signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            await serve(config)
            nursery.cancel_scope.cancel()  # serve returned by itself: stop the signal watcher too


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside (nested) exception groups: the causes, not the nurseries that carried them."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def child_exit_status(exc: BaseException) -> int | None:
    """The exit status a child process (tor) asks the node to leave with (`exit_status`), or None."""
    return next((e.exit_status for e in _leaves(exc) if isinstance(getattr(e, "exit_status", None), int)),
                None)


def fatal_line(exc: BaseException) -> str:
    return FATAL_PREFIX + "; ".join(f"{type(e).__name__}: {e}" for e in _leaves(exc))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["init"]:  # `python -m nodes init ...`: the one-shot that writes a run's configs and keys
        from nodes.init import main as init_main

        return init_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m nodes", description="Run one onionlab node.")
    parser.add_argument("role", choices=COMMANDS, help="the role, or `tor` for a node a stock tor plays")
    parser.add_argument("--config", required=True, help="the node's JSON config (the orchestrator writes it)")
    parser.add_argument("--wait-config", type=float, default=None, metavar="SECONDS",
                        help="wait up to SECONDS for the config file to appear (another process writes it)")
    args = parser.parse_args(argv)
    if args.wait_config is not None and args.wait_config < 0:
        parser.error("--wait-config: SECONDS must not be negative")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.wait_config is not None and not wait_for_file(args.config, args.wait_config):
        print(f"{FATAL_PREFIX}{args.config}: did not appear within {args.wait_config:g} s (--wait-config)",
              file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"{FATAL_PREFIX}{e}", file=sys.stderr)
        return 2
    if config.command != args.role:
        tor = "tor" in (config.impl, args.role)
        impl = f" with impl {config.impl} (so `{config.command}`)" if tor else ""
        print(f"{FATAL_PREFIX}{args.config}: role is {config.role!r}{impl}, but the command line says "
              f"{args.role!r}", file=sys.stderr)
        return 2
    if config.impl == "tor":  # a config tor cannot run (no authority identities) is a bad config too
        from nodes.torrc import TorrcError, node_torrc

        try:
            node_torrc(config)
        except TorrcError as e:
            print(f"{FATAL_PREFIX}{args.config}: {e}", file=sys.stderr)
            return 2
    serve = serve_for(config.command)  # the role's modules: every import of the node is done here
    release_file_pages()  # what the imports touched and the node will not run again (nodes/net/pages.py)
    try:
        trio.run(run_node, serve, config)
    except KeyboardInterrupt:  # SIGINT before the signal receiver was installed
        return 0
    except BaseException as e:  # noqa: B036 -- any crash: show it all, then the cause on one line
        status = child_exit_status(e)
        if status is None:
            traceback.print_exc()
        print(fatal_line(e), file=sys.stderr)
        return 1 if status is None else status
    return 0


if __name__ == "__main__":
    sys.exit(main())
