# EchoSAMSlicer: two commands for a newcomer.
#   make demo   - create .venv, install torch + the project, segment a simulated screen-capture echo and the real pydicom-data cine
#   make test   - run the whole test suite
#
# segment_anything imports torchvision, so torch and torchvision must be a matching pair.
# The default pair installs on CPU-only machines too. GPU users pick the build for their CUDA
# version, e.g.:  make demo TORCH_SPEC="torch==2.5.1 torchvision==0.20.1" TORCH_INDEX="--index-url <PyTorch wheel index for cu124>"
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
TORCH_INDEX ?=
DEMO_OUT ?= demo_out
# pip extras of the project: test (pytest, slicer-core, ...), train (pymust); CI adds scale (Ray, pyarrow)
EXTRAS ?= test,train

.PHONY: setup demo test bench clean-venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_INDEX) $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	@touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) -m training.demo --out $(DEMO_OUT)

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/bench_models.py
	$(PY) bench/bench_session.py
	$(PY) bench/bench_batch.py

clean-venv:
	rm -rf $(VENV)
