"""The docker backend: every node its own container of the node image, on the topology's Docker networks.

The only package of onionlab that imports docker-py, one concern a module:

    engine.py     connecting, the labels on every object, naming and finding a run's objects (class Engine)
    lifecycle.py  DockerBackend: up, status, down, logs, kill, restart, and `up` step by step (Backend)
    reaper.py     who owns a run, removing a run by label, `reap` (class Reaper)
    faults.py     stop, start, pause, partition and a look at a node, for chaos (FaultBackend; class Faults)
    observe.py    log lines, a command in a container, what runs where (logs, exec, inspect; class Observe)
    shaping.py    tc qdiscs on the containers' host-side veths (NetworkFaultBackend; class Shaping)
    firewall.py   iptables rules in the containers' network namespaces, via nsenter: partitions by rules
                  (one-way, from some nodes only, splits), and reap's sweep of rules left behind

`up` makes, in this order, everything labelled with the
run's id (`onionlab.run`) and with who made it (`onionlab.owner-*`):

    networks    one bridge per topology network, `onionlab-<run>-<network>`, with the topology's subnet; when
                another network of the engine holds it (a second lab of the same topology), the next free
                subnet of the same size in its private block, every node keeping its host part (unless
                `exact_subnets`, or a service of the lab forwards to an address in it)
    volumes     one per node, `onionlab-<run>-<node>`: its data dir, /var/lib/onionlab/<node> in every
                container that mounts it (config.json, and the keys the node makes)
    init        a one-shot container of the node image (`python -m nodes init`, nodes/init.py) with every
                volume mounted: it makes the authorities' identity keys, writes every node's config.json
                from the plan (orchestrator/plan.py; copied as a file into a volume of its own,
                `onionlab-<run>-init`, removed once init is done: no size limit) and hands the volumes to
                the node user (uid 10001). Key material never leaves the run's volumes.
    containers  one per node, `onionlab-<run>-<node>` (hostname: the node's name) running
                `ROLE --config /var/lib/onionlab/<node>/config.json` (`tor --config ...` for a node that a
                stock tor plays, `impl: tor`: the same image and labels, plus onionlab.impl) at its static
                address on each of its networks, as uid 10001 with every capability dropped,
                no-new-privileges and a read-only root file system, within the node's memory and pids limits
                (topology settings `memory`, `pids`). A client's SOCKS port is published on the host's
                127.0.0.1 only, at a port Docker picks (RunNode.socks).

and then waits until every node's /status says ready (readiness.py), showing progress. A container that
exits meanwhile stops the wait at once with the cause from its own log (its last `fatal: ` line). Whatever
makes `up` fail, Ctrl-C included, everything of the run is removed again (the containers' logs are first
saved in `<run dir>/logs/`, where `onionlab logs` finds them).

The orchestrator reaches /status at the containers' addresses when the engine runs on this Linux host (its
bridges are the host's interfaces); elsewhere (rootless Docker, Docker Desktop, a remote engine) the control
ports are published on 127.0.0.1 too (RunNode.control).

`down` removes every container, network and volume labelled with the run's id. `reap` removes every run
whose `up` is over without being complete (the orchestrator crashed or was killed mid-`up`) and every run
whose state file is gone: see `reap`.
"""

from __future__ import annotations

from .engine import (
    EXTRA_LABELS_ENV,
    IMPL,
    LAB,
    NETWORK,
    NODE,
    OWNER_BOOT,
    OWNER_HOST,
    OWNER_PID,
    OWNER_START,
    ROLE,
    RUN,
    RUN_DIR,
    TOPOLOGY,
    connect,
)
from .lifecycle import DockerBackend, choose_subnet, relocate
from .reaper import ReapReport, owner_alive, owner_labels
from .shaping import SHAPING_QDISCS

__all__ = ["EXTRA_LABELS_ENV", "IMPL", "LAB", "NETWORK", "NODE", "OWNER_BOOT", "OWNER_HOST", "OWNER_PID",
           "OWNER_START", "ROLE", "RUN", "RUN_DIR", "SHAPING_QDISCS", "TOPOLOGY", "DockerBackend",
           "ReapReport",
           "choose_subnet", "connect", "owner_alive", "owner_labels", "relocate"]
