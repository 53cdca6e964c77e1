# One Makefile for people and CI. The README's two commands are `make demo` and `make test`;
# both create/refresh .venv and install everything they need (Python deps, Java and Maven for
# the local Kafka broker) on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test unit integration lint typecheck bench bench-peers chaos system-deps clean

# setup.py builds the C modules schemas/_wire.c, streams/scoring/_table.c and _messages.c
# (needs a C compiler: gcc on Debian).
$(STAMP): pyproject.toml setup.py $(wildcard schemas/*.[ch] streams/scoring/*.c)
	@command -v cc >/dev/null && $(PYTHON) -c 'import sysconfig, pathlib, sys; \
	  sys.exit(not (pathlib.Path(sysconfig.get_paths()["include"]) / "Python.h").exists())' || { \
	  echo "installing a C compiler and Python headers (apt-get) for the C modules"; \
	  apt-get update -qq && apt-get install -y -qq gcc libc6-dev python3-dev >/dev/null; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[train,dev,console]'
	touch $(STAMP)

# The local broker runs on a JVM and its jars come from Maven Central via Maven. The console's
# browser tests drive Debian's Chromium through Playwright (never a browser download of its own).
system-deps:
	@command -v java >/dev/null && command -v mvn >/dev/null || { \
	  echo "installing Java 17 and Maven (apt-get)"; \
	  apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null; }
	@test -x /usr/bin/chromium || { \
	  echo "installing Chromium (apt-get) for the console's browser tests"; \
	  apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) system-deps lint typecheck
	$(BIN)/pytest -q tests

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP) system-deps
	$(BIN)/pytest -q tests/integration

demo: $(STAMP) system-deps
	$(BIN)/sentinel demo $(DEMO_ARGS)

bench: $(STAMP) system-deps
	$(BIN)/python -m bench.run_all

# The same job in sentry-arroyo and Quix Streams beside ours (~10 min); each peer in its own
# virtualenv under .sentinel/bench-venvs/, built from bench/peers/requirements-*.txt on first use.
bench-peers: $(STAMP) system-deps
	$(BIN)/python -m bench.run_peers

# The fault suite with bigger volumes and 15 s / 60 s broker outages (~15 min); rewrites the
# figures in docs/reliability.md.
chaos: $(STAMP) system-deps
	$(BIN)/python -m tests.chaos.run

clean:
	rm -rf $(VENV) .sentinel .mypy_cache .ruff_cache .pytest_cache
