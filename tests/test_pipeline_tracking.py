"""The pipeline's MLflow record: the steps of one pipeline run, called as the components call
them, give one parent run named after the KFP run with one nested run per stage (config as
params, evaluation numbers and reports on the evaluate stage, the model version linked to the
register stage); retried steps add no run."""

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from servers import mlflow_store  # noqa: F401

from lad.pipeline import steps

EXPERIMENT = "lad-pipeline"
RUN_ID, RUN_NAME = "kfp-run-1", "lad-training-2026-11-26"
TRAIN = dict(group_size=4, steps=1, prompts_per_step=2, micro_batch_size=8, max_new_tokens=8, engine="torch", eval_prompts=0,
             experiment=EXPERIMENT)
EVAL = dict(benchmarks="synthetic_countdown", k=2, limit=2, max_new_tokens=8, experiment=EXPERIMENT)


def step(name: str):
    """One step of the pipeline run, as its component runs it."""
    return steps.pipeline_step(EXPERIMENT, RUN_ID, RUN_NAME, name)


def run_steps(tmp_path: Path) -> dict:
    """prep -> sft -> train -> evaluate -> register of one pipeline run, each step asking for the
    pipeline run as its component does; returns the evaluation summary and the registration."""
    data = tmp_path / "data"
    with step("data_prep"):
        steps.prep([{"name": "synthetic/countdown", "role": "train", "synthetic": {"task": "countdown", "n": 16},
                     "decontaminate": False}], data)
    with step("sft") as parent:
        steps.sft("tiny:1m", tmp_path / "sft", steps=1, micro_batch_size=4, heldout_problems=0, engine="torch",
                  experiment=EXPERIMENT, parent_run_id=parent)
    with step("train") as parent:
        steps.train(tmp_path / "sft", data, tmp_path / "rl", parent_run_id=parent, **TRAIN)
    with step("evaluate") as parent:
        summary = steps.evaluate(tmp_path / "rl", tmp_path / "eval", parent_run_id=parent, **EVAL)
    with step("register") as parent:
        registration = steps.register(tmp_path / "rl", summary, name="policy", experiment=EXPERIMENT,
                                      registration_key=RUN_ID, parent_run_id=parent)
    return {"summary": summary, "registration": registration}


