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

demo: install
	@echo "make demo: not built yet (the demo issue adds it)"

clean:
	rm -rf $(VENV) build *.egg-info
