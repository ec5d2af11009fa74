"""``lad pipeline run --local``: a pipeline on this machine with KFP's local runner.

The same components and pipeline as on a cluster, run by ``kfp.local`` (SubprocessRunner: each
step in a subprocess of this Python; DockerRunner: each step in its real image). Around it this
module provides what the cluster would: a local pipeline root for the artifacts, MLflow's
embedded sqlite store, and the sandbox service as a local process on 127.0.0.1.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import subprocess
import sys
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from lad.environment import describe, one_line
from lad.local_server import free_port, stop_process_group, wait_until_healthy
from lad.pipeline.identity import RUN_ID_ENV, RUN_NAME_ENV
from lad.pipeline.console import StageConsole, captured, display_names
from lad.storage import put_bytes

DEFAULT_OUTPUT = Path("out/pipeline-local")
SUMMARY_FILE = "run_summary.json"
RUNS_DIR = "runs"  # every run's summary, by run name
# What the local run changes from the pipelines' defaults (the typed configs'): the demo configuration,
# which teaches the ~1M-parameter tiny model countdown within minutes on 2 CPU cores (SFT warm-up, then RL) and scores
# the warm start and the trained model on the same 256 held-out problems at k = 8, one process per
# step (no DeepSpeed launcher), the native rollout engine, and the local sandbox.
DEMO_TRAIN_PROBLEMS = 6000
DEMO = {
    "sft_steps": 500, "sft_batch_size": 64, "sft_problems": 6000, "sft_lr": 3e-3, "sft_heldout_problems": 0,
    "sft_data": "synthetic:countdown",
    # lr 4e-4 decayed (cosine) to 4e-5: at a constant 4e-4 the policy swung by up to 6 points Avg@8 between
    # checkpoints 100 steps apart, so the step the run ended on decided its result; 6e-4 and above learned slower
    "steps": 500, "prompts_per_step": 16, "group_size": 8, "mini_batch_size": 64, "micro_batch_size": 32, "lr": 4e-4,
    "min_lr_ratio": 0.1,
    # responses cut at 24 tokens out of the loss: without it one run stopped emitting EOS after its boxed answer
    # (all responses cut from step 195 on) and ended 3.6 points lower
    "mask_truncated": True,
    "max_new_tokens": 24, "train_eval_prompts": 0,
    # sampled as RL samples (T = 1): at 0.6 the warm start's sharpened answers hide most of what RL taught
    "eval_benchmarks": "synthetic_countdown", "eval_k": 8, "eval_limit": 256, "eval_max_new_tokens": 24, "eval_temperature": 1.0,
    "promotion_metric": "synthetic_countdown/avg@k",
    "train_engine": "torch", "rollout_engine": "native",  # own decode loop: several times transformers generate's speed on CPU
}
# Environment the steps need inside containers (MLflow store, S3 credentials, sandbox token).
FORWARDED_ENV = ("MLFLOW_", "AWS_", "LAD_SANDBOX_", "LAD_PIPELINE_RUN_")


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


def local_defaults(pipeline, benchmarks_dir: Optional[Path]) -> dict[str, Any]:
    """The embedded default of ``pipeline`` (its parameters that :data:`DEMO` names, and its
    countdown training problems: the retraining run gets problems the training run did not see);
    ``benchmarks_dir``: the user's own copies of the benchmark files."""
    params = pipeline_parameters(pipeline)
    retraining = "new_data_uri" in params
    datasets = [dict(d) for d in params["datasets"].default]
    for d in datasets:
        if d.get("role") == "train" and "synthetic" in d:
            d["synthetic"] = {**d["synthetic"], "n": DEMO_TRAIN_PROBLEMS, "seed": 2 if retraining else 0}
    chosen = {"datasets": datasets, **DEMO, "benchmarks_dir": str(benchmarks_dir) if benchmarks_dir else ""}
    return {key: value for key, value in chosen.items() if key in params}


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
        stop_process_group(self.proc)


