"""Petnames: names a client's user chose for onion services, `shop` for `shop.pet` (sans-I/O).

The seed ends with Zooko's triangle: of decentralised (global), secure and human-meaningful, a name gets at
most two. An onion address is global and secure (it is the service's key), not meaningful; a petname is
meaningful and secure (this client's table maps it to exactly one key, no one else can change it), not
global: it means something only to the client that holds the table. `NAME.pet` is looked up in that table
and the connection goes to the onion address it names; the table is a JSON object {NAME: ONION_ADDRESS}.
"""

from __future__ import annotations

import json
import re

from .errors import AddressError, DecodeError
from .onion_address import SUFFIX as ONION_SUFFIX
from .onion_address import decode_onion_address

SUFFIX = ".pet"
MAX_NAMES = 10_000  # a table is a person's address book, not a zone file
# DNS labels (lower case), dot-separated, without the .pet suffix: what curl sends and a browser accepts
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_NAME = re.compile(rf"(?=.{{1,200}}$){_LABEL}(?:\.{_LABEL})*")


def is_petname(host: str) -> bool:
    return host.lower().endswith(SUFFIX)


def name_problem(name: str) -> str | None:
    """Why `name` (without .pet) cannot be a petname, or None."""
    if name.lower().endswith(SUFFIX):
        return f"{name!r}: write the name without {SUFFIX} (it is added: {name[:-len(SUFFIX)]!r} is " \
               f"reached as {name})"
    if name.lower().endswith(ONION_SUFFIX):
        return f"{name!r}: a petname cannot end in {ONION_SUFFIX}"
    if not _NAME.fullmatch(name):
        return f"{name!r}: expected lowercase DNS labels (letters, digits, -) separated by dots"
    return None


def onion_problem(address: str) -> str | None:
    """Why `address` is not a full v3 onion address (56 characters and .onion), or None."""
    if not address.endswith(ONION_SUFFIX):
        return f"{address!r}: expected a v3 onion address ending in {ONION_SUFFIX}"
    try:
        decode_onion_address(address)
    except AddressError as e:
        return f"{address!r}: not a valid v3 onion address: {e}"
    return None


def parse_table(text: str) -> dict[str, str]:
    """A petname file: {NAME: ONION_ADDRESS}. DecodeError names every problem (the file is taken whole or
    not at all)."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise DecodeError(f"not JSON: {e}") from None
    if not isinstance(data, dict):
        raise DecodeError("expected a JSON object {\"name\": \"<56 characters>.onion\", ...}")
    if len(data) > MAX_NAMES:
        raise DecodeError(f"{len(data)} names: at most {MAX_NAMES}")
    problems = []
    for name, address in data.items():
        problem = name_problem(name) or (onion_problem(address) if isinstance(address, str)
                                         else f"{name!r}: expected an onion address string")
        if problem:
            problems.append(problem)
    if problems:
        raise DecodeError("; ".join(problems))
    return {name: address.lower() for name, address in data.items()}


def render_table(table: dict[str, str]) -> str:
    return json.dumps(dict(sorted(table.items())), indent=2) + "\n"
