"""Topology -> docker-compose.yml: the same lab as `onionlab up`, for people who run `docker compose up -d`.

The file is plain text built here line by line, so the same topology always gives the same bytes (the
checked-in docker-compose.yml is the export of topologies/default.yaml, and tests/unit/test_compose.py fails
when the two drift). What it holds:

- one network per topology network, with the topology's subnet and gateway (Docker's first host address);
- a volume per node, mounted at the node's data dir `/var/lib/onionlab/<node>` (plan.DATA_ROOT);
- a one-shot `init` service of the node image. Fresh named volumes are root-owned (the image has no such
  path to copy ownership from), so it starts as root with only CHOWN, SETUID and SETGID, gives every node's
  volume to the node user 10001, then drops to 10001 (`setpriv`) and runs `python -m nodes.init`
  (nodes/init.py) on the run plan, which travels in the environment variable ONIONLAB_PLAN. That makes the
  authorities' identity keys in their volumes (kept on the next `up`, removed by `down -v`) and every node's
  config.json. The plan holds no secret, so neither does this file. init mounts the volumes under /state,
  not under the image's /var/lib/onionlab, which is 0700 and owned by 10001: a root without
  DAC_OVERRIDE could not even look inside it;
- one service per node, started once init has completed successfully: the image's user 10001, a read-only
  root filesystem, every capability dropped, no-new-privileges, its static address on each of its
  networks, `command: [ROLE, --config, /var/lib/onionlab/<node>/config.json]`. Clients' SOCKS ports are
  published on 127.0.0.1 of the host only; the host port can be changed with ONIONLAB_<NODE>_SOCKS_PORT.

Every object carries the docker backend's labels onionlab.lab (the topology's name) and onionlab.topology (the
topology file), networks onionlab.network, volumes and services onionlab.node and onionlab.role; never
onionlab.run: a compose lab belongs to its compose project, not to an `onionlab up` run, so `onionlab reap`
has no business with it (`docker compose down -v` removes it).

`render_stack` writes the same lab as a Docker Swarm stack file (`onionlab export stack`, then
`docker stack deploy -c FILE NAME`), which differs where Swarm does:

- no static addresses: the plan uses service names (every service's hostname is its node name, and with
  `endpoint_mode: dnsrr` the name resolves to the task's own address). Relays resolve their name at start and
  advertise that IP (nodes/roles/relay.py); authorities are dialled by name. Every port listens on 0.0.0.0;
- an overlay network per topology network (attachable, the topology's subnet). Every node service has the
  alias `<node>.<network>` on each of its networks, as in the swarm backend (service_networks, shared with
  orchestrator/backends/swarm/stackfile.py). With several networks the plan (stack_plan, the backend's too)
  names nodes so: a relay advertises what its first network's name resolves to, and a node that shares only
  another network with a relay dials it by that name there (NodeConfig.dial_names, docs/swarm.md), since no
  address is known before deploy time. Such nodes have no health check: Swarm's DNS answers for a task's
  aliases only once it is healthy, and the image's check asks /status at the node's address, that very name;
- the plan reaches init as a Swarm config from a file next to the stack file (`<stack>.plan.json`, written by
  `export stack -o FILE`), not in the environment: no 128 KiB limit;
- no depends_on: init and the nodes start together, and every node runs with `--wait-config`, polling for
  the config.json that init writes atomically; nodes restart on failure, init never;
- init cannot have `network_mode: none`, so it sits alone on an internal overlay network;
- security: user, read-only root filesystem and cap_drop/cap_add as in compose (Docker 20.10 supports
  capabilities in services); `security_opt` (no-new-privileges) is not supported by `docker stack deploy`
  and left out. SOCKS ports are published in `mode: host` (the ingress routing mesh needs IPVS), which
  binds 0.0.0.0 of the host: Swarm cannot publish on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Final

from nodes.config import command_word
from orchestrator.plan import DATA_ROOT, INIT_MEMORY, INIT_PIDS, Plan, make_plan, network_name
from orchestrator.topology import Node, Topology, size_text

NODE_UID: Final = 10001  # the node image's user (images/node/Dockerfile)
PLAN_VARIABLE: Final = "ONIONLAB_PLAN"
INIT_MOUNT: Final = "/state"  # where the init service sees the nodes' volumes
SOCKS_BIND: Final = "127.0.0.1"  # published ports reach the host's loopback only
INIT_CAPS: Final = ("CHOWN", "SETUID", "SETGID")
DEFAULT_OUTPUT: Final = "docker-compose.yml"
DEFAULT_STACK_OUTPUT: Final = "onionlab-stack.yml"
WAIT_CONFIG_SECONDS: Final = 300  # how long a stack's node waits for init to write its config
STACK_FILE_VERSION: Final = "3.9"  # the first with deploy.resources.limits.pids
STACK_PLAN_CONFIG: Final = "plan"  # the stack's Swarm config that carries the plan to init
STACK_PLAN_TARGET: Final = "/etc/onionlab/plan.json"


def plan_file_name(output_name: str) -> str:
    """The plan's file next to the stack file: onionlab-stack.yml -> onionlab-stack.plan.json."""
    name = PurePosixPath(output_name).name
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return f"{stem}.plan.json"


