"""The swarm backend: a topology as a Docker Swarm stack on the swarm this engine manages (docs/swarm.md).

One concern a module:

    engine.py     the `docker` command: stacks, tasks, swarm nodes and where a task's published ports are
    material.py   every node's config as a Swarm config and its keys as Swarm secrets (nodes.init, run here)
    stackfile.py  the stack file: a service per node, overlay networks, volumes, placement
    lifecycle.py  SwarmBackend: up, down, status, logs, kill, restart (Backend) and kill/stop (FaultBackend)
    observe.py    logs (`docker service logs`), for every host of the swarm
    reaper.py     run labels, removing a run's stack, `reap`
"""

from __future__ import annotations

from .lifecycle import SwarmBackend
from .reaper import ReapReport

__all__ = ["ReapReport", "SwarmBackend"]
