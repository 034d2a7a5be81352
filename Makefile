# `make demo`: the main job on the embedded defaults. `make test`: every test.
# `make serve`: the service (REST + Socket.IO) on 127.0.0.1:8000 with an SQLite file.
# `make docs`: the documentation site (MkDocs, strict) into site/.
# `make lab`: JupyterLab on the notebook course (notebooks/), with what the notebooks need.
# Each creates .venv on first use: demo installs orchkit alone (no TensorFlow),
# test installs it with every extra, plus what the tests drive for real: redis-server and
# chromium (Debian packages, when missing) and the Node clients (npm ci, from lockfiles).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BASE := $(VENV)/.stamp-base
DEV := $(VENV)/.stamp-dev
SERVER := $(VENV)/.stamp-server
DOCS := $(VENV)/.stamp-docs
LAB := $(VENV)/.stamp-lab
SYS := $(VENV)/.stamp-sys
NODE_DIRS := $(patsubst %/package.json,%,$(wildcard tests/node/package.json examples/*/package.json))
NODE_STAMPS := $(addsuffix /node_modules/.stamp,$(NODE_DIRS))
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: demo test bench serve docs lab sysdeps clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(BASE): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

$(DEV): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@ $(BASE)

$(SERVER): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[server,agents]'
	touch $@ $(BASE)

$(DOCS): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[docs]'
	touch $@ $(BASE)

# The course's notebooks run live agents (learning, tutor; speech: TensorFlow), tune and fit,
# and start the service (notebook 12).
$(LAB): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[notebook,agents,speech,tune,server]'
	touch $@ $(BASE)

# System packages the tests use for real (no systemd here: the tests start redis-server
# themselves on a free port). Installed only when missing.
$(SYS): | $(PY)
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (apt-get)"; \
	  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; \
	fi
	@command -v node >/dev/null || { echo "node is required for the Node interop tests (apt-get install nodejs npm)"; exit 2; }
	touch $@

%/node_modules/.stamp: %/package.json %/package-lock.json
	cd $* && npm ci --silent --no-audit --no-fund
	touch $@

sysdeps: $(SYS) $(NODE_STAMPS)

demo: $(BASE)
	$(PY) -m orchkit demo

# The service on the embedded defaults: http://127.0.0.1:8000 (docs at /docs), SQLite orchkit.db.
serve: $(SERVER)
	$(PY) -m orchkit serve

test: $(DEV) $(SYS) $(NODE_STAMPS)
	$(PY) -m pytest -q -p no:cacheprovider

bench: $(DEV) $(SYS) $(NODE_STAMPS)
	$(PY) benchmarks/bench_startup.py
	$(PY) benchmarks/bench_live.py
	$(PY) benchmarks/bench_sim.py
	$(PY) benchmarks/bench_queue.py
	$(PY) benchmarks/bench_service.py
	$(PY) benchmarks/bench_scale.py
	$(PY) benchmarks/bench_analytics.py
	$(PY) benchmarks/bench_twin.py

# The documentation site (mkdocs.yml, docs/, the notebooks' committed outputs) into site/,
# strict: a broken link, a page missing from the nav or an unresolved API reference fails.
# Phony: the docs/ folder must not make it "up to date".
docs: $(DOCS)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# The notebook course in JupyterLab (opens a browser tab; Ctrl-C twice stops it). As root (a
# container), JupyterLab refuses to start without --allow-root: given then only.
lab: $(LAB)
	$(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

clean:
	rm -rf $(VENV) out .hypothesis site $(addsuffix /node_modules,$(NODE_DIRS))
