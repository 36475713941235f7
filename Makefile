# One entry point for set-up, demo and tests. Every target sets up what it needs first,
# so `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.xmkd-installed
PYTEST_ARGS ?= -m "not slow"

.PHONY: setup demo test test-all lint bench clean

setup: $(STAMP)

# torch is installed first and on its own, pinned by constraints.txt: any other torch spec would
# download several GB of CUDA packages on a CPU-only machine.
$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "xmkd needs Python >= 3.10"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

# The main job: U2MKD on the synthetic world (dataset, teacher, students, table, report) under outputs/demo.
demo: setup
	$(VENV)/bin/xmkd demo --out outputs/demo

test: setup
	$(VENV)/bin/ruff check xmkd tests benchmarks
	$(PY) -m pytest $(PYTEST_ARGS)

test-all: PYTEST_ARGS :=
test-all: test

lint: setup
	$(VENV)/bin/ruff check xmkd tests benchmarks

bench: setup
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
