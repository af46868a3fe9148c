"""Node roles: thin compositions of nodes.net drivers, one module per role (authority, relay, onion_service,
client), each exposing `async def serve(config, *, task_status=trio.TASK_STATUS_IGNORED)`.

Roles hold no protocol logic: parsing and state machines live in nodes.core, I/O in nodes.net.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable

from nodes.config import ROLES


def serve_for(role: str) -> Callable[..., Awaitable[None]]:
    """The `serve` function of a role named in nodes.config.ROLES (imported on demand)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {ROLES}")
    return importlib.import_module(f"{__name__}.{role}").serve
