# onionlab: every target creates the virtualenv itself when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv test test-unit fuzz bench lint clean image

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(STAMP)

## everything CI runs
test: $(STAMP) lint
	$(PY) -m pytest tests/unit tests/net

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit

## the long fuzz run: 100,000 random and mutated inputs per parser
fuzz: $(STAMP)
	$(PY) -m tests.fuzz.driver --cases 100000

## cell crypto, then the whole default topology on the local backend (about a minute; JSON each)
bench: $(STAMP)
	$(PY) -m bench.cells
	$(PY) -m bench.network

## the one node image, built without a container registry (images/node/README.md); needs no venv
image:
	images/node/build-image.sh

lint: $(STAMP)
	$(PY) -m ruff check nodes orchestrator tests bench

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
