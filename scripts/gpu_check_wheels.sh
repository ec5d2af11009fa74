#!/usr/bin/env bash
# Prepares .whl/ for scripts/gpu_check.sh: the packages the GPU image lacks (pydantic and its
# needs, hjson, DeepSpeed built as a py3 wheel from its sdist), for CPython 3.12 on x86-64.
# Run here, from the repository root, with pip and package-registry access.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
mkdir -p .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0 hjson==3.1.0
# DeepSpeed ships only an sdist; its ops are built at run time (JIT) when used, and the trainer uses none.
DS_BUILD_OPS=0 .venv/bin/pip wheel --no-deps --no-build-isolation deepspeed==0.19.8 -w .whl
ls -l .whl