@dataclass
class LocalResult:
    artifacts: Path
    report: Path
    decision: Path
    registration: dict
    tracking_uri: str
    seconds: float
    log: Path
    summary_path: Path
    results: list[str]  # the models side by side (results_table)
    environment: dict  # what the run ran on (lad.environment.describe)

    def describe(self) -> str:
        reg = self.registration
        alias = "champion" if reg["promoted"] else "challenger"
        return "\n".join([
            "",
            *self.results,
            "",
            f"pipeline finished in {self.seconds:.0f} s; artifacts under {self.artifacts}",
            f"evaluation report: {self.report} (the data and plots beside it)",
            f"run summary: {self.summary_path}; step logs: {self.log}",
            f"ran on: {one_line(self.environment)}",
            f"promotion decision: {self.decision}",
            f"registered model: {reg['name']} v{reg['version']} (alias {alias}; {reg['reason']})",
            f"  chat with it: mlflow.pyfunc.load_model('models:/{reg['name']}@{alias}').predict({{'messages': [...]}}) "
            f"with MLFLOW_TRACKING_URI={self.tracking_uri}",
            f"  serve it: MLFLOW_TRACKING_URI={self.tracking_uri} mlflow models serve -m models:/{reg['name']}@{alias} "
            "--env-manager local --port 5001",
            f"MLflow UI: open {self.tracking_uri}" if self.tracking_uri.startswith("http") else
            f"MLflow UI: mlflow ui --backend-store-uri {self.tracking_uri} --port 5000, then open http://127.0.0.1:5000",
        ])


def run_local(
    arguments: dict[str, Any], *, pipeline: str = "training", output: Path = DEFAULT_OUTPUT,
    benchmarks_dir: Optional[Path] = None,
    runner: str = "subprocess", caching: bool = False, isolation: str = "bwrap", tracking_uri: Optional[str] = None,
    verbose: bool = False,
) -> LocalResult:
    """Run a pipeline (training or retraining) locally; ``arguments`` override the embedded default.

    ``tracking_uri``: an MLflow server (artifacts wherever its artifact root points, e.g. S3)
    instead of the embedded sqlite store under ``output``. The console shows a line per stage; the
    steps' own logs go to ``output/<pipeline>.log`` (``verbose``: to the console too). Writes
    ``output/run_summary.json``: wall times, the registered version, Avg@k per model, the gate;
    and the same as ``output/runs/<run name>.json``, which the next run leaves in place. The
    pipeline run's MLflow run gets every parameter (defaults included) before the steps start and
    the run summary at the end.
    """
    from kfp import local

    from lad.pipeline.compile import CompileError, load
    from lad.tracking import RunContext, Tracker, TrackingConfig

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
    params = {**local_defaults(chosen, benchmarks_dir), **arguments}
    output.mkdir(parents=True, exist_ok=True)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # its "Creating initial tables" is noise here
    if tracking_uri is None:
        tracking_uri = f"sqlite:///{output / 'mlflow.db'}"
        experiment = params.get("mlflow_experiment", pipeline_parameters(chosen)["mlflow_experiment"].default)
        # Create the experiment here so its artifacts land next to the store, not in the working directory.
        Tracker(TrackingConfig(tracking_uri=tracking_uri, experiment=experiment,
                               artifact_location=(output / "mlartifacts").as_uri())).experiment_id
    # The steps are subprocesses of this one: they find the store, and which run they belong to
    # (what a cluster's pods read from their own metadata), through the environment.
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    os.environ.pop("MLFLOW_REGISTRY_URI", None)
    run_id = uuid.uuid4().hex
    os.environ[RUN_ID_ENV], os.environ[RUN_NAME_ENV] = run_id, f"{chosen.name}-{time.strftime('%Y%m%d-%H%M%S')}-{run_id[:6]}"

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
    console = StageConsole(output / f"{pipeline}.log", sys.stdout, verbose=verbose, names=display_names(chosen))
    with LocalSandbox(output / "sandbox.log", isolation=isolation) as sandbox:
        params.setdefault("sandbox_url", sandbox.url)
        # What a cluster run's parameters are in the Kubeflow UI, the pipeline run's MLflow run holds here: every
        # parameter the pipeline runs with, its defaults included.
        everything = {name: p.default for name, p in pipeline_parameters(chosen).items()} | params
        parent = Tracker(TrackingConfig(tracking_uri=tracking_uri, experiment=everything["mlflow_experiment"]))
        parent_id = parent.pipeline_run(run_id, os.environ[RUN_NAME_ENV])
        RunContext(parent, parent_id).log_config(everything)
        with warnings.catch_warnings(), captured(console):
            # The trainer image's name does not say "python"; the subprocess runner warns about that.
            warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
            try:
                task = chosen(**params)
            except RuntimeError as err:
                failed = next((n for n, st in console.stages.items() if st.get("status") not in (None, "SUCCESS")), None)
                where = f"stage {failed}: {console.stages[failed].get('error') or err}" if failed else str(err)
                raise LocalRunError(f"the pipeline failed at {where}; log: {console.log_path}") from None
    outputs = task.outputs
    registration = json.loads(outputs["registration"])
    report, compared, keys = _compared_models(outputs)
    result = LocalResult(artifacts=root, report=report, decision=Path(outputs["decision"].path), registration=registration,
                         tracking_uri=tracking_uri, seconds=time.monotonic() - start, log=console.log_path,
                         summary_path=output / SUMMARY_FILE, results=results_table(compared),
                         # the steps are subprocesses of this one, with its packages, threads and processor
                         environment=describe())
    summary = {
        "pipeline": chosen.name, "run_id": run_id, "run_name": os.environ[RUN_NAME_ENV], "wall_s": round(result.seconds, 1),
        "stages": {name: {"wall_s": st["wall_s"], "figure": st.get("figure")} for name, st in console.stages.items() if "wall_s" in st},
        "registered": {"name": registration["name"], "version": registration["version"],
                       "alias": "champion" if registration["promoted"] else "challenger"},
        "metrics": {key: {f"{name}/avg@k": _pct(per_run[label]["avg@k"])
                          for name, per_run in compared["benchmarks"].items() if label in per_run}
                    for key, label in zip(keys, compared["runs"])},
        "gate": {"decision": "promoted" if registration["promoted"] else "refused", "reason": registration["reason"]},
        "environment": result.environment,
    }
    # run_summary.json is the latest run's; the retraining run that follows a training run in the
    # same folder would otherwise overwrite the only record of it.
    for path in (output / RUNS_DIR / f"{summary['run_name']}.json", result.summary_path):
        put_bytes(json.dumps(summary, indent=2).encode(), str(path))
    RunContext(parent, parent_id).log_artifact(result.summary_path)
    return result


