"""``lad pipeline run --local``: a pipeline on this machine with KFP's local runner.

The same components and pipeline as on a cluster, run by ``kfp.local`` (SubprocessRunner: each
step in a subprocess of this Python; DockerRunner: each step in its real image). Around it this
module provides what the cluster would: a local pipeline root for the artifacts, MLflow's
embedded sqlite store, and the sandbox service as a local process on 127.0.0.1.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from lad.local_server import free_port, wait_until_healthy

DEFAULT_OUTPUT = Path("out/pipeline-local")
# What the local run changes from the pipeline's defaults: a slice of real data next to the
# synthetic tasks, one process per step (no DeepSpeed launcher), and the local sandbox.
REAL_TRAIN_SLICE = 64
# Environment the steps need inside containers (MLflow store, S3 credentials, sandbox token).
FORWARDED_ENV = ("MLFLOW_", "AWS_", "LAD_SANDBOX_")
LOCAL_EVAL = "synthetic_countdown,synthetic_code,gsm8k,humaneval"


class LocalRunError(RuntimeError):
    """The local run cannot start or a step failed; the message says which and why."""


def pipeline_parameters(pipeline) -> dict[str, inspect.Parameter]:
    """The pipeline's parameters (name -> inspect.Parameter with default and annotation)."""
    return dict(inspect.signature(pipeline.pipeline_func).parameters)


def parse_overrides(pairs: list[str], pipeline) -> dict[str, Any]:
    """``key=value`` strings -> typed pipeline arguments; errors name the key and the type wanted."""
    params = pipeline_parameters(pipeline)
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep:
            raise LocalRunError(f"--set {pair!r}: expected key=value")
        if key not in params:
            raise LocalRunError(f"--set {key}: not a parameter of {pipeline.name}; parameters: {', '.join(params)}")
        want = params[key].annotation
        try:
            value = text if want is str else json.loads(text)
        except json.JSONDecodeError:
            raise LocalRunError(f"--set {key}={text!r}: expected a {want.__name__} (JSON)") from None
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise LocalRunError(f"--set {key}={text!r}: expected a {want.__name__}, got {type(value).__name__}")
        out[key] = value
    return out


def local_defaults(benchmarks_dir: Optional[Path]) -> dict[str, Any]:
    """The embedded default: the pipeline's defaults plus a real-data slice of MATH train, from the
    files bundled with lad or, when ``benchmarks_dir`` is given, the user's own copies there."""
    from lad.data.public import SCHEME, locate
    from pipelines.training import DEFAULT_DATASETS

    name = "math_train.jsonl"
    math_train = locate(name, str(benchmarks_dir)) if benchmarks_dir else SCHEME + name
    return {
        "datasets": DEFAULT_DATASETS + [{
            "name": "math_train", "role": "train", "adapter": "math_train", "uri": math_train,
            "limit": REAL_TRAIN_SLICE, "on_bad_row": "skip",
        }],
        "eval_benchmarks": LOCAL_EVAL,
        "benchmarks_dir": str(benchmarks_dir) if benchmarks_dir else "",
        "train_engine": "torch",
        "rollout_engine": "native",  # own decode loop: several times transformers generate's speed on CPU
    }



