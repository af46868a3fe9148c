"""`python -m nodes init`: turn a run's plan into the files every node reads, with the run's key material.

A plan (orchestrator/plan.py makes it) is every node's NodeConfig with one blank: the authorities' identities,
which exist only once this program has made their keys. `render_state` makes each authority's keys in
`<out>/<authority>/keys/` (directory 0700, files 0600, never overwritten, so a second run keeps them): the
Ed25519 and RSA relay identities its OR port proves, its ntor key, and its v3 identity and signing keys. It
fills the two fingerprints a DirAuthority line names (v3ident, the relay fingerprint) into every config and
writes `<out>/<node>/config.json`. It also makes each onion service's identity key (so its address is known
before it starts) and writes each client's petname table (`petnames.json`, NAME -> onion address, from the
plan's petnames). Under Docker this runs as a one-shot service of the node image that
writes into the run's state volume: key material never passes through the repository, an image layer or the
compose file.

The plan's `data_dir`s are the paths the nodes will see; `out` is where the files go now. They are the same
directory when init runs in a container with the state volume mounted where the nodes mount it.

Runs inside the node image: it imports nothing from the orchestrator.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path

from nodes.config import ConfigError, NodeConfig, parse_config
from nodes.core.ed25519 import Signer
from nodes.core.onion_address import encode_onion_address
from nodes.core.petnames import name_problem, onion_problem, render_table
from nodes.net.node_keys import (
    HS_IDENTITY_KEY,
    KEYS_DIR,
    load_or_create_authority_keys,
    load_or_create_node_keys,
    load_or_create_seed,
)

PLAN_FORMAT = 1
CONFIG_FILE = "config.json"
FATAL_PREFIX = "fatal: "


class PlanError(ValueError):
    """A plan that is not valid JSON of the expected shape; the message names the place."""


# ------------------------------------------------------------------------------------------- the plan


def plan_data(lab: str, configs: list[NodeConfig], petnames: Mapping[str, str] | None = None) -> dict:
    """The plan as plain data: the configs with every AuthorityRef's v3ident and fingerprint blank (""), and
    the petnames (NAME -> onion service node or onion address) when there are any."""
    blank = [replace(c, authorities=tuple(replace(a, v3ident="", fingerprint="") for a in c.authorities))
             for c in configs]
    data = {"format": PLAN_FORMAT, "lab": lab, "nodes": [_plain(c) for c in blank]}
    return {**data, "petnames": dict(petnames)} if petnames else data


def _plain(config: NodeConfig) -> dict:
    """A config as plain data; without `shaping` when it has none and without `adversary` when false (most
    labs: the plan stays as it was)."""
    data = asdict(config)
    if not data["shaping"]:
        del data["shaping"]
    if not data["adversary"]:
        del data["adversary"]
    return data


def parse_plan(text: str) -> tuple[str, list[NodeConfig], dict[str, str]]:
    """(lab, configs, petnames) from a plan's JSON; PlanError names what is wrong."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise PlanError(f"plan: not JSON: line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
        raise PlanError(f"plan: expected an object with \"format\": {PLAN_FORMAT}")
    if not isinstance(data.get("lab"), str) or not isinstance(data.get("nodes"), list) or not data["nodes"]:
        raise PlanError("plan: expected \"lab\" (a string) and \"nodes\" (a non-empty list)")
    configs = []
    for i, node in enumerate(data["nodes"]):
        try:
            configs.append(parse_config(json.dumps(node), f"plan: nodes[{i}]"))
        except ConfigError as e:
            raise PlanError(str(e)) from None
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise PlanError("plan: node names repeat")
    authorities = {c.name for c in configs if c.role == "authority"}
    for config in configs:
        for ref in config.authorities:
            if ref.name not in authorities:
                raise PlanError(f"plan: node {config.name} names {ref.name!r}, no authority of the plan")
            if ref.v3ident or ref.fingerprint:
                raise PlanError(f"plan: node {config.name}: the identities of {ref.name} must be blank")
    return data["lab"], configs, _plan_petnames(data.get("petnames", {}), configs)


