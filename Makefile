PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned first to the CPU build these machines hold on disk; any other spec downloads GBs.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install test test-all demo bench clean lint

install:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install "$(TORCH_SPEC)"
	$(BIN)/pip install -e ".[test]"

# Fast suite (CI). Exit code 5 ("no tests collected") is an error, not a pass.
test:
	$(BIN)/python -m pytest -m "not slow" tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected" >&2; exit 1; fi; exit $$rc

test-all:
	$(BIN)/python -m pytest tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected" >&2; exit 1; fi; exit $$rc

demo:
	$(BIN)/python -m catalog_render.demo

bench:
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf demo-output .pytest_cache build *.egg-info
