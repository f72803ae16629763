# Two commands do everything on a fresh clone: `make demo` and `make test`.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup test test-fast demo bench clean

setup: $(STAMP)

# torch is pinned first: 2.13.0 is the CPU build; an open range would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,ray]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

demo: $(STAMP)
	$(VENV)/bin/entspec demo

bench: $(STAMP)
	$(VENV)/bin/entspec bench

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
