# Two set-up-and-go commands: `make demo` runs the main job, `make test` runs the tests.
# Each (re)creates the virtual environment in .venv when pyproject.toml or the constraints change.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OUT ?= out

.PHONY: demo test bench venv clean

$(STAMP): pyproject.toml constraints/cpu.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints/cpu.txt torch
	$(PY) -m pip install --quiet -c constraints/cpu.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	mkdir -p $(OUT)
	$(VENV)/bin/lad bandit --json $(OUT)/bandit.json --plot $(OUT)/bandit.png

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/bench_objectives.py

clean:
	rm -rf $(VENV) $(OUT)
