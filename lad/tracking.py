"""Experiment tracking and the model registry, on MLflow.

One MLflow run per pipeline run, one nested run per stage. A stage logs its full typed config
as params, per-step metrics, artifacts (reports, plots, rollout samples) and its dataset inputs
with their content hashes. Trained models are logged with the transformers flavor and registered
as versions of a registered model, tagged with what produced them (data hash, config hash, code
version, base model) and how they scored. The alias ``champion`` names the model in service,
``challenger`` the latest candidate; :func:`promote` moves ``champion`` only when the challenger
beats it by a margin on the same benchmarks, and writes the reason on the version either way.

Where MLflow lives is configuration: by default the embedded sqlite store ``mlflow.db`` in the
working directory (no server); any tracking URI otherwise (``http://mlflow:5000``), with
artifacts wherever the experiment's artifact location points (for instance ``s3://bucket/mlflow``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from pydantic import BaseModel, Field

CHAMPION = "champion"
CHALLENGER = "challenger"
METRIC_TAG_PREFIX = "metric."
TAG_BENCHMARKS = "benchmarks"
TAG_DATA_HASH = "data_hash"
TAG_CONFIG_HASH = "config_hash"
TAG_CODE_VERSION = "code_version"
TAG_BASE_MODEL = "base_model"
TAG_DECISION = "promotion.decision"
TAG_REASON = "promotion.reason"
TAG_STAGE = "lad.stage"
TAG_REGISTRATION_KEY = "registration_key"
TAG_PIPELINE_RUN = "lad.pipeline_run"
TAG_FAILED_STAGE = "lad.failed_stage"  # on a pipeline run: the stage whose step failed last
TAG_PARENT = "mlflow.parentRunId"

# MLflow rejects param values longer than this; the full config is also logged as config.json.
_MAX_PARAM_VALUE = 6000
_PARAMS_PER_BATCH = 100  # MLflow's log_batch limit
_SCORE_TOLERANCE = 1e-9  # so 0.55 - 0.50 counts as a 0.05 improvement despite binary rounding


class TrackingError(RuntimeError):
    """A tracking or registry operation could not be done; the message says which and why."""


class StepTerminated(BaseException):
    """SIGTERM during a pipeline step: Kubernetes stopping the pod (a cancelled run, a drained
    or pre-empted node)."""


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM raises StepTerminated in the main thread for the block's duration, so the step
    can record how it ended before the process goes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum, frame):
        raise StepTerminated("SIGTERM")

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class TrackingConfig(BaseModel):
    """Where runs and models are recorded."""

    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; None: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db (embedded)"
    )
    registry_uri: str | None = Field(
        None, description="model registry URI; None: the tracking URI when that is set here, else $MLFLOW_REGISTRY_URI, else the tracking URI"
    )
    experiment: str = Field("lad", min_length=1, description="MLflow experiment that holds the runs")
    artifact_location: str | None = Field(
        None, description="artifact root of the experiment when it is created (e.g. s3://bucket/mlflow); None: the server's default"
    )

    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"

    def resolved_registry_uri(self) -> str:
        if self.registry_uri:
            return self.registry_uri
        # An explicit tracking URI brings its own registry; the environment variable may be a
        # leftover of an earlier Tracker in this process (MLflow exports the URIs it is given).
        if self.tracking_uri:
            return self.tracking_uri
        return os.environ.get("MLFLOW_REGISTRY_URI") or self.resolved_tracking_uri()


# --------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------


def _plain(config: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    return config.model_dump(mode="json") if isinstance(config, BaseModel) else json.loads(json.dumps(dict(config), default=str))


def flatten_params(config: BaseModel | Mapping[str, Any]) -> dict[str, str]:
    """Nested config -> MLflow params with dotted keys; lists and scalars as JSON text.

    Values longer than MLflow's limit are cut with a marker (the full config is logged as
    config.json next to them).
    """
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and (value or not prefix):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
            return
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        if len(text) > _MAX_PARAM_VALUE:
            marker = "...(cut; see config.json)"
            text = text[: _MAX_PARAM_VALUE - len(marker)] + marker
        out[metric_key(prefix)] = text

    walk("", _plain(config))
    return out


def config_hash(config: BaseModel | Mapping[str, Any]) -> str:
    """sha256 of the config's canonical JSON: equal configs, equal hashes."""
    return hashlib.sha256(json.dumps(_plain(config), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def metric_key(name: str) -> str:
    """A name MLflow accepts as metric, param or tag key: other characters (e.g. '@' in
    'avg@32') become '_'."""
    key = re.sub(r"[^/\w.\- :]", "_", name)
    if not key:
        raise TrackingError(f"empty metric/param name {name!r}")
    return key


def code_version() -> str:
    """The lad version, plus the git commit when running from a checkout (``-dirty`` if modified)."""
    import lad

    here = Path(lad.__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return lad.__version__
    return f"{lad.__version__}+g{sha[:12]}{'-dirty' if dirty else ''}"


def model_requirements() -> list[str]:
    """pip requirements of a logged transformers model, pinned to what is installed here.

    Passed explicitly because MLflow's inference of requirements pulls in torchvision, which does
    not install next to this torch. Local version tags (``+cpu``) are dropped: the same
    version is served by the CUDA or CPU index at install time.
    """
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg).split('+')[0]}" for pkg in ("torch", "transformers", "tokenizers", "safetensors")]


@dataclass(frozen=True)
class VersionScore:
    """What the promotion gate reads from a registered model version."""

    version: str
    metrics: dict[str, float]
    benchmarks: str


def version_score(mv) -> VersionScore:
    metrics = {}
    for key, value in mv.tags.items():
        if key.startswith(METRIC_TAG_PREFIX):
            try:
                metrics[key[len(METRIC_TAG_PREFIX) :]] = float(value)
            except ValueError:
                raise TrackingError(f"model version {mv.name} v{mv.version}: tag {key}={value!r} is not a number") from None
    return VersionScore(str(mv.version), metrics, mv.tags.get(TAG_BENCHMARKS, ""))


def decide_promotion(
    candidate: VersionScore, champion: VersionScore | None, metric: str, margin: float, higher_is_better: bool = True
) -> tuple[bool, str]:
    """(promote?, reason). The candidate must beat the champion by at least ``margin`` on
    ``metric``, measured on the same benchmarks."""
    metric = metric_key(metric)
    if metric not in candidate.metrics:
        return False, f"refused: v{candidate.version} has no metric {metric!r} (has {sorted(candidate.metrics)})"
    value = candidate.metrics[metric]
    if champion is None:
        return True, f"promoted: no champion yet; v{candidate.version} {metric}={value:.6g}"
    if champion.version == candidate.version:
        return False, f"refused: v{candidate.version} is already the champion"
    if metric not in champion.metrics:
        return False, f"refused: champion v{champion.version} has no metric {metric!r} to compare with"
    if candidate.benchmarks != champion.benchmarks:
        return False, (
            f"refused: benchmarks differ (v{candidate.version}: {candidate.benchmarks or 'none'}; "
            f"champion v{champion.version}: {champion.benchmarks or 'none'})"
        )
    best = champion.metrics[metric]
    gain = value - best if higher_is_better else best - value
    direction = "higher" if higher_is_better else "lower"
    detail = (
        f"{metric} {value:.6g} vs champion v{champion.version} {best:.6g}: "
        f"gain {gain:.6g} ({direction} is better), margin {margin:g}"
    )
    if gain >= margin - _SCORE_TOLERANCE:
        return True, f"promoted: {detail}"
    return False, f"refused: {detail}"


@dataclass(frozen=True)
class PromotionResult:
    promoted: bool
    reason: str
    champion: str | None  # the champion's version after the decision


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


class RunContext:
    """A live MLflow run (a pipeline run or one stage of it)."""

    def __init__(self, tracker: "Tracker", run_id: str):
        self.tracker = tracker
        self.run_id = run_id

    @property
    def client(self):
        return self.tracker.client

    def log_config(self, config: BaseModel | Mapping[str, Any]) -> str:
        """The config as params (flattened), as config.json, and its hash as a tag; returns the hash."""
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in flatten_params(config).items()]
        for i in range(0, len(params), _PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[i : i + _PARAMS_PER_BATCH])
        self.client.log_dict(self.run_id, _plain(config), "config.json")
        digest = config_hash(config)
        self.client.set_tag(self.run_id, TAG_CONFIG_HASH, digest)
        return digest

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(metric_key(k), float(v), now, int(step)) for k, v in metrics.items()]
        for i in range(0, len(batch), 1000):  # MLflow's metrics-per-batch limit
            self.client.log_batch(self.run_id, metrics=batch[i : i + 1000])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, metric_key(k), str(v))

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """A file or a whole folder (reports, plots, rollout samples)."""
        p = Path(path)
        if p.is_dir():
            self.client.log_artifacts(self.run_id, str(p), artifact_path)
        elif p.is_file():
            self.client.log_artifact(self.run_id, str(p), artifact_path)
        else:
            raise TrackingError(f"log_artifact {p}: no such file or folder")

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, obj, artifact_file)

    def log_figure(self, figure, artifact_file: str) -> None:
        self.client.log_figure(self.run_id, figure, artifact_file)

    def log_dataset(self, uri: str | os.PathLike, *, name: str, context: str = "train") -> str:
        """Record a dataset input (a file or a published folder) with its content hash; returns the sha256."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag

        from lad.storage import content_hash

        sha = content_hash(uri)
        # MLflow stores at most 36 characters of digest; the full sha256 goes in an input tag.
        dataset = MetaDataset(resolve_dataset_source(str(uri)), name=name, digest=sha[:16])
        tags = [InputTag("mlflow.data.context", context), InputTag("lad.sha256", sha)]
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=tags)])
        return sha

    def log_model(
        self, model, tokenizer, *, name: str = "model", max_new_tokens: int = 64, metadata: Mapping[str, Any] | None = None
    ) -> str:
        """Log a causal LM with the transformers flavor (text-generation); returns its ``models:/`` URI.

        Loading it back with ``mlflow.pyfunc.load_model`` gives a model whose ``predict`` takes a
        list of prompts and returns the generated continuations (greedy by default; the params
        ``max_new_tokens`` and ``do_sample`` may be passed at predict time).
        """
        import mlflow
        import mlflow.transformers
        from mlflow.models import infer_signature

        active = mlflow.active_run()
        if active is None or active.info.run_id != self.run_id:
            raise TrackingError(f"log_model: run {self.run_id} is not the active run; call it inside its `with` block")
        signature = infer_signature(["a prompt"], ["a continuation"], params={"max_new_tokens": max_new_tokens, "do_sample": False})
        info = mlflow.transformers.log_model(
            {"model": model, "tokenizer": tokenizer},
            name=name,
            task="text-generation",
            signature=signature,
            pip_requirements=model_requirements(),
            model_config={"return_full_text": False},
            metadata=dict(metadata or {}),
        )
        return info.model_uri


class Tracker:
    """Runs, stages and the registry of one tracking configuration.

    Creating a tracker, starting a run or a stage, and registering a model make its URIs the
    process's current MLflow tracking and registry URIs: MLflow's fluent API (the active-run
    stack, model logging, and the registry's lookup of a logged model) reads them from there.
    """

    def __init__(self, config: TrackingConfig | None = None):
        from mlflow import MlflowClient

        self.config = config or TrackingConfig()
        self.tracking_uri = self.config.resolved_tracking_uri()
        self.registry_uri = self.config.resolved_registry_uri()
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
        self._experiment_id: str | None = None
        self._make_current()

    def _make_current(self) -> None:
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri)

    @property
    def experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(self.config.experiment)
            if exp is None:
                try:
                    self._experiment_id = self.client.create_experiment(
                        self.config.experiment, artifact_location=self.config.artifact_location
                    )
                except MlflowException as err:  # created meanwhile by a parallel step
                    exp = self.client.get_experiment_by_name(self.config.experiment)
                    if exp is None:
                        raise TrackingError(f"experiment {self.config.experiment!r}: cannot create it: {err}") from err
            if self._experiment_id is None:
                self._experiment_id = exp.experiment_id
        return self._experiment_id

    @contextmanager
    def run(
        self,
        name: str,
        *,
        config: BaseModel | Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> Iterator[RunContext]:
        """The run of one pipeline run; ``run_id`` resumes one started by an earlier step.

        Ends FINISHED, or FAILED when the block raises.
        """
        import mlflow

        self._make_current()
        with mlflow.start_run(run_id=run_id, experiment_id=None if run_id else self.experiment_id, run_name=None if run_id else name) as active:
            ctx = RunContext(self, active.info.run_id)
            if tags:
                ctx.set_tags(tags)
            if config is not None:
                ctx.log_config(config)
            yield ctx

    @contextmanager
    def stage(
        self,
        name: str,
        *,
        config: BaseModel | Mapping[str, Any] | None = None,
        parent_run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> Iterator[RunContext]:
        """A nested run for one stage: under the active run, or under ``parent_run_id`` (a
        pipeline step in another process passes the pipeline run's id).

        Under ``parent_run_id``, a stage of the same name already there is resumed (a retried
        step adds no run); it keeps the params of its first attempt, as MLflow params cannot change.
        The stage ends FINISHED, FAILED when the block raises, KILLED when it is interrupted or
        terminated (see :meth:`pipeline_step`).
        """
        import mlflow

        self._make_current()
        active = mlflow.active_run()
        if active is None and parent_run_id is None:
            raise TrackingError(f"stage {name!r}: no active pipeline run and no parent_run_id given")
        if active is not None and parent_run_id not in (None, active.info.run_id):
            raise TrackingError(f"stage {name!r}: parent_run_id {parent_run_id} is not the active run {active.info.run_id}")
        where = f"tags.`{TAG_PARENT}` = '{parent_run_id}' and tags.`{TAG_STAGE}` = '{_quote(name)}'"
        earlier = self._runs(where) if parent_run_id else []
        kwargs: dict[str, Any] = {"nested": active is not None}
        if earlier:
            kwargs["run_id"] = earlier[0].info.run_id
        else:
            kwargs.update(run_name=name, experiment_id=self.experiment_id, tags={TAG_STAGE: name})
            if parent_run_id is not None:
                kwargs["parent_run_id"] = parent_run_id
        with mlflow.start_run(**kwargs) as run:
            ctx = RunContext(self, run.info.run_id)
            try:
                if tags:
                    ctx.set_tags(tags)
                if config is not None and not earlier:
                    ctx.log_config(config)
                yield ctx
            except (KeyboardInterrupt, StepTerminated):
                mlflow.end_run("KILLED")
                raise

    @contextmanager
    def pipeline_step(self, run_id: str, step: str) -> Iterator[None]:
        """One step of pipeline run ``run_id`` (its MLflow run), in the step's own process.

        A step that raises marks the pipeline run FAILED and names itself in the tag
        ``lad.failed_stage``, so a failed pipeline does not stay RUNNING in MLflow. SIGTERM (a
        cancelled KFP run, a drained node) or an interrupt marks it KILLED; SIGTERM then ends the
        process with status 143. A retry of the step that failed sets the pipeline run RUNNING
        again; another step starting after it (a parallel branch) leaves the failure standing.
        A step killed outright (SIGKILL: the OOM killer) leaves the run as it was.
        """
        run = self.client.get_run(run_id)
        if run.info.status in ("FAILED", "KILLED") and run.data.tags.get(TAG_FAILED_STAGE) == step:
            self.client.update_run(run_id, status="RUNNING")
            self.client.delete_tag(run_id, TAG_FAILED_STAGE)
        with _sigterm_raises():
            try:
                yield
            except GeneratorExit:
                raise
            except BaseException as err:
                killed = isinstance(err, (KeyboardInterrupt, StepTerminated))
                self.client.set_tag(run_id, TAG_FAILED_STAGE, step)
                self.client.set_terminated(run_id, "KILLED" if killed else "FAILED")
                if isinstance(err, StepTerminated):
                    raise SystemExit(128 + signal.SIGTERM) from err
                raise

    def pipeline_run(self, key: str, name: str) -> str:
        """The id of the run of pipeline run ``key`` (e.g. the KFP run's id), created as ``name``
        by the first step that asks; later and retried steps get the same run to nest under."""
        where = f"tags.`{TAG_PIPELINE_RUN}` = '{_quote(key)}'"
        found = self._runs(where)
        if found:
            return found[0].info.run_id
        mine = self.client.create_run(self.experiment_id, run_name=name, tags={TAG_PIPELINE_RUN: key}).info.run_id
        # Steps may start at once (the retraining pipeline evaluates two models in parallel):
        # all keep the oldest run, and each deletes its own if that is not it.
        oldest = self._runs(where)[0].info.run_id
        if oldest != mine:
            self.client.delete_run(mine)
        return oldest

    def _runs(self, where: str) -> list:
        """Live runs of the experiment matching ``where``, oldest first."""
        found = self.client.search_runs([self.experiment_id], filter_string=where)
        return sorted(found, key=lambda r: (r.info.start_time, r.info.run_id))

    # ----------------------------------------------------------------------------------------
    # Registry
    # ----------------------------------------------------------------------------------------

    def _logged_model(self, model_uri: str):
        """The LoggedModel behind a ``models:/m-...`` URI (what :meth:`RunContext.log_model` returns)."""
        from mlflow.exceptions import MlflowException

        if not model_uri.startswith("models:/m-"):
            raise TrackingError(f"register {model_uri}: expected the models:/m-... URI returned by log_model")
        try:
            logged = self.client.get_logged_model(model_uri[len("models:/") :].split("/", 1)[0])
        except MlflowException as err:
            raise TrackingError(f"register {model_uri}: {err.message}") from err
        if not logged.source_run_id:
            raise TrackingError(f"register {model_uri}: the logged model has no source run")
        return logged

    def register_model(
        self,
        name: str,
        model_uri: str,
        *,
        metrics: Mapping[str, float] | None = None,
        benchmarks: list[str] | None = None,
        data_hash: str | None = None,
        config_hash: str | None = None,
        base_model: str | None = None,
        tags: Mapping[str, Any] | None = None,
        alias: str | None = CHALLENGER,
        idempotency_key: str | None = None,
    ):
        """Register a logged model as a version of ``name``; returns the ModelVersion.

        Registering a model of a run that already has a version returns that version (a retried
        pipeline step must not create a second one); its tags are re-applied. A step that logs
        its model in a fresh run on every attempt passes ``idempotency_key`` (e.g. the pipeline
        run id and the step's name): a version carrying the same key is returned instead of a new
        one. ``alias`` (by default ``challenger``) is set on the version unless it is already the
        champion.
        """
        from mlflow.exceptions import MlflowException

        self._make_current()
        logged = self._logged_model(model_uri)
        run_id = logged.source_run_id
        version_tags = {
            TAG_CODE_VERSION: code_version(),
            TAG_BENCHMARKS: ",".join(sorted(benchmarks or [])),
            **{f"{METRIC_TAG_PREFIX}{metric_key(k)}": repr(float(v)) for k, v in (metrics or {}).items()},
        }
        for key, value in ((TAG_DATA_HASH, data_hash), (TAG_CONFIG_HASH, config_hash), (TAG_BASE_MODEL, base_model)):
            if value is not None:
                version_tags[key] = value
        version_tags.update({metric_key(k): str(v) for k, v in (tags or {}).items()})
        if idempotency_key:
            version_tags[TAG_REGISTRATION_KEY] = idempotency_key

        try:
            self.client.create_registered_model(name)
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise TrackingError(f"register {name}: {err.message}") from err
        existing = self.client.search_model_versions(f"name = '{_quote(name)}' and run_id = '{run_id}'")
        if not existing and idempotency_key:
            existing = self.client.search_model_versions(
                f"name = '{_quote(name)}' and tags.{TAG_REGISTRATION_KEY} = '{_quote(idempotency_key)}'"
            )
        if existing:
            mv = min(existing, key=lambda v: int(v.version))
            for k, v in version_tags.items():
                self.client.set_model_version_tag(name, mv.version, k, v)
        else:
            mv = self.client.create_model_version(
                name, source=model_uri, run_id=run_id, tags=version_tags, model_id=logged.model_id
            )
        if alias and CHAMPION not in self._aliases_of(name, mv.version):
            self.client.set_registered_model_alias(name, alias, mv.version)
        return self.client.get_model_version(name, mv.version)

    def _aliases_of(self, name: str, version: str) -> list[str]:
        return list(self.client.get_model_version(name, str(version)).aliases)

    def get_version(self, name: str, version_or_alias: str):
        """A model version by number or by alias (``champion``); TrackingError when missing."""
        from mlflow.exceptions import MlflowException

        try:
            if str(version_or_alias).isdigit():
                return self.client.get_model_version(name, str(version_or_alias))
            return self.client.get_model_version_by_alias(name, version_or_alias)
        except MlflowException as err:
            raise TrackingError(f"model {name!r} version/alias {version_or_alias!r}: {err.message}") from err

    def champion(self, name: str):
        """The champion version of ``name``, or None."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException as err:
            if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                return None
            raise

    def list_versions(self, name: str | None = None) -> list:
        """Versions of one registered model (or of all), newest first within each model."""
        where = f"name = '{_quote(name)}'" if name else ""
        found = self.client.search_model_versions(where) if where else self.client.search_model_versions()
        # Search results carry no aliases; fetching each version does.
        versions = [self.client.get_model_version(v.name, str(v.version)) for v in found]
        return sorted(versions, key=lambda v: (v.name, -int(v.version)))

    def promote(self, name: str, version: str | int, metric: str, margin: float = 0.0, *, higher_is_better: bool = True) -> PromotionResult:
        """Make ``version`` the champion if it beats the current one by ``margin`` on ``metric``
        (same benchmarks). Otherwise nothing moves. The decision and its reason are written on
        the version as tags ``promotion.decision`` and ``promotion.reason``."""
        if margin < 0:
            raise TrackingError(f"promote: margin must be >= 0, got {margin}")
        candidate = self.get_version(name, str(version))
        champ = self.champion(name)
        promoted, reason = decide_promotion(
            version_score(candidate), version_score(champ) if champ else None, metric, margin, higher_is_better
        )
        v = str(candidate.version)
        if promoted:
            self.client.set_registered_model_alias(name, CHAMPION, v)
            if CHALLENGER in candidate.aliases:
                self.client.delete_registered_model_alias(name, CHALLENGER)
        self.client.set_model_version_tag(name, v, TAG_DECISION, "promoted" if promoted else "refused")
        self.client.set_model_version_tag(name, v, TAG_REASON, reason)
        after = self.champion(name)
        return PromotionResult(promoted, reason, str(after.version) if after else None)


def _quote(name: str) -> str:
    return name.replace("'", "\\'")


def register_model(name: str, model_uri: str, *, config: TrackingConfig | None = None, **kwargs):
    """:meth:`Tracker.register_model` with a tracker for ``config`` (default: the embedded store)."""
    return Tracker(config).register_model(name, model_uri, **kwargs)


def promote(
    name: str, version: str | int, metric: str, margin: float = 0.0, *, config: TrackingConfig | None = None, higher_is_better: bool = True
) -> PromotionResult:
    """:meth:`Tracker.promote` with a tracker for ``config`` (default: the embedded store)."""
    return Tracker(config).promote(name, version, metric, margin, higher_is_better=higher_is_better)
