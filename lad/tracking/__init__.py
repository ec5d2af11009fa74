"""Experiment tracking and the model registry, on MLflow, split by job:

    runs.py           runs and stages: params, metrics, artifacts, datasets, logged models
    pipeline_runs.py  the pipeline run's lifecycle across the steps' processes
    registry.py       registered model versions, the champion and challenger aliases, the promotion gate

:class:`Tracker` is all three for one tracking configuration.
"""

from lad.tracking.pipeline_runs import PipelineRuns
from lad.tracking.registry import (
    CHALLENGER, CHAMPION, GATE, TAG_DECISION, TAG_REASON, TAG_REGISTRATION_KEY, GateConfig, PromotionResult, Registry, VersionScore,
    decide_promotion, version_score,
)
from lad.tracking.runs import (
    METRIC_TAG_PREFIX, TAG_BASE_MODEL, TAG_BENCHMARKS, TAG_CODE_VERSION, TAG_CONFIG_HASH, TAG_DATA_HASH, TAG_FAILED_STAGE,
    TAG_PARENT, TAG_PIPELINE_RUN, TAG_STAGE, RunContext, StepTerminated, TrackingConfig, TrackingError, code_version,
    config_hash, flatten_params, metric_key, model_requirements,
)


class Tracker(PipelineRuns, Registry):
    """Runs and stages, the pipeline run's lifecycle and the registry of one tracking configuration."""


__all__ = [
    "CHALLENGER", "CHAMPION", "GATE", "GateConfig", "METRIC_TAG_PREFIX", "TAG_BASE_MODEL", "TAG_BENCHMARKS", "TAG_CODE_VERSION", "TAG_CONFIG_HASH",
    "TAG_DATA_HASH", "TAG_DECISION", "TAG_FAILED_STAGE", "TAG_PARENT", "TAG_PIPELINE_RUN", "TAG_REASON",
    "TAG_REGISTRATION_KEY", "TAG_STAGE", "PromotionResult", "RunContext", "StepTerminated", "Tracker", "TrackingConfig",
    "TrackingError", "VersionScore", "code_version", "config_hash", "decide_promotion", "flatten_params", "metric_key",
    "model_requirements", "version_score",
]
