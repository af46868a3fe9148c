"""The local backend: a topology as processes on this machine, each node on its own loopback address.

Node i (in topology order) gets 127.0.0.(2+i): on Linux the whole of 127.0.0.0/8 answers without setup, so
every node keeps the topology's port numbers. When something already listens on one of those ports (another
lab), the run moves to 127.0.1.(2+i), 127.0.2.(2+i), ... Networks are not modelled: every node can reach
every other (isolation between networks is the docker backend's job). The run dir holds everything of a
run, private keys included:

    state.json                  RunInfo: what runs where (PIDs, addresses, ports, onion addresses)
    nodes/<name>/               the node's data dir: keys/ (mode 0700; authorities' identity.key is made
                                by nodes.init before anything starts), guards.json, ...
    nodes/<name>/config.json    the node's NodeConfig (written by nodes.init from the run's plan)
    nodes/<name>/events.jsonl   its stdout: one JSON event a line
    nodes/<name>/stderr.log     its diagnostics and, if it crashed, the traceback and a `fatal: ...` line

Each node runs as `python -m nodes ROLE --config FILE` (`tor` instead of ROLE for an `impl: tor` node, whose
tor is its child in the same process group) in a session (process group) of its own, so a Ctrl-C in the
terminal does not reach it and `down`, `kill` and `restart` signal the whole group, tor included.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from signal import Signals

import nodes
from nodes.__main__ import FATAL_PREFIX
from nodes.init import CONFIG_FILE as CONFIG
from nodes.init import render_state
from nodes.net.control import write_secret
from orchestrator import readiness
from orchestrator.control import new_secret, post_control, run_secret
from orchestrator.plan import PETNAMES_FILE, make_plan
from orchestrator.signals import signals_deferred
from orchestrator.topology import Topology

from . import (
    STATE_FILE,
    BackendError,
    NodeFailed,
    RunInfo,
    RunNode,
    StartFailed,
    default_run_dir,
    failure_reason,
    fresh_run_dir,
    lab_status,
    node_env,
    read_state,
    require_state,
    write_state,
)
from .base import (
    CLOCK_FAULTS,
    FAULT_KINDS,
    LINK_LAYER,
    PROCESS_FAULTS,
    SHAPING_FAULTS,
    ExecSpec,
    LogLine,
    Progress,
)
from .filetail import tail_file

FIRST_ADDRESS = IPv4Address("127.0.0.2")  # 127.0.0.1 stays free for whatever else runs here
BLOCKS = 64  # 127.0.N.2.. for N below this: room for as many labs side by side
LOOPBACK = IPv4Network("127.0.0.0/8")
PORTS = ("control_port", "or_port", "dir_port", "socks_port")
TERM_GRACE = 10.0  # seconds from SIGTERM to SIGKILL
KILL_GRACE = 5.0
STATUS_TIMEOUT = 1.0  # `status` asks every node once; a node slower than this is not ready
TAIL_LINES = 20
EVENTS, STDERR = "events.jsonl", "stderr.log"


class LocalBackend:
    name = "local"

    def __init__(self, run_dir: str | os.PathLike[str] | None = None) -> None:
        self.run_dir = Path(run_dir if run_dir is not None else default_run_dir()).absolute()
        self._children: dict[int, subprocess.Popen] = {}  # processes this object started, by PID

    # -- the three verbs -------------------------------------------------------------------------------------

    def up(self, topology: Topology, *, timeout: float = 60.0, progress: Progress | None = None) -> RunInfo:
        """Start every node and wait until all are ready (readiness.py). If a node exits meanwhile, raise
        NodeFailed at once; on any failure stop every process, keeping the run dir for its logs."""
        say = progress or (lambda _: None)
        self._prepare_run_dir()
        info = self._plan(topology)
        write_state(info)
        try:
            self._write_configs(topology, info)
            self._start(info)
            say(f"started {len(info.nodes)} node processes on {info.nodes[0].address}.."
                f"{info.nodes[-1].address} (run dir {self.run_dir})")
            statuses = self._wait_ready(info, timeout, say)
        except BaseException as failure:
            with signals_deferred():  # a second Ctrl-C or SIGTERM must not leave nodes running
                try:
                    self._stop(info.nodes)
                except BackendError as e:
                    failure.add_note(str(e))
                info.failed = failure_reason(failure)  # `status` says so instead of listing dead nodes
                write_state(info)
            raise
        for node in info.nodes:
            status = statuses[node.name]
            if node.role == "onion_service":
                node.onion = status.get("onion")
            elif node.role == "client":
                node.socks = status.get("socks") or node.socks
        write_state(info)
        return info

    def status(self) -> dict:
        """{"nodes": [{name, role, address, ready}], "onion_services": [{name, onion, ports}],
        "authorities": [readiness.authority_entries], "clients": [{name, socks}]}, asking every node's
        /status once."""
        info = self._state()
        live = {n.name: readiness.fetch_status(n.address, n.ports["control_port"], timeout=STATUS_TIMEOUT)
                if n.pid and self._running(n) else None for n in info.nodes}
        return lab_status(info, live, live_socks=True)

    def down(self, keep: bool = False) -> list[str]:
        """Stop every node (SIGTERM to its process group, SIGKILL after TERM_GRACE), check that none is left,
        and remove the run dir unless `keep`. Returns the names of the nodes that were still running."""
        info = read_state(self.run_dir)
        stopped = self._stop(info.nodes) if info is not None else []
        if not keep and info is not None:
            shutil.rmtree(self.run_dir)
        return stopped

    def logs(self, name: str) -> str:
        """The node's events (stdout) and then its stderr, each under a `==> path <==` header."""
        self._state().node(name)
        parts = []
        for path in (self._node_dir(name) / EVENTS, self._node_dir(name) / STDERR):
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"==> {path} <==\n{text}")
        return "\n".join(parts)

    def log_lines(self, name: str, stream: str, *, follow: bool = False,
                  since: float | None = None) -> Iterator[LogLine | None]:
        """The node's events.jsonl (stdout) or stderr.log, followed until the run dir goes (`down`). `since`
        is left to the caller: the files hold no engine timestamps to select by."""
        self._state().node(name)
        path = self._node_dir(name) / (EVENTS if stream == "stdout" else STDERR)
        return tail_file(path, name, stream, follow=follow, alive=(self.run_dir / STATE_FILE).exists)

    def exec_spec(self, name: str, command: list[str], *, tty: bool = False) -> ExecSpec:
        """A local node has no container to enter: the command runs on this host, in the node's directory,
        with the node's Python path and $ONIONLAB_NODE, _ROLE, _CONFIG, _ADDRESS, _CONTROL (and _SOCKS for
        a client) set, whether the node runs or not. `tty` changes nothing: the command has the terminal."""
        node = self._state().node(name)
        where = self._node_dir(name)
        return ExecSpec(argv=command, env={**self._node_env(), **node_env(node, where / CONFIG)},
                        cwd=str(where))

    def inspect(self) -> dict:
        """The run dir, and per node: its process (pid, state), address, ports and files."""
        info = self._state()
        nodes_ = []
        for node in info.nodes:
            state = self.node_state(node.name)["status"]
            where = self._node_dir(node.name)
            nodes_.append({"name": node.name, "role": node.role, "impl": node.impl, "pid": node.pid,
                           "state": state, "address": node.address, "ports": node.ports,
                           **({"socks": node.socks} if node.socks else {}),
                           **({"onion": node.onion} if node.onion else {}),
                           "dir": str(where), "config": str(where / CONFIG),
                           **({"petnames": str(where / PETNAMES_FILE)} if node.role == "client" else {}),
                           "logs": [str(where / EVENTS), str(where / STDERR)]})
        return {"backend": self.name, "run_dir": str(self.run_dir), "lab": info.lab,
                "topology": info.topology, "failed": info.failed, "nodes": nodes_}

    # -- up, step by step ------------------------------------------------------------------------------------

    def _node_dir(self, name: str) -> Path:
        return self.run_dir / "nodes" / name

    def _state(self) -> RunInfo:
        return require_state(self.run_dir)

    def _prepare_run_dir(self) -> None:
        """An empty run dir: a previous run's leftovers go, unless one of its nodes still runs."""
        old = read_state(self.run_dir)
        if old is not None:
            running = [n.name for n in old.nodes if n.pid and self._running(n)]
            if running:
                raise BackendError(f"a lab is already running from {self.run_dir} ({', '.join(running)}); "
                                   "stop it with `onionlab down` first")
        # the run dir holds private keys: keep git from ever offering them for a commit
        fresh_run_dir(self.run_dir, old, "onionlab run files, private keys included")

    def _plan(self, topology: Topology) -> RunInfo:
        first = _free_block(topology)
        nodes_ = []
        for i, node in enumerate(topology.nodes):
            address = str(first + i)
            nodes_.append(RunNode(
                name=node.name, role=node.role, address=address, impl=node.impl,
                ports={key: value for key in PORTS if (value := getattr(node, key)) is not None},
                services=[s.port for s in node.services],
                socks=f"{address}:{node.socks_port}" if node.role == "client" else None))
        return RunInfo(backend=self.name, run_dir=str(self.run_dir), topology=topology.source,
                       lab=topology.name, nodes=nodes_)

    def _write_configs(self, topology: Topology, info: RunInfo) -> None:
        """The run's plan with our loopback addresses, made into configs and keys by nodes.init (the same
        code the Docker backends run in the init container)."""
        plan = make_plan(topology, addresses={n.name: n.address for n in info.nodes},
                         data_root=self.run_dir / "nodes")
        render_state(plan.to_json(), self.run_dir / "nodes")
        secret = new_secret(self.run_dir)  # the control call's (nodes/net/control.py), in each key directory
        for node in info.nodes:
            write_secret(self._node_dir(node.name), secret)

    @staticmethod
    def _node_env() -> dict[str, str]:
        # the nodes import the same `nodes` package as we do, whatever their working directory
        source_root = str(Path(nodes.__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (source_root, os.environ.get("PYTHONPATH")) if p)
        return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}

    def _start(self, info: RunInfo, nodes_: list[RunNode] | None = None) -> None:
        env = self._node_env()
        for node in info.nodes if nodes_ is None else nodes_:
            where = self._node_dir(node.name)
            with open(where / EVENTS, "ab") as out, open(where / STDERR, "ab") as err:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "nodes", node.command, "--config", str(where / CONFIG)],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=where, env=env,
                    start_new_session=True)
            self._children[proc.pid] = proc
            node.pid = proc.pid
            write_state(info)  # after each start: a crash of ours right here still leaves every PID recorded

    # -- one node --------------------------------------------------------------------------------------------

    def kill(self, name: str, signal: str = "SIGKILL") -> None:
        """Send a signal to the node's process group (SIGKILL: it dies at once, as in a crash)."""
        node = self._running_node(name)
        try:
            number = Signals[signal]
        except KeyError:
            raise BackendError(f"no signal named {signal!r} (e.g. SIGKILL, SIGTERM, SIGSTOP)") from None
        os.killpg(node.pid, number)

    def restart(self, name: str, *, timeout: float = 60.0) -> dict:
        """Stop the node if it runs, start it again with the same config and data dir (the same keys), and
        wait until it is ready; returns its /status."""
        info = self._state()
        node = info.node(name)
        self._stop([node])
        self._start(info, [node])
        return self._wait_node(node, timeout)

    def _wait_node(self, node: RunNode, timeout: float = 60.0) -> dict:
        """Wait until the node is ready: its /status. Only its own exit stops the wait early (other nodes
        may be down on purpose meanwhile)."""
        endpoint = readiness.Endpoint(node.name, node.address, node.ports["control_port"])
        try:
            statuses = readiness.wait_until_ready([endpoint], timeout=timeout,
                                                  check=lambda: self._check_alive([node]))
        except readiness.ReadinessTimeout as e:
            raise StartFailed(f"{e}\n{self._tail_report(node, 5)}") from None
        return statuses[node.name]

    def _running_node(self, name: str) -> RunNode:
        node = self._state().node(name)
        if not node.pid or not self._running(node):
            raise BackendError(f"{name} is not running")
        return node

    # -- chaos (orchestrator/chaos/): the process faults, by signals to the node's process group -------------

    def supported_faults(self) -> frozenset[str]:
        """kill, stop and pause: signals to a node's process group; bandwidth, delay, loss and skew: the
        node's control call (its link-layer shaper, its clock). A partition needs links of one node's own,
        which processes sharing this host's loopback do not have."""
        return PROCESS_FAULTS | SHAPING_FAULTS | CLOCK_FAULTS

    def fault_problem(self, fault: str) -> str | None:
        if fault not in FAULT_KINDS:
            return f"no fault named {fault!r}"
        if fault not in self.supported_faults():
            return ("its nodes are processes sharing this host's loopback, with no network link of their own "
                    "to cut (that needs network namespaces); run the lab with `--backend docker`")
        if fault in SHAPING_FAULTS | CLOCK_FAULTS and run_secret(self.run_dir) is None:
            return ("the lab has no control secret (an older onionlab started it): restart it with "
                    "`onionlab down` and `onionlab up`")
        return None

    def control(self, name: str, command: dict) -> dict:
        node = self._state().node(name)
        return post_control(node.address, node.ports["control_port"], run_secret(self.run_dir) or "", command)

    def node_addresses(self, name: str) -> dict[str, str]:
        """{"loopback": its 127.x address}: networks are not modelled here."""
        return {"loopback": self._state().node(name).address}

    def shaping_path(self, fault: str, params: dict) -> tuple[str, str]:
        return LINK_LAYER, "processes on loopback have no links of their own to put a qdisc on"

    def node_status(self, name: str) -> dict | None:
        node = self._state().node(name)
        return readiness.fetch_status(node.address, node.ports["control_port"], timeout=STATUS_TIMEOUT)

    def node_metrics(self, name: str) -> list[tuple[str, dict[str, str], float]] | None:
        node = self._state().node(name)
        return readiness.fetch_metrics(node.address, node.ports["control_port"], timeout=STATUS_TIMEOUT)

    def node_state(self, name: str) -> dict:
        """{"status": running|paused|exited, "networks": {}, "qdiscs": []}: processes have neither."""
        node = self._state().node(name)
        running = bool(node.pid) and self._running(node)
        status = ("paused" if _stopped(node.pid) else "running") if running else "exited"
        return {"status": status, "networks": {}, "qdiscs": []}

    def stop(self, name: str, *, timeout: float = TERM_GRACE) -> None:
        """SIGTERM to the node's process group, SIGKILL after `timeout` seconds."""
        self._stop([self._running_node(name)], grace=timeout)

    def start(self, name: str, *, timeout: float = 60.0, wait: bool = True) -> dict | None:
        """Start the node again when it is not running (after kill or stop; a paused one gets SIGCONT), with
        the same config and data dir, and when `wait` wait until it is ready: its /status."""
        info = self._state()
        node = info.node(name)
        if node.pid and self._running(node):
            os.killpg(node.pid, signal.SIGCONT)
        else:
            self._start(info, [node])
        return self._wait_node(node, timeout) if wait else None

    def pause(self, name: str) -> None:
        """SIGSTOP to the node's process group: its sockets stay open, it answers nothing."""
        os.killpg(self._running_node(name).pid, signal.SIGSTOP)

    def unpause(self, name: str) -> None:
        node = self._state().node(name)
        if node.pid and self._running(node) and _stopped(node.pid):
            os.killpg(node.pid, signal.SIGCONT)

    def _wait_ready(self, info: RunInfo, timeout: float, say: Progress) -> dict[str, dict]:
        started = time.monotonic()

        def on_change(name: str, condition: str | None, value: bool) -> None:
            if condition is None:
                say(f"{name}: {'answers' if value else 'stopped answering'} /status")
            else:
                say(f"{name}: {condition}" if value else f"{name}: lost {condition}")

        if len(info.nodes) > readiness.SUMMARY_ABOVE:
            on_change = readiness.ConditionCounts(say, {n.name: n.role for n in info.nodes})
        endpoints = [readiness.Endpoint(n.name, n.address, n.ports["control_port"]) for n in info.nodes]
        try:
            statuses = readiness.wait_until_ready(endpoints, timeout=timeout, on_change=on_change,
                                                  check=lambda: self._check_alive(info.nodes))
        except readiness.ReadinessTimeout as e:
            if isinstance(on_change, readiness.ConditionCounts):
                on_change.flush()
            tails = "\n".join(self._tail_report(info.node(name), 5) for name in e.waiting)
            raise StartFailed(f"{e}\n{tails}") from None
        if isinstance(on_change, readiness.ConditionCounts):
            on_change.flush()
        say(f"all {len(info.nodes)} nodes ready in {time.monotonic() - started:.1f} s")
        return statuses

    def _check_alive(self, nodes_: list[RunNode]) -> None:
        for node in nodes_:
            proc = self._children.get(node.pid) if node.pid else None
            if proc is not None and (code := proc.poll()) is not None:
                how = (f"exited with status {code}" if code >= 0
                       else f"was killed by {signal.Signals(-code).name}")
                lines = self._tail(node.name)
                fatal = [line for line in lines if line.startswith(FATAL_PREFIX)]
                cause = (fatal[-1].removeprefix(FATAL_PREFIX) if fatal
                         else next((line for line in reversed(lines) if line.strip()), "(nothing on stderr)"))
                ports = ", ".join(f"{key.removesuffix('_port')} {port}" for key, port in node.ports.items())
                raise NodeFailed(node.name, f"{node.name} ({node.role} on {node.address}; ports {ports}) "
                                            f"{how}: {cause}\n{self._tail_report(node, TAIL_LINES, lines)}")

    def _tail(self, name: str, lines: int = TAIL_LINES) -> list[str]:
        """The last lines of the node's stderr, or of its events when stderr is empty."""
        for log in (STDERR, EVENTS):
            try:
                text = (self._node_dir(name) / log).read_text(errors="replace")
            except FileNotFoundError:
                continue
            if text.strip():
                return text.splitlines()[-lines:]
        return []

    def _tail_report(self, node: RunNode, lines: int, tail: list[str] | None = None) -> str:
        tail = self._tail(node.name, lines) if tail is None else tail
        body = "\n".join(f"  | {line}" for line in tail) if tail else "  (its logs are empty)"
        return f"last lines of {node.name}'s log ({self._node_dir(node.name)}):\n{body}"

    # -- stopping --------------------------------------------------------------------------------------------

    def _running(self, node: RunNode) -> bool:
        assert node.pid is not None
        proc = self._children.get(node.pid)
        if proc is not None:
            return proc.poll() is None  # our own child: poll() also reaps it, so it leaves no zombie
        return _is_node_process(node.pid, self._node_dir(node.name) / CONFIG)

    def _stop(self, nodes_: list[RunNode], grace: float = TERM_GRACE) -> list[str]:
        """SIGTERM to each running node's process group (and SIGCONT, should it be paused), SIGKILL after
        `grace` seconds; the names of those that ran. BackendError if one survives SIGKILL."""
        running = [n for n in nodes_ if n.pid and self._running(n)]
        left = running
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, KILL_GRACE)):
            for node in left:
                try:
                    os.killpg(node.pid, sig)  # its own session: the group ID is its PID
                    if sig == signal.SIGTERM:
                        os.killpg(node.pid, signal.SIGCONT)  # a paused node acts on SIGTERM only once resumed
                except ProcessLookupError:
                    pass  # it has just exited
            left = self._wait_gone(left, wait)
            if not left:
                return [n.name for n in running]
        survivors = ", ".join(f"{n.name} (pid {n.pid})" for n in left)
        raise BackendError(f"still running after SIGKILL: {survivors}")

    def _wait_gone(self, nodes_: list[RunNode], grace: float) -> list[RunNode]:
        deadline = time.monotonic() + grace
        delay = 0.01
        while True:
            left = [n for n in nodes_ if self._running(n)]
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(delay)
            delay = min(2 * delay, 0.2)


