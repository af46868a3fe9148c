"""Looking into a running docker lab: a node's log lines (`onionlab logs`), a command in its container
(`onionlab exec`) and what runs where (`onionlab inspect`). class Observe, a base of DockerBackend."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import datetime

import docker.errors
import requests

from orchestrator.plan import DATA_ROOT, PETNAMES_FILE

from .. import BackendError, node_env
from ..base import ExecSpec, LogLine
from ..filetail import tail_file
from .engine import INIT, LOGS_DIR, NODE, NODE_USER, RUN, Engine


class Observe(Engine):
    def log_lines(self, name: str, stream: str, *, follow: bool = False,
                  since: float | None = None) -> Iterator[LogLine | None]:
        """The container's stdout or stderr with the engine's timestamps, from `since`; followed until the
        container is removed. A run whose `up` failed has no containers: the logs saved in the run dir."""
        info = self._state()
        info.node(name)
        container = self._container(info, name)
        if container is None:
            saved = self.run_dir / LOGS_DIR / f"{name}.{stream}"
            if not saved.exists():
                raise BackendError(f"{name} has no container any more and no saved logs in {saved.parent}")
            return tail_file(saved, name, stream, follow=follow, alive=lambda: False)
        return self._container_lines(container, name, stream, follow, since)

    def _container_lines(self, container, name: str, stream: str, follow: bool,
                         since: float | None) -> Iterator[LogLine | None]:
        which = {"stdout": stream == "stdout", "stderr": stream == "stderr", "timestamps": True}
        last = since
        try:
            history = container.logs(**which, **({"since": since} if since is not None else {}))
        except docker.errors.NotFound:
            return
        for raw in history.decode(errors="replace").splitlines():
            line = _stamped(name, stream, raw)
            last = line.ts if line.ts is not None else last
            yield line
        if not follow:
            return
        yield None
        try:
            chunks = container.logs(**which, stream=True, follow=True,
                                    **({"since": last} if last is not None else {}))
            partial = b""
            for chunk in chunks:
                *complete, partial = (partial + chunk).split(b"\n")
                for raw in complete:
                    line = _stamped(name, stream, raw.decode(errors="replace"))
                    if last is None or line.ts is None or line.ts > last:  # `since` repeats the last line
                        yield line
        except (docker.errors.NotFound, requests.RequestException):
            return  # the container was removed (`down`)

    def exec_spec(self, name: str, command: list[str], *, tty: bool = False) -> ExecSpec:
        """`docker exec` in the node's container as the node's user, with $ONIONLAB_NODE, _ROLE, _CONFIG,
        _ADDRESS, _CONTROL (and _SOCKS for a client) set; stdin passed on, a terminal when `tty`."""
        container = self._running_container(name)
        docker_cli = shutil.which("docker")
        if docker_cli is None:
            raise BackendError("`onionlab exec` runs the `docker` command, which is not on PATH")
        node = self._state().node(name)
        env = node_env(node, f"{DATA_ROOT}/{name}/config.json")
        return ExecSpec(argv=[docker_cli, "exec", "-i", *(["-t"] if tty else []), "-u", NODE_USER,
                              *(f"--env={key}={value}" for key, value in env.items()), container.name,
                              *command])

    def inspect(self) -> dict:
        """The run's containers (id, image, state, pid, addresses, published ports, volume), networks (name,
        subnet, gateway) and volumes, from the engine."""
        info = self._state()
        prefix = f"onionlab-{info.run_id}-"
        containers = {c.labels.get(NODE): c for c in self._containers(info.run_id)}
        nodes_ = []
        for node in info.nodes:
            container = containers.get(node.name)
            entry: dict = {"name": node.name, "role": node.role, "impl": node.impl,
                           "container": node.container, "ports": node.ports,
                           **({"petnames": f"{DATA_ROOT}/{node.name}/{PETNAMES_FILE}"}
                              if node.role == "client" else {}),
                           **({"socks": node.socks} if node.socks else {}),
                           **({"onion": node.onion} if node.onion else {})}
            if container is None:
                nodes_.append({**entry, "state": "missing"})
                continue
            attrs = container.attrs
            networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
            published = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
            entry.update({
                "id": container.short_id, "image": (attrs.get("Config") or {}).get("Image"),
                "state": container.status, "pid": (attrs.get("State") or {}).get("Pid") or None,
                "addresses": {net.removeprefix(prefix): (s.get("IPAMConfig") or {}).get("IPv4Address")
                              or s.get("IPAddress") for net, s in networks.items()},
                "published": {port: [f"{b['HostIp']}:{b['HostPort']}" for b in bindings]
                              for port, bindings in published.items() if bindings},
                "volumes": [{"name": m.get("Name"), "path": m.get("Destination")}
                            for m in attrs.get("Mounts") or [] if m.get("Type") == "volume"]})
            nodes_.append(entry)
        networks = []
        for net in self.client.networks.list(filters={"label": f"{RUN}={info.run_id}"}):
            pools = (net.attrs.get("IPAM") or {}).get("Config") or []
            networks.append({"name": net.name, "topology_name": net.name.removeprefix(prefix),
                             "id": net.short_id, "subnet": next((p.get("Subnet") for p in pools), None),
                             "gateway": next((p.get("Gateway") for p in pools), None)})
        volumes = sorted(v.name for v in self.client.volumes.list(filters={"label": f"{RUN}={info.run_id}"}))
        return {"backend": self.name, "run_dir": str(self.run_dir), "lab": info.lab, "run_id": info.run_id,
                "topology": info.topology, "failed": info.failed, "nodes": nodes_,
                "networks": sorted(networks, key=lambda n: n["name"]), "volumes": volumes,
                "init": INIT if INIT in containers else None}


def _stamped(node: str, stream: str, raw: str) -> LogLine:
    """A line of `docker logs --timestamps`: RFC 3339 with nanoseconds, a space, the text."""
    stamp, _, text = raw.partition(" ")
    try:
        moment = datetime.fromisoformat(_microseconds(stamp))
    except ValueError:
        return LogLine(node, stream, raw)
    return LogLine(node, stream, text, moment.timestamp())


def _microseconds(stamp: str) -> str:
    """2026-12-07T10:09:02.123456789Z -> 2026-12-07T10:09:02.123456+00:00 (what fromisoformat reads)."""
    head, dot, rest = stamp.partition(".")
    if not dot:
        return stamp.replace("Z", "+00:00")
    digits = rest.rstrip("Z")
    zone = "+00:00" if rest.endswith("Z") else ""
    if not zone:
        for sign in "+-":
            if sign in digits:
                digits, _, offset = digits.partition(sign)
                zone = sign + offset
    return f"{head}.{digits[:6].ljust(6, '0')}{zone}"
