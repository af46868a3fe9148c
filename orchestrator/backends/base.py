"""The contract every backend keeps: typed Protocols the orchestrator, the CLI and chaos program against.

`Backend` is the lifecycle of a lab (up, down, status, logs, kill, restart) and what the backend can break on
purpose (`supported_faults`). `FaultBackend` adds what `onionlab chaos` needs: looking at one node (its
/status, /metrics and state), stopping, pausing and starting it again, and the node's control call (shaping
rules in its link layer, its clock offset) with the run's secret. A partition and tc shaping need a
node's own network links: `NetworkFaultBackend` adds them, and only a backend that has such links (docker)
implements it; bandwidth, delay and loss also run on every backend through the nodes' link-layer shaper.

A backend declares what it supports: `supported_faults()` names the fault kinds it can apply at all and
`fault_problem(kind)` says why one of them cannot run on this host right now (no netem, no root). Chaos asks
both for every fault of a schedule before anything changes, and refuses the run with the answer.

The classes are checked against these Protocols by tests/unit/test_backend_contract.py: same method names,
same parameters (names, kinds, whether they have defaults) and same annotations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    from orchestrator.topology import Topology

    from . import RunInfo

Progress = Callable[[str], None]
STREAMS: Final = ("stdout", "stderr")  # a node's events, its diagnostics


class LogLine(NamedTuple):
    """One line a node wrote (without its newline). `ts`: when the engine says it was written (docker's
    timestamps), None when only the line itself can tell (orchestrator/logview.py)."""

    node: str
    stream: str  # "stdout" (JSON events) or "stderr"
    text: str
    ts: float | None = None


@dataclass(frozen=True, slots=True)
class ExecSpec:
    """How to run a command in a node (`onionlab exec`): a host command, with its environment and directory
    (None: the caller's)."""

    argv: list[str]
    env: dict[str, str] | None = None
    cwd: str | None = None

# every fault kind a chaos scenario can name (orchestrator/chaos/scenario.py: FAULTS has their parameters)
PROCESS_FAULTS: Final = frozenset({"kill", "stop", "pause"})
NETWORK_FAULTS: Final = frozenset({"partition", "split", "bandwidth", "delay", "loss"})
CLOCK_FAULTS: Final = frozenset({"skew"})  # the node's clock offset, through its control call
FAULT_KINDS: Final = PROCESS_FAULTS | NETWORK_FAULTS | CLOCK_FAULTS
SHAPING_FAULTS: Final = frozenset({"bandwidth", "delay", "loss"})  # qdiscs, or the nodes' shapers
NEEDS_NETEM: Final = frozenset({"delay", "loss"})  # the netem qdisc, which some kernels lack
# the two ways a shaping fault runs (docs/chaos.md): tc qdiscs on the node's links, or the nodes' own
# link-layer shaper through their control call (every backend, any kernel)
QDISC: Final = "qdisc"
LINK_LAYER: Final = "link-layer"
# cuts by firewall rules in the node's network: split, and a partition with `direction` or `from`
# (fault_problem("split") answers for both)
FIREWALL_FAULTS: Final = frozenset({"split"})


@runtime_checkable
class Backend(Protocol):
    """A lab's lifecycle. `up` returns once every node is ready; the others work from a later process too
    (everything they need is in `<run_dir>/state.json`)."""

    name: str
    run_dir: Path

    def up(self, topology: Topology, *, timeout: float = 60.0, progress: Progress | None = None) -> RunInfo:
        """Start every node and wait until all are ready; on failure nothing of the run is left running."""
        ...

    def down(self, keep: bool = False) -> list[str]:
        """Stop every node; the names of those that were still running."""
        ...

    def status(self) -> dict:
        """{"nodes": [{name, role, address, ready}], "onion_services": [...], "authorities": [...],
        "clients": [{name, socks}]}."""
        ...

    def logs(self, name: str) -> str:
        """The node's events (stdout) and diagnostics (stderr)."""
        ...

    def log_lines(self, name: str, stream: str, *, follow: bool = False,
                  since: float | None = None) -> Iterator[LogLine | None]:
        """The node's lines on `stream` (STREAMS) in the order written, from `since` (unix seconds) when the
        backend can select by time (it may give more). With `follow`, one None once what was written is all
        given, then new lines as they come, until the node's logs are gone (the run was taken down)."""
        ...

    def exec_spec(self, name: str, command: list[str], *, tty: bool = False) -> ExecSpec:
        """How to run `command` in the node (with a terminal when `tty`); BackendError when it cannot run."""
        ...

    def inspect(self) -> dict:
        """What runs where: {"backend", "run_dir", "lab", "nodes": [{name, role, ...}], ...} (the backend
        names what it has: containers, networks, volumes or processes, run dirs)."""
        ...

    def kill(self, name: str, signal: str = "SIGKILL") -> None:
        """Send `signal` (a name such as "SIGKILL") to the node; BackendError when it is not running."""
        ...

    def restart(self, name: str, *, timeout: float = 60.0) -> dict:
        """Stop the node if it runs, start it again with the same data dir, wait until ready: its /status."""
        ...

    def supported_faults(self) -> frozenset[str]:
        """The fault kinds (of FAULT_KINDS) this backend can apply and undo."""
        ...


@runtime_checkable
class FaultBackend(Backend, Protocol):
    """What every chaos run needs: the process faults (kill, stop, pause) and a look at each node."""

    def fault_problem(self, fault: str) -> str | None:
        """Why `fault` cannot run: the backend cannot do it at all (not in supported_faults()), or this host
        lacks what it needs now (no netem, no root); None when it can run."""
        ...

    def node_status(self, name: str) -> dict | None:
        """The node's /status now, or None when it does not answer."""
        ...

    def node_metrics(self, name: str) -> list[tuple[str, dict[str, str], float]] | None:
        """The node's /metrics samples now (readiness.parse_metrics), or None when it does not answer."""
        ...

    def node_state(self, name: str) -> dict:
        """What a chaos run must leave as it found it: {"status": running|paused|exited|..., "networks":
        {network: address}, "qdiscs": [root qdisc kinds]} ({} and [] where the backend has none)."""
        ...

    def stop(self, name: str, *, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        ...

    def start(self, name: str, *, timeout: float = 60.0, wait: bool = True) -> dict | None:
        """Start the node again when it is not running (after kill or stop; a paused one is resumed) and,
        when `wait`, wait until it is ready: its /status (None without `wait`)."""
        ...

    def pause(self, name: str) -> None:
        """Freeze every process of the node: its sockets stay open, it answers nothing."""
        ...

    def unpause(self, name: str) -> None:
        """Resume a paused node; nothing when it is not paused."""
        ...

    def control(self, name: str, command: dict) -> dict:
        """The node's answer to a control call (nodes/net/control.py) made with the run's secret;
        orchestrator.control.ControlCallError when it does not answer or refuses."""
        ...

    def node_addresses(self, name: str) -> dict[str, str]:
        """{network: address} at which the node's peers see it (what link-layer rules match)."""
        ...

    def shaping_path(self, fault: str, params: dict) -> tuple[str, str]:
        """How a shaping fault (SHAPING_FAULTS) with these parameters runs here: (QDISC or LINK_LAYER, why,
        in a few words, e.g. "no netem here")."""
        ...


@runtime_checkable
class NetworkFaultBackend(FaultBackend, Protocol):
    """The network faults: a node off its networks (partition), cuts by firewall rules (a one-way partition,
    a partition from some nodes only, a split into groups) and shaping (tc) on its links."""

    def disconnect(self, name: str, network: str | None = None) -> dict[str, str]:
        """Take the node off `network` (default: every one): {network: address} of what it was on."""
        ...

    def connect(self, name: str, network: str, address: str) -> None:
        """Put the node back on `network` at `address`; nothing when it is on it."""
        ...

    def host_interfaces(self, name: str, network: str | None = None) -> dict[str, str]:
        """{network: host-side interface} of the node's links."""
        ...

    def interfaces(self, name: str, network: str | None = None, direction: str = "both") -> list[str]:
        """The interfaces a shaping qdisc goes on for traffic towards the node ("in"), from it ("out") or
        both, on `network` (default all)."""
        ...

    def shape(self, name: str, qdisc: list[str], network: str | None = None,
              direction: str = "both") -> list[str]:
        """Put the root qdisc `qdisc` on those interfaces (`interfaces`): the interfaces."""
        ...

    def unshape(self, veths: list[str]) -> list[str]:
        """Remove the root qdisc of each interface: those whose qdisc was removed."""
        ...

    def firewall_rules(self, name: str, direction: str, peers: list[str] | None = None,
                       network: str | None = None) -> list[list[str]]:
        """The rules that would cut the node from `peers` (node names; None: from everyone) in `direction`
        (both, in: connections the peers open to it, out: those it opens to them), on `network` only when
        given. Changes nothing: add_rules applies them, remove_rules undoes them."""
        ...

    def add_rules(self, name: str, rules: list[list[str]]) -> None:
        """Apply firewall_rules' rules to the node (all or none)."""
        ...

    def remove_rules(self, name: str, rules: list[list[str]]) -> int:
        """Remove those rules from the node (ones already gone need nothing): how many were removed."""
        ...


def refusal(backend: FaultBackend, fault: str) -> str | None:
    """Why `backend` cannot apply `fault` here, in a sentence naming both, or None when it can."""
    supported = backend.supported_faults()
    why = backend.fault_problem(fault)
    if fault not in supported:
        return (f"fault {fault} is not supported by the {backend.name} backend (it supports: "
                f"{', '.join(sorted(supported)) or 'no faults'})" + (f": {why}" if why else ""))
    return f"fault {fault} cannot run here: {why}" if why else None
