# Everyday commands; each runs the tools of the virtualenv VENV
# (`make test VENV=/path/to/venv` to use another one).
# Set it up first: python3 -m venv .venv && .venv/bin/pip install -e '.[test]'

VENV ?= .venv
PYTHON = $(VENV)/bin/python
RUFF = $(VENV)/bin/ruff
MYPY = $(VENV)/bin/mypy
PYTEST_ARGS ?=

.PHONY: test test-fast lint typecheck format bench

# The whole suite, as the README and CI run it.
test:
	$(PYTHON) -m pytest $(PYTEST_ARGS)

# Everything but the tests marked slow (crash cycles, long fuzzing, big loads).
test-fast:
	$(PYTHON) -m pytest -m "not slow" $(PYTEST_ARGS)

# What CI checks before the tests. mypy takes its file list from
# pyproject.toml ([tool.mypy]: the pure packages fsstore, acl, query, kinds).
lint:
	$(RUFF) check .
	$(RUFF) format --check .
	$(MYPY)

typecheck:
	$(MYPY)

format:
	$(RUFF) format .

# Opt-in measurements, not tests (bench/README.md). benchmark.py compares with
# a real Kinto installed in /tmp/kintovenv (see CONTRIBUTING.md); slow_clients.py
# needs only kintofs; throughput.py makes its own Kinto virtualenv once.
bench:
	$(PYTHON) bench/benchmark.py --quick
	$(PYTHON) bench/slow_clients.py
	$(PYTHON) bench/throughput.py --quick