def _pct(value: float) -> float:
    """A fraction in percent, as the reports show it."""
    return round(100 * value, 2)


def _compared_models(outputs: dict) -> tuple[Path, dict, list[str]]:
    """The report to open, the run's models side by side (the shape of
    :func:`lad.evaluation.report.comparison`) and each model's key in the run summary.

    The training pipeline compares its models itself (warm start, the trained model, a baseline
    when one was trained); the retraining run has the challenger's and the champion's evaluations."""
    from lad.evaluation.report import comparison

    if "comparison" in outputs:
        folder = Path(outputs["comparison"].removeprefix("file://"))  # local runs have local artifact URIs
        compared = json.loads((folder / "compare.json").read_text())
        return folder / "compare.html", compared, ["warm_start", "trained", *compared["runs"][2:]]
    # The HTML artifacts are copies; the folders next to them hold the reports with their plots and data.
    results = {role: Path(outputs[f"{role}_report"].path).parent / "results" for role in ("champion", "challenger")}
    compared = comparison([(role, json.loads((folder / "summary.json").read_text())) for role, folder in results.items()])
    return results["challenger"] / "report.html", compared, list(results)


def results_table(compared: dict) -> list[str]:
    """The run's models side by side, a block per benchmark: Avg@k with its 95% CI, its gain over
    the first model (the warm start, or the champion), Pass@k, distinct correct answers per problem
    and dist-3, in the report's units (percent, points)."""
    titles = {name: f"{name}, k = {'/'.join(str(k) for k in sorted({v['k'] for v in per_run.values()}))}"
              for name, per_run in compared["benchmarks"].items()}
    width = max([len(t) for t in titles.values()] + [len(label) + 2 for label in compared["runs"]])
    lines = []
    for name, per_run in compared["benchmarks"].items():
        title = titles[name]
        lines.append(f"{title:<{width}}{'Avg@k [95% CI]':>24}{'gain':>8}{'Pass@k':>9}{'distinct correct':>18}{'dist-3':>8}")
        first = None
        for label in compared["runs"]:
            if label in per_run:
                v = per_run[label]
                lo, hi = v["avg@k_ci95"]
                avg = f"{100 * v['avg@k']:.2f} [{100 * lo:.2f}, {100 * hi:.2f}]"
                gain = "" if first is None else f"{100 * (v['avg@k'] - first):+.2f}"
                first = v["avg@k"] if first is None else first
                dist3 = "–" if v["dist-3"] is None else f"{v['dist-3']:.3f}"
                lines.append(f"{'  ' + label:<{width}}{avg:>24}{gain:>8}{100 * v['pass@k']:>9.2f}"
                             f"{v['distinct_correct']:>18.2f}{dist3:>8}")
    return lines
