"""Targets: who a fault hits. The grammar (`parse_target`), the checks against a lab's nodes
(`target_problem`), and the choice of nodes: by the schedule for names, `random ROLE` and the authority
groups (`choose_static`), at the moment the fault starts from the nodes' /status for the protocol targets
(`live_candidates`, `choose_live`).

    relay3                          that node
    random ROLE                     `count` nodes of that role, drawn by the schedule
    minority of authorities         the largest group of authorities short of half ((n - 1) // 2)
    majority of authorities         the smallest group of more than half (n // 2 + 1)
    all authorities                 every authority
    intro points of HS              the intro points HS advertises now (/status intro_points)
    hsdirs of HS                    HS's responsible HSDirs for the current time period (/status hsdirs)
    rendezvous point of CLIENT      the rendezvous points of CLIENT's live rendezvous circuits
    path of NODE                    every relay on NODE's live circuits (a client or an onion service)
    guards of NODE                  NODE's primary guards (a client or an onion service)
    intro point | service guard | client guard
                                    aliases: the intro points / guards of the workload's service or client
"""

from __future__ import annotations

import difflib
import random
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Final

from ..topology import ROLES

NAME: Final = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")

# the protocol targets: kind -> (the phrase before " of X", the roles X may have, what X is called)
OF_TARGETS: Final[dict[str, tuple[str, tuple[str, ...], str]]] = {
    "intro_points": ("intro points", ("onion_service",), "HS"),
    "hsdirs": ("hsdirs", ("onion_service",), "HS"),
    "rendezvous_point": ("rendezvous point", ("client",), "CLIENT"),
    "path": ("path", ("client", "onion_service"), "NODE"),
    "guards": ("guards", ("client", "onion_service"), "NODE"),
}
# the aliases of the workload's nodes: alias -> (kind, "service" or "client")
ALIASES: Final = {"intro point": ("intro_points", "service"), "service guard": ("guards", "service"),
                  "client guard": ("guards", "client")}
AUTHORITY_GROUPS: Final = {"minority of authorities": "minority", "majority of authorities": "majority",
                           "all authorities": "all"}
FORMS: Final = ("NODE", "random ROLE", *(f"{p} of {x}" for p, _, x in OF_TARGETS.values()),
                *AUTHORITY_GROUPS, *ALIASES)


