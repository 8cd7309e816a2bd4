# Two commands: `make reproduce` (regenerate figures/) and `make test`. Both install what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# the install stamp changes whenever the pinned dependencies do
STAMP  := $(VENV)/.memlib-installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
export HF_HUB_DISABLE_TELEMETRY := 1
export PYTHONUNBUFFERED := 1

.PHONY: reproduce test install lab clean-build strip wheel-check compare-device

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	@rm -f $(VENV)/.memlib-installed-*
	@touch $@

install: $(STAMP)

## make reproduce            regenerate every figure (skips notebooks whose inputs are unchanged)
## make reproduce QUICK=1    the same notebooks with tiny parameters, into build/quick/
## make reproduce NB=00_testbed FORCE=1
## make reproduce DEVICE=cuda [DTYPE=fp16]   the networks on a GPU (default: the notebooks' 'auto', then fp32)
reproduce: $(STAMP)
	$(BIN)/python -m memlib.harness.reproduce $(if $(QUICK),--quick) $(if $(NB),--only $(NB)) $(if $(FORCE),--force) \
	  $(if $(DEVICE),--device $(DEVICE)) $(if $(DTYPE),--dtype $(DTYPE))
	$(if $(QUICK),,$(BIN)/python -m memlib results)

## make test                 every notebook through nbval with tiny parameters and every test, on TEST_WORKERS
##                           pytest-xdist workers (one per core, at most 4); a notebook and its checks share a worker
## make test-fast            the unit tests only (no notebook, no training beyond seconds): a few minutes
TESTBUILD := $(CURDIR)/build/test
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)
# groups from tests/conftest.py, queued longest first
XDIST := -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder
# notebook 02's quick run is the harness's two overlapping runs in tests/test_reproduce_notebooks.py, not nbval's
test: $(STAMP)
	rm -rf $(TESTBUILD) && $(BIN)/python -m memlib.harness.quick_notebooks $(TESTBUILD)/notebooks
	HF_HUB_OFFLINE=1 TQDM_DISABLE=1 MEMLIB_QUICK=1 MEMLIB_FIGURES=$(TESTBUILD)/figures MEMLIB_CHECKPOINTS=$(TESTBUILD)/checkpoints \
	  MEMLIB_CACHE=$(TESTBUILD)/cache MEMLIB_NOTEBOOK_FIGURES=$(TESTBUILD)/figures \
	  $(BIN)/python -m pytest --nbval-lax $(TESTBUILD)/notebooks --ignore=$(TESTBUILD)/notebooks/02_explain.ipynb \
	  tests $(XDIST) $(PYTEST_ARGS)

.PHONY: test-fast
test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 TQDM_DISABLE=1 $(BIN)/python -m pytest tests -m "not slow" $(XDIST) $(PYTEST_ARGS)

## make wheel-check          the wheel installed into a fresh venv outside the checkout (reusing $(VENV)'s packages)
##                           works from an empty folder: doctor, methods, detect on tiny-sd; no training, no litter
wheel-check: $(STAMP)
	bash .ci/wheel-check $(BIN)/python

## make lab                  JupyterLab on the project's environment (its python3 kernel is .venv's), on notebooks/
lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=$(CURDIR)/notebooks $(LAB_ARGS)

## make compare-device RUN=build/gpu/figures   another device's metrics.json against the committed CPU ones
compare-device: $(STAMP)
	$(BIN)/python benchmarks/compare_device.py $(RUN) --reference $(or $(REF),figures) \
	  --out $(or $(OUT),build/compare_device.json)

clean-build:
	rm -rf build
