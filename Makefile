# unmix-ext: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Everything the stamp depends on: change one of these and `make install` reruns.
STAMP := $(VENV)/.unmix-ext-installed
SCALE ?= full
DEVICES ?= 1
NUM_NODES ?= 1

.PHONY: install test check-patches demo bench reproduce-table1 reproduce-moco-cifar \
        reproduce-swav-cifar reproduce-small clean

install: $(STAMP)

# solo-learn 1.0.2 pins torch 1.9 and Lightning 1.4, which pip cannot resolve next to
# our pinned stack (and which do not install on Python 3.11). So it is installed with
# --no-deps, its real dependencies are ours (setup.cfg), and unmix_ext.patches adapts
# it to this stack at import time.
$(STAMP): setup.cfg pyproject.toml Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	$(PIP) install -q --no-deps solo-learn==1.0.2
	$(PY) -m unmix_ext.patches
	@touch $@

check-patches: install
	$(PY) -m unmix_ext.patches

test: install
	$(PY) -m pytest -q

# SEEDS=5: more seeds per recipe than the demo's 2 (the table shows mean +- std); LONG=1: the longer
# recipes (recipes/demo/*_long.yaml); REUSE=1: score the runs already finished with the same recipe and
# seed instead of training them again (make demo SEEDS=3 REUSE=1 after make demo trains only the third seed)
demo: install
	$(PY) -m unmix_ext.demo $(if $(SEEDS),--seeds $(SEEDS)) $(if $(LONG),--long) $(if $(REUSE),--reuse) $(DEMO_ARGS)

# What Un-Mix costs next to each base method (step, mixing, whole pipeline), as ratios measured
# interleaved on this machine: results/bench.md (about ten minutes on 2 CPU cores; see benchmarks/).
bench: install
	$(PY) -m benchmarks.run_all $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info

# Reproduce one of the paper's tables: every row's recipe in turn, then the markdown table
# and bar chart in results/ (SCALE=smoke: a few CPU minutes a row, results/<table>-smoke.*).
reproduce-table1: install
	$(PY) -m unmix_ext.reproduce table1 --scale $(SCALE) --devices $(DEVICES) --num-nodes $(NUM_NODES)

reproduce-moco-cifar: install
	$(PY) -m unmix_ext.reproduce moco-cifar --scale $(SCALE) --devices $(DEVICES) --num-nodes $(NUM_NODES)

reproduce-swav-cifar: install
	$(PY) -m unmix_ext.reproduce swav-cifar --scale $(SCALE) --devices $(DEVICES) --num-nodes $(NUM_NODES)

reproduce-small: install
	$(PY) -m unmix_ext.reproduce small --scale $(SCALE) --devices $(DEVICES) --num-nodes $(NUM_NODES)
