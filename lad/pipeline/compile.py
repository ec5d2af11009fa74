"""Compile the pipelines to KFP YAML, and check that the committed YAML is current."""

from __future__ import annotations

import importlib
import os
import tempfile
from pathlib import Path

import yaml

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


NO_REGISTRY = ("no image registry: pass --registry REGISTRY, the registry `lad images build --push REGISTRY` pushed "
               "the images to (e.g. --registry ghcr.io/acme/lad)")


def compile_all(output: Path, registry: str | None = None, model_cache_pvc: str | None = None, *, root: Path = Path("."),
                placeholder: bool = False) -> list[Path]:
    """Compile every pipeline into ``output/<name>.yaml``, its images in ``registry`` (by this
    commit's tag, or by digest after ``lad images build --push`` recorded them under ``root``:
    :func:`lad.images.pushed_refs`).

    ``placeholder``: name :data:`lad.images.PLACEHOLDER_REGISTRY` instead, as the committed YAML
    does (a spec that cannot be submitted). ``model_cache_pvc``: a PersistentVolumeClaim for the
    model cache (default: an emptyDir per pod). The pipelines are built when their modules are
    first imported, so the compile runs in a fresh interpreter that reads these from the environment.
    """
    from lad.images import ImagesError, compile_env, pushed_refs

    if placeholder == bool(registry):
        raise CompileError(NO_REGISTRY if not registry else "--registry and --placeholder exclude each other")
    env = {}
    if registry:
        try:
            env.update(compile_env(pushed_refs(root, registry)))
        except ImagesError as err:
            raise CompileError(str(err)) from None
    if model_cache_pvc:
        env["LAD_MODEL_CACHE_PVC"] = model_cache_pvc
    if not env and not any(k in os.environ for k in ("LAD_IMAGE_REFS", "LAD_MODEL_CACHE_PVC")):
        return [compile_pipeline(name, output / f"{name}.yaml") for name in PIPELINES]
    import subprocess
    import sys

    code = "import sys; from pathlib import Path; from lad.pipeline.compile import compile_pipeline as c; " \
           "[c(n, Path(sys.argv[1]) / f'{n}.yaml') for n in sys.argv[2:]]"
    clean = {k: v for k, v in os.environ.items() if k not in ("LAD_IMAGE_REFS", "LAD_MODEL_CACHE_PVC")}
    done = subprocess.run([sys.executable, "-c", code, str(output), *PIPELINES], env={**clean, **env}, capture_output=True, text=True)
    if done.returncode:
        raise CompileError(f"compiling: {done.stderr.strip().splitlines()[-1] if done.stderr else done.returncode}")
    return [output / f"{name}.yaml" for name in PIPELINES]


def check_submittable(path: Path) -> Path:
    """CompileError when the compiled spec at ``path`` names a placeholder image (pipelines/compiled/
    is such a spec: compile with --registry for a cluster)."""
    from lad.images import PLACEHOLDER_REGISTRY

    spec = next(yaml.safe_load_all(path.read_text()))
    placeholders = sorted({e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()
                           if e["container"]["image"].startswith(PLACEHOLDER_REGISTRY + "/")})
    if placeholders:
        raise CompileError(f"{path} names placeholder images ({', '.join(placeholders)}) that no cluster can pull; "
                           "compile it with: lad pipeline compile --registry REGISTRY")
    return path


def stale(compiled: Path = COMPILED_DIR) -> list[str]:
    """Names of the pipelines whose committed YAML differs from what the code compiles to now."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        compile_all(Path(tmp), placeholder=True)
        for name in PIPELINES:
            fresh = (Path(tmp) / f"{name}.yaml").read_text()
            committed = compiled / f"{name}.yaml"
            if not committed.is_file() or committed.read_text() != fresh:
                out.append(name)
    return out
