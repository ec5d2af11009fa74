"""Compile the pipelines to KFP YAML, and check that the committed YAML is current."""

from __future__ import annotations

import importlib
import os
import tempfile
from pathlib import Path

from lad.storage import atomic_path

# name -> "module:function" of each pipeline. The Kubeflow layer is built on this library, so it is
# imported here by name when a pipeline is compiled or run, never when this module loads.
PIPELINES = {"training": "lad.kubeflow.pipelines.training:training", "retraining": "lad.kubeflow.pipelines.retraining:retraining"}
COMPILED_DIR = Path(__file__).resolve().parents[2] / "pipelines" / "compiled"


class CompileError(RuntimeError):
    """A pipeline name is unknown or the pipeline does not compile."""


def load(name: str):
    """The pipeline object (``@dsl.pipeline``) called ``name``."""
    if name not in PIPELINES:
        raise CompileError(f"unknown pipeline {name!r}; expected one of {sorted(PIPELINES)}")
    module, func = PIPELINES[name].split(":")
    return getattr(importlib.import_module(module), func)


def compile_pipeline(name: str, path: Path) -> Path:
    """Write pipeline ``name`` as KFP YAML at ``path`` (replaced atomically)."""
    from kfp import compiler

    with atomic_path(path) as tmp:
        compiler.Compiler().compile(load(name), str(tmp))
        # KFP's comment header lists struct defaults in hash order, which changes between runs;
        # the spec below it is deterministic, so the header is replaced by a fixed one.
        lines = tmp.read_text().splitlines(keepends=True)
        body = lines[next(i for i, line in enumerate(lines) if not line.startswith("#")):]
        module = PIPELINES[name].split(":")[0].removeprefix("lad.kubeflow.").replace(".", "/")
        tmp.write_text(f"# {name}: compiled from {module}.py by `lad pipeline compile`; do not edit.\n" + "".join(body))
    return path


def compile_all(output: Path, registry: str | None = None) -> list[Path]:
    """Compile every pipeline into ``output/<name>.yaml``.

    ``registry`` names the image registry; components read it when first imported, so with a
    registry the compile runs in a fresh interpreter.
    """
    from lad.images import COMPONENT_REGISTRY

    if registry is None or registry == COMPONENT_REGISTRY:
        return [compile_pipeline(name, output / f"{name}.yaml") for name in PIPELINES]
    import subprocess
    import sys

    code = "import sys; from pathlib import Path; from lad.pipeline.compile import compile_all; compile_all(Path(sys.argv[1]))"
    env = {**os.environ, "LAD_IMAGE_REGISTRY": registry}
    done = subprocess.run([sys.executable, "-c", code, str(output)], env=env, capture_output=True, text=True)
    if done.returncode:
        raise CompileError(f"compiling with registry {registry}: {done.stderr.strip().splitlines()[-1] if done.stderr else done.returncode}")
    return [output / f"{name}.yaml" for name in PIPELINES]


def stale(compiled: Path = COMPILED_DIR) -> list[str]:
    """Names of the pipelines whose committed YAML differs from what the code compiles to now."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in PIPELINES:
            fresh = compile_pipeline(name, Path(tmp) / f"{name}.yaml").read_text()
            committed = compiled / f"{name}.yaml"
            if not committed.is_file() or committed.read_text() != fresh:
                out.append(name)
    return out