class TargetError(ValueError):
    """A target string outside the grammar; the message names the forms and suggests the closest."""


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed target. kind: node, random, authorities, or one of OF_TARGETS (live: read from /status).
    subject: the node, the role, the authority group (minority, majority, all), or the node whose protocol
    state names the target (None for an alias: the workload's `workload` node)."""

    kind: str
    subject: str | None
    workload: str | None = None  # aliases: "service" or "client"

    @property
    def live(self) -> bool:
        """Chosen when the fault starts, from the nodes' /status (else by the schedule)."""
        return self.kind in OF_TARGETS

    @property
    def counted(self) -> bool:
        """`count` picks among its candidates (random ROLE and the live targets)."""
        return self.kind == "random" or self.live


def parse_target(text: str) -> Target:
    """The target `text` names (words separated by any spaces); TargetError outside the grammar."""
    words = text.split()
    normal = " ".join(words)
    if normal in ALIASES:
        kind, which = ALIASES[normal]
        return Target(kind, None, which)
    if normal in AUTHORITY_GROUPS:
        return Target("authorities", AUTHORITY_GROUPS[normal])
    if len(words) == 2 and words[0] == "random":
        if words[1] not in ROLES:
            close = difflib.get_close_matches(words[1], ROLES, n=1)
            raise TargetError(f"no role {words[1]!r} in 'random ROLE' (" + (
                f"did you mean '{close[0]}'?)" if close else f"ROLE: {', '.join(ROLES)})"))
        return Target("random", words[1])
    for kind, (phrase, _, what) in OF_TARGETS.items():
        head = phrase + " of "
        if normal.startswith(head) or normal == head.rstrip():
            subject = normal[len(head):] if normal.startswith(head) else ""
            if not NAME.fullmatch(subject):
                raise TargetError(f"{phrase!r} of what? expected '{phrase} of {what}' with {what} a node "
                                  f"name, got {text!r}")
            return Target(kind, subject)
    if NAME.fullmatch(normal) and len(words) == 1:
        return Target("node", normal)
    raise TargetError(f"expected a target: {', '.join(FORMS)}; got {text!r}{_suggest(normal)}")


def _suggest(normal: str) -> str:
    """' (did you mean ...?)' for a near miss, else ''."""
    head, of, subject = normal.rpartition(" of ")
    close = difflib.get_close_matches(head, [p for p, _, _ in OF_TARGETS.values()], n=1, cutoff=0.6) \
        if of and NAME.fullmatch(subject) else []
    if close:
        return f" (did you mean '{close[0]} of {subject}'?)"
    close = difflib.get_close_matches(normal, [*AUTHORITY_GROUPS, *ALIASES, *(f"random {r}" for r in ROLES)],
                                      n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def subject_of(target: Target, service: str | None, client: str | None) -> str | None:
    """The node whose state names the target: its own subject, or the workload's service or client."""
    if target.workload is None:
        return target.subject
    return service if target.workload == "service" else client


def target_problem(target: Target, roles: Mapping[str, str]) -> str | None:
    """Why the lab (node -> role) cannot give this target its nodes, or None. Checks that a named node
    exists and that the subject of a protocol target has a role that has such state."""
    if target.kind == "node":
        if target.subject not in roles:
            return f"the lab has no node {target.subject!r} ({_closest(target.subject, roles)})"
    elif target.kind in OF_TARGETS and target.subject is not None:
        phrase, allowed, what = OF_TARGETS[target.kind]
        role = roles.get(target.subject)
        if role is None:
            have = [n for n, r in roles.items() if r in allowed]
            return f"the lab has no node {target.subject!r} ({_closest(target.subject, have)})"
        if role not in allowed:
            have = [n for n, r in roles.items() if r in allowed]
            return (f"'{phrase} of {what}' needs {what} to be {' or '.join(allowed)}, and {target.subject} "
                    f"is a {role} (the lab's: {', '.join(have) or 'none'})")
    elif target.kind == "authorities":
        n = sum(1 for r in roles.values() if r == "authority")
        if group_size(target.subject, n) < 1:
            return f"the lab has {n} authorit{'y' if n == 1 else 'ies'}: its {target.subject} is empty"
    return None


def _closest(word: str, names: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(names), n=1)
    return f"did you mean '{close[0]}'?" if close else f"it has: {', '.join(sorted(names)) or 'none'}"


def group_size(group: str | None, n: int) -> int:
    """How many of n authorities the group has: minority (n - 1) // 2, majority n // 2 + 1, all n."""
    return {"minority": (n - 1) // 2, "majority": n // 2 + 1, "all": n}[group or "all"]


def choose_static(target: Target, count: int | None, roles: Mapping[str, str], rng: random.Random,
                  free: Callable[[str], bool], when: str = "") -> tuple[str, ...] | str:
    """The nodes the schedule chooses for a name, `random ROLE` or an authority group (those `free` allows),
    sorted; or why it cannot (a sentence). Live targets: () (chosen when applied). Check the target against
    the lab first (target_problem). `when` (e.g. "from 5 to 15 s") goes into the sentence."""
    if target.live:
        return ()
    if target.kind == "node":
        return (target.subject,)
    role = target.subject if target.kind == "random" else "authority"
    every = sorted(n for n, r in roles.items() if r == role)
    candidates = [n for n in every if free(n)]
    if target.kind == "authorities":
        want = group_size(target.subject, len(every))
        what = f"the {target.subject} of its {len(every)} authorities is {want}"
    else:
        want = len(candidates) if count is None else count
        what = f"this fault needs {max(want, 1)}"
    if want < 1 or len(candidates) < want:
        return f"the lab has {len(candidates)} {role} node(s) free {when}, {what}".replace("  ", " ")
    return tuple(sorted(rng.sample(candidates, want)))


StatusOf = Callable[[str], "dict | None"]


def live_candidates(target: Target, status_of: StatusOf, service: str | None,
                    client: str | None) -> tuple[list[str], str]:
    """The relays a protocol target names now, read from its subject's /status (`status_of`), sorted, and a
    few words on where they come from (for the history)."""
    owner = subject_of(target, service, client)
    if owner is None:
        return [], "the workload has no such node"
    status = status_of(owner)
    phrase = OF_TARGETS[target.kind][0]
    if status is None:
        return [], f"{phrase} of {owner}: its /status does not answer"
    if target.kind == "intro_points":
        found = status.get("intro_points") or []
    elif target.kind == "hsdirs":
        found = (status.get("hsdirs") or {}).get("relays") or []
    elif target.kind == "rendezvous_point":
        found = status.get("rendezvous_points") or []
    elif target.kind == "path":
        found = [relay for c in status.get("live_circuits") or [] for relay in c.get("path") or []]
    else:
        found = (status.get("guards") or {}).get("primary") or []
    found = sorted(set(found))
    return found, f"{phrase} of {owner}: {', '.join(found) or 'none'}"


def choose_live(target: Target, count: int | None, seed: int, status_of: StatusOf, service: str | None,
                client: str | None, busy: Collection[str] = (), lab: Collection[str] | None = None
                ) -> tuple[list[str], str]:
    """`count` (None: all) of the live target's candidates now, busy ones left out, and with `lab` those
    that are none of its nodes (a circuit's hop the subject's consensus does not list shows as "unlisted"),
    chosen by `seed` (the same lab state gives the same choice): the nodes, sorted, and where they come
    from."""
    candidates, why = live_candidates(target, status_of, service, client)
    if lab is not None and (strangers := [n for n in candidates if n not in lab]):
        why += f" ({', '.join(strangers)}: no node of the lab, left out)"
    free = [n for n in candidates if n not in busy and (lab is None or n in lab)]
    want = len(free) if count is None else min(count, len(free))
    return sorted(random.Random(seed).sample(free, want)), why
