"""Node roles: thin compositions of nodes.net drivers, one module per role (authority, relay, onion_service,
client), each exposing `async def serve(config, *, task_status=trio.TASK_STATUS_IGNORED)`. `tor_node` is the
same for a node that a stock tor plays (`impl: tor`, command word `tor`).

Roles hold no protocol logic: parsing and state machines live in nodes.core, I/O in nodes.net.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable

from nodes.config import ROLES

COMMANDS = (*ROLES, "tor")  # `python -m nodes WORD`: a role, or `tor` (nodes.config.command_word)


def serve_for(word: str) -> Callable[..., Awaitable[None]]:
    """The `serve` function of a command word: a role of nodes.config.ROLES or `tor` (imported on demand)."""
    if word not in COMMANDS:
        raise ValueError(f"unknown role {word!r}; expected one of {COMMANDS}")
    return importlib.import_module(f"{__name__}.{'tor_node' if word == 'tor' else word}").serve
