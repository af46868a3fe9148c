"""The `onionlab` command line.

    onionlab up [--backend docker|local|swarm] [--timeout S] [--exact-subnets] [TOPOLOGY]  start a lab,
                                                wait until it is ready
    onionlab status [--json]                    what runs, what is ready, the onion and SOCKS addresses
    onionlab down [--keep]                      stop every node; remove the run dir unless --keep
    onionlab logs [NODE] [-f] [--since S] [--json]  the nodes' events and stderr, readable, in time order
    onionlab exec NODE -- CMD...                run a command in a node (docker: its container)
    onionlab inspect [--json]                   what runs where: containers/processes, networks, ports
    onionlab watch [--once] [--interval S]      a live view: readiness, consensus, descriptors, fetches
    onionlab kill NODE [--signal SIG] / restart NODE  crash a node / start it again and wait until ready
    onionlab flow [--json] [--bytes N] [--svg FILE] [--html FILE]  fetch from the onion via SOCKS; the six
                                                steps as a timeline (and drawn as six panels)
    onionlab reap [--all] [--backend swarm]     remove the Docker objects (or Swarm stacks) of runs no
                                                orchestrator owns
    onionlab chaos SCENARIO [--seed N] [--json] [--history FILE] [--html FILE]  faults on a schedule, judged
    onionlab export compose [TOPOLOGY] [-o FILE]  the topology as a docker-compose.yml
    onionlab export stack [TOPOLOGY] [-o FILE]    the topology as a Docker Swarm stack file
    onionlab export torrc [--role ROLE] [-o FILE] a torrc with which a stock tor joins the running lab
    onionlab attack guard-discovery TOPOLOGY [--seeds N] [--circuits N] [--out DIR]  Øverlier and Syverson's
                                                attack with and without entry guards: JSON, HTML, PNG
    onionlab host check|tune [TOPOLOGY]         what a lab in containers needs of the host's kernel (its
                                                neighbour table) and what it has; tune raises it (as root)
    onionlab graph [TOPOLOGY] [--format mermaid|dot|svg] [--live]  the topology as a Mermaid, DOT or SVG
                                                graph; --live: with the running lab's intro points, HSDirs,
                                                guards and rendezvous circuits

Every command takes --run-dir (default $ONIONLAB_RUN_DIR, else .onionlab/run). Exit status: 0 done, 1 the
run failed (a node crashed or was not ready in time; its log lines are shown), 2 a bad command line or
topology (every problem as file:line:column: field: message), 130 interrupted by Ctrl-C, 143 by SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from . import __version__, host
from .backends import (
    BACKENDS,
    DEFAULT_BACKEND,
    BackendError,
    StartFailed,
    default_run_dir,
    open_backend,
    read_state,
)
from .compose import ComposeError, display_source, export_compose, export_stack, plan_file_name
from .flow import DEFAULT_BYTES as DEFAULT_FLOW_BYTES
from .flow import check_reachable, render, run_flow
from .graph import FORMATS as GRAPH_FORMATS
from .graph import render_graph
from .scale import ready_timeout, voting_interval_for
from .signals import exit_status, signal_of, sigterm_interrupts
from .topology import TopologyError, load_topology
from .torrc import ROLES as TORRC_ROLES
from .torrc import TorrcError, check_timing, torrc

DEFAULT_TOPOLOGY = Path("topologies", "default.yaml")
MIN_REACH_TIME = 10.0  # seconds `up` gives the first onion fetch even when readiness used up the timeout
BUNDLED_TOPOLOGY = Path(__file__).resolve().parents[1] / DEFAULT_TOPOLOGY  # when not run from the repository


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onionlab",
        description="A containerised testbed for Tor's onion-service rendezvous protocol.",
    )
    parser.add_argument("--version", action="version", version=f"onionlab {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--run-dir", type=Path, default=None,
                        help="where the run's state, configs, keys and logs live "
                             "(default: $ONIONLAB_RUN_DIR, else .onionlab/run in the current directory)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    up = commands.add_parser("up", parents=[common], help="start a lab and wait until it is ready",
                             description="Start every node of a topology and wait until all are ready.")
    up.add_argument("topology", nargs="?", type=Path, default=None,
                    help=f"the topology file (default: {DEFAULT_TOPOLOGY})")
    up.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND,
                    help="docker (the default): every node a container of onionlab/node on the "
                         "topology's Docker networks; local: every node a process on its own 127.0.0.x "
                         "address")
    up.add_argument("--timeout", type=float, default=None,
                    help="seconds to wait for every node to be ready (default: 120, more for a large lab: "
                         "5 voting intervals + 0.5 s a node)")
    up.add_argument("--exact-subnets", action="store_true",
                    help="docker: fail when another network holds a subnet of the topology, instead of "
                         "moving that network to the next free subnet of the same size (the default)")

    status = commands.add_parser("status", parents=[common], help="show the nodes, onion and SOCKS addresses")
    status.add_argument("--json", action="store_true", help="print JSON: {nodes, onion_services, clients}")

    down = commands.add_parser("down", parents=[common], help="stop every node and remove the run dir")
    down.add_argument("--keep", action="store_true", help="keep the run dir (configs, keys, logs)")

    _add_look(commands, common)

    reap = commands.add_parser(
        "reap", parents=[common], help="remove leftover Docker objects of runs that no orchestrator owns",
        description="Remove every container, network and volume labelled onionlab.run whose run was left "
                    "half-started by an orchestrator that is gone (crashed or killed during `up`), or whose "
                    "state file no longer exists. Complete runs with a state file are left alone.")
    reap.add_argument("--all", action="store_true", dest="everything",
                      help="remove every onionlab run on this engine, running ones included")
    reap.add_argument("--backend", choices=("docker", "swarm"), default="docker",
                      help="docker: containers of docker runs; swarm: stacks of swarm runs on the swarm this "
                           "engine manages (default: %(default)s)")
    kill = commands.add_parser("kill", parents=[common], help="kill a node (SIGKILL or --signal): a crash")
    kill.add_argument("node", help="the node's name, e.g. relay3")
    kill.add_argument("--signal", type=signal_name, default="SIGKILL",
                      help="the signal to send: a name (SIGTERM or TERM) or a number (default: %(default)s)")
    restart = commands.add_parser("restart", parents=[common],
                                  help="restart a node (same keys and config) and wait until it is ready")
    restart.add_argument("node", help="the node's name, e.g. relay3")
    restart.add_argument("--timeout", type=float, default=60.0,
                         help="seconds to wait for the node to be ready (default: %(default)g)")

    flow = commands.add_parser(
        "flow", parents=[common], help="drive the rendezvous flow and print its six steps as a timeline",
        description="Fetch /bytes/N from an onion service through a client's SOCKS port (fresh SOCKS "
                    "credentials, so a new rendezvous), check every byte, and rebuild the six steps of the "
                    "flow from the nodes' events. Exit status 0 when all happened, 1 naming the failing "
                    "step.")
    flow.add_argument("--service", help="the onion service node (default: the first)")
    flow.add_argument("--client", help="the client node (default: the first)")
    flow.add_argument("--bytes", type=int, default=DEFAULT_FLOW_BYTES, dest="n_bytes",
                      help="how many bytes to fetch and verify (default: %(default)s)")
    flow.add_argument("--json", action="store_true", help="print the result as JSON")
    flow.add_argument("--svg", type=Path, metavar="FILE",
                      help="also draw the six steps as the seed's six figures into FILE (a self-contained "
                           "SVG: the real nodes, each circuit through its relays, the ms of each step)")
    flow.add_argument("--html", type=Path, metavar="FILE",
                      help="the same picture and the timeline as a self-contained HTML page")
    _add_chaos(commands, common)
    _add_export_and_graph(commands, common)
    return parser


def signal_name(text: str) -> str:
    """`kill --signal`: a signal's name (SIGTERM, TERM, term) or number, as its name; anything else (0,
    SIGFOO) is a usage error (exit 2) before a backend is asked."""
    word = text.strip().upper()
    try:
        if word.isdigit():
            return signal.Signals(int(word)).name
        return signal.Signals[word if word.startswith("SIG") else f"SIG{word}"].name
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(f"no signal {text!r}: give a name such as SIGKILL, SIGTERM, SIGSTOP "
                                         "or SIGCONT, or its number (1 or more)") from None


def _add_look(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """logs, exec, inspect, watch: looking into the running lab (orchestrator/look.py, watch/)."""
    logs = commands.add_parser(
        "logs", parents=[common], help="print the nodes' events and diagnostics, readable, in time order",
        description="Print a node's events (docs/events.md) and stderr as readable lines: time, node, "
                    "event and its fields; other lines (logging, tracebacks) as they are, marked !. Without "
                    "NODE every node's lines, merged in time order.")
    logs.add_argument("node", nargs="?", help="the node's name, e.g. auth1 (default: every node)")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="keep printing new lines as the nodes write them, until Ctrl-C or `down`")
    logs.add_argument("--since", metavar="S",
                      help="only lines from S on: a duration back from now (30s, 5m, 2h, 1d; a bare number "
                           "is seconds) or a timestamp (2026-12-07T10:00:00, local time; Z for UTC)")
    logs.add_argument("--json", action="store_true",
                      help="print JSON lines: the events as the nodes wrote them, other lines as "
                           "{ts, node, stream, text}")
    run = commands.add_parser(
        "exec", parents=[common], help="run a command in a node (docker: in its container)",
        description="docker: `docker exec` in the node's container as the node's user, with a terminal when "
                    "stdin is one. local: the command runs on this host in the node's directory. Both set "
                    "$ONIONLAB_NODE, _ROLE, _CONFIG, _ADDRESS, _CONTROL (and _SOCKS for a client). The exit "
                    "status is the command's.")
    run.add_argument("node", help="the node's name, e.g. client")
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD", help="the command, after --")
    inspect = commands.add_parser(
        "inspect", parents=[common], help="show what runs where: containers or processes, networks, ports",
        description="Show what runs where. docker: each node's container (id, image, state, pid), its "
                    "addresses, published ports and volume, and the run's networks (subnet) and volumes. "
                    "local: each node's process (pid, state), address, ports and files.")
    inspect.add_argument("--json", action="store_true", help="print it as JSON")
    watch = commands.add_parser(
        "watch", parents=[common], help="a live view of the lab in the terminal",
        description="A live view of the running lab, refreshed from every node's /status and /metrics: "
                    "nodes and readiness, consensus age, descriptors, intro points, circuits, fetch rate and "
                    "errors, chaos faults in place. q or Ctrl-C quits.")
    watch.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes "
                                                                   "(default: %(default)g)")
    watch.add_argument("--once", action="store_true", help="print one frame and exit")
    watch.add_argument("--json", action="store_true", help="with --once: print the snapshot as JSON")


def _add_chaos(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    chaos = commands.add_parser(
        "chaos", parents=[common], help="run a chaos scenario against the running lab and judge it",
        description="Apply a scenario's faults (kill, stop, pause, partition, bandwidth, delay, loss) on its "
                    "seeded schedule while fetching from the onion again and again, record a history, and "
                    "judge it (docs/chaos.md). Every fault is undone at the end, on Ctrl-C and SIGTERM too. "
                    "Exit status 0 when every checker passes, 1 otherwise, 2 for a bad scenario file.")
    chaos.add_argument("scenario", nargs="?", type=Path, help="the scenario file (topologies/chaos/*.yaml)")
    chaos.add_argument("--seed", type=int, help="the RNG seed (default: the scenario's `seed`)")
    chaos.add_argument("--json", action="store_true",
                       help="print the result as JSON (progress on stderr); a refused run prints "
                            "{ok: false, refused: WHY}")
    chaos.add_argument("--history", type=Path, help="write the JSONL history here (default: .onionlab/chaos/"
                                                    "SCENARIO-seedN-TIME.jsonl in the current directory, "
                                                    "which `down` leaves alone)")
    chaos.add_argument("--html", type=Path, help="also write a self-contained HTML timeline here")
    chaos.add_argument("--dry-run", action="store_true", help="print the schedule for this lab and seed; "
                                                              "change nothing")
    chaos.add_argument("--heal", action="store_true",
                       help="undo the faults a chaos run left in place (it was SIGKILLed), then exit")


def _add_export_and_graph(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """`export compose`, `export stack` and `graph` read a topology; `export torrc` reads the running lab."""
    export = commands.add_parser("export", help="write a topology in another tool's format",
                                 description="Write a topology in another tool's format.")
    formats = export.add_subparsers(dest="export_format", metavar="FORMAT", required=True)
    compose = formats.add_parser(
        "compose", help="a docker-compose.yml (docker compose up -d runs the lab)",
        description="Write a docker-compose.yml for a topology: networks with its subnets, a one-shot init "
                    "service that makes the keys and configs in the nodes' volumes, one service per node.")
    compose.add_argument("topology", nargs="?", type=Path, default=None,
                         help=f"the topology file (default: {DEFAULT_TOPOLOGY})")
    compose.add_argument("-o", "--output", type=Path, default=None,
                         help="write the file here instead of to standard output")
    stack = formats.add_parser(
        "stack", help="a Docker Swarm stack file (docker stack deploy -c FILE NAME runs the lab)",
        description="Write a Docker Swarm stack file: an overlay network per topology network with its "
                    "subnet, the same init service, one service per node found by its name (dnsrr; with "
                    "several networks `<node>.<network>` on each, as the swarm backend does); nodes wait "
                    "for the config init writes. SOCKS ports are published on every host address (mode: "
                    "host). For one swarm node: init writes into that host's volumes.")
    stack.add_argument("topology", nargs="?", type=Path, default=None,
                       help=f"the topology file (default: {DEFAULT_TOPOLOGY})")
    stack.add_argument("-o", "--output", type=Path, default=None,
                       help="write the file here instead of to standard output")
    torrc = formats.add_parser(
        "torrc", parents=[common], help="a torrc that joins the RUNNING lab (stock tor as client or service)",
        description="Write a torrc for Debian's (or any) tor 0.4.9 that joins the running lab: "
                    "TestingTorNetwork 1 and one DirAuthority line per authority, read from their /status, "
                    "plus a SocksPort (client) or HiddenServiceDir/Port (onion_service). `tor -f FILE` then "
                    "bootstraps from the lab's authorities (docs/tor-interop.md).")
    torrc.add_argument("--role", choices=TORRC_ROLES, default="client", help="default: %(default)s")
    torrc.add_argument("--socks-port", default="127.0.0.1:9050", help="client: default %(default)s")
    torrc.add_argument("--data-directory", default="tor-data", help="default: %(default)s")
    torrc.add_argument("--control-port", default=None, help="add ControlPort (cookie authentication)")
    torrc.add_argument("--hidden-service-dir", default="tor-data/hs",
                       help="onion_service: default %(default)s")
    torrc.add_argument("--hidden-service-port", action="append", default=[], metavar="'VPORT HOST:PORT'",
                       help="onion_service: a virtual port and its target (default: 80 127.0.0.1:8080)")
    torrc.add_argument("-o", "--output", type=Path, default=None,
                       help="write the file here instead of to standard output")
    attack = commands.add_parser(
        "attack", help="run an attack on a lab and report it",
        description="Attacks from the literature, run on a lab of their own (docs/attack.md).")
    attacks = attack.add_subparsers(dest="attack", metavar="ATTACK", required=True)
    guard = attacks.add_parser(
        "guard-discovery", parents=[common],
        help="locate an onion service with adversary relays, with and without entry guards",
        description="Bring the topology up, make its onion service build marked rendezvous circuits until an "
                    "adversary relay (adversary: true) is its first hop, for each seed with one entry guard "
                    "and with none; write attack.json, attack.png and attack.html; take the lab down.")
    guard.add_argument("topology", type=Path, help="a topology with adversary relays, a service and a client")
    guard.add_argument("--seeds", type=int, default=5, help="trials per mode (default: %(default)s)")
    guard.add_argument("--circuits", type=int, default=60,
                       help="marked circuits per trial at most (default: %(default)s)")
    guard.add_argument("--cells", type=int, default=None, help="cells in the mark (default: 40)")
    guard.add_argument("--out", type=Path, default=Path("attack-report"), help="default: %(default)s")
    guard.add_argument("--backend", choices=BACKENDS, default="local", help="default: %(default)s")
    guard.add_argument("--running", action="store_true", help="use the lab running in --run-dir")
    guard.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    host = commands.add_parser("host", help="check or prepare this host's kernel for a lab in containers",
                               description="What a lab in containers needs of this host's kernel (the "
                                           "neighbour table all containers share) against what it has "
                                           "(check; exit status 1 when short), or raise it (tune, as root: "
                                           "prints every change and how to undo it). docs/scale.md")
    host.add_argument("action", choices=("check", "tune"))
    host.add_argument("topology", nargs="?", type=Path, default=None,
                      help=f"the topology file (default: {DEFAULT_TOPOLOGY})")
    graph = commands.add_parser("graph", parents=[common],
                                help="print a topology as a Mermaid, DOT or SVG graph (--live: with the "
                                     "running lab's roles)",
                                description="Print a topology as a graph: networks as subgraphs, nodes "
                                            "labelled with their role, an edge per network membership. "
                                            "--live draws the running lab's topology with what each node "
                                            "is right now, from every node's /status.")
    graph.add_argument("topology", nargs="?", type=Path, default=None,
                       help=f"the topology file (default: {DEFAULT_TOPOLOGY}; with --live, the lab's)")
    graph.add_argument("--format", choices=GRAPH_FORMATS, default="mermaid",
                       help="mermaid (default; Markdown viewers draw it), dot (Graphviz) or svg (a "
                            "self-contained picture, drawn without Graphviz)")
    graph.add_argument("--live", action="store_true",
                       help="the running lab (--run-dir): who is an intro point (of which service), an "
                            "HSDir (of which service and time period), whose guard, and the live "
                            "rendezvous circuits")


def _default_topology() -> Path:
    return DEFAULT_TOPOLOGY if DEFAULT_TOPOLOGY.exists() else BUNDLED_TOPOLOGY


def cmd_up(args: argparse.Namespace) -> int:
    topology = load_topology(args.topology or _default_topology())
    backend = open_backend(args.backend, args.run_dir)
    backend.exact_subnets = args.exact_subnets  # the docker backend's; processes on loopback have no subnets
    started = time.monotonic()

    def progress(line: str) -> None:
        print(f"[{time.monotonic() - started:5.1f}s] {line}", flush=True)

    print(f"starting lab {topology.name!r}: {len(topology.nodes)} nodes, {args.backend} backend", flush=True)
    relays = len(topology.nodes_by_role("relay"))
    interval = voting_interval_for(relays, topology.timing.voting_interval)
    if interval != topology.timing.voting_interval:
        print(f"timing: a consensus every {interval} s for {relays} relays (the topology asks "
              f"{topology.timing.voting_interval} s; docs/scale.md)", flush=True)
    if args.timeout is None:
        args.timeout = ready_timeout(len(topology.nodes), interval)
    try:
        backend.up(topology, timeout=args.timeout, progress=progress)
    except KeyboardInterrupt:
        gone = {"docker": "every container, network and volume of the run is removed",
                "swarm": "the run's stack (services, secrets, configs, networks) is removed"}.get(
                    args.backend, "every node is stopped")
        print(f"onionlab: `up` was interrupted: {gone}; `onionlab status` says so, `onionlab logs NODE` "
              f"shows what a node wrote, `onionlab down` removes {backend.run_dir}", file=sys.stderr)
        raise
    except StartFailed as e:
        print(f"onionlab: {e}", file=sys.stderr)
        if args.backend == "swarm":
            print("onionlab: the run's stack is removed; its logs went with it (the lines above are the "
                  f"failed node's); `onionlab down` removes {backend.run_dir}", file=sys.stderr)
            return 1
        if args.backend == "docker":
            print(f"onionlab: every container, network and volume of the run is removed; the containers' "
                  f"logs are kept in {backend.run_dir} (`onionlab logs NODE` shows a node's log, "
                  "`onionlab down` removes them)", file=sys.stderr)
            return 1
        print(f"onionlab: every node is stopped; their files are kept in {backend.run_dir} "
              "(`onionlab logs NODE` shows a node's log, `onionlab down` removes them)", file=sys.stderr)
        return 1
    status = backend.status()
    reachable = _check_onions(status, progress, deadline=started + args.timeout)
    print()
    print(format_status(status))
    return 0 if reachable else 1


def _check_onions(status: dict, progress, *, deadline: float) -> bool:
    """Fetch from every onion service through every client (the last phase of `up`). False, with the reason
    said, when one is not reachable before the deadline; the lab is left running to look at."""
    clients = [c for c in status["clients"] if c.get("socks")]
    deadline = max(deadline, time.monotonic() + MIN_REACH_TIME)
    ok = True
    for service in status["onion_services"]:
        reached = []
        for client in clients:
            try:
                seconds = check_reachable(client["socks"], service["onion"], deadline=deadline)
            except OSError as e:
                print(f"onionlab: {service['name']} is not reachable through {client['name']}: {e}. The lab "
                      "is still running: `onionlab flow` shows which step fails, `onionlab logs NODE` the "
                      "details", file=sys.stderr)
                ok = False
                continue
            reached.append(f"{client['name']} ({1000 * seconds:.0f} ms)")
        if reached:
            progress(f"{service['name']}: onion reachable via {', '.join(reached)}")
    return ok


def _running_backend(args: argparse.Namespace):
    """The backend of the run in --run-dir, or None when nothing was started there."""
    run_dir = args.run_dir or default_run_dir()
    info = read_state(run_dir)
    return None if info is None else open_backend(info.backend, run_dir)


class LabFailed(BackendError):
    """The run in the run dir did not come up (RunInfo.failed): nothing of it runs."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _lab(args: argparse.Namespace, *, failed_too: bool = False):
    """The backend of the run in --run-dir; BackendError when nothing was started there, LabFailed when its
    `up` failed or was interrupted (unless `failed_too`: `logs` reads what such a run left)."""
    run_dir = args.run_dir or default_run_dir()
    info = read_state(run_dir)
    if info is None:
        raise BackendError(f"no lab is running (nothing in {run_dir}); start one with `onionlab up`")
    if info.failed and not failed_too:
        raise LabFailed(f"the lab {info.lab!r} in {run_dir} did not come up ({info.failed}): nothing of it "
                        "runs. `onionlab logs NODE` shows what a node wrote, `onionlab down` removes the run "
                        "dir, `onionlab up` starts a new lab", info.failed)
    return open_backend(info.backend, run_dir)


