"""The node's control call: `POST /control` on the status port (nodes/net/status.py), for what the
orchestrator changes at run time (chaos): link shaping rules (nodes/net/shaper.py) and the clock offset
(nodes/net/clock.py). GET /status and /metrics stay open and read-only; this call needs

    Authorization: Bearer <secret>

where the secret is the run's: the orchestrator makes a random one at `up`, keeps it in its run dir (0600)
and puts it in every node's key directory (`<data_dir>/keys/control.secret`, 0600), never in a config, an
image or an environment variable. A node without that file refuses every control call (403).

A command is one JSON object:

    {"command": "shape", "rules": [RULE, ...]}    add (or replace, by id) rules: shaper.parse_rule
    {"command": "unshape", "ids": [ID, ...]}      remove those rules; without "ids": every non-static rule
    {"command": "skew", "offset": SECONDS}        set the clock offset (positive: ahead)
    {"command": "unskew"}                         back to true time
    {"command": ACTION, ...}                      what the role offers (a client: "newnym"), add_action;
                                                  the fields it takes are the action's own

The answer is JSON: {"ok": true, ...what changed} or {"ok": false, "error": KIND, "message": ...} with 400
(a malformed command), 401 (no or a wrong secret) or 403 (no secret configured). Each result is counted in
`control_requests_total{result}`; nothing a caller sends can crash the node.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .clock import MAX_OFFSET, NodeClock
from .clock import use as use_clock
from .events import EventLog
from .metrics import Metrics
from .node_keys import KEYS_DIR
from .shaper import LinkRule, RuleError, Shaper, parse_rule

SECRET_FILE: Final = "control.secret"
MAX_BODY: Final = 256 * 1024


class ControlError(Exception):
    """A control request refused: `status` is the HTTP status, `kind` the counted result."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Shape:
    rules: tuple[LinkRule, ...]


@dataclass(frozen=True, slots=True)
class Unshape:
    ids: tuple[str, ...] | None  # None: every rule that is not static


@dataclass(frozen=True, slots=True)
class Skew:
    offset: float  # 0.0: true time


@dataclass(frozen=True, slots=True)
class Action:
    name: str  # one the role registered (NodeControl.add_action)
    args: tuple[tuple[str, object], ...] = ()  # the fields it was given, each one the action takes


Command = Shape | Unshape | Skew | Action


def _bad(message: str) -> ControlError:
    return ControlError(400, "bad_request", message)


def parse_command(body: bytes, actions: Collection[str] | Mapping[str, Collection[str]] = ()) -> Command:
    """The command in a request body (`actions`: the role's own commands, or a mapping from each to the
    fields it takes); ControlError (400) names what is wrong."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad(f"not JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("command"), str):
        raise _bad('expected an object with "command"')
    command = data["command"]
    fields = set(data) - {"command"}
    if command == "shape":
        if fields != {"rules"} or not isinstance(data["rules"], list) or not data["rules"]:
            raise _bad('shape takes "rules": a non-empty list of rules')
        try:
            return Shape(tuple(parse_rule(r) for r in data["rules"]))
        except RuleError as e:
            raise _bad(f"rules: {e}") from None
    if command == "unshape":
        ids = data.get("ids")
        if fields - {"ids"} or (ids is not None and not (
                isinstance(ids, list) and all(isinstance(i, str) for i in ids))):
            raise _bad('unshape takes "ids": a list of rule ids (or nothing: every non-static rule)')
        return Unshape(None if ids is None else tuple(ids))
    if command == "skew":
        offset = data.get("offset")
        if fields != {"offset"} or isinstance(offset, bool) or not isinstance(offset, int | float) \
                or not abs(offset) <= MAX_OFFSET:
            raise _bad(f'skew takes "offset": seconds (a number, at most {MAX_OFFSET:g} either way)')
        return Skew(float(offset))
    if command == "unskew":
        if fields:
            raise _bad("unskew takes nothing")
        return Skew(0.0)
    if command in actions:
        takes = set(actions[command]) if isinstance(actions, Mapping) else set()
        if fields - takes:
            raise _bad(f"{command} takes nothing" if not takes else
                       f"{command} takes {', '.join(sorted(takes))}, not {', '.join(sorted(fields - takes))}")
        return Action(command, tuple(sorted((k, data[k]) for k in fields)))
    raise _bad(f"unknown command {command!r} ({', '.join(('shape', 'unshape', 'skew', 'unskew', *actions))})")


# -- the secret ----------------------------------------------------------------------------------------------


def secret_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir, KEYS_DIR, SECRET_FILE)


def write_secret(data_dir: str | os.PathLike[str], secret: str) -> Path:
    """Put the run's control secret into a node's key directory (0700), as a 0600 file."""
    path = secret_path(data_dir)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return path


def load_secret(data_dir: str | os.PathLike[str]) -> bytes | None:
    """The node's control secret, or None when it has none (then every control call is refused)."""
    try:
        secret = secret_path(data_dir).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return secret.encode() if secret else None


