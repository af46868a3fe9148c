"""The docker backend's decisions that need no engine: who owns a run, what reap does with it, which log line
is the cause, the extra labels from the environment."""

import dataclasses
import io
import subprocess
import sys
import tarfile
from ipaddress import ip_network

import docker.errors
import pytest

from orchestrator.backends import BackendError, RunInfo, RunNode, write_state
from orchestrator.backends import docker as backend
from orchestrator.backends.docker import engine, lifecycle, reaper
from orchestrator.plan import INIT_MEMORY, INIT_PIDS, Plan, make_plan
from orchestrator.topology import parse_topology


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_owner_alive():
    mine = backend.owner_labels()
    assert backend.owner_alive(mine) is True
    assert backend.owner_alive({**mine, backend.OWNER_PID: str(dead_pid())}) is False
    assert backend.owner_alive({**mine, backend.OWNER_START: "1"}) is False  # the PID was reused
    assert backend.owner_alive({**mine, backend.OWNER_BOOT: "another-boot"}) is False  # rebooted since
    assert backend.owner_alive({**mine, backend.OWNER_HOST: "elsewhere.example"}) is None


def _state(run_dir, run_id, complete):
    run_dir.mkdir()
    write_state(RunInfo("docker", str(run_dir), "lab.yaml", "lab",
                        [RunNode("auth1", "authority", "10.0.0.2", {"control_port": 9052})],
                        run_id=run_id, complete=complete))


def test_reap_reasons(tmp_path):
    dead = {**backend.owner_labels(), backend.OWNER_PID: str(dead_pid())}
    assert reaper._reap_reason("r1", backend.owner_labels()).startswith("keep: its orchestrator")
    assert reaper._reap_reason("r1", {**dead, backend.OWNER_HOST: "other"}).startswith("keep: made on host")

    complete, half, other = tmp_path / "complete", tmp_path / "half", tmp_path / "other"
    _state(complete, "r1", True)
    _state(half, "r2", False)
    _state(other, "r9", True)  # the run dir now holds another run
    assert reaper._reap_reason("r1", {**dead, backend.RUN_DIR: str(complete)}).startswith(
        "keep: a complete run")
    assert reaper._reap_reason("r2", {**dead, backend.RUN_DIR: str(half)}).endswith("died during `up`")
    assert reaper._reap_reason("r3", {**dead, backend.RUN_DIR: str(other)}).endswith(
        "no state file names it")
    assert reaper._reap_reason("r4", {**dead, backend.RUN_DIR: str(tmp_path / "gone")}).endswith(
        "no state file names it")

    reaper._forget_run(other, "r3")  # not that run's dir any more: kept
    assert other.exists()
    reaper._forget_run(half, "r2")
    assert not half.exists()


def test_cause_is_the_last_fatal_line():
    lines = ["Traceback (most recent call last):", "fatal: first", "OSError: boom", "fatal: OSError: boom",
             "after"]
    assert engine.log_cause(lines) == "OSError: boom"
    assert engine.log_cause(["starting", "KeyError: 'x'", ""]) == "KeyError: 'x'"
    assert engine.log_cause([]) == "(its logs are empty)"


def test_extra_labels(monkeypatch):
    monkeypatch.setenv(backend.EXTRA_LABELS_ENV, "onionlab.test=1, ci.job=42")
    assert engine.labels_from_env() == {"onionlab.test": "1", "ci.job": "42"}
    monkeypatch.setenv(backend.EXTRA_LABELS_ENV, "novalue")
    with pytest.raises(BackendError, match="expected KEY=VALUE"):
        engine.labels_from_env()
    monkeypatch.setenv(backend.EXTRA_LABELS_ENV, "onionlab.run=x")
    with pytest.raises(BackendError, match="onionlab's own label"):
        engine.labels_from_env()


# -- a subnet another network holds: the lab moves to a free one of the same size ----------------------------

LAB = """\
name: lab
networks:
  north: {subnet: 10.78.1.0/24}
  south: {subnet: 10.78.2.0/24}
roles:
  authority: {networks: [north, south]}
  relay: {networks: [north, south]}
nodes:
  - {name: auth, role: authority}
  - {name: relay, role: relay, count: 3}
  - {name: hs, role: onion_service, networks: [south], services: [{port: 80, target: http}]}
  - {name: client, role: client, networks: [north], addresses: {north: 10.78.1.200}}
"""


