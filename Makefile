# The quick start: `make demo` runs the main job, `make test` runs the tests.
# Each sets itself up on a fresh machine (a virtualenv in .venv, the C++ extension built).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-triton bench gpu-check clean

setup: $(STAMP)

$(STAMP): setup.py pyproject.toml requirements-dev.txt $(wildcard csrc/*.cpp csrc/*/*.cpp csrc/*.h csrc/*/*.h)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $(STAMP)

demo: setup
	$(PY) -m secant_ext demo

test: setup
	$(PY) -m pytest -q tests

# The Triton kernels on CPU tensors, under the interpreter (no GPU needed): every test
# whose name, parameters or file mention triton.
test-triton: setup
	TRITON_INTERPRET=1 $(PY) -m pytest -q tests -k triton

bench: setup
	$(PY) bench/run_bench.py

# On a machine with a CUDA GPU (and its own torch and triton; see the script's header): the
# Triton tests compiled for real, then bench/gpu_check.py.
gpu-check:
	bash bench/gpu_check.sh

clean:
	rm -rf build *.egg-info secant_ext/*.so
