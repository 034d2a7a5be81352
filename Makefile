# `make demo`: the main job on the embedded defaults. `make test`: every test.
# Both create .venv and install the project with every extra on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export TF_CPP_MIN_LOG_LEVEL := 2
export IPYTHONDIR := $(CURDIR)/.ipython

.PHONY: install test demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

demo: $(STAMP)
	$(PY) -m orchkit demo

bench: $(STAMP)
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis
