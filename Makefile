# Two commands do all the set-up: `make test` and `make report`. Both create .venv if needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
ARTIFACTS ?= artifacts

.PHONY: venv test test-fast report lab bench clean

venv: $(VENV)/.installed

# torch first: a CPU build unless an NVIDIA GPU is visible (a CUDA build is several GB and useless
# without one). On Linux the CPU wheels carry the local version "+cpu" on PyTorch's CPU index; a
# wheel pip already finds (a local wheel directory in pip's configuration) is used without asking it.
$(VENV)/.installed: pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 needed (tomllib), found " + sys.version' 
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if $(PY) -c 'import torch' 2>/dev/null; then \
	  echo "torch already installed: $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "NVIDIA GPU found: installing the CUDA build of torch $(TORCH_VERSION)"; \
	  $(PY) -m pip install "torch==$(TORCH_VERSION)"; \
	elif [ "$$(uname -s)" = Linux ]; then \
	  echo "no GPU: installing the CPU build of torch $(TORCH_VERSION)"; \
	  $(PY) -m pip install "torch==$(TORCH_VERSION)+cpu" 2>/dev/null \
	    || $(PY) -m pip install --extra-index-url $(TORCH_CPU_INDEX) "torch==$(TORCH_VERSION)+cpu"; \
	else \
	  $(PY) -m pip install "torch==$(TORCH_VERSION)"; \
	fi
	$(PY) -m pip install -e ".[test]"
	touch $@

test: venv
	$(PY) -m pytest --nbval --durations=15

test-fast: venv
	$(PY) -m pytest tests -x -q

# ARGS passes more luigi options, e.g. make report ARGS="--preset smoke" or ARGS="--workers 2"
report: venv
	$(VENV)/bin/luigi --module pipeline FullReport $(ARGS)

# JupyterLab is in the [test] extras (tests/test_explorer_jupyterlab.py runs the explorer in it).
# Jupyter refuses to run as root unless told: as root (a container, a VM) it is told.
lab: venv
	$(VENV)/bin/jupyter lab notebooks $$([ "$$(id -u)" = 0 ] && echo --allow-root)

bench: venv
	$(PY) benchmarks/bench_attention.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
