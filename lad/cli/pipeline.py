"""``lad pipeline ...``: compile, run locally, submit to Kubeflow, schedule retraining."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(
    help="The Kubeflow pipelines (training, retraining): compile to YAML, run on this machine, submit to a KFP "
    "server, schedule recurring retraining.",
    no_args_is_help=True,
)
console = Console(stderr=True)

PIPELINE = typer.Option("training", "--pipeline", "-p", help="training or retraining")
SET = typer.Option(
    [], "--set", "-s", metavar="KEY=VALUE",
    help="a pipeline parameter (repeatable), e.g. --set steps=50 --set objective=grpo; lists and dicts as JSON",
)
HOST = typer.Option(..., "--host", help="KFP API endpoint, e.g. http://localhost:8080 (kubectl port-forward svc/ml-pipeline-ui)")
EXPERIMENT = typer.Option("lad", "--experiment", help="KFP experiment that holds the runs")
CACHING = typer.Option(True, "--caching/--no-caching", help="reuse results of earlier identical steps (registration never is)")
NAMESPACE = typer.Option(None, "--namespace", help="Kubeflow profile namespace (multi-user installs)")
REGISTRY = typer.Option(..., "--registry", help="the registry the images are in (where lad images build --push "
                        "REGISTRY pushed them), e.g. ghcr.io/acme/lad")
MODEL_CACHE_PVC = typer.Option(None, "--model-cache-pvc", help="a PersistentVolumeClaim that keeps downloaded models "
                               "between runs (default: an emptyDir per pod)")
PIPELINE_ROOT = typer.Option(None, "--pipeline-root", help="where the run's artifacts go: s3://BUCKET/PREFIX or "
                             "minio://BUCKET/PREFIX (default: the KFP server's, e.g. minio://mlpipeline/v2/artifacts)")


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def _arguments(pipeline: str, pairs: list[str]) -> dict:
    from lad.pipeline.compile import CompileError, load
    from lad.pipeline.local import LocalRunError, parse_overrides

    try:
        return parse_overrides(pairs, load(pipeline))
    except (CompileError, LocalRunError) as err:
        _fail(str(err))


@app.command("compile")
def compile_cmd(
    output: Path = typer.Option(Path("build/pipelines"), "--output", "-o", help="folder for training.yaml and retraining.yaml"),
    registry: Optional[str] = typer.Option(None, "--registry", help="the registry the images are in (where lad images "
                                           "build --push REGISTRY pushed them), e.g. ghcr.io/acme/lad; required"),
    model_cache_pvc: Optional[str] = MODEL_CACHE_PVC,
    placeholder: bool = typer.Option(False, "--placeholder", help="name placeholder images instead of a registry, as "
                                     "pipelines/compiled/ does (such a spec cannot be submitted)"),
    check: bool = typer.Option(False, "--check", help="only check that the placeholder YAML under --output is current; "
                               "exit 1 if not"),
) -> None:
    """Compile both pipelines to KFP YAML, ready to upload in the Kubeflow UI (Pipelines > Upload).

    The images are this commit's in REGISTRY (by digest after lad images build --push REGISTRY).
    """
    from lad.pipeline.compile import CompileError, compile_all, stale

    try:
        if check:
            old = stale(output)
            if old:
                console.print(f"out of date under {output}: {', '.join(old)}; run: lad pipeline compile --placeholder --output {output}")
                raise typer.Exit(1)
            console.print(f"{output}: up to date")
            return
        paths = compile_all(output, registry, model_cache_pvc, placeholder=placeholder)
    except CompileError as err:
        _fail(str(err))
    for path in paths:
        console.print(f"wrote {path}")


@app.command("run")
def run_cmd(
    local_run: bool = typer.Option(False, "--local", help="run on this machine with KFP's local runner (required: "
                                   "for a cluster use lad pipeline submit)"),
    runner: str = typer.Option("subprocess", "--runner", help="subprocess (steps as Python subprocesses) or docker "
                               "(steps in their images; needs a Docker engine and lad images build)"),
    output: Path = typer.Option(Path("out/pipeline-local"), "--output", "-o", help="artifacts, MLflow store and logs go here"),
    benchmarks_dir: Optional[Path] = typer.Option(None, "--benchmarks-dir", help="folder of your own copies of the "
                                                  "benchmark files (default: $LAD_DATA_DIR, then the files bundled with lad)"),
    pipeline: str = typer.Option("training", "--pipeline", "-p", help="training, or retraining (starts from the "
                                 "champion registered in OUTPUT/mlflow.db by an earlier run)"),
    overrides: list[str] = SET,
    caching: bool = typer.Option(False, "--caching/--no-caching", help="reuse outputs of identical earlier local steps"),
    isolation: str = typer.Option("bwrap", "--isolation", help="sandbox isolation: bwrap, or none for trusted local use"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="an MLflow server to use instead of the "
                                               "embedded store OUTPUT/mlflow.db (S3 credentials from the AWS_* variables)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="show the steps' own logs live (else only in OUTPUT/<pipeline>.log)"),
) -> None:
    """Run the training (or retraining) pipeline on this machine (KFP local runner, no cluster).

    The embedded default: tiny model, synthetic tasks plus a slice of the bundled public data, the
    sandbox as a local process, MLflow in OUTPUT/mlflow.db, artifacts in OUTPUT/artifacts. Prints where the evaluation report and the registered model are and how to open the MLflow UI.
    """
    from lad.images import ImagesError
    from lad.pipeline.local import LocalRunError, run_local
    from lad.pipeline.steps import StepError

    if not local_run:
        _fail("only --local runs here; to run on a Kubeflow cluster use: lad pipeline submit --host URL")
    if runner == "docker":
        # Before the components are imported: they name the images `lad images build` tagged for this commit.
        import os

        from lad.images import LOCAL_REGISTRY, compile_env, image_refs, image_tag

        try:
            os.environ.update(compile_env(image_refs(LOCAL_REGISTRY, image_tag())))
        except ImagesError as err:
            _fail(str(err), 1)
    arguments = _arguments(pipeline, overrides)
    try:
        result = run_local(arguments, pipeline=pipeline, output=output, benchmarks_dir=benchmarks_dir, runner=runner, caching=caching,
                           isolation=isolation, tracking_uri=tracking_uri, verbose=verbose)
    except (LocalRunError, ImagesError, StepError) as err:
        _fail(str(err), 1)
    typer.echo(result.describe())


@app.command("submit")
def submit_cmd(
    host: str = HOST,
    pipeline: str = PIPELINE,
    overrides: list[str] = SET,
    experiment: str = EXPERIMENT,
    run_name: Optional[str] = typer.Option(None, "--run-name", help="name of the run in the UI"),
    caching: bool = CACHING,
    namespace: Optional[str] = NAMESPACE,
    pipeline_root: Optional[str] = PIPELINE_ROOT,
    registry: str = REGISTRY,
    model_cache_pvc: Optional[str] = MODEL_CACHE_PVC,
) -> None:
    """Start one run on a Kubeflow Pipelines server (compiled from this checkout)."""
    from lad.pipeline.schedule import ScheduleError, check_pipeline_root, submit

    arguments = _arguments(pipeline, overrides)
    try:
        check_pipeline_root(pipeline_root)
    except ScheduleError as err:
        _fail(str(err))
    try:
        run_id, url = submit(host, pipeline, arguments, experiment=experiment, registry=registry, run_name=run_name,
                             caching=caching, namespace=namespace, pipeline_root=pipeline_root, model_cache_pvc=model_cache_pvc)
    except Exception as err:  # the KFP client raises many kinds (HTTP, auth, connection): report, don't trace
        _fail(f"submitting to {host}: {type(err).__name__}: {err}", 1)
    typer.echo(f"run {run_id}: {url}")


@app.command("schedule")
def schedule_cmd(
    host: str = HOST,
    cron: str = typer.Option(..., "--cron", help="KFP cron, 6 fields, seconds first: 'second minute hour day-of-month "
                             "month day-of-week', e.g. '0 0 3 * * 1' = Mondays 03:00; or @daily, @every 12h"),
    pipeline: str = typer.Option("retraining", "--pipeline", "-p", help="retraining (default) or training"),
    overrides: list[str] = SET,
    experiment: str = EXPERIMENT,
    job_name: str = typer.Option("lad-retraining", "--name", help="name of the recurring run"),
    caching: bool = typer.Option(False, "--caching/--no-caching", help="reuse earlier step results (off: each run retrains)"),
    namespace: Optional[str] = NAMESPACE,
    pipeline_root: Optional[str] = PIPELINE_ROOT,
    registry: str = REGISTRY,
    model_cache_pvc: Optional[str] = MODEL_CACHE_PVC,
) -> None:
    """Create a recurring run (default: the retraining pipeline) on a Kubeflow Pipelines server.

    Missed runs are not caught up and at most one runs at a time.
    """
    from lad.pipeline.schedule import ScheduleError, check_pipeline_root, schedule, validate_cron

    try:
        cron = validate_cron(cron)
        check_pipeline_root(pipeline_root)
    except ScheduleError as err:
        _fail(str(err))
    arguments = _arguments(pipeline, overrides)
    try:
        job_id = schedule(host, pipeline, cron, arguments, experiment=experiment, job_name=job_name, registry=registry,
                          caching=caching, namespace=namespace, pipeline_root=pipeline_root, model_cache_pvc=model_cache_pvc)
    except Exception as err:  # the KFP client raises many kinds (HTTP, auth, connection): report, don't trace
        _fail(f"scheduling on {host}: {type(err).__name__}: {err}", 1)
    typer.echo(f"recurring run {job_id} ({job_name}): {pipeline} on '{cron}'")
