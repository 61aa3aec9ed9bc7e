# Two commands on a fresh clone: `make demo` and `make test`. Each creates .venv when it is
# missing and installs what it needs; a second run skips installation unless pyproject.toml
# or constraints.txt changed. torch is installed first, pinned, so no CUDA build is pulled in.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medrobust-installed
EXTRAS ?= dev,keras,onnx,service,scale,ct
PIP := $(BIN)/python -m pip --disable-pip-version-check --quiet

.PHONY: install demo test bench gallery clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install "torch==2.13.0"
	$(PIP) install -c constraints.txt -e ".[$(EXTRAS)]"
	# the tests' independent reference for APGD (Croce & Hein 2020); --no-deps: its metadata asks for
	# torchvision, which it never imports and which does not import on these machines
	$(PIP) install -c constraints.txt --no-deps "torchattacks==3.5.1"
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/medrobust demo $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_phantom.py

gallery: $(STAMP)
	$(BIN)/medrobust data gallery --out phantom-gallery.png

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
