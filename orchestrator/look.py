"""`onionlab logs`, `exec` and `inspect`: looking into a running lab (argument wiring: cli.py)."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys

from .backends import require_state
from .backends.base import Backend
from .logfollow import show_logs
from .logview import SinceError, parse_since
from .signals import signal_of


def logs(backend: Backend, args: argparse.Namespace) -> int:
    """Exit 0; 2 for a bad --since. Ctrl-C ends --follow normally (0)."""
    try:
        since = parse_since(args.since) if args.since else None
    except SinceError as e:
        print(f"onionlab: {e}", file=sys.stderr)
        return 2
    info = require_state(backend.run_dir)
    names = [n.name for n in info.nodes] if args.node is None else [info.node(args.node).name]
    try:
        show_logs(backend, names, sys.stdout, follow=args.follow, since=since, as_json=args.json)
    except KeyboardInterrupt as e:
        if signal_of(e) is not signal.SIGINT or not args.follow:
            raise
    return 0


def exec_in(backend: Backend, args: argparse.Namespace) -> int:
    """Run the command in the node; its exit status (128 + N when a signal N ended it)."""
    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not command:
        print(f"onionlab: which command? e.g. `onionlab exec {args.node} -- sh -c 'ls -l'`", file=sys.stderr)
        return 2
    spec = backend.exec_spec(args.node, command, tty=sys.stdin.isatty() and sys.stdout.isatty())
    try:
        code = subprocess.call(spec.argv, env=spec.env, cwd=spec.cwd)
    except FileNotFoundError:
        print(f"onionlab: {command[0]}: command not found", file=sys.stderr)
        return 127
    return 128 - code if code < 0 else code


def inspect(backend: Backend, args: argparse.Namespace) -> int:
    data = backend.inspect()
    print(json.dumps(data, indent=2) if args.json else format_inspect(data))
    return 0


def format_inspect(data: dict) -> str:
    """`inspect` as text: the run, one block per node (a container, a process, or a swarm service on its
    host), then the networks and volumes (docker)."""
    lines = [f"lab {data['lab']!r}, {data['backend']} backend, run dir {data['run_dir']}"
             + (f", run id {data['run_id']}" if data.get("run_id") else "")]
    if data.get("failed"):
        lines.append(f"  its `up` failed: {data['failed']} (nothing of it runs)")
    for node in data["nodes"]:
        if "service" in node:  # swarm
            where = f"service {node['service']} on {node.get('host') or '(no host)'}"
        else:
            where = (f"container {node.get('container')} {node.get('id', '')}".rstrip() if "container" in node
                     else "process")
        state = f"{node['state']}" + (f", pid {node['pid']}" if node.get("pid") else "")
        impl = f", {node['impl']}" if node.get("impl", "onionlab") != "onionlab" else ""
        lines += ["", f"{node['name']} ({node['role']}{impl}): {where}, {state}"]
        if node.get("image"):
            lines.append(f"  image      {node['image']}")
        addresses = node.get("addresses") or ({"": node["address"]} if node.get("address") else {})
        if addresses:
            lines.append("  addresses  " + ", ".join(f"{a} ({net})" if net else a
                                                     for net, a in addresses.items()))
        ports = ", ".join(f"{key.removesuffix('_port')} {port}"
                          for key, port in node.get("ports", {}).items())
        lines.append(f"  ports      {ports}")
        if node.get("published"):
            lines.append("  published  " + ", ".join(f"{port} -> {' '.join(hosts)}"
                                                     for port, hosts in node["published"].items()))
        for key in ("socks", "onion", "dir", "config", "petnames"):
            if node.get(key):
                lines.append(f"  {key:<10} {node[key]}")
        for volume in node.get("volumes") or []:
            lines.append(f"  volume     {volume['name']} at {volume['path']}")
        if node.get("logs"):
            lines.append(f"  logs       {', '.join(node['logs'])}")
    if data.get("networks"):
        lines += ["", "networks:"]
        lines += [f"  {n['name']}  {n['subnet']}  gateway {n['gateway']}" for n in data["networks"]]
    if data.get("volumes"):
        lines += ["", "volumes:"] + [f"  {v}" for v in data["volumes"]]
    return "\n".join(lines)

