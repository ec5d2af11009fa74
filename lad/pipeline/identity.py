"""Which pipeline run a step belongs to, without making it a task input.

KFP's cache key covers a task's inputs, so a run id passed as an input (``{{$.pipeline_job_uuid}}``)
makes every run's key differ and caching never hits. The run id reaches the steps as environment
variables instead: on a cluster from the pod's own metadata through the downward API (KFP puts
the label ``pipeline/runid`` on every pod of a run; the run's name, where the pod carries the
annotation, else the id), in ``lad pipeline run --local`` set by the local runner before the steps start.
"""

from __future__ import annotations

import os

RUN_ID_ENV = "LAD_PIPELINE_RUN_ID"
RUN_NAME_ENV = "LAD_PIPELINE_RUN_NAME"
# Where KFP's backend records the run on the pods it starts (backend/src/common/util: LabelKeyWorkflowRunId,
# AnnotationKeyRunName), as downward-API field paths.
RUN_ID_FIELD = "metadata.labels['pipeline/runid']"
RUN_NAME_FIELD = "metadata.annotations['pipelines.kubeflow.org/run_name']"


def current_run() -> tuple[str, str]:
    """(run id, run name) of the pipeline run this process is a step of; ("", "") outside one.
    A missing name is the id."""
    run_id = os.environ.get(RUN_ID_ENV, "").strip()
    return run_id, (os.environ.get(RUN_NAME_ENV, "").strip() or run_id)