class FakeNetwork:
    def __init__(self, name, subnet):
        self.name = name
        self.attrs = {"IPAM": {"Config": [{"Subnet": str(subnet)}]}}


class FakeNetworks:
    """An engine's networks: create refuses an overlapping subnet the way Docker does."""

    def __init__(self, *taken):
        self.made = [FakeNetwork(f"other{i}", ip_network(s)) for i, s in enumerate(taken)]

    def list(self, **filters):
        return list(self.made)

    def create(self, name, *, ipam, labels, **options):
        subnet = ip_network(ipam["Config"][0]["Subnet"])
        if any(ip_network(n.attrs["IPAM"]["Config"][0]["Subnet"]).overlaps(subnet) for n in self.made):
            raise docker.errors.APIError("409",
                                         explanation="Pool overlaps with other one on this address space")
        self.made.append(FakeNetwork(name, subnet))


@pytest.fixture(autouse=True)
def no_host_routes(monkeypatch):
    monkeypatch.setattr(lifecycle, "_host_routes", lambda: [], raising=False)  # not this machine's routes


def _networks_made(fake, *taken, exact=False, topology_text=LAB):
    engine = FakeNetworks(*taken)
    dock = backend.DockerBackend(fake, labels={})
    dock._client = type("Client", (), {"networks": engine})()
    dock.exact_subnets = exact
    said = []
    placed = dock._create_networks(parse_topology(topology_text), "r1", {}, said.append)
    return placed, {n.name: str(ip_network(n.attrs["IPAM"]["Config"][0]["Subnet"])) for n in engine.made
                    if n.name.startswith("onionlab-")}, said


def test_a_free_subnet_is_used_as_it_is(tmp_path):
    placed, made, said = _networks_made(tmp_path, "172.17.0.0/16")
    assert made == {"onionlab-r1-north": "10.78.1.0/24", "onionlab-r1-south": "10.78.2.0/24"}
    assert placed == parse_topology(LAB) and said == []


def test_a_taken_subnet_moves_the_network_and_its_nodes_keep_their_host_part(tmp_path):
    # a second lab of the same topology holds north and south; something else holds 10.78.3.0/24
    placed, made, said = _networks_made(tmp_path, "10.78.1.0/24", "10.78.2.0/24", "10.78.3.0/24")
    assert made == {"onionlab-r1-north": "10.78.4.0/24", "onionlab-r1-south": "10.78.5.0/24"}
    assert [str(n.subnet) for n in placed.networks] == ["10.78.4.0/24", "10.78.5.0/24"]
    original = parse_topology(LAB)
    for before, after in zip(original.nodes, placed.nodes, strict=True):
        assert [(i.network, int(i.address) & 0xFF) for i in before.interfaces] == \
            [(i.network, int(i.address) & 0xFF) for i in after.interfaces]
    assert str(placed.node("client").address("north")) == "10.78.4.200"
    assert placed.node("hs").address() in ip_network("10.78.5.0/24")
    assert said == ["network north: 10.78.1.0/24 is taken (by other0); using 10.78.4.0/24 instead",
                    "network south: 10.78.2.0/24 is taken (by other1); using 10.78.5.0/24 instead"]


def test_exact_subnets_fails_on_a_taken_subnet_naming_its_user(tmp_path):
    with pytest.raises(BackendError,
                       match=r"network north \(10.78.1.0/24\): Pool overlaps .*\(used by other0\)"):
        _networks_made(tmp_path, "10.78.1.0/24", exact=True)


def test_a_network_that_a_service_forwards_into_is_not_moved(tmp_path):
    pinned = LAB.replace("target: http}", "target: '10.78.2.9:80'}")
    with pytest.raises(BackendError, match=r"network south \(10.78.2.0/24\): .*forwards to 10.78.2.9:80"):
        _networks_made(tmp_path, "10.78.2.0/24", topology_text=pinned)


def test_choose_subnet():
    taken = [ip_network("10.77.0.0/24"), ip_network("10.77.1.0/25")]
    assert str(backend.choose_subnet(ip_network("10.77.0.0/24"), taken)) == "10.77.2.0/24"
    assert str(backend.choose_subnet(ip_network("10.77.5.0/24"), taken)) == "10.77.5.0/24"  # free: itself
    assert str(backend.choose_subnet(ip_network("10.255.255.0/24"), [ip_network("10.255.255.0/24")])) \
        == "10.0.0.0/24"  # wraps around within 10.0.0.0/8
    assert str(backend.choose_subnet(ip_network("192.168.0.0/24"), [ip_network("192.168.0.0/17")])) \
        == "192.168.128.0/24"
    assert backend.choose_subnet(ip_network("192.168.0.0/16"), [ip_network("192.168.7.0/24")]) is None
    assert backend.choose_subnet(ip_network("8.8.8.0/24"), [ip_network("8.8.0.0/16")]) is None  # not private


