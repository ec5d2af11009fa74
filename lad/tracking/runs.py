"""Runs on MLflow: one run per pipeline run, one nested run per stage. A stage logs its full
typed config as params, per-step metrics, artifacts (reports, plots, rollout samples), its dataset
inputs with their content hashes, and its trained model as a chat model (lad.tracking.chat_model).

Where MLflow lives is configuration: by default the embedded sqlite store ``mlflow.db`` in the
working directory (no server); any tracking URI otherwise (``http://mlflow:5000``), with
artifacts wherever the experiment's artifact location points (for instance ``s3://bucket/mlflow``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from lad.tracking.chat_model import ChatSettings

METRIC_TAG_PREFIX = "metric."
TAG_BENCHMARKS = "benchmarks"
TAG_DATA_HASH = "data_hash"
TAG_CONFIG_HASH = "config_hash"
TAG_CODE_VERSION = "code_version"
TAG_BASE_MODEL = "base_model"
TAG_STAGE = "lad.stage"
TAG_PIPELINE_RUN = "lad.pipeline_run"
TAG_FAILED_STAGE = "lad.failed_stage"  # on a pipeline run: the stage whose step failed last
TAG_PARENT = "mlflow.parentRunId"

# MLflow rejects param values longer than this; the full config is also logged as config.json.
_MAX_PARAM_VALUE = 6000
_PARAMS_PER_BATCH = 100  # MLflow's log_batch limit


class TrackingError(RuntimeError):
    """A tracking or registry operation could not be done; the message says which and why."""


class StepTerminated(BaseException):
    """SIGTERM during a pipeline step: Kubernetes stopping the pod (a cancelled run, a drained
    or pre-empted node)."""


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
    """pip requirements of a logged chat model (what the lad code it carries imports to load and
    run it), pinned to what is installed here.

    Passed explicitly because MLflow's inference of requirements pulls in torchvision, which does
    not install next to this torch. Local version tags (``+cpu``) are dropped: the same
    version is served by the CUDA or CPU index at install time.
    """
    from importlib.metadata import version

    packages = ("torch", "transformers", "tokenizers", "safetensors", "pydantic", "jinja2")
    return [f"{pkg}=={version(pkg).split('+')[0]}" for pkg in packages]


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


class RunContext:
    """A live MLflow run (a pipeline run or one stage of it)."""

    def __init__(self, tracker: "Runs", run_id: str):
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

    def log_metrics(self, metrics: Mapping[str, float], step: int, *, model_id: str | None = None) -> None:
        """Metrics at ``step``; with ``model_id`` (a LoggedModel's, ``m-...``) they are linked to that model too."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(metric_key(k), float(v), now, int(step), model_id=model_id) for k, v in metrics.items()]
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

    def log_environment(self) -> None:
        """What this process runs on (:mod:`lad.environment`): a few tags, and environment.json
        with the installed set and how it compares with its lock."""
        from lad.environment import describe, summary_tags

        record = describe()
        self.set_tags(summary_tags(record))
        self.log_dict(record, "environment.json")

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, obj, artifact_file)

    def log_figure(self, figure, artifact_file: str) -> None:
        self.client.log_figure(self.run_id, figure, artifact_file)

    def log_dataset(self, uri: str | os.PathLike, *, name: str, context: str = "train") -> str:
        """Record a dataset input (a file or a published folder) with its content hash; returns the sha256."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source

        from lad.storage import content_hash

        sha = content_hash(uri)
        self._log_input(resolve_dataset_source(str(uri)), name=name, context=context, sha=sha)
        return sha

    def log_records(self, records: list[dict], *, name: str, context: str, source: Mapping[str, Any]) -> str:
        """Record a dataset input made in memory (synthetic problems, a benchmark's problems as
        evaluated) with the sha256 of its records as canonical JSON lines; ``source`` says how they
        were made (a generator's spec, a file and its adapter) and is shown as the input's source.
        Returns the sha256."""
        from mlflow.data.code_dataset_source import CodeDatasetSource

        text = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in records)
        sha = hashlib.sha256(text.encode()).hexdigest()
        self._log_input(CodeDatasetSource(json.loads(json.dumps(dict(source), default=str))), name=name, context=context, sha=sha,
                        rows=len(records))
        return sha

    def _log_input(self, source, *, name: str, context: str, sha: str, rows: int | None = None) -> None:
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag

        # MLflow stores at most 36 characters of digest; the full sha256 goes in an input tag.
        dataset = MetaDataset(source, name=name, digest=sha[:16])
        tags = [InputTag("mlflow.data.context", context), InputTag("lad.sha256", sha)]
        if rows is not None:
            tags.append(InputTag("lad.rows", str(rows)))
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=tags)])

    def log_model(
        self, model, tokenizer=None, *, name: str = "model", chat: "ChatSettings | None" = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Log a causal LM as a chat model (:mod:`lad.tracking.chat_model`); returns its ``models:/`` URI.

        ``model`` is the path of a Hugging Face checkpoint folder (config, weights and tokenizer
        files), whose files are copied as they are without loading the weights, so logging costs
        the same memory for any model size; or a model object with its ``tokenizer``, saved to
        such a folder first. ``chat``: the generation settings a request that sets none gets
        (default: :class:`ChatSettings`'s, greedy). Loaded back with ``mlflow.pyfunc.load_model``,
        ``predict({"messages": [...]})`` answers with an OpenAI-style chat completion.
        """
        import tempfile

        import mlflow

        from lad.tracking.chat_model import ChatSettings, log_chat_model

        active = mlflow.active_run()
        if active is None or active.info.run_id != self.run_id:
            raise TrackingError(f"log_model: run {self.run_id} is not the active run; call it inside its `with` block")
        if isinstance(model, (str, os.PathLike)):
            if not (Path(model) / "config.json").is_file():
                raise TrackingError(f"log_model: {model} is not a Hugging Face checkpoint folder (no config.json)")
            return log_chat_model(name, str(model), chat or ChatSettings(), metadata)
        from lad.modeling import save_model

        with tempfile.TemporaryDirectory(prefix="lad-log-model-") as tmp:
            return log_chat_model(name, save_model(model, tokenizer, Path(tmp) / "checkpoint", {}), chat or ChatSettings(), metadata)


class Runs:
    """Runs and stages of one tracking configuration.

    Creating one, starting a run or a stage, and registering a model make its URIs the process's
    current MLflow tracking and registry URIs: MLflow's fluent API (the active-run stack, model
    logging, and the registry's lookup of a logged model) reads them from there.
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
        system_metrics: bool = False,
    ) -> Iterator[RunContext]:
        """The run of one pipeline run; ``run_id`` resumes one started by an earlier step.

        Ends FINISHED, or FAILED when the block raises.
        """
        import mlflow

        self._make_current()
        with mlflow.start_run(run_id=run_id, experiment_id=None if run_id else self.experiment_id, run_name=None if run_id else name,
                              log_system_metrics=system_metrics) as active:
            ctx = RunContext(self, active.info.run_id)
            if tags:
                ctx.set_tags(tags)
            if config is not None:
                ctx.log_config(config)
            if run_id is None:
                ctx.log_environment()
            yield ctx

    @contextmanager
    def stage(
        self,
        name: str,
        *,
        config: BaseModel | Mapping[str, Any] | None = None,
        parent_run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        system_metrics: bool = False,
    ) -> Iterator[RunContext]:
        """A nested run for one stage: under the active run, or under ``parent_run_id`` (a
        pipeline step in another process passes the pipeline run's id). ``system_metrics``:
        MLflow samples CPU, memory and (with nvidia-ml-py, which vLLM brings) GPU use into the run.

        Under ``parent_run_id``, a stage of the same name already there is resumed (a retried
        step adds no run); it keeps the params of its first attempt, as MLflow params cannot change.
        The stage ends FINISHED, FAILED when the block raises, KILLED when it is interrupted or
        terminated (see :meth:`lad.tracking.pipeline_runs.PipelineRuns.pipeline_step`).
        """
        import mlflow

        self._make_current()
        active = mlflow.active_run()
        if active is None and parent_run_id is None:
            raise TrackingError(f"stage {name!r}: no active pipeline run and no parent_run_id given")
        if active is not None and parent_run_id not in (None, active.info.run_id):
            raise TrackingError(f"stage {name!r}: parent_run_id {parent_run_id} is not the active run {active.info.run_id}")
        where = f"tags.`{TAG_PARENT}` = '{parent_run_id}' and tags.`{TAG_STAGE}` = '{quote(name)}'"
        earlier = self._runs(where) if parent_run_id else []
        kwargs: dict[str, Any] = {"nested": active is not None, "log_system_metrics": system_metrics}
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
                ctx.log_environment()  # a retried step may run on another node: its own record
                yield ctx
            except (KeyboardInterrupt, StepTerminated):
                mlflow.end_run("KILLED")
                raise

    def _runs(self, where: str) -> list:
        """Live runs of the experiment matching ``where``, oldest first."""
        found = self.client.search_runs([self.experiment_id], filter_string=where)
        return sorted(found, key=lambda r: (r.info.start_time, r.info.run_id))


def quote(name: str) -> str:
    """``name`` inside a single-quoted MLflow search filter."""
    return name.replace("'", "\\'")
