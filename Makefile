# Two commands: `make demo` (set up, then run the whole pipeline on the embedded synthetic
# dataset) and `make test` (set up, then run the tests). Both create .venv on first use.

VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= 2
# Rules call `python -m pipeline.<stage>`: the venv's python must come first on PATH.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup demo test bench-synthetic lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

demo: setup
	$(VENV)/bin/snakemake --cores $(CORES) --workflow-profile none --scheduler greedy

# Two pytest workers (pytest-xdist): the suite's long workflow tests run side by side.
test: setup
	$(PY) -m pytest -q -n $(CORES) tests

# The synthetic benchmark (config/synthetic-bench.yaml): the papers' claims on 320 synthetic
# videos, in bench/ so that it never touches the demo's results/.
bench-synthetic: setup
	$(VENV)/bin/snakemake --cores $(CORES) --workflow-profile none --scheduler greedy \
		--directory bench --configfile $(CURDIR)/config.yaml $(CURDIR)/config/synthetic-bench.yaml

clean:
	rm -rf results bench .snakemake
