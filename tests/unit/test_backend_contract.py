"""Every backend keeps the contract of orchestrator/backends/base.py: the Protocols' methods with the same
parameters (names, kinds, whether they have a default) and the same annotations, and what it declares about
faults. No Docker and no processes: the classes are compared, and instances only asked what they support."""

from __future__ import annotations

import inspect

import pytest

from orchestrator.backends import base
from orchestrator.backends.base import (
    CLOCK_FAULTS,
    FAULT_KINDS,
    NETWORK_FAULTS,
    PROCESS_FAULTS,
    SHAPING_FAULTS,
    Backend,
    FaultBackend,
    NetworkFaultBackend,
)
from orchestrator.backends.docker import DockerBackend
from orchestrator.backends.local import LocalBackend
from orchestrator.backends.swarm import SwarmBackend

CONTRACTS = [(LocalBackend, (Backend, FaultBackend)),
             (DockerBackend, (Backend, FaultBackend, NetworkFaultBackend)),
             (SwarmBackend, (Backend, FaultBackend))]


def _methods(protocol: type) -> list[str]:
    """The public methods a Protocol declares, its parents' included."""
    return sorted({name for klass in protocol.__mro__ if klass in (Backend, FaultBackend, NetworkFaultBackend)
                   for name, value in vars(klass).items() if callable(value) and not name.startswith("_")})


def _shape(function, *, bound: bool) -> tuple:
    """(parameters as (name, kind, has a default, annotation), return annotation), without `self`."""
    signature = inspect.signature(function)
    parameters = list(signature.parameters.values())[0 if bound else 1:]
    return ([(p.name, p.kind, p.default is not inspect.Parameter.empty, str(p.annotation))
             for p in parameters], str(signature.return_annotation))


@pytest.mark.parametrize(("cls", "protocols"), CONTRACTS, ids=lambda x: getattr(x, "__name__", ""))
def test_each_backend_has_every_method_of_its_protocols_with_the_same_signature(cls, protocols) -> None:
    for protocol in protocols:
        for name in _methods(protocol):
            assert hasattr(cls, name), f"{cls.__name__} lacks {protocol.__name__}.{name}"
            static = isinstance(inspect.getattr_static(cls, name), staticmethod)
            assert _shape(getattr(cls, name), bound=static) == _shape(getattr(protocol, name), bound=False), (
                f"{cls.__name__}.{name} differs from {protocol.__name__}.{name}")


def test_instances_are_the_protocols_at_runtime(tmp_path) -> None:
    local, docker = LocalBackend(tmp_path / "l"), DockerBackend(tmp_path / "d")  # neither touches anything
    assert isinstance(local, FaultBackend) and not isinstance(local, NetworkFaultBackend)
    assert isinstance(docker, NetworkFaultBackend)
    assert local.name == "local" and docker.name == "docker"


def test_what_each_backend_supports(tmp_path) -> None:
    local, docker = LocalBackend(tmp_path / "l"), DockerBackend(tmp_path / "d")
    assert local.supported_faults() == PROCESS_FAULTS | SHAPING_FAULTS | CLOCK_FAULTS
    assert local.supported_faults() == {"kill", "stop", "pause", "bandwidth", "delay", "loss", "skew"}
    assert docker.supported_faults() == FAULT_KINDS
    for fault in PROCESS_FAULTS:
        assert local.fault_problem(fault) is None and base.refusal(local, fault) is None
    why = base.refusal(local, "partition")
    assert why.startswith("fault partition is not supported by the local backend (it supports: bandwidth, "
                          "delay, kill, loss, pause, skew, stop): its nodes are processes sharing this "
                          "host's loopback")
    for fault in SHAPING_FAULTS | CLOCK_FAULTS:  # the control call: refused while the run has no secret
        assert "no control secret" in base.refusal(local, fault)
    (tmp_path / "l").mkdir()
    (tmp_path / "l" / "control.secret").write_text("s\n")
    for fault in SHAPING_FAULTS | CLOCK_FAULTS:
        assert base.refusal(local, fault) is None
        assert local.shaping_path(fault, {}) [0] == base.LINK_LAYER
    assert docker.fault_problem("kill") is None  # no engine needed to say so


def test_a_partition_needs_the_network_protocol() -> None:
    """A backend that declares a partition (links of a node's own) must implement NetworkFaultBackend (and
    the other way); shaping runs on every backend, through the nodes' link-layer shaper where need be."""
    for cls, protocols in CONTRACTS:
        declares = cls(None).supported_faults()
        assert bool(declares & (NETWORK_FAULTS - SHAPING_FAULTS)) == (NetworkFaultBackend in protocols)


def test_the_swarm_backend_supports_container_faults_and_refuses_the_rest_up_front(tmp_path, monkeypatch):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    swarm = SwarmBackend(tmp_path / "s")  # touches nothing until asked about a run
    assert isinstance(swarm, FaultBackend) and not isinstance(swarm, NetworkFaultBackend)
    assert swarm.supported_faults() == {"kill", "stop", "pause"}
    for fault in ("kill", "stop", "pause"):
        assert base.refusal(swarm, fault) is None
    for fault in FAULT_KINDS - {"kill", "stop", "pause"}:
        assert base.refusal(swarm, fault).startswith(f"fault {fault} is not supported by the swarm backend "
                                                     "(it supports: kill, pause, stop): the overlay")
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.2:2375")  # a manager elsewhere: its task's engine acts
    assert base.refusal(swarm, "kill") is None and base.refusal(swarm, "pause") is None
