"""tests/docker/test_swarm.py's `swarm` fixture against a fake engine: what it does to the engine around the
test. Docker 20.10 can leave the ingress sandbox's endpoint (gateway_ingress-sbox) on docker_gwbridge after
`docker swarm leave`, so that removing the network says "has active endpoints" although no container uses
it: the fixture must neither fail on that nor leave the stale endpoint for the next run's `swarm init`."""

from __future__ import annotations

import docker.errors
import pytest

from tests.docker import test_swarm as swarm_test

GWBRIDGE = swarm_test.GWBRIDGE


class Gwbridge:
    name = GWBRIDGE

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.attrs = {"Containers": {}}

    def reload(self) -> None:
        pass

    def remove(self) -> None:
        self.engine.calls.append("remove")
        if self.engine.stale_endpoint or self.engine.busy:
            raise docker.errors.APIError("403", explanation="error while removing network: network "
                                         f"{GWBRIDGE} id 5e1f has active endpoints")
        self.engine.networks_ = []


class Engine:
    """The part of an engine the fixture talks to: Swarm state, docker_gwbridge, forced disconnects."""

    def __init__(self, *, stale_endpoint: bool, busy: bool = False) -> None:
        self.state = "inactive"
        self.networks_: list[Gwbridge] = []
        self.stale_endpoint = stale_endpoint  # what `swarm leave` leaves behind on 20.10, now and then
        self.busy = busy  # an endpoint that even a forced disconnect cannot take away
        self.calls: list[str] = []
        engine = self

        class Networks:
            def list(self, names=None, **filters):
                return [n for n in engine.networks_ if names is None or n.name in names]

        class Api:
            def disconnect_container_from_network(self, container, net_id, force=False):
                engine.calls.append(f"disconnect {container} from {net_id} force={force}")
                if container == "gateway_ingress-sbox" and net_id == GWBRIDGE and force:
                    engine.stale_endpoint = False

        self.networks, self.api = Networks(), Api()

    def info(self) -> dict:
        return {"Swarm": {"LocalNodeState": self.state, "ControlAvailable": self.state == "active"}}

    def cli(self, *args, check=True, **kwargs):
        self.calls.append(" ".join(args[:2]))
        if args[:2] == ("swarm", "init"):
            self.state = "active"
            self.networks_ = [Gwbridge(self)]
        elif args[:2] == ("swarm", "leave"):
            self.state = "inactive"
        return type("Done", (), {"returncode": 0, "stdout": "", "stderr": ""})()


@pytest.fixture
def engine(monkeypatch):
    def make(**kwargs) -> Engine:
        engine = Engine(**kwargs)
        monkeypatch.setattr(swarm_test, "docker_cli", engine.cli)
        monkeypatch.setattr(swarm_test, "local_addresses", lambda: ["127.0.0.1"])
        monkeypatch.setattr(swarm_test.time, "sleep", lambda seconds: None)
        return engine

    return make


def run_fixture(engine: Engine) -> None:
    fixture = swarm_test.swarm.__wrapped__(engine)
    assert next(fixture) is engine  # the test runs here
    with pytest.raises(StopIteration):
        next(fixture)  # the teardown


def test_swarm_made_for_the_test_is_left_and_its_gwbridge_removed(engine):
    fake = engine(stale_endpoint=False)
    run_fixture(fake)
    assert fake.state == "inactive" and fake.networks_ == []
    assert fake.calls == ["swarm init", "swarm leave", "remove"]


def test_a_stale_ingress_endpoint_on_gwbridge_neither_fails_nor_stays(engine):
    fake = engine(stale_endpoint=True)
    run_fixture(fake)  # on Docker 20.10 this raised "has active endpoints" from the teardown
    assert fake.networks_ == []  # and the next run's `swarm init` starts from a clean engine
    assert f"disconnect gateway_ingress-sbox from {GWBRIDGE} force=True" in fake.calls


def test_a_gwbridge_that_cannot_go_is_left_with_a_warning_not_a_failure(engine):
    fake = engine(stale_endpoint=True, busy=True)
    with pytest.warns(UserWarning, match=f"{GWBRIDGE} is left in place"):
        run_fixture(fake)
    assert fake.state == "inactive" and len(fake.networks_) == 1
