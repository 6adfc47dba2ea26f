# Prompt Streams: `make demo` runs the main job on the local stack, `make test` runs every test.
# Everything a fresh machine needs is installed by `make setup` into .local/ (git-ignored).

SHELL := /bin/bash
VENV := .local/venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# A checkout keeps the user's files (state, repository, outputs, APDB, the stack's jars and clusters) in .local/;
# an installed package keeps them in ~/.local/share/prompt-streams unless PROMPT_STREAMS_HOME says otherwise.
export PROMPT_STREAMS_HOME := $(CURDIR)/.local

.PHONY: setup test unit integration lint package demo up down status records clean bench-pipeline bench chaos

setup: $(VENV)/.installed .local/.jars .local/.cassandra .local/.kcat .local/.chromium .local/apdb/apdb.yaml

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

# Apache Kafka and Apicurio Registry jars from Maven Central (see stack/pom.xml).
.local/.jars: stack/pom.xml $(VENV)/.installed
	$(PY) -m stack fetch
	touch $@

# Apache Cassandra's jars from Maven Central, for the APDB (see stack/cassandra-pom.xml, stack/cassandra.py).
.local/.cassandra: stack/cassandra-pom.xml $(VENV)/.installed
	$(PY) -m stack fetch --cassandra
	touch $@

# The embedded Alert Production Database: an empty SQLite APDB made by dax_apdb (a worker would create it too).
.local/apdb/apdb.yaml: $(VENV)/.installed
	$(PY) -m streams.data.apdb

# kcat, for users and for the tests that run the README's recipes (Debian package).
.local/.kcat:
	@command -v kcat >/dev/null || { apt-get update -q && apt-get install -y -q kcat; }
	@mkdir -p .local && touch $@

# Headless Chromium, for the test that loads the dashboard as an operator would (Debian package).
.local/.chromium:
	@command -v chromium >/dev/null || { apt-get update -q && apt-get install -y -q chromium; }
	@mkdir -p .local && touch $@

test: setup lint package
	$(PY) -m pytest --durations=15 $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: setup
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

# The wheel as a user gets it: built, installed into a fresh virtualenv (no checkout on its path), and run
# from an empty folder with an empty home: the app's --help, the topology command, the settings and the schemas.
package: $(VENV)/.installed
	rm -rf .local/dist .local/venv-wheel build
	$(VENV)/bin/pip wheel --quiet --no-deps --wheel-dir .local/dist . && rm -rf build
	python3 -m venv .local/venv-wheel
	.local/venv-wheel/bin/pip install --quiet .local/dist/prompt_streams-*.whl
	cd "$$(mktemp -d)" && export PROMPT_STREAMS_HOME="$$PWD/home" && \
		$(CURDIR)/.local/venv-wheel/bin/faust -A streams.app --help > /dev/null && \
		$(CURDIR)/.local/venv-wheel/bin/python -m topology > /dev/null && \
		$(CURDIR)/.local/venv-wheel/bin/python -m streams.config | grep -q "PROMPT_STREAMS_DATA_DIR=$$PWD/home/data" && \
		$(CURDIR)/.local/venv-wheel/bin/python -c "from streams.serde.schemas import load_schema, schema_names; \
			assert len([load_schema(name) for name in schema_names()]) == 16" && \
		echo "package: the wheel installs and runs from $$PWD"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check streams topology connectors stack tests bench
	$(VENV)/bin/mypy

demo: setup
	$(PY) -m streams.simulate.demo

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
	$(PY) -m streams.serde.schemagen

clean: down
	rm -rf .local
