"""The retraining pipeline's register step: the challenger is registered with its evaluation,
the champion's version is re-tagged with its evaluation from the same run, and the gate
promotes a better challenger and refuses a worse one."""

from pathlib import Path

import pytest

from servers import mlflow_store  # noqa: F401

from lad.evaluation.summary import aggregate, benchmark_summary


def summary_of(correct: list[list[bool]]) -> dict:
    """An evaluation summary of synthetic_countdown with these per-sample verdicts (k = row length)."""
    k = len(correct[0])
    problems = {
        pid: [{"correct": c, "answer": "1" if c else None, "response": f"answer {pid} {s}", "tokens": 4,
               "finish_reason": "stop", "reason": "correct" if c else "no_answer"} for s, c in enumerate(row)]
        for pid, row in enumerate(correct)
    }
    classes = {pid: {"1": 0} for pid in problems}
    bench = benchmark_summary("synthetic_countdown", "math", k, problems, classes, dist_n=[1], resamples=10)
    return {"label": "x", "model": "m", "benchmarks": {"synthetic_countdown": bench}, "aggregate": aggregate({"synthetic_countdown": bench})}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from lad.modeling import build_tiny_model, save_model

    path = tmp_path_factory.mktemp("model") / "model"
    save_model(*build_tiny_model("1m", seed=0), path, {"base_model": "tiny:1m"})
    return path


def test_gate_promotes_a_better_challenger_and_refuses_a_worse_one(model_dir, mlflow_store):
    """v1 was registered at 0.75 but scores 0.25 on today's run: the 0.5 challenger is compared
    with today's number and promoted; then a 0.25 challenger is refused against the 0.5 champion."""
    from lad.pipeline.steps import register
    from lad.tracking import Tracker, TrackingConfig

    half = summary_of([[True, False], [True, False]])  # avg@2 = 0.5
    three_quarters = summary_of([[True, True], [True, False]])  # 0.75
    quarter = summary_of([[True, False], [False, False]])  # 0.25

    first = register(model_dir, three_quarters, name="policy")
    assert (first["version"], first["promoted"], first["champion"]) == ("1", True, "1")

    better = register(model_dir, half, name="policy", champion_summary=quarter, margin=0.1)
    assert (better["version"], better["promoted"], better["champion"]) == ("2", True, "2")
    assert better["reason"] == "promoted: all/avg_k 0.5 vs champion v1 0.25: gain 0.25 (higher is better), margin 0.1"

    worse = register(model_dir, quarter, name="policy", champion_summary=half, registration_key="run-3")
    assert (worse["version"], worse["promoted"], worse["champion"]) == ("3", False, "2")
    assert worse["reason"] == "refused: all/avg_k 0.25 vs champion v2 0.5: gain -0.25 (higher is better), margin 0"
    retried = register(model_dir, quarter, name="policy", champion_summary=half, registration_key="run-3")
    assert (retried["version"], retried["promoted"]) == ("3", False), "a retried step registers no second version"

    tracker = Tracker(TrackingConfig(tracking_uri=mlflow_store))
    assert str(tracker.champion("policy").version) == "2"
    v1 = tracker.get_version("policy", "1")
    assert float(v1.tags["metric.all/avg_k"]) == 0.25, "the champion carries the numbers it was compared with"
    v3 = tracker.get_version("policy", "3")
    assert list(v3.aliases) == ["challenger"] and v3.tags["promotion.decision"] == "refused"
    assert v3.tags["benchmarks"] == "synthetic_countdown:k=2:n=2"


def test_register_refuses_an_unknown_metric(model_dir, mlflow_store):
    from lad.pipeline.steps import StepError, register

    with pytest.raises(StepError, match=r"parameter promotion_metric 'all/bleu': not among the evaluation's metrics"):
        register(model_dir, summary_of([[True, False]]), name="policy", metric="all/bleu")
