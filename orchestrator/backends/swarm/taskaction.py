"""Signalling, pausing and resuming a task's container on whichever swarm node runs it, through that node's
own engine.

Swarm's API has no verb for a task's container (it creates, updates and removes services), `docker kill`
and `docker pause` reach only the engine they talk to, and the orchestrator talks to the manager alone. So
the action runs where the container is: a one-shot service of one task, pinned to the task's node
(node.id==), that runs from the task's own image (on that host already: no registry), mounts that host's
engine socket and makes one engine API call about the container, named by the ID Swarm reports for the
task. The orchestrator polls the one-shot's task until it ended and removes the service whatever happened.
The one-shot carries the node's service's labels (the stack's namespace, the run's), so `down` and `reap`
remove one that a crash of the orchestrator left.

The socket is the host engine's, root's: whoever holds it can do anything on that host. The one-shot gets
it for that one call and nothing else: uid 0 (the socket is root's, mode 0660), every capability dropped, a
read-only root file system, no restart; its script is the standard library's HTTP client (the node image
has no docker client and no docker-py).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from .. import BackendError
from . import observe
from .engine import Task, docker, service_tasks

ACTIONS = frozenset({"kill", "pause", "unpause"})
SOCKET = "/var/run/docker.sock"  # the engine's socket on every host (Docker's default)
TIMEOUT = 60.0  # the one-shot's image is on its host already: it starts in a second or two
POLL = 0.3
ENDED = frozenset({"complete", "failed", "rejected", "orphaned", "shutdown", "remove"})
LOG_TAIL = 5

# run by the image's python3: POST /containers/ID/ACTION on the engine's socket, 204 or exit 1 with its words
SCRIPT = f"""
import http.client, socket, sys
action, container, signal = sys.argv[1:4]
class Engine(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect({SOCKET!r})
engine = Engine("localhost", timeout=20)
engine.request("POST", f"/containers/{{container}}/{{action}}" + (f"?signal={{signal}}" if signal else ""))
answer = engine.getresponse()
if answer.status != 204:
    sys.exit(f"the engine answered {{answer.status}}: {{answer.read().decode(errors='replace').strip()}}")
"""


class TaskActionFailed(BackendError):
    """The one-shot could not do its action (the engine refused, it could not start, it took too long)."""


@dataclass(frozen=True, slots=True)
class Action:
    """What to do to which task: `signal` only for kill."""

    node: str  # the lab node's name (for messages)
    task: Task
    image: str  # the node's image: on the task's host already
    action: str
    signal: str = ""


def one_shot_args(name: str, act: Action, labels: dict[str, str]) -> list[str]:
    """`docker service create` of the one-shot that does `act` on the task's own host."""
    return ["service", "create", "--detach", "--quiet", "--name", name, "--no-resolve-image",
            "--constraint", f"node.id=={act.task.node_id}", "--restart-condition", "none",
            "--mount", f"type=bind,source={SOCKET},target={SOCKET}",
            "--user", "0", "--cap-drop", "ALL", "--read-only", "--no-healthcheck",
            *(f"--label={k}={v}" for k, v in labels.items()),
            "--entrypoint", "python3", act.image, "-c", SCRIPT, act.action, act.task.container, act.signal]


def run_action(act: Action, stack: str, labels: dict[str, str], *, timeout: float = TIMEOUT) -> None:
    """Do `act` through the engine of the task's host, by a one-shot service of `stack` that carries
    `labels`; TaskActionFailed when it did not happen."""
    if act.action not in ACTIONS:
        raise ValueError(f"unknown action {act.action!r}")
    if not act.task.container or not act.task.node_id:
        raise TaskActionFailed(f"{act.node}: its task has no container yet")
    # `<stack>_` then a name no lab node can have (node names have no `_`), so no node's task is taken for it
    name = f"{stack}_{act.action}_{os.urandom(3).hex()}"
    try:
        docker(*one_shot_args(name, act, labels))
        _wait(name, act, timeout)
    finally:
        docker("service", "rm", name, check=False)


def _wait(name: str, act: Action, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        tasks = service_tasks(name)
        if tasks and tasks[-1].state in ENDED:
            task = tasks[-1]
            if task.state == "complete":
                return
            out, err = observe.service_logs(name, tail=LOG_TAIL)
            said = (err or out).strip().splitlines()
            raise TaskActionFailed(f"{act.action} of {act.node} (container {act.task.container[:12]}) on its "
                                   f"host failed: {said[-1] if said else task.error or task.state}")
        if time.monotonic() > deadline:
            state = f"{tasks[-1].state}: {tasks[-1].error}" if tasks else "no task"
            raise TaskActionFailed(f"{act.action} of {act.node}: the one-shot on its host did not finish "
                                   f"within {timeout:g} s ({state})")
        time.sleep(POLL)