def test_one_parent_run_with_a_nested_run_per_stage_and_retries_add_none(tmp_path, mlflow_store):
    from lad.tracking import Tracker, TrackingConfig

    done = run_steps(tmp_path)
    tracker = Tracker(TrackingConfig(experiment=EXPERIMENT))
    runs = tracker.client.search_runs([tracker.experiment_id])
    top = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [(r.info.run_name, r.data.tags["lad.pipeline_run"], r.info.status) for r in top] == [(RUN_NAME, RUN_ID, "FINISHED")]
    parent = top[0].info.run_id
    stages = {r.data.tags["lad.stage"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent}
    assert len(runs) == 5 and sorted(stages) == ["evaluate", "register", "sft", "train"]
    assert {r.info.run_name for r in stages.values()} == set(stages)
    assert {r.info.status for r in stages.values()} == {"FINISHED"}

    assert stages["sft"].data.params["train.max_steps"] == "1" and stages["sft"].data.params["tracking.parent_run_id"] == parent
    assert stages["train"].data.params["algorithm.objective"] == "lad" and stages["train"].data.params["rollout.n"] == "4"
    ev = stages["evaluate"]
    assert ev.data.params["benchmarks"].startswith('[{"') and '"k": 2' in ev.data.params["benchmarks"]
    summary = done["summary"]["benchmarks"]["synthetic_countdown"]
    assert ev.data.metrics["synthetic_countdown/avg_k"] == summary["avg@2"]
    assert ev.data.metrics["synthetic_countdown/pass_k"] == summary["pass@2"]
    assert ev.data.metrics["all/avg_k"] == done["summary"]["aggregate"]["all"]["avg@k"]
    assert sorted(a.path for a in tracker.client.list_artifacts(ev.info.run_id, "evaluation")) == [
        "evaluation/report.html", "evaluation/report.md", "evaluation/summary.json"]
    # the chat model's defaults (logged by MLflow with the model): the settings the model was evaluated with
    assert stages["register"].data.params == {"name": "policy", "metric": "all/avg@k", "margin": "0.0", "min_score": "0.01",
                                              "base_model": "", "temperature": "0.6", "top_p": "0.95", "max_new_tokens": "8",
                                              "stop": "[]", "engine": "hf", "model_name": "policy"}
    version = tracker.get_version("policy", done["registration"]["version"])
    assert str(version.version) == "1" and version.run_id == stages["register"].info.run_id

    # Retried steps (KFP's retry policy, same run id): the same runs, the same version.
    with step("evaluate") as retried:
        assert retried == parent
        summary = steps.evaluate(tmp_path / "rl", tmp_path / "eval-retry", parent_run_id=retried, **EVAL)
    with step("register") as retried:
        again = steps.register(tmp_path / "rl", summary, name="policy", experiment=EXPERIMENT, registration_key=RUN_ID,
                               parent_run_id=retried)
    assert again["version"] == "1"
    assert sorted(r.info.run_id for r in tracker.client.search_runs([tracker.experiment_id])) == sorted(r.info.run_id for r in runs)


def test_a_failed_step_fails_the_pipeline_run_and_its_retry_resumes_it(tmp_path, mlflow_store):
    """A step that raises marks the pipeline run FAILED (KILLED when interrupted) and names
    itself; the retried step sets it RUNNING again. The failure here is the evaluation's own,
    before its stage run exists."""
    from lad.tracking import TAG_FAILED_STAGE, Tracker, TrackingConfig

    tracker = Tracker(TrackingConfig(experiment=EXPERIMENT))
    run_id, name = "kfp-run-2", "lad-training-failing"

    def status(run_id):
        run = tracker.client.get_run(run_id)
        return run.info.status, run.data.tags.get(TAG_FAILED_STAGE)

    steps.materialize_model("tiny:1m", tmp_path / "model")
    evaluate = dict(EVAL, experiment=EXPERIMENT, stage="evaluate")
    with pytest.raises(steps.StepError, match="no_such_benchmark"):
        with steps.pipeline_step(EXPERIMENT, run_id, name, "evaluate") as parent:
            steps.evaluate(tmp_path / "model", tmp_path / "eval", **dict(evaluate, benchmarks="no_such_benchmark"),
                           parent_run_id=parent)
    assert status(parent) == ("FAILED", "evaluate")
    with steps.pipeline_step(EXPERIMENT, run_id, name, "code_execution"):  # a parallel branch goes on
        assert status(parent) == ("FAILED", "evaluate")
    assert status(parent) == ("FAILED", "evaluate")

    with steps.pipeline_step(EXPERIMENT, run_id, name, "evaluate") as retry:  # KFP's retry of the step
        assert (retry, status(parent)) == (parent, ("RUNNING", None))
        steps.evaluate(tmp_path / "model", tmp_path / "eval", **evaluate, parent_run_id=parent)
    assert status(parent) == ("RUNNING", None)

    with pytest.raises(KeyboardInterrupt):
        with steps.pipeline_step(EXPERIMENT, run_id, name, "register"):
            raise KeyboardInterrupt
    assert status(parent) == ("KILLED", "register")


STEP_THAT_WAITS = """
import time
from lad.pipeline import steps
from lad.tracking import Tracker, TrackingConfig
with steps.pipeline_step("lad-pipeline", "kfp-run-3", "lad-training-cancelled", "train") as parent:
    with Tracker(TrackingConfig(experiment="lad-pipeline")).stage("train", parent_run_id=parent) as run:
        print(parent, run.run_id, flush=True)
        time.sleep(120)
"""


def test_sigterm_during_a_step_marks_the_pipeline_run_and_the_stage_killed(mlflow_store, tmp_path):
    """What Kubernetes sends a step's pod when the KFP run is cancelled or the node drained."""
    from lad.tracking import TAG_FAILED_STAGE, Tracker, TrackingConfig

    step = subprocess.Popen([sys.executable, "-c", STEP_THAT_WAITS], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    parent, stage = step.stdout.readline().split()
    step.send_signal(signal.SIGTERM)
    assert step.wait(60) == 128 + signal.SIGTERM
    client = Tracker(TrackingConfig(experiment=EXPERIMENT)).client
    run = client.get_run(parent)
    assert (run.info.status, run.data.tags[TAG_FAILED_STAGE]) == ("KILLED", "train")
    assert client.get_run(stage).info.status == "KILLED"


def test_a_stage_with_system_metrics_records_the_machines_use(mlflow_store, monkeypatch):
    """What GPU stages turn on (lad.train.run_log, where CUDA is available): MLflow's sampler
    writes system/* metrics into the stage's run; without it there are none."""
    import time

    from lad.tracking import Tracker, TrackingConfig

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    tracker = Tracker(TrackingConfig(tracking_uri=mlflow_store, experiment=EXPERIMENT))
    recorded = {}
    for on in (True, False):
        with tracker.run(f"stage-{on}", system_metrics=on) as run:
            time.sleep(1.5)
        recorded[on] = {k for k in tracker.client.get_run(run.run_id).data.metrics if k.startswith("system/")}
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= recorded[True]
    assert recorded[False] == set()
