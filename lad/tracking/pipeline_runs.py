"""The lifecycle of a pipeline run in MLflow: one run per KFP run, found or created by whichever
step asks first, and marked FAILED or KILLED when a step fails, is interrupted or is stopped."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

from lad.tracking.runs import TAG_FAILED_STAGE, TAG_PIPELINE_RUN, Runs, StepTerminated, quote


@contextmanager
def sigterm_raises() -> Iterator[None]:
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


class PipelineRuns(Runs):
    """The run of a pipeline run and the steps that nest under it, each in its own process."""

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
        with sigterm_raises():
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
        where = f"tags.`{TAG_PIPELINE_RUN}` = '{quote(key)}'"
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