# -- the node's side -----------------------------------------------------------------------------------------


class NodeControl:
    """What the control call changes on one node, and the answer to each request."""

    def __init__(self, secret: bytes | None, shaper: Shaper, clock: NodeClock, metrics: Metrics,
                 events: EventLog) -> None:
        self._secret = secret
        self.shaper = shaper
        self.clock = clock
        self.metrics = metrics
        self.events = events
        self._actions: dict[str, Callable[..., dict]] = {}
        self._action_fields: dict[str, tuple[str, ...]] = {}
        metrics.describe("control_requests_total", "counter",
                         "POST /control requests, by result (ok, unauthorized, bad_request, no_secret)")

    def add_action(self, name: str, action: Callable[..., dict], fields: tuple[str, ...] = ()) -> None:
        """A command of the role's own, `{"command": NAME, FIELD: VALUE...}`: `action(**given fields)` is
        the answer. A ValueError from it is the caller's fault (400, its message)."""
        self._actions[name] = action
        self._action_fields[name] = fields

    def handle(self, authorization: str | None, body: bytes) -> tuple[int, dict]:
        """(HTTP status, JSON answer) for one request; counts the result."""
        try:
            self._authorize(authorization)
            answer = self.execute(parse_command(body, self._action_fields))
        except ControlError as e:
            self.metrics.inc("control_requests_total", result=e.kind)
            return e.status, {"ok": False, "error": e.kind, "message": str(e)}
        self.metrics.inc("control_requests_total", result="ok")
        return 200, {"ok": True, **answer}

    def _authorize(self, authorization: str | None) -> None:
        if self._secret is None:
            raise ControlError(403, "no_secret", "this node has no control secret: control calls are off")
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self._secret):
            raise ControlError(401, "unauthorized", "a control call needs 'Authorization: Bearer SECRET' "
                                                    "with the run's secret")

    def execute(self, command: Command) -> dict:
        if isinstance(command, Action):
            try:
                return self._actions[command.name](**dict(command.args))
            except ValueError as e:
                raise _bad(f"{command.name}: {e}") from None
        if isinstance(command, Shape):
            for rule in command.rules:
                try:
                    self.shaper.set_rule(rule)
                except RuleError as e:
                    raise _bad(str(e)) from None
            self.events.emit("shaping_changed", added=[r.id for r in command.rules],
                             rules=len(self.shaper.rules))
            return {"shaping": self.shaper.status()}
        if isinstance(command, Unshape):
            removed = self.shaper.clear(command.ids)
            self.events.emit("shaping_changed", removed=removed, rules=len(self.shaper.rules))
            return {"removed": removed, "shaping": self.shaper.status()}
        was, self.clock.offset = self.clock.offset, command.offset
        self.events.emit("clock_skewed", offset=command.offset, was=was)
        return {"clock_offset": command.offset, "was": was}

    def status(self) -> dict:
        """What /status shows of it."""
        return {"clock_offset": self.clock.offset, "shaping": self.shaper.status()}


def node_control(name: str, data_dir: str, static_rules: object, metrics: Metrics,
                 events: EventLog) -> NodeControl:
    """A node's control: its secret (from its key directory), a shaper with its static rules (the topology's
    `links:`, from its config) and a clock of its own, installed for the calling task and its children."""
    rules = [parse_rule(r, static=True) for r in (static_rules or ())]
    return NodeControl(load_secret(data_dir), Shaper(seed=name, rules=rules), use_clock(NodeClock()), metrics,
                       events)