# -- container limits: what the engine is asked for ---------------------------------------------------------


class Recorder:
    """A docker client that records what containers.create is asked for (and runs init at once)."""

    def __init__(self):
        self.created = {}
        self.archives = {}  # container name -> [(path, tar bytes)] copied in before start
        self.volumes_made, self.volumes_removed = [], []
        client = self

        class Container:
            def __init__(self, name):
                self.name = name

            def put_archive(self, path, data):
                client.archives.setdefault(self.name, []).append((path, data))
                return True

            def start(self):
                pass

            def wait(self, timeout):
                return {"StatusCode": 0}

            def logs(self, **kwargs):
                return b""

            def remove(self, **kwargs):
                pass

        class Containers:
            def create(self, image, command, **kwargs):
                client.created[kwargs["name"]] = {**kwargs, "command": command}
                return Container(kwargs["name"])

        class Volume:
            def __init__(self, name):
                self.name = name

            def remove(self):
                client.volumes_removed.append(self.name)

        class Volumes:
            def create(self, name, labels):
                client.volumes_made.append(name)
                return Volume(name)

            def get(self, name):
                return Volume(name)

        class Api:
            def create_endpoint_config(self, **kwargs):
                return kwargs

        self.containers, self.api, self.volumes = Containers(), Api(), Volumes()


def test_every_container_gets_the_memory_and_pids_limits_of_its_node(tmp_path):
    topology = parse_topology(LAB.replace("  - {name: auth, role: authority}\n",
                                          "  - {name: auth, role: authority, memory: 100m, pids: 50}\n"))
    dock = backend.DockerBackend(tmp_path, labels={})
    dock._client = Recorder()
    info = dock._plan(topology, "r1")
    dock._init(topology, info, {}, lambda line: None)
    for planned, node in zip(topology.nodes, info.nodes, strict=True):  # on its first network only
        first_only = dataclasses.replace(planned, interfaces=planned.interfaces[:1])
        dock._create_node(first_only, node, info, {}, True)
    created = dock._client.created
    limits = {name.removeprefix("onionlab-r1-"): (kw["mem_limit"], kw["memswap_limit"], kw["pids_limit"])
              for name, kw in created.items()}
    assert limits == {
        "init": (INIT_MEMORY, INIT_MEMORY, INIT_PIDS),
        "auth": (100 * 2**20, 100 * 2**20, 50),
        **{f"relay{i}": (256 * 2**20, 256 * 2**20, 128) for i in (1, 2, 3)},
        "hs": (256 * 2**20, 256 * 2**20, 128),
        "client": (256 * 2**20, 256 * 2**20, 128),
    }


def test_the_control_secret_reaches_each_volume_not_the_environment(tmp_path):
    """The run's control secret: 0600 in the run dir, and keys/control.secret (0600, the node user's) put
    into every node's volume through the init container before it starts; never in its environment."""
    import stat

    topology = parse_topology(LAB)
    dock = backend.DockerBackend(tmp_path, labels={})
    dock._client = Recorder()
    info = dock._plan(topology, "r1")
    dock._init(topology, info, {}, lambda line: None)
    secret = (tmp_path / "control.secret").read_text().strip()
    assert len(secret) >= 32 and stat.S_IMODE((tmp_path / "control.secret").stat().st_mode) == 0o600
    archives = [(p, data) for p, data in dock._client.archives["onionlab-r1-init"] if p != "/plan"]
    assert [p for p, _ in archives] == [f"/var/lib/onionlab/{n.name}" for n in info.nodes]
    with tarfile.open(fileobj=io.BytesIO(archives[0][1])) as tar:
        entry = tar.getmember("keys/control.secret")
        assert (entry.mode, entry.uid, entry.gid) == (0o600, 10001, 10001)
        assert tar.getmember("keys").mode == 0o700
        assert tar.extractfile(entry).read().decode().strip() == secret
    assert secret not in repr(dock._client.created)