class ComposeError(ValueError):
    """A topology that cannot be written as a compose file; the message says why."""


def _q(value: object, *, interpolate: bool = False) -> str:
    """A YAML scalar that means exactly `value`: JSON strings and numbers are valid YAML flow scalars. `$`
    is doubled (compose interpolates variables in every string) unless `interpolate` asks for a variable."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(f"cannot quote {value!r}")
    if not isinstance(value, str):
        return str(value)
    text = json.dumps(value)
    return text if interpolate else text.replace("$", "$$")


def _flow(values: Iterable[object]) -> str:
    return "[" + ", ".join(map(_q, values)) + "]"


def _labels(out: list[str], indent: str, topology: Topology, source: str, **more: str) -> None:
    out.append(f"{indent}labels:")
    pairs = {"lab": topology.name, "topology": source, **more}
    out.extend(f"{indent}  onionlab.{key}: {_q(value)}" for key, value in pairs.items())


def init_service_name(topology: Topology) -> str:
    """`init`, unless a node is called that (node names never contain `_`, so `init_` is always free)."""
    return "init_" if any(n.name == "init" for n in topology.nodes) else "init"


def volume_name(node: Node) -> str:
    return f"state-{node.name}"


def socks_variable(node: Node) -> str:
    return f"ONIONLAB_{node.name.upper().replace('-', '_')}_SOCKS_PORT"


def socks_host_ports(topology: Topology) -> dict[str, int]:
    """Each client's default host port: its SOCKS port, or the next one that no earlier client took."""
    taken: set[int] = set()
    out: dict[str, int] = {}
    for node in topology.nodes_by_role("client"):
        port = node.socks_port or 0
        while port in taken:
            port += 1
        if port > 65535:
            raise ComposeError(f"no free host port for the SOCKS port of {node.name}")
        taken.add(port)
        out[node.name] = port
    return out


def display_source(path: str | os.PathLike[str], cwd: str | os.PathLike[str] | None = None) -> str:
    """How the header names the topology file: relative to `cwd` (default: the current directory) when it
    lies below it, else absolute; always with forward slashes."""
    resolved = Path(path).resolve()
    try:
        return PurePosixPath(resolved.relative_to(Path(cwd or os.getcwd()).resolve())).as_posix()
    except ValueError:
        return resolved.as_posix()


def _role_counts(topology: Topology) -> str:
    words = {"authority": ("authority", "authorities"), "relay": ("relay", "relays"),
             "onion_service": ("onion service", "onion services"), "client": ("client", "clients")}
    parts = []
    for role, (one, many) in words.items():
        count = len(topology.nodes_by_role(role))
        if count:
            parts.append(f"{count} {one if count == 1 else many}")
    return ", ".join(parts)


def _limits(out: list[str], memory: int | None, pids: int | None) -> None:
    """A compose service's memory (swap included: no swapping past it) and pids limits."""
    if memory is not None:
        out.append(f"    mem_limit: {_q(size_text(memory))}")
        out.append(f"    memswap_limit: {_q(size_text(memory))}")
    if pids is not None:
        out.append(f"    pids_limit: {pids}")


def _init_script(topology: Topology, plan_source: list[str]) -> tuple[list[str], str]:
    """The init service's mount points and its shell command (chown the volumes, drop to the node user);
    `plan_source`: init's `--plan-env VAR` or `--plan FILE`."""
    mounts = [f"{INIT_MOUNT}/{n.name}" for n in topology.nodes]
    script = (f"chown {NODE_UID}:{NODE_UID} {' '.join(mounts)} && exec setpriv --reuid={NODE_UID} "
              f"--regid={NODE_UID} --clear-groups python3 -m nodes.init {' '.join(plan_source)} "
              f"--out {INIT_MOUNT}")
    return mounts, script


