# Two commands matter: `make run` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/logpipe.toml

.PHONY: run test venv bench bench-e2e clean

$(BIN)/logpipe: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/logpipe

venv: $(BIN)/logpipe

run: venv
	$(BIN)/logpipe run -c $(CONFIG)

test: venv
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python benchmarks/bench_parse.py
	$(BIN)/python benchmarks/bench_parse_mix.py
	$(BIN)/python benchmarks/bench_buffer.py

# End to end vs syslog-ng (needs syslog-ng-core, syslog-ng-mod-http; LOGPIPE_VICTORIALOGS_BIN
# for the VictoriaLogs rows). BENCH_ARGS="--lines 1000000" for the full run.
bench-e2e: venv
	$(BIN)/python benchmarks/bench_e2e.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) data .pytest_cache
