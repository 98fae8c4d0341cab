# kecl — `make demo` runs the main job on the embedded default; `make test` passes the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The CPU build of PyTorch is installed first so that the unpinned `torch` requirement is
# already satisfied (a plain `torch` pulls a multi-GB CUDA build). Override: make TORCH_SPEC=...
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test test-unit test-integration lint demo bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# Both tiers: tests/unit (tiny models, ~2 min) then tests/integration (real model, servers, processes).
test: install
	$(PY) -m pytest -q

test-unit: install
	$(PY) -m pytest -q -m unit

test-integration: install
	$(PY) -m pytest -q -m integration

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

demo: install
	$(VENV)/bin/kecl demo

bench: install
	$(PY) -m benchmarks.run_all

clean:
	rm -rf kecl-data .pytest_cache