def _init_service(topology: Topology, plan: Plan | None, name: str, image: str) -> list[str]:
    """What the init service is in both files: runs as root only to chown the volumes, every node's volume
    mounted; the plan in its environment (compose), or, with `plan` None, in the Swarm config at
    STACK_PLAN_TARGET (stack: no size limit); the caller adds networking and the rest."""
    source = ["--plan-env", PLAN_VARIABLE] if plan is not None else ["--plan", STACK_PLAN_TARGET]
    mounts, script = _init_script(topology, source)
    lines = [f"  {name}:", f"    image: {_q(image)}", '    user: "0"',
             f"    entrypoint: {_flow(['sh', '-c', script])}"]
    if plan is not None:
        lines += ["    environment:", f"      {PLAN_VARIABLE}: |"]
        lines += [f"        {line}".replace("$", "$$") for line in plan.to_json().splitlines()]
    else:
        lines += ["    configs:", f"      - {{source: {STACK_PLAN_CONFIG}, target: {_q(STACK_PLAN_TARGET)}, "
                  "mode: 0444}"]
    lines.append("    volumes:")
    lines += [f"      - {_q(f'{volume_name(node)}:{mount}')}"
              for node, mount in zip(topology.nodes, mounts, strict=True)]
    return lines


def render_compose(topology: Topology, source: str, output_name: str = DEFAULT_OUTPUT) -> str:
    """The docker-compose.yml of `topology`; the header names the topology file as `source` and this file as
    `output_name` (in the command that makes it again)."""
    if "\n" in source or "\n" in output_name:
        raise ComposeError("file names with a line break cannot go into the header")
    plan = make_plan(topology, socks_address="0.0.0.0")  # a published port reaches 0.0.0.0 in the container
    init = init_service_name(topology)
    ports = socks_host_ports(topology)
    images = list(dict.fromkeys(n.image for n in topology.nodes))  # first seen first
    lab = topology.name
    out: list[str] = []
    add = out.append

    add(f"# Generated from {source} by `onionlab export compose`. Do not edit by hand: edit the topology,")
    add(f"# then run: onionlab export compose {source} -o {output_name}")
    add("#")
    add(f"# Lab {lab!r}: {_role_counts(topology)}. Needs the node image {', '.join(images)}")
    add("# (`make image`). Then `docker compose up -d` (or `docker-compose up -d`); `docker compose down -v`")
    add("# removes the containers, the networks and the volumes, which hold the lab's keys.")
    add(f"# The one-shot `{init}` service makes the authorities' identity keys and every node's config.json")
    add("# in the nodes' volumes (no key material is in this file); every node starts once it has finished.")
    for client, port in ports.items():
        node = topology.node(client)
        add(f"# SOCKS5 of {client}: 127.0.0.1:{port} on the host (${{{socks_variable(node)}}} changes it).")
    add("")

    add("networks:")
    for network in topology.networks:
        add(f"  {network.name}:")
        add("    driver: bridge")
        add("    ipam:")
        add("      config:")
        add(f"        - subnet: {_q(str(network.subnet))}")
        add(f"          gateway: {_q(str(network.gateway))}")
        _labels(out, "    ", topology, source, network=network.name)
    add("")

    add("volumes:")
    for node in topology.nodes:
        add(f"  {volume_name(node)}:")
        _labels(out, "    ", topology, source, node=node.name, role=node.role)
    add("")

    add("services:")
    out.extend(_init_service(topology, plan, init, images[0]))
    add("    network_mode: none")
    add("    read_only: true")
    add("    cap_drop: [ALL]")
    add(f"    cap_add: {_flow(INIT_CAPS)}")
    add("    security_opt: [no-new-privileges:true]")
    add('    restart: "no"')
    _limits(out, INIT_MEMORY, INIT_PIDS)
    _labels(out, "    ", topology, source, node=init, role="init")

    for node in topology.nodes:
        data_dir = f"{DATA_ROOT}/{node.name}"
        add("")
        add(f"  {node.name}:")
        add(f"    image: {_q(node.image)}")
        add(f"    hostname: {_q(node.name)}")
        command = [command_word(node.role, node.impl), "--config", f"{data_dir}/config.json"]
        add(f"    command: {_flow(command)}")
        add("    depends_on:")
        add(f"      {init}:")
        add("        condition: service_completed_successfully")
        add("    volumes:")
        add(f"      - {_q(f'{volume_name(node)}:{data_dir}')}")
        add("    networks:")
        for interface in node.interfaces:
            add(f"      {interface.network}:")
            add(f"        ipv4_address: {_q(str(interface.address))}")
        if node.role == "client":
            port = node.socks_port
            add("    ports:")
            published = f"{SOCKS_BIND}:${{{socks_variable(node)}:-{ports[node.name]}}}:{port}"
            add(f"      - {_q(published, interpolate=True)}")
        add("    read_only: true")
        add("    tmpfs: [/tmp]")
        add("    cap_drop: [ALL]")
        add("    security_opt: [no-new-privileges:true]")
        _limits(out, node.memory, node.pids)
        _labels(out, "    ", topology, source, node=node.name, role=node.role)
    return "\n".join(out) + "\n"


