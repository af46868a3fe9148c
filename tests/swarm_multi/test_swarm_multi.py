"""A real multi-node Docker Swarm on one machine: three Docker-in-Docker engines (images/dind: the project's
base image plus Debian's docker.io, run --privileged, which dockerd in a container needs) on a bridge network
of their own, joined into one swarm; the node image loaded into each with `docker save | docker load` (no
registry). `onionlab up --backend swarm` runs labs on it from this machine (DOCKER_HOST names the manager),
with the onion service and the client placed on different engines by node labels and the relays spread;
`onionlab flow` must fetch a verified page through the onion, which crosses hosts over the overlay
networks (VXLAN between the engines). In the first lab, nodes on the two worker engines are killed and
restarted with the CLI, and `onionlab chaos` kills, pauses and stops relays there; the onion must serve
verified pages again afterwards. Two labs, one after the other on the same three engines: the default
one (one overlay network) and topologies/multi-network.yaml (two: the client only on `north`, the onion
service only on `south`, relays and authorities on both), where the service must link to relays only at
their `south` addresses, which no consensus lists. Then `onionlab down`, and every engine, volume and
network is removed.

`make test-swarm-multi` (not part of `make test`: it takes minutes). $ONIONLAB_TEST_IMAGE names the node
image to load (default onionlab/node:latest). Everything carries the label onionlab.test.swarm-multi=<id>; a
crashed run's leftovers go with `docker rm -f $(docker ps -aq --filter label=onionlab.test.swarm-multi)`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
NODE_IMAGE = os.environ.get("ONIONLAB_TEST_IMAGE", "onionlab/node:latest")
DIND_IMAGE = "onionlab/dind:latest"
LABEL = "onionlab.test.swarm-multi"
ENGINES = 3
CGROUPS = "/sys/fs/cgroup"
ENGINE_TIMEOUT = 120.0
UP_TIMEOUT = 300


def sh(*args: str, input: bytes | None = None, env: dict | None = None, timeout: float = 600,
       check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(args), input=input, capture_output=True, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"`{' '.join(args)}` exited {result.returncode}:\n"
                             f"{result.stdout.decode(errors='replace')[-3000:]}"
                             f"{result.stderr.decode(errors='replace')[-3000:]}")
    return result


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


CAPABILITIES = ("CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE "
                "NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO "
                "SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME "
                "SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG "
                "WAKE_ALARM BLOCK_SUSPEND AUDIT_READ").split()  # by number (linux/capability.h)


def engine_options() -> list[str]:
    """How a Docker-in-Docker engine runs: --privileged, unless the outer engine itself lacks a capability
    (it runs in a container of its own, as on the machine this was written on, which has no SYS_RESOURCE):
    then runc cannot grant "all" and refuses --privileged, so the engine gets every capability there is
    here, no seccomp or AppArmor profile and unmasked /proc and /sys paths (what --privileged also does,
    less the devices, of which dockerd needs /dev/fuse at most)."""
    bounding = int(Path("/proc/self/status").read_text().split("CapBnd:")[1].split()[0], 16)
    missing = [name for bit, name in enumerate(CAPABILITIES) if not bounding >> bit & 1]
    if not missing:
        return ["--privileged"]
    say(f"this machine lacks {', '.join(missing)}: the engines get every other capability instead of "
        "--privileged")
    # cgroup v1 is mounted read-only in a container that is not privileged: the inner engines get the
    # machine's hierarchy read-write, each under a cgroup parent of its own (Swarm.start), removed afterwards
    return ["--cap-add", "ALL", *(f"--cap-drop={name}" for name in missing), "--security-opt",
            "seccomp=unconfined", "--security-opt", "apparmor=unconfined", "--security-opt",
            "systempaths=unconfined", "--volume", f"{CGROUPS}:{CGROUPS}:rw",
            *(["--device", "/dev/fuse"] if Path("/dev/fuse").exists() else [])]


def remove_cgroups(parent: str) -> None:
    """The empty cgroups an inner engine left under its parent in the machine's hierarchy (deepest first)."""
    for _ in range(20):  # the killed engine's processes leave their cgroups within moments
        trees = list(Path(CGROUPS).glob(f"*/{parent}"))
        for tree in trees:
            dirs = [tree, *(p for p in tree.rglob("*") if p.is_dir())]
            for path in sorted(dirs, key=lambda p: -len(p.parts)):
                try:
                    path.rmdir()
                except OSError:
                    pass
        if not trees:
            return
        time.sleep(0.5)
    say(f"cgroups left under {CGROUPS}/*/{parent}")