def cmd_status(args: argparse.Namespace) -> int:
    try:
        backend = _lab(args)
    except LabFailed as e:
        if args.json:
            print(json.dumps({"failed": e.reason, "nodes": [], "onion_services": [], "clients": []},
                             indent=2))
        raise
    status = backend.status()
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    backend = _running_backend(args)
    if backend is None:
        print(f"nothing to stop in {args.run_dir or default_run_dir()}")
        return 0
    from . import chaos

    moved, where = (0, None) if args.keep else chaos.keep_histories(backend.run_dir)
    stopped = backend.down(keep=args.keep)
    print(f"stopped {len(stopped)} node(s)" + (f": {', '.join(stopped)}" if stopped else ""))
    print(f"kept {backend.run_dir}" if args.keep else f"removed {backend.run_dir}")
    if moved:
        print(f"kept {moved} chaos history and report file(s): moved to {where}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from .look import logs

    return logs(_lab(args, failed_too=True), args)


def cmd_exec(args: argparse.Namespace) -> int:
    from .look import exec_in

    return exec_in(_lab(args), args)


def cmd_inspect(args: argparse.Namespace) -> int:
    from .look import inspect

    return inspect(_lab(args, failed_too=True), args)


def cmd_watch(args: argparse.Namespace) -> int:
    from .watch import watch

    return watch(_lab(args), args)


def cmd_kill(args: argparse.Namespace) -> int:
    backend = _lab(args)
    backend.kill(args.node, args.signal)
    print(f"sent {args.signal} to {args.node}")
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    backend = _lab(args)
    started = time.monotonic()
    backend.restart(args.node, timeout=args.timeout)
    print(f"{args.node} is ready again after {time.monotonic() - started:.1f} s")
    return 0


def _pick(nodes: list[dict], name: str | None, what: str) -> dict:
    if not nodes:
        raise BackendError(f"the run has no {what}")
    if name is None:
        return nodes[0]
    for node in nodes:
        if node["name"] == name:
            return node
    raise BackendError(f"no {what} named {name!r} (there are: {', '.join(n['name'] for n in nodes)})")


def cmd_flow(args: argparse.Namespace) -> int:
    backend = _lab(args)
    status = backend.status()
    service = _pick(status["onion_services"], args.service, "onion service")
    client = _pick(status["clients"], args.client, "client")
    if not service.get("onion") or not client.get("socks"):
        raise BackendError(f"{service['name']} has no onion address or {client['name']} no SOCKS port yet: "
                           "is the lab ready? (`onionlab status`)")
    info = read_state(backend.run_dir)
    result = run_flow(info, backend.logs, onion=service["onion"], service=service["name"],
                      client=client["name"], socks=client["socks"], n_bytes=args.n_bytes)
    print(json.dumps(result.to_dict(), indent=2) if args.json else render(result))
    if args.svg is not None or args.html is not None:
        from .flow_svg import render_html, render_svg

        for path, draw in ((args.svg, render_svg), (args.html, render_html)):
            if path is not None:
                path.write_text(draw(result))
                print(f"six steps drawn in {path}", file=sys.stderr if args.json else sys.stdout)
    return 0 if result.ok else 1


def cmd_chaos(args: argparse.Namespace) -> int:
    from . import chaos, report

    try:
        backend = _lab(args)
    except BackendError:
        if args.scenario is not None:
            chaos.load_scenario(args.scenario)  # a bad file is exit 2 (all its problems) even without a lab
        raise
    lab = None
    if args.scenario is not None and not args.heal:  # the file's problems and the lab's, all at once
        lab = [(n["name"], n["role"]) for n in backend.status()["nodes"]]
    scenario = chaos.load_scenario(args.scenario, lab=lab, seed=args.seed) if args.scenario is not None \
        else None
    if args.heal:
        done = chaos.heal(backend)
        for undo, how in done:
            print(f"{undo['fault']} {undo['node']}: {how}")
        print(f"healed {len(done)} fault(s)" if done else "no chaos fault is in place")
        return 1 if any(how.startswith("FAILED") for _, how in done) else 0
    if scenario is None:
        raise BackendError("which scenario? e.g. `onionlab chaos topologies/chaos/kill-intro-point.yaml`")
    if args.dry_run:
        seed = scenario.seed if args.seed is None else args.seed
        schedule = chaos.make_schedule(scenario, seed, lab)
        for op in schedule:
            print(f"{op.at:7.1f} s .. {op.until:7.1f} s  op {op.index}: {op.describe()}")
        refused = chaos.refusals(backend, schedule)  # what a real run would refuse, before anything changes
        for line in [] if refused else chaos.shaping_paths(backend, schedule):
            print(line, file=sys.stderr)
        for why in refused:
            print(f"onionlab: chaos would refuse this run: {why}", file=sys.stderr)
        return 1 if refused else 0
    history = args.history or chaos.default_history(scenario.name,
                                                    scenario.seed if args.seed is None else args.seed)
    out = sys.stderr if args.json else sys.stdout
    try:
        result = chaos.run_scenario(scenario, backend, seed=args.seed, history_path=history,
                                    say=lambda line: print(line, file=out, flush=True))
    except chaos.ChaosRefused as e:
        print(f"onionlab: chaos refused, nothing was changed: {e}", file=sys.stderr)
        if args.json:  # a script reading stdout learns why, in the shape of a result
            print(json.dumps({"scenario": scenario.name, "source": scenario.source,
                              "seed": scenario.seed if args.seed is None else args.seed, "ok": False,
                              "refused": str(e), "interrupted": False, "history": None, "verdicts": []},
                             indent=2))
        return 1
    if args.html:
        args.html.write_text(report.render_html(result.history))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print()
        print(report.render_summary(result.history))
        print(f"\nhistory: {history}" + (f", timeline: {args.html}" if args.html else ""))
    if result.interrupted:
        return exit_status(signal.Signals[result.interrupted_by or "SIGINT"])
    return 0 if result.ok else 1


def cmd_export(args: argparse.Namespace) -> int:
    """`export compose` / `export stack`: the topology as a docker-compose.yml or a Swarm stack file, on
    stdout or into --output. `export torrc`: a torrc joining the running lab."""
    if args.export_format == "torrc":
        return _export_torrc(args)
    path = args.topology or _default_topology()
    topology = load_topology(path)
    output = display_source(args.output) if args.output is not None else None
    export = export_stack if args.export_format == "stack" else export_compose
    try:
        text = export(topology, display_source(path), args.output, output_name=output)
    except ComposeError as e:
        print(f"onionlab: {e}", file=sys.stderr)
        return 1
    if args.output is None:
        sys.stdout.write(text)
        if args.export_format == "stack":
            print("onionlab: the stack needs its plan file next to it: `onionlab export stack -o FILE` "
                  "writes both", file=sys.stderr)
    else:
        plan = f" and its plan {plan_file_name(args.output.name)}" if args.export_format == "stack" else ""
        print(f"wrote {args.output}{plan} ({len(topology.nodes)} node services and the init service)")
    return 0


def _export_torrc(args: argparse.Namespace) -> int:
    authorities = _lab(args).status()["authorities"]
    try:
        for a in authorities:
            if a.get("voting_interval"):
                check_timing(a["voting_interval"])
        ports = []
        for spec in args.hidden_service_port:
            virtual, _, target = spec.partition(" ")
            if not virtual.isdigit() or not target:
                raise TorrcError(f"--hidden-service-port {spec!r}: expected 'VPORT HOST:PORT'")
            ports.append((int(virtual), target))
        text = torrc(authorities, role=args.role, data_directory=args.data_directory,
                     socks_port=args.socks_port, control_port=args.control_port,
                     service_dir=args.hidden_service_dir, service_ports=ports)
    except TorrcError as e:
        print(f"onionlab: {e}", file=sys.stderr)
        return 1
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
        print(f"wrote {args.output}: `tor -f {args.output}` joins the lab as a {args.role.replace('_', ' ')}")
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    if not args.live:
        sys.stdout.write(render_graph(load_topology(args.topology or _default_topology()), args.format))
        return 0
    from .live_roles import live_roles

    backend = _lab(args)
    info = read_state(backend.run_dir)
    topology = load_topology(args.topology or Path(info.topology))
    roles = live_roles((n.name for n in info.nodes), backend.node_status,
                       addresses={n.name: n.address for n in info.nodes})
    sys.stdout.write(render_graph(topology, args.format, roles))
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    from nodes.core.attack_signature import BURST_CELLS

    from .attack.command import guard_discovery
    from .attack.run import AttackFailed

    if args.seeds < 1 or args.circuits < 1:
        raise BackendError("--seeds and --circuits must be at least 1")
    try:
        paths = guard_discovery(args.topology, backend_name=args.backend, run_dir=args.run_dir,
                                seeds=args.seeds, circuits=args.circuits, cells=args.cells or BURST_CELLS,
                                out=args.out, running=args.running, keep=args.keep,
                                say=lambda line: print(line, flush=True))
    except AttackFailed as e:
        print(f"onionlab: {e}", file=sys.stderr)
        return 1
    print("report: " + ", ".join(str(p) for p in paths.values()))
    return 0


def cmd_host(args: argparse.Namespace) -> int:
    topology = load_topology(args.topology or _default_topology())
    print(f"lab {topology.name!r}: {len(topology.nodes)} nodes, about {host.neighbour_entries(topology)} "
          "neighbour-table entries in containers (none on the local backend)")
    if args.action == "check":
        lines, ok = host.check_lines(topology)
        print("\n".join(lines))
        if not ok:
            print(f"to raise it: sudo onionlab host tune {host.shown(topology.source)}")
        return 0 if ok else 1
    try:
        changes = host.tune(topology)
    except OSError as e:
        print(f"onionlab: cannot change the kernel's settings ({e}): run it as root, on the host (not in a "
              "container)", file=sys.stderr)
        return 1
    if not changes:
        print("nothing to change: the host carries this lab")
        return 0
    for c in changes:
        print(f"set {c.name} = {c.new} (was {c.old})")
    print(f"until the next reboot; undo: {host.undo_command(changes)}")
    return 0


def cmd_reap(args: argparse.Namespace) -> int:
    backend = open_backend(args.backend, args.run_dir)
    report = backend.reap(everything=args.everything)
    for run_id, why in report.removed.items():
        print(f"removed run {run_id}: {why}")
    for run_id, why in report.kept.items():
        print(f"kept run {run_id}: {why}")
    print(f"removed {report.containers} containers, {report.networks} networks, {report.volumes} volumes and "
          f"{report.rules} firewall rules")
    _clear_node_control(backend.run_dir)
    return 0


def _clear_node_control(run_dir: Path) -> None:
    """`reap`, for the lab still running from the run dir: the link-layer rules and clock offsets that
    chaos runs (or control calls by hand) left on the nodes that answer."""
    info = read_state(run_dir)
    if info is None or info.failed or not info.nodes:
        return
    from .chaos import clear_node_control

    try:
        cleared = clear_node_control(open_backend(info.backend, run_dir), [n.name for n in info.nodes])
    except BackendError:
        return
    if cleared:
        print(f"cleared link-layer rules and clock offsets on {', '.join(cleared)}")


def _ports_text(ports: object) -> str:
    if isinstance(ports, list):
        return ", ".join(str(p["port"]) if isinstance(p, dict) and "port" in p else str(p) for p in ports)
    return str(ports)


def format_status(status: dict) -> str:
    """The status as text: a table of nodes, then the onion services and the clients' SOCKS addresses."""
    rows = [("NAME", "ROLE", "ADDRESS", "READY")]
    rows += [(n["name"], n["role"], n["address"], "yes" if n["ready"] else "no") for n in status["nodes"]]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths + [0], strict=True)).rstrip()
             for row in rows]
    if status["onion_services"]:
        lines += ["", "onion services:"]
        lines += [f"  {s['name']}  {s['onion'] or '(no address yet)'}  ports {_ports_text(s['ports'])}"
                  for s in status["onion_services"]]
    if status["clients"]:
        lines += ["", "clients (SOCKS5):"]
        lines += [f"  {c['name']}  {c['socks']}" for c in status["clients"]]
    return "\n".join(lines)


COMMANDS = {"up": cmd_up, "status": cmd_status, "down": cmd_down, "logs": cmd_logs, "reap": cmd_reap,
            "exec": cmd_exec, "inspect": cmd_inspect, "watch": cmd_watch,
            "flow": cmd_flow, "kill": cmd_kill, "restart": cmd_restart, "chaos": cmd_chaos,
            "export": cmd_export, "graph": cmd_graph, "attack": cmd_attack,
            "host": cmd_host}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        with sigterm_interrupts():  # a SIGTERM cleans up like Ctrl-C does (`up` removes what it made)
            return COMMANDS[args.command](args)
    except TopologyError as e:
        print(e, file=sys.stderr)
        return 2
    except BackendError as e:
        print(f"onionlab: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (signals.Terminated): 128 + the signal's number
        print(f"onionlab: interrupted by {signal_of(e).name}", file=sys.stderr)
        return exit_status(signal_of(e))


if __name__ == "__main__":
    sys.exit(main())
