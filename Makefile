# Two commands matter: `make run` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/logpipe.toml
# Exact versions of everything installed into .venv (runtime and test dependencies), known
# to pass `make test`; pyproject.toml keeps the ranges a package install accepts.
CONSTRAINTS := constraints.txt

.PHONY: run test lint venv bench bench-e2e clean

# A venv is only usable with pip in it: Debian's `python3 -m venv` without python3-venv
# (no ensurepip) leaves a .venv with a python but no pip, which this rule replaces.
$(BIN)/pip:
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
	  echo "make: '$(PYTHON)' cannot create a virtual environment (no ensurepip module)." >&2; \
	  echo "make: install it (Debian/Ubuntu: apt-get install python3-venv), then run make again." >&2; \
	  exit 1; }
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); echo "make: '$(PYTHON) -m venv $(VENV)' failed; nothing left behind" >&2; exit 1; }

$(BIN)/logpipe: $(BIN)/pip pyproject.toml $(CONSTRAINTS)
	$(BIN)/pip install --quiet --upgrade -c $(CONSTRAINTS) pip
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e '.[test]'
	touch $(BIN)/logpipe

venv: $(BIN)/logpipe

run: venv
	$(BIN)/logpipe run -c $(CONFIG)

# Lint first: a style or type error fails in seconds, before the minutes of tests.
# mypy checks the packages listed in pyproject's [tool.mypy] `files` (strict).
lint: venv
	$(BIN)/ruff check logpipe tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python benchmarks/bench_parse.py
	$(BIN)/python benchmarks/bench_parse_mix.py
	$(BIN)/python benchmarks/bench_buffer.py

# End to end vs syslog-ng (needs syslog-ng-core, syslog-ng-mod-http; LOGPIPE_VICTORIALOGS_BIN
# for the VictoriaLogs rows). BENCH_ARGS="--lines 1000000" for the full run.
bench-e2e: venv
	$(BIN)/python benchmarks/bench_e2e.py $(BENCH_ARGS)

# Never data/: it holds the disk buffers (events not yet delivered) and dead letters.
clean:
	rm -rf $(VENV) .pytest_cache