def _free_block(topology: Topology) -> IPv4Address:
    """The first address of the run: 127.0.0.2, or 127.0.1.2, 127.0.2.2, ... when another lab (or anything
    else) listens on one of the ports the run needs there, so that several labs can run side by side."""
    ports = [[p for key in PORTS if (p := getattr(node, key)) is not None] for node in topology.nodes]
    for block in range(BLOCKS):
        first = FIRST_ADDRESS + block * 256
        last = first + len(topology.nodes) - 1
        if last not in LOOPBACK or last == LOOPBACK.broadcast_address:
            break
        if all(_bindable(str(first + i), port) for i, node_ports in enumerate(ports) for port in node_ports):
            return first
    raise BackendError(f"found no room on 127.0.0.0/8 for {len(topology.nodes)} nodes: every block of "
                       "addresses has one of the topology's ports in use")


def _bindable(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the nodes' listeners do
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def _stopped(pid: int | None) -> bool:
    """Is the process stopped (SIGSTOP: state T in /proc/PID/stat)?"""
    try:
        return Path("/proc", str(pid), "stat").read_text().rpartition(")")[2].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return False


def _is_node_process(pid: int, config: Path) -> bool:
    """Is `pid` still the node started with `config`? On Linux /proc tells an exited process awaiting its
    parent (a zombie: gone for us) and a recycled PID (another program: not ours to signal)."""
    if not Path("/proc/self").exists():  # no /proc: all we can ask is whether the PID exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return False  # another user's process: the PID was recycled
        return True
    proc = Path("/proc", str(pid))
    try:
        state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
        argv = (proc / "cmdline").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X") and os.fsencode(str(config)) in argv