def test_init_reads_a_plan_of_any_size_from_a_file_copied_into_its_own_volume(tmp_path):
    """A 300-node plan (about 300 KB) is more than an environment variable holds (128 KiB): init gets it as a
    file, in a volume made for it and removed once init is done."""
    topology = parse_topology("""\
name: big
networks: {onionnet: {subnet: 10.79.0.0/23}}
nodes:
  - {name: auth, role: authority, count: 5}
  - {name: relay, role: relay, count: 280}
  - {name: hs, role: onion_service, services: [{port: 80, target: http}]}
""")
    dock = backend.DockerBackend(tmp_path, labels={})
    dock._client = Recorder()
    info = dock._plan(topology, "r1")
    dock._init(topology, info, {}, lambda line: None)
    init = dock._client.created["onionlab-r1-init"]
    assert "environment" not in init
    assert init["volumes"]["onionlab-r1-init"]["bind"] == "/plan"
    ((path, data),) = [(p, d) for p, d in dock._client.archives["onionlab-r1-init"] if p == "/plan"]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        (member,) = tar.getmembers()
        text = tar.extractfile(member).read().decode()
    assert (path, member.name) == ("/plan", "plan.json")
    assert len(text) > 200_000
    assert Plan.from_json(text).nodes == make_plan(topology, socks_address="0.0.0.0").nodes
    assert init["command"][:2] == ["init", "/plan/plan.json"]
    assert dock._client.volumes_removed == ["onionlab-r1-init"]


def test_up_refuses_a_lab_that_overflows_the_kernels_neighbour_table(tmp_path, monkeypatch):
    """Linux keeps one ARP table for all containers (gc_thresh3, 1024 by default); a 300-node lab needs
    thousands of entries, and past the limit the kernel drops packets between the containers: `up` refuses
    before making anything, naming `onionlab host tune`."""
    small = parse_topology(LAB)
    large = parse_topology("""\
name: big
networks: {onionnet: {subnet: 10.79.0.0/23}}
nodes:
  - {name: auth, role: authority, count: 5}
  - {name: relay, role: relay, count: 280}
  - {name: hs, role: onion_service, services: [{port: 80, target: http}]}
""", "topologies/big.yaml")
    neigh = tmp_path / "net/ipv4/neigh/default"
    neigh.mkdir(parents=True)
    (neigh / "gc_thresh3").write_text("1024\n")
    (neigh / "gc_thresh2").write_text("512\n")
    monkeypatch.setattr(lifecycle, "SYSCTL_ROOT", tmp_path)
    dock = backend.DockerBackend(tmp_path / "run", labels={})
    dock._client = type("Client", (), {"api": type("Api", (), {"base_url": "http+docker://localhost"})()})()
    dock._check_host(small)
    with pytest.raises(BackendError, match="onionlab host tune topologies/big.yaml") as refused:
        dock._check_host(large)
    assert "gc_thresh3 is 1024" in str(refused.value)
    (neigh / "gc_thresh3").write_text("16384\n")
    dock._check_host(large)  # the soft limit is advice only
    (neigh / "gc_thresh3").write_text("1024\n")
    dock._client.api.base_url = "tcp://remote:2376"  # another machine's kernel: not ours to judge
    dock._check_host(large)


def test_an_engine_that_does_not_answer_a_start_in_time_fails_the_node_not_the_orchestrator(tmp_path,
                                                                                             monkeypatch):
    """300 containers starting on 2 cores: one start took longer than docker-py's 60 s and `up` died with a
    traceback. The client now waits ENGINE_TIMEOUT, and a call that still times out is a NodeFailed."""
    import requests

    seen = {}

    class Client:
        def ping(self):
            return True

    def from_env(**kwargs):
        seen.update(kwargs)
        return Client()

    monkeypatch.setattr(engine.docker, "from_env", from_env)
    engine.connect()
    assert seen["timeout"] == engine.ENGINE_TIMEOUT >= 300

    class Slow:
        def start(self):
            raise requests.exceptions.ReadTimeout("Read timed out. (read timeout=300)")

    dock = backend.DockerBackend(tmp_path, labels={})
    node = RunNode("relay1", "relay", "10.0.0.3", {}, container="onionlab-r1-relay1")
    with pytest.raises(lifecycle.NodeFailed, match="did not answer its start"):
        info = RunInfo("docker", str(tmp_path), "lab.yaml", "lab", [node], run_id="r1")
        dock._start_node(info, node, Slow())