class LocalSandbox:
    """``lad sandbox serve`` as a child process on 127.0.0.1, stopped with the run."""

    def __init__(self, log: Path, isolation: str = "bwrap"):
        self.port = free_port()
        self.log = log
        self.isolation = isolation
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "LocalSandbox":
        cmd = [sys.executable, "-m", "lad.cli", "sandbox", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--isolation", self.isolation]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        problem = wait_until_healthy(self.proc, f"{self.url}/healthz", 120)
        if problem is not None:
            self.__exit__()
            raise LocalRunError(f"the local sandbox {problem}; log: {self.log}: {self.log.read_text()[-2000:]}")
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@dataclass
class LocalResult:
    artifacts: Path
    report: Path
    decision: Path
    registration: dict
    tracking_uri: str
    seconds: float

    def describe(self) -> str:
        reg = self.registration
        alias = "champion" if reg["promoted"] else "challenger"
        return "\n".join([
            f"pipeline finished in {self.seconds:.0f} s; artifacts under {self.artifacts}",
            f"evaluation report: {self.report} (and report.md, summary.json, samples/ beside it)",
            f"promotion decision: {self.decision}",
            f"registered model: {reg['name']} v{reg['version']} (alias {alias}; {reg['reason']})",
            f"  load it: mlflow.pyfunc.load_model('models:/{reg['name']}@{alias}') with MLFLOW_TRACKING_URI={self.tracking_uri}",
            f"MLflow UI: open {self.tracking_uri}" if self.tracking_uri.startswith("http") else
            f"MLflow UI: mlflow ui --backend-store-uri {self.tracking_uri} --port 5000, then open http://127.0.0.1:5000",
        ])


def run_local(
    arguments: dict[str, Any], *, pipeline: str = "training", output: Path = DEFAULT_OUTPUT,
    benchmarks_dir: Optional[Path] = None,
    runner: str = "subprocess", caching: bool = False, isolation: str = "bwrap", tracking_uri: Optional[str] = None,
) -> LocalResult:
    """Run a pipeline (training or retraining) locally; ``arguments`` override the embedded default.

    ``tracking_uri``: an MLflow server (artifacts wherever its artifact root points, e.g. S3)
    instead of the embedded sqlite store under ``output``.
    """
    from kfp import local

    from lad.pipeline.compile import CompileError, load
    from lad.tracking import Tracker, TrackingConfig

    try:
        chosen = load(pipeline)
    except CompileError as err:
        raise LocalRunError(f"--pipeline: {err}") from None

    if runner not in ("subprocess", "docker"):
        raise LocalRunError(f"--runner {runner!r}: expected subprocess or docker")
    if runner == "docker":
        from lad.images import require_engine

        require_engine()  # before anything is written
    output = output.resolve()
    if benchmarks_dir is not None:
        benchmarks_dir = benchmarks_dir.resolve()
        if not benchmarks_dir.is_dir():
            raise LocalRunError(f"--benchmarks-dir {benchmarks_dir}: no such folder (your own copies of the benchmark files)")
    try:
        params = {**local_defaults(benchmarks_dir), **arguments}
    except FileNotFoundError as err:
        raise LocalRunError(f"--benchmarks-dir: {err}") from None
    output.mkdir(parents=True, exist_ok=True)
    if tracking_uri is None:
        tracking_uri = f"sqlite:///{output / 'mlflow.db'}"
        experiment = params.get("mlflow_experiment", pipeline_parameters(chosen)["mlflow_experiment"].default)
        # Create the experiment here so its artifacts land next to the store, not in the working directory.
        Tracker(TrackingConfig(tracking_uri=tracking_uri, experiment=experiment,
                               artifact_location=(output / "mlartifacts").as_uri())).experiment_id
    # The steps are subprocesses of this one: they find the store through the environment.
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    os.environ.pop("MLFLOW_REGISTRY_URI", None)

    if runner == "subprocess":
        kfp_runner = local.SubprocessRunner(use_venv=False)
    else:
        # Host network: the steps reach the local sandbox on 127.0.0.1; the host's uid: the files
        # they write under the (mounted) pipeline root stay the caller's.
        kfp_runner = local.DockerRunner(network_mode="host", user=f"{os.getuid()}:{os.getgid()}",
                                        environment={k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)})
    # The docker runner mounts only the pipeline root into the containers, and the steps there
    # need the MLflow store beside the artifacts: the whole output folder is the root then.
    root = output if runner == "docker" else output / "artifacts"
    local.init(runner=kfp_runner, pipeline_root=str(root), raise_on_error=True, enable_caching=caching)

    start = time.monotonic()
    with LocalSandbox(output / "sandbox.log", isolation=isolation) as sandbox:
        params.setdefault("sandbox_url", sandbox.url)
        with warnings.catch_warnings():
            # The trainer image's name does not say "python"; the subprocess runner warns about that.
            warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
            try:
                task = chosen(**params)
            except RuntimeError as err:
                raise LocalRunError(f"the pipeline failed: {err}") from None
    outputs = task.outputs
    registration = json.loads(outputs["registration"])
    # The HTML artifact is a copy; the folder next to it holds the report with its plots.
    report_artifact = outputs["report" if "report" in outputs else "challenger_report"]
    report = Path(report_artifact.path).parent / "results" / "report.html"
    return LocalResult(artifacts=root, report=report, decision=Path(outputs["decision"].path),
                       registration=registration, tracking_uri=tracking_uri, seconds=time.monotonic() - start)
