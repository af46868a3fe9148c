# onionlab: every target creates the virtualenv itself when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

TOPOLOGY ?= topologies/default.yaml
ONIONLAB := $(VENV)/bin/onionlab

.PHONY: venv up down test test-chaos test-chaos-local test-unit test-docker fuzz bench bench-scale lint clean \
	image chaos-suite attack test-swarm-multi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(STAMP)

## the default lab in containers, then the rendezvous flow through it (its six steps as a timeline)
up: $(STAMP) image
	$(ONIONLAB) up $(TOPOLOGY)
	$(ONIONLAB) flow

down: $(STAMP)
	$(ONIONLAB) down

## everything CI runs: lint, unit, whole networks on loopback, real containers (builds the image)
test: $(STAMP) lint
	$(PY) -m pytest tests/unit tests/net tests/docker --ignore=tests/docker/test_chaos_suite.py

## the reliability suite (topologies/chaos/), every scenario once against one lab in containers (about 20
## minutes; CI runs it after `test`: docs/chaos.md)
test-chaos: $(STAMP)
	$(PY) -m pytest tests/docker/test_chaos_suite.py

## the suite's scenarios that need no container, once each on the local backend (about 15 minutes)
test-chaos-local: $(STAMP)
	$(PY) -m pytest tests/chaos_local

test-docker: $(STAMP)
	$(PY) -m pytest tests/docker

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit

## the long fuzz run: 100,000 random and mutated inputs per parser
fuzz: $(STAMP)
	$(PY) -m tests.fuzz.driver --cases 100000

## cell crypto, a 3-hop stream in one process, the default topology on the local backend, a stock tor client
## beside ours against it (Debian's tor), a whole tor network beside ours (same shape, same run: the ratios),
## then in containers (several minutes; JSON each)
bench: $(STAMP) image
	$(PY) -m bench.cells
	$(PY) -m bench.stream
	$(PY) -m bench.network
	$(PY) -m bench.tor_peer
	$(PY) -m bench.vs_tor
	$(PY) -m bench.pairings
	$(PY) -m bench.docker

## the chaos suite (docs/chaos.md): every scenario on three seeds against the default lab in containers,
## one HTML report and one JSON in chaos-suite/ (about 40 minutes; not in CI, which runs each once)
SEEDS ?= 1 2 3
chaos-suite: $(STAMP) image
	$(ONIONLAB) up $(TOPOLOGY)
	$(PY) -m orchestrator.chaos.suite --seeds $(SEEDS) --out chaos-suite; status=$$?; $(ONIONLAB) down; exit $$status

## labs of 10 to 300 nodes on both backends, one at a time under the shared lock (not CI; about half an hour):
## time to ready and to the first fetch, memory by role (process and cgroup), idle CPU, consensus size (JSON
## and a PNG plot). Docker labs of more than about 100 nodes need `onionlab host tune` first (docs/scale.md)
bench-scale: $(STAMP) image
	$(PY) -m bench.scale

## the guard-discovery attack (docs/attack.md): 10 seeds with one guard and without, 100 relays, local
## backend (no image needed); about 5 minutes here. Not part of `test`.
ATTACK_OUT ?= attack-report
attack: $(STAMP)
	$(VENV)/bin/onionlab attack guard-discovery topologies/attack.yaml --seeds 10 --circuits 60 \
		--out $(ATTACK_OUT) --run-dir .onionlab/attack-run

## the one node image, built without a container registry (images/node/README.md); needs no venv
image:
	images/node/build-image.sh

lint: $(STAMP)
	$(PY) -m ruff check nodes orchestrator tests bench

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

# A multi-node Docker Swarm on this machine: three Docker-in-Docker engines (--privileged), the default lab
# and a two-network lab spread over them, a verified fetch through the onion across hosts (tests/swarm_multi;
# a few minutes). ONIONLAB_TEST_IMAGE=onionlab/node:TAG builds and loads that tag instead of the default.
test-swarm-multi: $(STAMP)
	$(if $(ONIONLAB_TEST_IMAGE),IMAGE=$(ONIONLAB_TEST_IMAGE) \
		DEPS_IMAGE=onionlab/node-deps:$(lastword $(subst :, ,$(ONIONLAB_TEST_IMAGE))),) images/node/build-image.sh
	$(PY) -m pytest tests/swarm_multi -s
