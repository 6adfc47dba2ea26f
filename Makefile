# Prompt Streams: `make demo` runs the main job on the local stack, `make test` runs every test.
# Everything a fresh machine needs is installed by `make setup` into .local/ (git-ignored).

SHELL := /bin/bash
VENV := .local/venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test unit integration lint demo up down status records clean bench-pipeline bench chaos

setup: $(VENV)/.installed .local/.jars .local/.cassandra .local/.kcat .local/.chromium .local/apdb/apdb.yaml

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

# Apache Kafka and Apicurio Registry jars from Maven Central (see stack/pom.xml).
.local/.jars: stack/pom.xml
	mvn -B -q -f stack/pom.xml -Dlocal.dir=$(CURDIR)/.local package
	touch $@

# Apache Cassandra's jars from Maven Central, for the APDB (see stack/cassandra-pom.xml, stack/cassandra.py).
.local/.cassandra: stack/cassandra-pom.xml
	mvn -B -q -f stack/cassandra-pom.xml -Dlocal.dir=$(CURDIR)/.local package
	touch $@

# The embedded Alert Production Database: an empty SQLite APDB made by dax_apdb (a worker would create it too).
.local/apdb/apdb.yaml: $(VENV)/.installed
	$(PY) -m streams.apdb

# kcat, for users and for the tests that run the README's recipes (Debian package).
.local/.kcat:
	@command -v kcat >/dev/null || { apt-get update -q && apt-get install -y -q kcat; }
	@mkdir -p .local && touch $@

# Headless Chromium, for the test that loads the dashboard as an operator would (Debian package).
.local/.chromium:
	@command -v chromium >/dev/null || { apt-get update -q && apt-get install -y -q chromium; }
	@mkdir -p .local && touch $@

test: setup lint
	$(PY) -m pytest --durations=15 $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: setup
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check streams topology connectors stack tests bench
	$(VENV)/bin/mypy

demo: setup
	$(PY) -m streams.demo

up: setup
	$(PY) -m stack up

down:
	$(PY) -m stack down --cassandra

status:
	$(PY) -m stack status

# The long exactly-once run (about 20 minutes): prints ALL-RESULTS-DELIVERED-ONCE or what went wrong.
chaos: setup
	$(PY) -m tests.chaos.run --visits 1000 --kill-every 20

bench-pipeline: setup
	$(PY) -m bench.pipeline

# Every benchmark case in one run on a throwaway local stack (under 20 minutes on 2 cores):
# writes bench/results/bench.md. The peers: Kafka Streams (bench/kstreams, jars from Maven Central)
# and Quix Streams (the `bench` extra, in its own virtualenv: it pins an older confluent-kafka).
bench: setup .local/.bench
	$(PY) -m bench.run

BENCH_EXTRA = $(PY) -c "import tomllib; \
	print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['bench']))"

.local/.bench: bench/kstreams/pom.xml $(wildcard bench/kstreams/src/main/java/org/lsst/promptstreams/bench/*.java) pyproject.toml
	mvn -B -q -f bench/kstreams/pom.xml -Dlocal.dir=$(CURDIR)/.local package
	python3 -m venv .local/venv-quix
	.local/venv-quix/bin/pip install --quiet --upgrade pip
	.local/venv-quix/bin/pip install --quiet $$($(BENCH_EXTRA))
	touch $@

records: $(VENV)/.installed
	$(PY) -m streams.schemagen

clean: down
	rm -rf .local
