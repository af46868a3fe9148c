"""A run's files for Swarm: every node's config as a Swarm config, every key as a Swarm secret.

A swarm's nodes share no disk, so nothing is made in a volume by an init container (a volume is local to one
host). The orchestrator runs nodes.init itself (the same render_state every backend uses) into a private
directory of the run dir; `docker stack deploy` then stores each file in the swarm's Raft log (encrypted at
rest, Swarm's own secret store), and the directory is removed once the stack is deployed. Secrets reach a
task as files on a tmpfs under /run/secrets, never in its environment or an image layer.

What a node gets:
    config   /etc/onionlab/config.json (its NodeConfig) and, for a client, /etc/onionlab/petnames.json
    secrets  every file of its keys/ directory (authorities' identities, an onion service's identity seed)
             and the run's control secret, as /run/secrets/onionlab-<file>; the node's entry copies them
             into its data dir's keys/ (mode 0700) before starting, since the node reads them there
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from nodes.init import CONFIG_FILE, render_state
from nodes.net.control import SECRET_FILE
from nodes.net.node_keys import KEYS_DIR
from orchestrator.plan import PETNAMES_FILE, Plan

CONFIG_DIR = "/etc/onionlab"  # where a node's Swarm configs are mounted
SECRET_PREFIX = "onionlab-"  # /run/secrets/onionlab-<file>: copied into <data dir>/keys/<file>
MATERIAL_DIR = "material"  # in the run dir, while deploying
MAX_KEY = 64 - len("ol0123456789_")


@dataclass(frozen=True, slots=True)
class Item:
    """One file for one node: `key` is its name in the stack file (unique in the stack)."""

    key: str
    path: Path  # on this machine, while deploying
    target: str  # configs: an absolute path; secrets: the file name under /run/secrets


@dataclass(frozen=True, slots=True)
class NodeMaterial:
    configs: tuple[Item, ...]
    secrets: tuple[Item, ...]


def _key(node: str, kind: str, file: str) -> str:
    """A stack-wide name: Swarm object names allow [a-zA-Z0-9_.-] and 64 characters, of which the stack's
    `ol<10 hex>_` takes 13; a longer one is cut and made unique by a hash of the whole."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", f"{kind}-{node}-{file}")
    if len(name) <= MAX_KEY:
        return name
    return f"{name[:MAX_KEY - 9]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def make_material(plan: Plan, run_dir: Path, control_secret: str) -> dict[str, NodeMaterial]:
    """Write every node's config, petnames and keys under `<run_dir>/material/` (0700) and say which file
    becomes which config or secret of which node."""
    out = run_dir / MATERIAL_DIR
    out.mkdir(mode=0o700)
    render_state(plan.to_json(), out)
    secret = out / SECRET_FILE
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(control_secret + "\n")
    material = {}
    for node in plan.nodes:
        where = out / node.name
        configs = [Item(_key(node.name, "config", CONFIG_FILE), where / CONFIG_FILE,
                        f"{CONFIG_DIR}/{CONFIG_FILE}")]
        if (where / PETNAMES_FILE).exists():
            configs.append(Item(_key(node.name, "config", PETNAMES_FILE), where / PETNAMES_FILE,
                                f"{CONFIG_DIR}/{PETNAMES_FILE}"))
        keys = sorted(p for p in (where / KEYS_DIR).glob("*") if p.is_file()) if (where / KEYS_DIR).is_dir() \
            else []
        secrets = [Item("control-secret", secret, SECRET_PREFIX + SECRET_FILE)]
        secrets += [Item(_key(node.name, "key", p.name), p, SECRET_PREFIX + p.name) for p in keys]
        material[node.name] = NodeMaterial(tuple(configs), tuple(secrets))
    return material


def remove_material(run_dir: Path) -> None:
    """Once deployed the swarm holds them: no key stays on this machine's disk."""
    shutil.rmtree(run_dir / MATERIAL_DIR, ignore_errors=True)


def entry_script(data_dir: str, command: list[str], petnames: bool) -> str:
    """The node's entry: its secrets into `<data_dir>/keys/` (0700, files 0600), its petnames into the data
    dir, then `exec` the node. `$` is doubled: `docker stack deploy` interpolates variables."""
    keys = f"{data_dir}/{KEYS_DIR}"
    lines = [
        "set -e", "umask 077", f"mkdir -p {keys}",
        f"for f in /run/secrets/{SECRET_PREFIX}*; do",
        f'  [ -f "$$f" ] && install -m 600 "$$f" "{keys}/$${{f#/run/secrets/{SECRET_PREFIX}}}"',
        "done",
    ]
    if petnames:
        lines.append(f"install -m 600 {CONFIG_DIR}/{PETNAMES_FILE} {data_dir}/{PETNAMES_FILE}")
    lines.append("exec " + " ".join(command))
    return "\n".join(lines)