def names_by_network(topology: Topology) -> bool:
    """Whether a stack's plan names nodes by network (`<node>.<network>`): with several networks, where a
    relay's address on the network it advertises is not the one every node reaches it at."""
    return len(topology.networks) > 1


def stack_plan(topology: Topology) -> Plan:
    """The plan a stack runs (the export's and the swarm backend's): every node at its service name (with
    several networks, at its name on each network, `<node>.<network>`: service_networks), every port on
    0.0.0.0."""
    if names_by_network(topology):
        return make_plan(topology, network_names=True, socks_address="0.0.0.0", listen_address="0.0.0.0")
    return make_plan(topology, addresses={n.name: n.name for n in topology.nodes}, socks_address="0.0.0.0",
                     listen_address="0.0.0.0")


def service_networks(node: Node) -> dict[str, list[str]]:
    """A node's service's networks and its aliases on each: `<node>.<network>`, which Swarm's DNS resolves
    to the task's address on that network only, and only for tasks on that network (stack_plan's names)."""
    return {net: [network_name(node.name, net)] for net in node.networks}


def render_stack(topology: Topology, source: str, output_name: str = DEFAULT_STACK_OUTPUT) -> str:
    """The Docker Swarm stack file of `topology` (ComposeError for what cannot go into it)."""
    if "\n" in source or "\n" in output_name:
        raise ComposeError("file names with a line break cannot go into the header")
    try:
        stack_plan(topology)
    except ValueError as e:  # relays that the consensus cannot tell apart, with several networks
        raise ComposeError(f"topology {topology.name!r}: {e}") from None
    named = names_by_network(topology)
    init = init_service_name(topology)
    isolated = "init-isolated"
    while any(isolated == network.name for network in topology.networks):
        isolated += "-"
    ports = socks_host_ports(topology)
    images = list(dict.fromkeys(n.image for n in topology.nodes))
    out: list[str] = []
    add = out.append

    add(f"# Generated from {source} by `onionlab export stack`. Do not edit by hand: edit the topology,")
    add(f"# then run: onionlab export stack {source} -o {output_name}")
    add("#")
    add(f"# Lab {topology.name!r} as a Docker Swarm stack: {_role_counts(topology)}.")
    add(f"# Needs the node image {', '.join(images)} on the swarm's nodes (`make image`) and a swarm")
    add("# (`docker swarm init`). Then")
    add(f"# `docker stack deploy -c {output_name} NAME`, with {plan_file_name(output_name)} next to it (the")
    add("# plan, which init reads as a Swarm config: no size limit); `docker stack rm NAME` removes the")
    add("# services and the networks, `docker volume rm NAME_state-...` the volumes, which hold the lab's")
    add("# keys.")
    add(f"# The one-shot `{init}` service makes the authorities' identity keys and every node's config.json")
    add("# in the nodes' volumes (no key material is in this file); the nodes wait for their config.")
    add("# Nodes are found by service name (endpoint_mode: dnsrr). Published ports use mode: host, which")
    add("# binds every address of the host: Swarm cannot publish a port on 127.0.0.1 only.")
    if named:
        add(f"# {len(topology.networks)} networks: each node is also `<node>.<network>` on each of its "
            "networks; relays")
        add("# advertise the address their first network's name resolves to, and a node that shares only")
        add("# another network with a relay dials it by its name there (its config's dial_names).")
    for client, port in ports.items():
        node = topology.node(client)
        add(f"# SOCKS5 of {client}: port {port} on the host (${{{socks_variable(node)}}} changes it).")
    add("")
    add(f"version: {_q(STACK_FILE_VERSION)}")
    add("")

    add("networks:")
    for network in topology.networks:
        add(f"  {network.name}:")
        add("    driver: overlay")
        add("    attachable: true")
        add("    ipam:")
        add("      config:")
        add(f"        - subnet: {_q(str(network.subnet))}")
        _labels(out, "    ", topology, source, network=network.name)
    add(f"  {isolated}:")
    add("    driver: overlay")
    add("    internal: true")
    _labels(out, "    ", topology, source, network=isolated)
    add("")

    add("volumes:")
    for node in topology.nodes:
        add(f"  {volume_name(node)}:")
        _labels(out, "    ", topology, source, node=node.name, role=node.role)
    add("")

    def deploy(condition: str, memory: int | None, pids: int | None, **labels: str) -> None:
        add("    deploy:")
        add("      endpoint_mode: dnsrr")
        if memory is not None or pids is not None:
            add("      resources:")
            add("        limits:")
            if memory is not None:
                add(f"          memory: {_q(size_text(memory).upper())}")
            if pids is not None:
                add(f"          pids: {pids}")
        add("      restart_policy:")
        add(f"        condition: {condition}")
        if condition != "none":
            add("        delay: 2s")
        _labels(out, "      ", topology, source, **labels)

    add("configs:")
    add(f"  {STACK_PLAN_CONFIG}:")
    add(f"    file: {_q('./' + plan_file_name(output_name))}")
    _labels(out, "    ", topology, source)
    add("")

    add("services:")
    out.extend(_init_service(topology, None, init, images[0]))
    add(f"    networks: [{isolated}]")
    add("    read_only: true")
    add("    cap_drop: [ALL]")
    add(f"    cap_add: {_flow(INIT_CAPS)}")
    add("    healthcheck:")
    add("      disable: true")
    _labels(out, "    ", topology, source, node=init, role="init")
    deploy("none", INIT_MEMORY, INIT_PIDS, node=init, role="init")

    for node in topology.nodes:
        data_dir = f"{DATA_ROOT}/{node.name}"
        add("")
        add(f"  {node.name}:")
        add(f"    image: {_q(node.image)}")
        add(f"    hostname: {_q(node.name)}")
        command = [command_word(node.role, node.impl), "--config", f"{data_dir}/config.json",
                   "--wait-config", str(WAIT_CONFIG_SECONDS)]
        add(f"    command: {_flow(command)}")
        add(f"    user: {_q(str(NODE_UID))}")
        add("    volumes:")
        add(f"      - {_q(f'{volume_name(node)}:{data_dir}')}")
        add("      - {type: tmpfs, target: /tmp}")
        add("    networks:")
        for net, aliases in service_networks(node).items():
            add(f"      {net}: {{aliases: {_flow(aliases)}}}")
        if node.role == "client":
            published = f"${{{socks_variable(node)}:-{ports[node.name]}}}"
            add("    ports:")
            add(f"      - {{target: {node.socks_port}, published: {_q(published, interpolate=True)}, "
                "protocol: tcp, mode: host}")
        add("    read_only: true")
        add("    cap_drop: [ALL]")
        if named:  # the image's check would ask /status at a name that Swarm's DNS gives only once healthy
            add("    healthcheck:")
            add("      disable: true")
        _labels(out, "    ", topology, source, node=node.name, role=node.role)
        deploy("on-failure", node.memory, node.pids, node=node.name, role=node.role)
    return "\n".join(out) + "\n"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ComposeError(f"cannot write {path}: {e.strerror or e}") from None


def export_stack(topology: Topology, source: str, output: str | os.PathLike[str] | None = None, *,
                 output_name: str | None = None) -> str:
    """Render the stack file and, when `output` is given, write it and the plan next to it (plan_file_name;
    both atomically); returns the stack's text."""
    name = output_name or (Path(output).name if output is not None else DEFAULT_STACK_OUTPUT)
    text = render_stack(topology, source, name)
    if output is not None:
        _write(Path(output).with_name(plan_file_name(name)), stack_plan(topology).to_json())
        _write(Path(output), text)
    return text


def export_compose(topology: Topology, source: str, output: str | os.PathLike[str] | None = None, *,
                   output_name: str | None = None) -> str:
    """Render and, when `output` is given, write the file (atomically); returns the text. The header names
    the file `output_name` (default: docker-compose.yml)."""
    text = render_compose(topology, source, output_name or DEFAULT_OUTPUT)
    if output is not None:
        _write(Path(output), text)
    return text
