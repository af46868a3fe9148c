"""The topology's `petnames:` (a mapping NAME -> an onion service node of the topology or a full v3 onion
address), checked with the topology's positions: every problem as file:line:column. The clients' petname
tables are made from it (nodes/init.py; docs/client.md). Kept apart from topology.py: one concern a file."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import TYPE_CHECKING

import yaml

from nodes.core.petnames import name_problem, onion_problem

if TYPE_CHECKING:
    from orchestrator.topology import Node, _Checker


def check_petnames(checker: _Checker, node: yaml.Node | None, nodes: Iterable[Node]) -> dict[str, str]:
    """{NAME: target} from the `petnames:` mapping (None: the key is absent), each problem recorded."""
    if node is None:
        return {}
    pairs = checker.pairs(node, "petnames")
    if pairs is None:
        return {}
    roles = {n.name: n.role for n in nodes}
    services = [name for name, role in roles.items() if role == "onion_service"]
    found: dict[str, str] = {}
    for name, (knode, vnode) in pairs.items():
        path = f"petnames.{name}"
        problem = name_problem(name)
        if problem:
            checker.error(knode, path, problem)
            continue
        target = checker.value(vnode, path)
        if not isinstance(target, str):
            checker.error(vnode, path, "expected an onion service node's name or a v3 onion address")
        elif target.endswith(".onion"):
            if (problem := onion_problem(target)) is not None:
                checker.error(vnode, path, problem)
            else:
                found[name] = target.lower()
        elif target in services:
            found[name] = target
        elif target in roles:
            checker.error(vnode, path, f"node {target} is a {roles[target]}, not an onion_service "
                                       f"(onion services: {', '.join(services) or 'none'})")
        else:
            close = difflib.get_close_matches(target, services, n=1)
            hint = (f"did you mean '{close[0]}'?" if close
                    else f"onion services: {', '.join(services) or 'none'}")
            checker.error(vnode, path, f"no node named {target!r} ({hint}); or give a full v3 onion address")
    return found
