# `make demo`: the main job on the embedded defaults. `make test`: every test.
# Each creates .venv on first use: demo installs orchkit alone (no TensorFlow),
# test installs it with every extra.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BASE := $(VENV)/.stamp-base
DEV := $(VENV)/.stamp-dev
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: demo test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(BASE): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

$(DEV): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@ $(BASE)

demo: $(BASE)
	$(PY) -m orchkit demo

test: $(DEV)
	$(PY) -m pytest -q -p no:cacheprovider

bench: $(DEV)
	$(PY) benchmarks/bench_live.py
	$(PY) benchmarks/bench_sim.py

clean:
	rm -rf $(VENV) out .hypothesis
