"""Submitting to a Kubeflow Pipelines server: one run, or a recurring run on a cron schedule.

KFP's cron (the robfig/cron format of its scheduler) has SIX fields, seconds first:

    second  minute  hour  day-of-month  month  day-of-week
    0       0       3     *             *      1            every Monday at 03:00:00

A usual five-field crontab line is one field short; it is refused with the six-field form
suggested. Descriptors (@hourly, @daily, @weekly, @monthly, @yearly, @every 6h) are accepted.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any, Optional

FIELDS = (("second", 0, 59), ("minute", 0, 59), ("hour", 0, 23), ("day-of-month", 1, 31), ("month", 1, 12), ("day-of-week", 0, 6))
NAMES = {
    "month": {m: i for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(), start=1)},
    "day-of-week": {d: i for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())},
}
DESCRIPTORS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_EVERY = re.compile(r"^@every\s+(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


class ScheduleError(ValueError):
    """A bad cron expression or a failed call to the KFP server; the message says what to change."""


# Object stores the steps reach through lad.storage's S3 client: s3:// (AWS S3 or any S3 endpoint) and
# minio://, which a standard Kubeflow install uses for its own MinIO (the same S3 API; endpoint from AWS_ENDPOINT_URL).
PIPELINE_ROOT_SCHEMES = ("s3://", "minio://")


def check_pipeline_root(root: Optional[str]) -> Optional[str]:
    """The pipeline root (where KFP writes the runs' artifacts) if it is one the steps can share
    files through, else ScheduleError; None or "" leaves the server's default."""
    if not root:
        return None
    scheme, sep, rest = root.partition("://")
    if not sep or f"{scheme}://" not in PIPELINE_ROOT_SCHEMES or not rest.split("/")[0]:
        raise ScheduleError(f"--pipeline-root {root!r}: expected s3://BUCKET/PREFIX or minio://BUCKET/PREFIX")
    return root.rstrip("/")


def _value(text: str, field: str, low: int, high: int) -> int:
    names = NAMES.get(field, {})
    if text.upper() in names:
        return names[text.upper()]
    if not text.isdigit():
        raise ScheduleError(f"cron field {field} {text!r}: expected a number {low}-{high}" + (f" or a name ({', '.join(names)})" if names else ""))
    value = int(text)
    if not low <= value <= high:
        raise ScheduleError(f"cron field {field} {text!r}: out of range {low}-{high}")
    return value


def _check_field(text: str, field: str, low: int, high: int) -> None:
    for item in text.split(","):
        base, slash, step = item.partition("/")
        if slash and (not step.isdigit() or int(step) == 0):
            raise ScheduleError(f"cron field {field} {item!r}: the step after '/' must be a positive number")
        if base in ("*", "?"):
            if base == "?" and field not in ("day-of-month", "day-of-week"):
                raise ScheduleError(f"cron field {field}: '?' is allowed in day-of-month and day-of-week only")
            continue
        first, dash, last = base.partition("-")
        a = _value(first, field, low, high)
        if dash and a > _value(last, field, low, high):
            raise ScheduleError(f"cron field {field} {item!r}: range goes backwards")


def validate_cron(expression: str) -> str:
    """The expression, normalised to single spaces, if KFP's scheduler accepts it; else ScheduleError
    explaining the six-field format."""
    expr = " ".join(expression.split())
    if expr in DESCRIPTORS or _EVERY.match(expr):
        return expr
    parts = expr.split(" ") if expr else []
    layout = "KFP cron has 6 fields, seconds first: second minute hour day-of-month month day-of-week (e.g. '0 0 3 * * 1' is Mondays at 03:00)"
    if len(parts) == 5:
        raise ScheduleError(f"cron {expression!r} has 5 fields: {layout}. For the usual crontab meaning use '0 {expr}'")
    if len(parts) != 6:
        raise ScheduleError(f"cron {expression!r} has {len(parts)} fields: {layout}")
    for text, (field, low, high) in zip(parts, FIELDS):
        _check_field(text, field, low, high)
    return expr


def _package(pipeline: str, workdir: str, registry: str, model_cache_pvc: Optional[str]) -> str:
    from lad.pipeline.compile import check_submittable, compile_all

    compile_all(Path(workdir), registry, model_cache_pvc)
    return str(check_submittable(Path(workdir) / f"{pipeline}.yaml"))


def _client(host: str, namespace: Optional[str]):
    import kfp

    return kfp.Client(host=host, namespace=namespace)


def submit(host: str, pipeline: str, arguments: dict[str, Any], *, experiment: str, registry: str, run_name: Optional[str] = None,
           caching: bool = True, namespace: Optional[str] = None, pipeline_root: Optional[str] = None,
           model_cache_pvc: Optional[str] = None) -> tuple[str, str]:
    """Start one run of ``pipeline`` (compiled from the code here, its images in ``registry``);
    returns (run id, its URL). ``pipeline_root``: where the run's artifacts go
    (:func:`check_pipeline_root`); None: the server's default."""
    pipeline_root = check_pipeline_root(pipeline_root)
    client = _client(host, namespace)
    with tempfile.TemporaryDirectory() as tmp:
        run = client.create_run_from_pipeline_package(
            _package(pipeline, tmp, registry, model_cache_pvc), arguments=arguments, run_name=run_name, experiment_name=experiment,
            namespace=namespace, enable_caching=caching, pipeline_root=pipeline_root,
        )
    return run.run_id, f"{host.rstrip('/')}/#/runs/details/{run.run_id}"


def schedule(host: str, pipeline: str, cron: str, arguments: dict[str, Any], *, experiment: str, job_name: str,
             registry: str, caching: bool = True, namespace: Optional[str] = None, max_concurrency: int = 1,
             pipeline_root: Optional[str] = None, model_cache_pvc: Optional[str] = None) -> str:
    """Create a recurring run (no catch-up of missed runs, at most ``max_concurrency`` at once);
    returns its id. The cron and the pipeline root are validated before anything is sent."""
    cron = validate_cron(cron)
    pipeline_root = check_pipeline_root(pipeline_root)
    client = _client(host, namespace)
    exp = client.create_experiment(experiment, namespace=namespace)
    with tempfile.TemporaryDirectory() as tmp:
        job = client.create_recurring_run(
            experiment_id=exp.experiment_id, job_name=job_name, cron_expression=cron, params=arguments,
            pipeline_package_path=_package(pipeline, tmp, registry, model_cache_pvc), max_concurrency=max_concurrency, no_catchup=True,
            enable_caching=caching, pipeline_root=pipeline_root,
        )
    return job.recurring_run_id
