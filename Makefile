# The README's two commands. Each creates (or reuses) .venv and installs what it needs.
# torch is pinned to 2.13.0: on this project's machines that takes the CPU build on disk;
# an unpinned torch would pull gigabytes of CUDA packages (see DEVELOPERS.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
OUT ?= out
PRESET ?= digits

.PHONY: demo test test-all lint venv clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

## The main job: the whole paper at small scale on the embedded digits dataset.
demo: $(STAMP)
	$(BIN)/logitscope reproduce --preset $(PRESET) --out $(OUT)
	@echo "report: $(OUT)/report/index.html"

## The default test suite (fast); `make test-all` adds the slow end-to-end tests.
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not gpu"

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "not gpu"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