def _plan_petnames(petnames: object, configs: list[NodeConfig]) -> dict[str, str]:
    """The plan's petnames: each NAME -> an onion service node of the plan or a v3 onion address."""
    if not isinstance(petnames, dict):
        raise PlanError("plan: petnames: expected an object {name: onion service node or onion address}")
    services = {c.name for c in configs if c.role == "onion_service"}
    for name, target in petnames.items():
        problem = name_problem(name) or (None if target in services else
                                         onion_problem(target) if isinstance(target, str) else "not a string")
        if problem:
            raise PlanError(f"plan: petnames: {name}: {problem}")
    return dict(petnames)


def fill_identities(configs: list[NodeConfig],
                    identities: Mapping[str, tuple[str, str]]) -> dict[str, NodeConfig]:
    """Every config by name, each AuthorityRef carrying its authority's (v3ident, fingerprint) (hex) from
    `identities`."""
    missing = sorted({a.name for c in configs for a in c.authorities} - set(identities))
    if missing:
        raise KeyError(f"no identity for authority {', '.join(missing)}")
    return {c.name: replace(c, authorities=tuple(
                replace(a, v3ident=identities[a.name][0], fingerprint=identities[a.name][1])
                for a in c.authorities))
            for c in configs}


def make_authority_keys(data_dir: Path) -> tuple[str, str]:
    """Every key an authority needs, made once; its (v3ident, relay fingerprint) in hex."""
    node = load_or_create_node_keys(data_dir)
    return load_or_create_authority_keys(data_dir).v3ident, node.fingerprint


def make_onion_key(data_dir: Path) -> str:
    """An onion service's identity key, made once (the service loads the same file): its onion address,
    which the clients' petname tables need before any node starts."""
    seed = load_or_create_seed(data_dir / KEYS_DIR / HS_IDENTITY_KEY)
    return encode_onion_address(Signer.from_seed(seed).public_key) + ".onion"


# --------------------------------------------------------------------------------------------- files


def _write_atomically(path: Path, text: str) -> None:
    """Readers (nodes waiting for their config) see the old file or the new one, never a part."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def render_state(plan_json: str, out_dir: str | os.PathLike[str]) -> dict[str, NodeConfig]:
    """Make (or keep) the authorities' identity keys under `out_dir`, write every node's config.json there,
    and return the configs by node name. Keys are written before any config, so a config that exists
    names keys that exist."""
    _, configs, petnames = parse_plan(plan_json)
    out = Path(out_dir)
    identities: dict[str, tuple[str, str]] = {}
    onions: dict[str, str] = {}
    for config in configs:
        node_dir = out / config.name
        node_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if config.role == "authority":
            identities[config.name] = make_authority_keys(node_dir)
        elif config.role == "onion_service":
            onions[config.name] = make_onion_key(node_dir)
    filled = fill_identities(configs, identities)
    table = render_table({name: onions.get(target, target) for name, target in petnames.items()})
    for name, config in filled.items():
        if config.petnames_file:  # where the client reads it; written here in its own data dir
            _write_atomically(out / name / Path(config.petnames_file).name, table)
        _write_atomically(out / name / CONFIG_FILE, config.to_json() + "\n")
    return filled


# ------------------------------------------------------------------------------------------ command


def main(argv: list[str] | None = None) -> int:
    """`init (--plan-env VAR | --plan FILE) --out DIR`. Exit status 0 done, 2 bad arguments or plan, 1 the
    files could not be written; failures end with one `fatal: ...` line on stderr."""
    parser = argparse.ArgumentParser(prog="python -m nodes init",
                                     description="Write every node's config and the authorities' keys.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--plan-env", metavar="VAR", help="read the plan (JSON) from this variable")
    source.add_argument("--plan", metavar="FILE", type=Path, help="read the plan (JSON) from this file")
    parser.add_argument("--out", required=True, type=Path, help="the state directory (the nodes' data root)")
    args = parser.parse_args(argv)
    try:
        if args.plan_env is not None:
            if args.plan_env not in os.environ:
                raise PlanError(f"environment variable {args.plan_env} is not set")
            text = os.environ[args.plan_env]
        else:
            text = args.plan.read_text()
        configs = render_state(text, args.out)
    except (PlanError, ConfigError) as e:
        print(f"{FATAL_PREFIX}{e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{FATAL_PREFIX}{e.filename or args.out}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(f"onionlab init: wrote {len(configs)} node configs under {args.out}; authorities (v3ident, "
          "relay fingerprint):")
    for ref in sorted({a for c in configs.values() for a in c.authorities}, key=lambda a: a.name):
        print(f"  {ref.name} {ref.v3ident} {ref.fingerprint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
