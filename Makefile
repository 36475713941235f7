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

# Until the U2MKD demo (`xmkd demo`) exists, the demo is the richest job there is: render a small synthetic
# nuScenes-format dataset (day and night) and draw pictures of it.
DEMO_OUT ?= outputs/demo
demo: setup
	$(VENV)/bin/xmkd synth --preset day --format nuscenes --frames 10 --workers 2 --out $(DEMO_OUT)/nuscenes-day
	$(VENV)/bin/xmkd synth --preset night,city-b --format nuscenes --frames 10 --workers 2 --out $(DEMO_OUT)/nuscenes-night
	$(VENV)/bin/xmkd viz synthetic --preset day --out $(DEMO_OUT)/viz
	$(VENV)/bin/xmkd viz synthetic --preset night,rig-b --out $(DEMO_OUT)/viz
	@echo "demo outputs: $(DEMO_OUT)/ (datasets nuscenes-day, nuscenes-night; pictures in viz/)"

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
	rm -rf $(VENV) .pytest_cache .ruff_cache
