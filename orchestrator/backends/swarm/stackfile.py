"""The stack file `up` deploys: one service per node, its configs and secrets, overlay networks, volumes.

JSON (valid YAML, which `docker stack deploy` reads), written to `<run dir>/stack.json`; it names the
material's files but holds no key. Per node service `<node>`:

- hostname and service name = the node name; `endpoint_mode: dnsrr` (the name resolves to the task's own
  address: no virtual IP, which needs IPVS, missing from many kernels); the plan dials nodes by name;
- on each of its networks the alias `<node>.<network>`, which resolves to its address on that network only
  (orchestrator.compose.service_networks, the stack export's too): with several networks the plan names
  nodes so (compose.stack_plan), and a relay advertises what its first network's alias resolves to;
- one replica, `restart_policy: none`: a node that dies stays dead until `onionlab restart`/`start`, as on
  the docker backend (chaos must see the kill it made); placement constraints from the topology. Nothing
  else places the services: Swarm puts each task where the fewest tasks run (a spread preference would act
  within one service's replicas only, and each node is a service of one replica);
- the image's user 10001, read-only root file system, every capability dropped; tmpfs /tmp; a volume per node
  at /var/lib/onionlab (the image's directory, so Docker gives the fresh volume the node user's ownership);
- its control port (and a client's SOCKS port) published in `mode: host` at a port chosen by `up`: the
  orchestrator reaches /status at the task's host, wherever Swarm put it (no routing mesh: it needs IPVS).
  Host mode binds every address of that host.

No health check (the image's asks /status at the node's address): Swarm puts a task into its DNS only once
the check has passed, and a relay resolves its own network alias (below) before its /status answers. `up`
waits for /status itself.

Swarm cannot do `security_opt` (no-new-privileges) for services: the node runs as an unprivileged user with
no capabilities, which is what no-new-privileges protects here.
"""

from __future__ import annotations

import json
from typing import Final

from nodes.config import command_word
from orchestrator.compose import service_networks
from orchestrator.plan import DATA_ROOT
from orchestrator.topology import Topology, size_text

from .material import NodeMaterial, entry_script

STACK_FILE_VERSION: Final = "3.9"  # deploy.resources.limits.pids
NODE_UID: Final = "10001"  # the node image's user (images/node/Dockerfile)
STOP_GRACE: Final = "10s"


def volume_name(node: str) -> str:
    return f"state-{node}"


def render_stack(topology: Topology, material: dict[str, NodeMaterial], ports: dict[str, dict[str, int]],
                 labels: dict[str, str]) -> str:
    """The stack of `topology`: `ports` maps each node to {control_port: published, socks_port: ...};
    `labels` go on every object (the run's, the owner's, extra ones)."""
    networks = {net.name: {"driver": "overlay", "attachable": True,
                           "labels": {**labels, "onionlab.network": net.name}}
                for net in topology.networks}
    volumes, secrets, configs, services = {}, {}, {}, {}
    for node in topology.nodes:
        own = {**labels, "onionlab.node": node.name, "onionlab.role": node.role}
        volumes[volume_name(node.name)] = {"labels": own}
        stuff = material[node.name]
        for item in stuff.secrets:
            secrets[item.key] = {"file": str(item.path), "labels": labels}
        for item in stuff.configs:
            configs[item.key] = {"file": str(item.path), "labels": labels}
        data_dir = f"{DATA_ROOT}/{node.name}"
        command = ["python3", "-m", "nodes", command_word(node.role, node.impl), "--config",
                   next(i.target for i in stuff.configs if i.target.endswith("/config.json"))]
        script = entry_script(data_dir, command, petnames=len(stuff.configs) > 1)
        published = [{"target": getattr(node, key), "published": port, "protocol": "tcp", "mode": "host"}
                     for key, port in sorted(ports[node.name].items())]
        placement = {"constraints": list(node.placement)} if node.placement else {}
        limits = {}
        if node.memory is not None:
            limits["memory"] = size_text(node.memory).upper()
        if node.pids is not None:
            limits["pids"] = node.pids
        deploy = {"mode": "replicated", "replicas": 1, "endpoint_mode": "dnsrr",
                  "restart_policy": {"condition": "none"}, "labels": own,
                  **({"placement": placement} if placement else {}),
                  **({"resources": {"limits": limits}} if limits else {})}
        services[node.name] = {
            "image": node.image, "hostname": node.name, "user": NODE_UID,
            "entrypoint": ["sh", "-c", script], "command": [],
            "networks": {net: {"aliases": aliases} for net, aliases in service_networks(node).items()},
            "volumes": [f"{volume_name(node.name)}:{DATA_ROOT}", {"type": "tmpfs", "target": "/tmp"}],
            "ports": published, "read_only": True, "cap_drop": ["ALL"], "stop_grace_period": STOP_GRACE,
            "secrets": [{"source": i.key, "target": i.target, "uid": NODE_UID, "gid": NODE_UID, "mode": 0o400}
                        for i in stuff.secrets],
            "configs": [{"source": i.key, "target": i.target, "uid": NODE_UID, "gid": NODE_UID, "mode": 0o444}
                        for i in stuff.configs],
            "healthcheck": {"disable": True}, "labels": own, "deploy": deploy}
    stack = {"version": STACK_FILE_VERSION, "networks": networks, "volumes": volumes, "secrets": secrets,
             "configs": configs, "services": services}
    return json.dumps(stack, indent=1) + "\n"
