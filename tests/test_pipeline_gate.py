"""The retraining pipeline's register step: the challenger is registered with its evaluation and
the champion's evaluation from the same run beside it, the gate compares the two and promotes a
better challenger and refuses a worse one, and the champion's own tags never change."""

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

    first = register(model_dir, three_quarters, name="policy", registration_key="run-1")
    assert (first["version"], first["promoted"], first["champion"]) == ("1", True, "1")
    tracker = Tracker(TrackingConfig(tracking_uri=mlflow_store))
    v1_tags = tracker.get_version("policy", "1").tags
    again = register(model_dir, three_quarters, name="policy", registration_key="run-1")
    assert again == first, "a retried step that promoted keeps its decision"

    better = register(model_dir, half, name="policy", champion_summary=quarter, margin=0.1)
    assert (better["version"], better["promoted"], better["champion"]) == ("2", True, "2")
    assert better["reason"] == "promoted: all/avg_k 0.5 vs champion v1 0.25: gain 0.25 (higher is better), margin 0.1"

    worse = register(model_dir, quarter, name="policy", champion_summary=half, registration_key="run-3")
    assert (worse["version"], worse["promoted"], worse["champion"]) == ("3", False, "2")
    assert worse["reason"] == "refused: all/avg_k 0.25 vs champion v2 0.5: gain -0.25 (higher is better), margin 0"
    retried = register(model_dir, quarter, name="policy", champion_summary=half, registration_key="run-3")
    assert (retried["version"], retried["promoted"]) == ("3", False), "a retried step registers no second version"

    assert str(tracker.champion("policy").version) == "2"
    assert tracker.get_version("policy", "1").tags == v1_tags, "the replaced champion keeps its record"
    v2 = tracker.get_version("policy", "2")
    assert float(v2.tags["metric.all/avg_k"]) == 0.5, "the champion keeps the numbers it was registered with"
    v3 = tracker.get_version("policy", "3")
    assert (float(v3.tags["champion.all/avg_k"]), float(v3.tags["gain.all/avg_k"])) == (0.5, -0.25), (
        "the challenger carries the champion's numbers it was compared with")
    page = v3.description
    lo, hi = (100 * x for x in half["benchmarks"]["synthetic_countdown"]["avg@2_ci95"])
    qlo, qhi = (100 * x for x in quarter["benchmarks"]["synthetic_countdown"]["avg@2_ci95"])
    assert page.startswith("**policy v3**: not promoted.\n\n| benchmark | champion v2 Avg@k [95% CI] | v3 Avg@k [95% CI] | gain (points) |")
    assert (f"| synthetic_countdown (k = 2, 2 problems) | 50.00% [{lo:.2f}, {hi:.2f}] | 25.00% [{qlo:.2f}, {qhi:.2f}] | -25.00 | "
            f"100.00% | 50.00% |") in page
    assert ("**Promotion gate** (all/avg@k, margin 0.00 points, floor 1.00%): **refused**: all/avg@k 25.00% vs champion v2 "
            f"50.00%. Gate's reason: `{worse['reason']}`") in page
    assert "- [the run that registered it](#/experiments/" in page
    assert list(v3.aliases) == ["challenger"] and v3.tags["promotion.decision"] == "refused"
    assert v3.tags["benchmarks"] == "synthetic_countdown:k=2:n=2"


def test_register_refuses_an_unknown_metric(model_dir, mlflow_store):
    from lad.pipeline.steps import StepError, register

    with pytest.raises(StepError, match=r"parameter promotion_metric 'all/bleu': not among the evaluation's metrics"):
        register(model_dir, summary_of([[True, False]]), name="policy", metric="all/bleu")


def test_a_version_below_the_floor_is_registered_but_never_promoted(model_dir, mlflow_store):
    """A model scoring 0 is not the first champion, and the reason is on the version."""
    from lad.pipeline.steps import register
    from lad.tracking import Tracker, TrackingConfig

    zero = summary_of([[False, False], [False, False]])
    result = register(model_dir, zero, name="floored", min_score=0.25, registration_key="run-z")
    assert (result["version"], result["promoted"], result["champion"]) == ("1", False, None)
    assert result["reason"] == "refused: v1 all/avg_k=0 is below the floor min_score 0.25"
    v1 = Tracker(TrackingConfig(tracking_uri=mlflow_store)).get_version("floored", "1")
    assert list(v1.aliases) == ["challenger"]
    assert (v1.tags["promotion.decision"], v1.tags["promotion.reason"]) == ("refused", result["reason"])


def test_register_takes_one_baseline(model_dir, mlflow_store):
    from lad.pipeline.steps import StepError, register

    one = summary_of([[True, False]])
    with pytest.raises(StepError, match=r"^inputs champion_evaluation and baseline_evaluation: give at most one"):
        register(model_dir, one, name="policy", champion_summary=one, baseline_summary=one)


def test_register_refuses_a_negative_floor(model_dir, mlflow_store):
    from lad.pipeline.steps import StepError, register

    with pytest.raises(StepError, match=r"^parameter promotion_min_score: expected >= 0, got -0.1$"):
        register(model_dir, summary_of([[True, False]]), name="policy", min_score=-0.1)


def test_the_checkpoint_folder_is_logged_as_it_is_and_the_champion_comes_back_from_its_files(model_dir, mlflow_store, tmp_path):
    """Registration copies the folder (no weights loaded), links the metrics to the LoggedModel,
    the logged model still serves through pyfunc, and the retraining's champion step gets the
    same weights back from the logged files."""
    import mlflow
    from safetensors.torch import load_file

    from lad.pipeline.steps import champion_model, register
    from lad.tracking import Tracker, TrackingConfig

    result = register(model_dir, summary_of([[True, False], [True, True]]), name="served", registration_key="run-s")
    assert result["promoted"] is True
    tracker = Tracker(TrackingConfig(tracking_uri=mlflow_store))
    mv = tracker.get_version("served", result["version"])
    logged = tracker.client.get_logged_model(mv.source.split("/")[1])
    assert {m.key: m.value for m in logged.metrics}["all/avg_k"] == 0.75, "the metrics are the LoggedModel's too"
    answer = mlflow.pyfunc.load_model(result["model_uri"]).predict({"messages": [{"role": "user", "content": "1 2 3"}],
                                                                    "max_tokens": 4})
    assert answer["object"] == "chat.completion" and answer["usage"]["completion_tokens"] <= 4

    found = champion_model("served", tmp_path / "champion", fallback="tiny:1m")
    assert found == {"version": result["version"], "source": f"models:/served/{result['version']}"}
    ours, theirs = load_file(model_dir / "model.safetensors"), load_file(tmp_path / "champion" / "model.safetensors")
    assert ours.keys() == theirs.keys() and all((ours[k] == theirs[k]).all() for k in ours)
    assert {p.name for p in model_dir.iterdir()} <= {p.name for p in (tmp_path / "champion").iterdir()}


def test_register_refuses_a_folder_that_is_not_a_model(tmp_path, mlflow_store):
    from lad.pipeline.steps import StepError, register

    with pytest.raises(StepError, match=r"^input model: .* is not a Hugging Face model folder \(no config.json\)$"):
        register(tmp_path, summary_of([[True, False]]), name="policy")