def base_image() -> str:
    return sh(str(REPO / "images" / "node" / "build-base.sh")).stdout.decode().strip().splitlines()[-1]


class Swarm:
    def __init__(self, run: str) -> None:
        self.run = run
        self.network = f"olsm-{run}"
        self.engines = [f"olsm-{run}-{i}" for i in range(1, ENGINES + 1)]
        self.addresses: dict[str, str] = {}

    def docker(self, engine: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return sh("docker", "exec", "-i", engine, "docker", *args, **kwargs)

    def start(self) -> None:
        sh("docker", "network", "create", "--label", f"{LABEL}={self.run}", self.network)
        options = engine_options()
        self.shared_cgroups = "--privileged" not in options
        for engine in self.engines:
            sh("docker", "run", "-d", *options, "--name", engine, "--hostname",
               f"host{engine.rsplit('-', 1)[1]}", "--network", self.network, "--label", f"{LABEL}={self.run}",
               DIND_IMAGE, *([f"--cgroup-parent=/{engine}"] if self.shared_cgroups else []))
        for engine in self.engines:
            deadline = time.monotonic() + ENGINE_TIMEOUT
            while self.docker(engine, "info", check=False).returncode != 0:
                if time.monotonic() > deadline:
                    logs = sh("docker", "logs", "--tail", "30", engine, check=False)
                    raise AssertionError(f"dockerd in {engine} did not answer within {ENGINE_TIMEOUT:g} s:\n"
                                         f"{logs.stderr.decode(errors='replace')}")
                time.sleep(1)
            inspect = json.loads(sh("docker", "inspect", engine).stdout)[0]
            self.addresses[engine] = inspect["NetworkSettings"]["Networks"][self.network]["IPAddress"]
            driver = self.docker(engine, "info", "--format", "{{.Driver}}").stdout.decode().strip()
            say(f"{engine}: dockerd up at {self.addresses[engine]} (storage driver {driver})")

    def load_image(self) -> None:
        saved = sh("docker", "save", NODE_IMAGE).stdout
        for engine in self.engines:
            self.docker(engine, "load", input=saved)
        say(f"{NODE_IMAGE} ({len(saved) / 2**20:.0f} MiB) loaded into {len(self.engines)} engines")

    def join(self) -> None:
        manager, *workers = self.engines
        self.docker(manager, "swarm", "init", "--advertise-addr", self.addresses[manager])
        token = self.docker(manager, "swarm", "join-token", "-q", "worker").stdout.decode().strip()
        for worker in workers:
            self.docker(worker, "swarm", "join", "--token", token, f"{self.addresses[manager]}:2377")
        for i in range(1, len(self.engines) + 1):
            self.docker(manager, "node", "update", "--label-add", f"onionlab.host={i}", f"host{i}")
        nodes = self.docker(manager, "node", "ls", "--format", "{{.Hostname}} {{.Status}}").stdout.decode()
        say("swarm: " + ", ".join(nodes.split("\n")[:-1]))

    def remove(self) -> None:
        sh("docker", "rm", "--force", "--volumes", *self.engines, check=False)
        sh("docker", "network", "rm", self.network, check=False)
        if getattr(self, "shared_cgroups", False):
            for engine in self.engines:
                remove_cgroups(engine)


@pytest.fixture(scope="module")
def swarm() -> Iterator[Swarm]:
    started = time.monotonic()
    base = base_image()
    sh("docker", "build", "-q", "--build-arg", f"BASE_IMAGE={base}", "-t", DIND_IMAGE,
       str(REPO / "images" / "dind"), timeout=900)
    say(f"{DIND_IMAGE} built on {base} in {time.monotonic() - started:.0f} s")
    lab = Swarm(uuid.uuid4().hex[:8])
    try:
        lab.start()
        lab.load_image()
        lab.join()
        yield lab
    finally:
        lab.remove()
        left = sh("docker", "ps", "-aq", "--filter", f"label={LABEL}={lab.run}").stdout.split()
        assert not left, f"engines left: {left}"
        say(f"engines removed; whole test {time.monotonic() - started:.0f} s")


def host_of(relay: int) -> str:
    """The engine relay N (1-based) is placed on: host1, host2, host3, host1, ..."""
    return f"host{(relay - 1) % ENGINES + 1}"


def placed_topology(source: Path, out: Path, places: dict[str, int]) -> Path:
    """`source` on NODE_IMAGE, each role of `places` constrained to the engine labelled with its number, and
    the relays (one entry with a count) one by one over the engines (host_of). Swarm itself would not
    spread them: it balances the number of tasks per engine over all services, so the relays of one run
    landed on host1 and host2 only while the authorities and the onion service filled host3."""
    data = yaml.safe_load(source.read_text())
    data.setdefault("defaults", {})["image"] = NODE_IMAGE
    for role, host in places.items():
        roles = data.setdefault("roles", {})
        roles.setdefault(role, {})["placement"] = [f"node.labels.onionlab.host=={host}"]
    nodes = data["nodes"]
    (at,) = [i for i, entry in enumerate(nodes) if entry["role"] == "relay"]
    entry = {key: value for key, value in nodes[at].items() if key != "count"}
    nodes[at:at + 1] = [{**entry, "name": f"{entry['name']}{i}",
                         "placement": [f"node.labels.onionlab.host=={host_of(i)[4:]}"]}
                        for i in range(1, nodes[at]["count"] + 1)]
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


class Lab:
    """A lab that `onionlab up --backend swarm` brought up on the swarm, driven with the `onionlab` CLI."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.onionlab = [str(Path(sys.executable).with_name("onionlab"))]

    def run(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return sh(*self.onionlab, *args, env=self.env, **kwargs)

    def json(self, *args: str) -> dict:
        return json.loads(self.run(*args, "--json").stdout)

    def events(self, node: str, event: str) -> list[dict]:
        lines = self.run("logs", node, "--json", timeout=120).stdout.decode().splitlines()
        return [record for line in lines if (record := json.loads(line)).get("event") == event]

    def flow(self) -> dict:
        flow = self.run("flow", "--json", check=False, timeout=300)
        result = json.loads(flow.stdout or b"{}")
        say(f"flow: ok={result.get('ok')} {flow.stderr.decode()[-500:]}")
        assert flow.returncode == 0 and result["ok"] is True, flow.stdout.decode()[-3000:]
        return result


@contextmanager
def lab_on(swarm: Swarm, topology: Path, run_dir: Path) -> Iterator[Lab]:
    """`onionlab up` of `topology` on the swarm's manager; `onionlab down` afterwards, which must succeed."""
    manager = swarm.engines[0]
    lab = Lab({**os.environ, "DOCKER_HOST": f"tcp://{swarm.addresses[manager]}:2375",
               "ONIONLAB_RUN_DIR": str(run_dir)})
    started = time.monotonic()
    up = lab.run("up", "--backend", "swarm", "--timeout", str(UP_TIMEOUT), str(topology),
                 timeout=UP_TIMEOUT + 120, check=False)
    out = up.stdout.decode() + up.stderr.decode()
    say(f"up ({time.monotonic() - started:.1f} s):\n" + out[-2500:])
    try:
        assert up.returncode == 0, out
        yield lab
    finally:
        down = lab.run("down", check=False, timeout=300)
        say("down: " + (down.stdout + down.stderr).decode().strip()[-500:])
    assert down.returncode == 0


def test_default_lab_spread_over_three_engines_fetches_through_the_onion_across_hosts(swarm, tmp_path):
    topology = placed_topology(REPO / "topologies" / "default.yaml", tmp_path / "spread.yaml",
                               {"onion_service": 3, "client": 1})
    with lab_on(swarm, topology, tmp_path / "run") as lab:
        hosts = {n["name"]: n["host"] for n in lab.json("inspect")["nodes"]}
        say(f"placement: {hosts}")
        assert hosts["hs"] == "host3" and hosts["client"] == "host1"
        relays = sorted(n for n in hosts if n.startswith("relay"))
        assert len(relays) == 6 and all(hosts[r] == host_of(int(r[5:])) for r in relays)  # every engine
        lab.flow()
        kill_and_restart_on_workers(swarm, lab)
        chaos_on_workers(swarm, lab, tmp_path)


def node_states(lab: Lab) -> dict[str, tuple[str, str]]:
    return {n["name"]: (n["state"], n["host"]) for n in lab.json("inspect")["nodes"]}


def one_shots(swarm: Swarm) -> list[str]:
    """Services on the swarm that are no lab node's: the run's are `ol<run>_<node>` (node names have no `_`),
    a kill's or pause's one-shot is `ol<run>_<action>_<hex>` while it runs and must be gone after."""
    names = swarm.docker(swarm.engines[0], "service", "ls", "--format", "{{.Name}}").stdout.decode().split()
    return [name for name in names if name.count("_") > 1]


def wait_not_running(lab: Lab, node: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while (state := node_states(lab)[node][0]) == "running":
        assert time.monotonic() < deadline, f"{node} still runs {timeout:g} s after the kill"
        time.sleep(0.5)
    return state


def kill_and_restart_on_workers(swarm: Swarm, lab: Lab) -> None:
    """`onionlab kill` of nodes on the two workers (the manager's engine is host1): the onion service on
    host3 (SIGKILL) and relay2 on host2 (SIGTERM, which it acts on by exiting), each through its own host's
    engine; `onionlab restart` brings each back on its host, and a verified fetch through the onion works
    again (the service published its descriptor anew)."""
    for node, host, signal in (("hs", "host3", "SIGKILL"), ("relay2", "host2", "SIGTERM")):
        assert node_states(lab)[node] == ("running", host)
        started = time.monotonic()
        lab.run("kill", node, "--signal", signal, timeout=120)
        killed = time.monotonic() - started
        state = wait_not_running(lab, node)
        say(f"{node}@{host}: kill --signal {signal} returned after {killed:.1f} s; its task is {state} "
            f"{time.monotonic() - started:.1f} s after the kill began")
        assert not one_shots(swarm)
        started = time.monotonic()
        lab.run("restart", node, timeout=180)
        say(f"{node}: restarted and ready in {time.monotonic() - started:.1f} s")
        assert node_states(lab)[node] == ("running", host)
    lab.flow()


CHAOS = """\
name: swarm-workers
description: a relay on each worker host killed, paused and stopped, each through its host's engine
seed: 1
duration: 55
ready_timeout: 90
workload: {bytes: 20000, interval: 1, timeout: 15}
faults:
  - {fault: kill, target: relay5, at: 2, for: 8}         # host2
  - {fault: pause, target: relay6, at: 2, for: 8}        # host3
  - {fault: stop, target: relay3, at: 14, for: 8}        # host3
  # the onion service (host3) stopped by a signal it acts on and started again, and the client's guard
  - {fault: kill, target: hs, at: 26, for: 5, signal: SIGTERM}
  - {fault: kill, target: client guard, at: 26, for: 5}
checkers:
  recovers: {within: 45}
"""


def chaos_on_workers(swarm: Swarm, lab: Lab, tmp_path: Path) -> None:
    """`onionlab chaos` with its container faults against relays and the onion service on the worker hosts
    (and the client's guard, wherever it is): each fault applied and undone (the run's own `faults` checker:
    every node back and ready, the lab left as found), the workload's fetches through the onion recover
    after each heal, and every other checker of the run passes."""
    scenario = tmp_path / "swarm-workers.yaml"
    scenario.write_text(CHAOS)
    started = time.monotonic()
    run = lab.run("chaos", str(scenario), "--json", "--history", str(tmp_path / "chaos.jsonl"), check=False,
                  timeout=600)
    result = json.loads(run.stdout or b"{}")
    say(f"chaos ({time.monotonic() - started:.0f} s): ok={result.get('ok')} stats={result.get('stats')}\n"
        + "\n".join(f"  {v}" for v in result.get("verdicts", [])) + "\n"
        + run.stderr.decode(errors="replace")[-2500:])
    assert run.returncode == 0 and result.get("ok") is True, run.stdout.decode()[-3000:]
    assert not one_shots(swarm)
    assert all(state == "running" for state, _ in node_states(lab).values())


def test_two_network_lab_over_three_engines_links_the_service_only_over_its_own_network(swarm, tmp_path):
    """topologies/multi-network.yaml over the three engines: the client (only on `north`) on host1, the
    onion service (only on `south`) on host3, relays (on both networks) two on each engine, authorities
    (on both) where Swarm puts them. Each relay
    advertises its `north` address, which it learned at start from its alias `<relay>.north` in Swarm's DNS
    (the task's address there, on whichever engine it runs); the onion service dials relays by their
    `south` names (dial_names), so every link it made is to a `south` address, none to `north`, which it
    cannot reach. The verified fetch goes from host1 to host3, so it crosses engines whatever path it took
    (the path and the engines of the service's peers are printed, not asserted: Tor's path choice decides
    them)."""
    topology = placed_topology(REPO / "topologies" / "multi-network.yaml", tmp_path / "two.yaml",
                               {"onion_service": 3, "client": 1})
    with lab_on(swarm, topology, tmp_path / "run") as lab:
        inspect = lab.json("inspect")
        stack = inspect["stack"]
        north, south = f"{stack}_north", f"{stack}_south"
        nodes = {n["name"]: n for n in inspect["nodes"]}
        hosts = {name: n["host"] for name, n in nodes.items()}
        say(f"placement: {hosts}")
        assert hosts["hs"] == "host3" and hosts["client"] == "host1"
        relays = sorted(n for n in nodes if n.startswith("relay"))
        assert len(relays) == 6 and all(hosts[r] == host_of(int(r[5:])) for r in relays)  # every engine
        assert set(nodes["hs"]["addresses"]) == {south} and set(nodes["client"]["addresses"]) == {north}
        for name, node in nodes.items():
            if name not in ("hs", "client"):
                assert set(node["addresses"]) == {north, south}, (name, node["addresses"])
        for relay in relays:  # learned at start from `<relay>.north`, resolved by Swarm's DNS on its engine
            advertised = {e["address"] for e in lab.events(relay, "relay_started")}
            assert advertised == {nodes[relay]["addresses"][north]}, (relay, advertised)

        result = lab.flow()
        steps = {s["event"]: s for s in result["steps"]}
        circuit = [*steps.get("rendezvous_established", {}).get("path", []),
                   *reversed(steps.get("rendezvous_sent", {}).get("path", []))]
        say("rendezvous: client@host1 -> " + " -> ".join(f"{hop}@{hosts.get(hop, '?')}" for hop in circuit)
            + " -> hs@host3")

        south_addresses = {n["addresses"][south] for n in nodes.values() if south in n["addresses"]}
        north_addresses = {n["addresses"][north] for n in nodes.values() if north in n["addresses"]}
        peers = {e["peer"] for e in lab.events("hs", "link_up")}
        by_address = {n["addresses"][south]: name for name, n in nodes.items() if south in n["addresses"]}
        say("hs linked to: " + ", ".join(f"{by_address.get(p, p)}@{hosts.get(by_address.get(p, ''), '?')}"
                                         for p in sorted(peers)))
        assert peers and peers <= south_addresses and not peers & north_addresses, (peers, south_addresses)
