# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt
ARGS ?=

.PHONY: run test bench soak lint lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamp files: reinstall only when the dependencies change.
$(VENV)/.installed-runtime: $(BIN)/python pyproject.toml constraints.txt
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-runtime
	$(PIP_INSTALL) -e '.[dev]'
	touch $@

## Serve the proxy on 127.0.0.1:8080 (SQLite, no other service). Flags: make run ARGS="--config proxy.toml"
run: $(VENV)/.installed-runtime
	$(BIN)/metering-proxy serve $(ARGS)

## Run the whole test suite; first makes ready what it needs beyond the venv (the local Postgres,
## promtool, amtool, wrk): see scripts/test-prerequisites.
test: $(VENV)/.installed-dev
	bash scripts/test-prerequisites
	$(BIN)/python -m pytest $(ARGS)

## Benchmark: direct vs through the proxy (needs wrk and the local Postgres), written to
## benchmarks/RESULTS.md and results.json. Also LiteLLM, in its own venv: make bench ARGS=--litellm
bench: $(VENV)/.installed-dev
	$(BIN)/python -m benchmarks $(ARGS)

## Soak: a real proxy at a steady 100 calls/s for SECONDS (default 600), checked for errors,
## RSS and fd growth, and every call in Postgres once; written to benchmarks/SOAK.md and soak.json.
SECONDS ?= 600
soak: $(VENV)/.installed-dev
	$(BIN)/python -m benchmarks.soak --seconds $(SECONDS) $(ARGS)

## Lint, format check and strict type check.
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check proxy tests benchmarks
	$(BIN)/ruff format --check proxy tests benchmarks
	$(BIN)/mypy

## Audit the locked dependencies for known vulnerabilities (needs network access: PyPI's JSON
## API serves the advisories). --strict, because without it a package that could not be audited
## (offline, every one) is only listed, and the audit still passes.
audit: $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check pip-audit
	$(BIN)/pip-audit --requirement constraints.txt --no-deps --disable-pip --strict \
		--progress-spinner off

## Re-resolve constraints.txt (the lock) from pyproject.toml's ranges.
lock: $(BIN)/python
	$(BIN)/python -m pip install --quiet pip-tools
	$(BIN)/pip-compile --quiet --extra dev --strip-extras --no-header --allow-unsafe \
		--no-emit-index-url --no-emit-find-links -o constraints.txt pyproject.toml

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
