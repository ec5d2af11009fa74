"""The whole training pipeline on this machine with KFP's local runner (``lad pipeline run
--local``), at the tiniest settings: once on the embedded default (sqlite MLflow, local files)
and once with its data and MLflow artifacts in a local S3 server behind a local MLflow server."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import standalone
from servers import mlflow_server, s3, s3_server  # noqa: F401

from lad.data.public import read_text

TINY = {
    "sft_steps": 1, "sft_batch_size": 16, "sft_heldout_problems": 0, "steps": 1, "prompts_per_step": 2, "group_size": 4,
    "mini_batch_size": 0, "micro_batch_size": 8, "max_new_tokens": 8,
    "train_eval_prompts": 0, "eval_benchmarks": "synthetic_countdown,humaneval", "eval_k": 2, "eval_limit": 1,
    "eval_max_new_tokens": 8,
    # one SFT and one RL step of the tiny model score about 0: no floor, so the first version becomes champion
    "promotion_min_score": 0.0,
}


@pytest.fixture(autouse=True)
def _restore_mlflow_uris():
    import mlflow

    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)


def run_cli(tmp_path: Path, extra: list[str], env: dict | None = None, ok: bool = True,
            pipeline: str = "training") -> subprocess.CompletedProcess:
    tiny = {key: value for key, value in TINY.items() if pipeline == "training" or not key.startswith("sft_")}
    sets = [arg for key, value in tiny.items() for arg in ("--set", f"{key}={json.dumps(value) if not isinstance(value, str) else value}")]
    cmd = [sys.executable, "-m", "lad.cli", "pipeline", "run", "--local", "--pipeline", pipeline,
           "--output", str(tmp_path / "out"), *sets, *extra]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})})
    assert (done.returncode == 0) == ok, done.stdout[-4000:] + done.stderr[-4000:]
    return done


def printed(stdout: str, prefix: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith(prefix))


def test_local_run_registers_a_champion_and_writes_the_report(tmp_path):
    """From a copy of the project with no sibling folder, run from outside it: every default
    (benchmarks included) comes from the copy itself."""
    from lad.tracking import Tracker, TrackingConfig

    copy = standalone.make_copy(tmp_path / "clone")
    env = standalone.env_for(copy)
    assert standalone.imported_from(copy, env, tmp_path) == copy / "lad" / "__init__.py"
    done = run_cli(tmp_path, [], env=env)
    out = tmp_path / "out"
    store = f"sqlite:///{out / 'mlflow.db'}"
    assert printed(done.stdout, "registered model:").startswith("registered model: lad-policy v1 (alias champion; promoted: no champion yet")
    assert printed(done.stdout, "MLflow UI:") == f"MLflow UI: mlflow ui --backend-store-uri {store} --port 5000, then open http://127.0.0.1:5000"
    # one line per stage with its wall time and key figure; the executor logs in a file
    stage_lines = [line for line in done.stdout.splitlines() if line.startswith("✓ ")]
    assert sorted(line.split("  ")[0] for line in stage_lines) == sorted(f"✓ {n}" for n in (
        "SFT warm-up", "evaluate warm start", "data prep", "training pod GPUs", "LAD training", "evaluate", "code execution",
        "register", "compare"))
    assert "Executing task" not in done.stdout and "Executing task" in (out / "training.log").read_text()
    report = Path(printed(done.stdout, "evaluation report:").split()[2])
    assert report.name == "compare.html" and report.is_relative_to(out / "artifacts")
    html = report.read_text()
    assert "synthetic_countdown" in html and "humaneval" in html and "warm start Avg@k (95% CI)" in html
    (trained,) = (out / "artifacts").glob("lad-training-*/evaluate/results/summary.json")
    (warm,) = (out / "artifacts").glob("lad-training-*/evaluate-2/results/summary.json")
    summary, warm = json.loads(trained.read_text()), json.loads(warm.read_text())
    assert sorted(summary["benchmarks"]) == ["humaneval", "synthetic_countdown"]
    assert {b["k"] for b in summary["benchmarks"].values()} == {2}
    run = first = json.loads((out / "run_summary.json").read_text())
    assert run["pipeline"] == "lad-training" and run["registered"] == {"name": "lad-policy", "version": "1", "alias": "champion"}
    assert sorted(run["stages"]) == sorted(line.split("  ")[0][2:] for line in stage_lines)
    assert run["gate"]["decision"] == "promoted" and run["gate"]["reason"].startswith("promoted: no champion yet")
    for key, s in (("trained", summary), ("warm_start", warm)):
        assert run["metrics"][key] == {f"{n}/avg@k": round(100 * b["avg@2"], 2) for n, b in s["benchmarks"].items()}

    tracker = Tracker(TrackingConfig(tracking_uri=store, experiment="lad-pipeline"))
    champion = tracker.champion("lad-policy")
    assert str(champion.version) == "1" and "champion" in champion.aliases
    assert champion.tags["benchmarks"] == "humaneval:k=2:n=1,synthetic_countdown:k=2:n=1"
    assert champion.tags["promotion.decision"] == "promoted"
    assert float(champion.tags["metric.all/avg_k"]) == summary["aggregate"]["all"]["avg@k"]
    assert float(champion.tags["warm_start.all/avg_k"]) == warm["aggregate"]["all"]["avg@k"]
    assert float(champion.tags["gain.all/avg_k"]) == summary["aggregate"]["all"]["avg@k"] - warm["aggregate"]["all"]["avg@k"]
    logged = tracker.client.get_logged_model(champion.source.split("/")[1])
    assert Path(logged.artifact_location.removeprefix("file://")).is_relative_to(out / "mlartifacts")
    # One MLflow run for the local run (its id and name reach the steps through the environment, not as
    # inputs), one nested run per stage.
    runs = tracker.client.search_runs([tracker.experiment_id])
    (top,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert top.info.status == "FINISHED"
    assert (top.info.run_name, top.data.tags["lad.pipeline_run"]) == (run["run_name"], run["run_id"])
    stages = {r.data.tags["lad.stage"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == top.info.run_id}
    assert len(runs) == 9 and sorted(stages) == ["code_execution", "compare", "data_prep", "evaluate", "evaluate-warm-start",
                                                  "register", "sft", "train"]
    assert stages["evaluate"].data.metrics["all/avg_k"] == summary["aggregate"]["all"]["avg@k"]
    assert stages["train"].data.params["algorithm.objective"] == "lad" and champion.run_id == stages["register"].info.run_id
    assert_the_run_tells_the_story(tracker, top, stages, champion, summary, warm, run, out)
    # the closing table: every model on every benchmark, the gain over the warm start
    table = done.stdout.split("\n\n")[1].splitlines()
    assert [line.split()[0] for line in table] == ["synthetic_countdown,", "warm", "lad", "humaneval,", "warm", "lad"]
    gain = table[2].split("]")[1].split()[0]
    assert float(gain) == pytest.approx(run["metrics"]["trained"]["synthetic_countdown/avg@k"]
                                        - run["metrics"]["warm_start"]["synthetic_countdown/avg@k"], abs=0.011)

    # The retraining run right after, on the same store: the champion is retrained, challenger and
    # champion are evaluated on the same problems, and the gate's decision is printed and recorded.
    again = run_cli(tmp_path, [], env=env, pipeline="retraining")
    table = again.stdout.split("\n\n")[1].splitlines()
    assert [line.split()[0] for line in table] == ["synthetic_countdown,", "champion", "challenger", "humaneval,",
                                                    "champion", "challenger"]
    run = json.loads((out / "run_summary.json").read_text())
    assert run["pipeline"] == "lad-retraining" and run["registered"]["version"] == "2"
    assert sorted(run["metrics"]) == ["challenger", "champion"]
    challenger = tracker.client.get_model_version("lad-policy", "2")
    assert run["gate"] == {"decision": challenger.tags["promotion.decision"], "reason": challenger.tags["promotion.reason"]}
    assert tracker.client.get_model_version("lad-policy", "1").tags == champion.tags, "the champion's tags never change"
    retraining = tracker.client.get_experiment_by_name("lad-retraining").experiment_id
    (second,) = tracker.client.search_runs([retraining], filter_string=f"tags.`lad.pipeline_run` = '{run['run_id']}'")
    assert second.data.params["registered_model_name"] == "lad-policy" and "new_data_uri" in second.data.params
    assert {"challenger/synthetic_countdown/avg_k", "champion/synthetic_countdown/avg_k",
            "gain/challenger/synthetic_countdown/avg_k"} <= set(second.data.metrics)
    assert "| benchmark | champion v1 Avg@k [95% CI] | v2 Avg@k [95% CI] | gain (points) |" in challenger.description
    assert second.data.tags["registered_model.version"] == "2"
    assert printed(again.stdout, "registered model:") == (
        f"registered model: lad-policy v2 (alias {run['registered']['alias']}; {run['gate']['reason']})")
    # run_summary.json is the latest run's; each run's own stays under runs/
    history = {p.name: json.loads(p.read_text()) for p in (out / "runs").glob("*.json")}
    assert sorted(history) == sorted(f"{r['run_name']}.json" for r in (first, run)) and history[f"{run['run_name']}.json"] == run
    assert history[f"{first['run_name']}.json"]["pipeline"] == "lad-training"


def assert_the_run_tells_the_story(tracker, top, stages, champion, summary, warm, run, out):
    """Read through MLflow's client: the pipeline run holds its parameters, headline numbers, the
    gate's decision, the report and the run summary, and a description; data prep, code execution
    and compare are stage runs; SFT, RL and the evaluations name their datasets with digests; the
    registered version describes itself and its logged model names it."""
    import mlflow

    from lad.kubeflow.pipelines.training import training
    from lad.pipeline.local import pipeline_parameters
    from lad.storage import content_hash

    client = tracker.client
    params = top.data.params
    assert {key.split(".")[0] for key in params} == set(pipeline_parameters(training))
    assert (params["base_model"], params["steps"], params["eval_k"], params["eval_benchmarks"]) == (
        "tiny:1m", "1", "2", "synthetic_countdown,humaneval")
    assert json.loads(params["datasets"])[0]["name"] == "synthetic/countdown"
    trained, before = summary["benchmarks"]["synthetic_countdown"], warm["benchmarks"]["synthetic_countdown"]
    metrics = top.data.metrics
    assert metrics["lad/synthetic_countdown/avg_k"] == trained["avg@2"] and metrics["warm_start/synthetic_countdown/avg_k"] == before["avg@2"]
    assert metrics["gain/lad/synthetic_countdown/avg_k"] == trained["avg@2"] - before["avg@2"]
    assert (metrics["lad/synthetic_countdown/avg_k_ci95_low"], metrics["lad/synthetic_countdown/avg_k_ci95_high"]) == tuple(trained["avg@2_ci95"])
    assert metrics["lad/humaneval/pass_k"] == summary["benchmarks"]["humaneval"]["pass@2"]
    assert metrics["lad/all/avg_k"] == summary["aggregate"]["all"]["avg@k"]
    assert stages["compare"].data.metrics == metrics
    tags = top.data.tags
    assert (tags["promotion.decision"], tags["promotion.reason"]) == ("promoted", champion.tags["promotion.reason"])
    assert (tags["registered_model.name"], tags["registered_model.version"]) == ("lad-policy", "1")
    files = {a.path for folder in ("", "comparison", "comparison/plots") for a in client.list_artifacts(top.info.run_id, folder or None)}
    assert {"comparison/compare.html", "comparison/compare.md", "comparison/compare.json", "comparison/plots/compare.png",
            "run_summary.json"} <= files
    assert json.loads(open(mlflow.artifacts.download_artifacts(run_id=top.info.run_id, artifact_path="run_summary.json")).read()) == run
    html = open(mlflow.artifacts.download_artifacts(run_id=top.info.run_id, artifact_path="comparison/compare.html")).read()
    assert "data:image/png;base64," in html, "the report carries its figure"

    exp, top_id = tracker.experiment_id, top.info.run_id
    description = tags["mlflow.note.content"]
    assert description.startswith("**lad-policy v1**: promoted to champion.")
    lo, hi = trained["avg@2_ci95"]
    row = (f"| synthetic_countdown (k = 2, 1 problem) | {100 * before['avg@2']:.2f}% [{100 * before['avg@2_ci95'][0]:.2f}, "
           f"{100 * before['avg@2_ci95'][1]:.2f}] | {100 * trained['avg@2']:.2f}% [{100 * lo:.2f}, {100 * hi:.2f}] | "
           f"{100 * (trained['avg@2'] - before['avg@2']):+.2f} | {100 * before['pass@2']:.2f}% | {100 * trained['pass@2']:.2f}% |")
    assert row in description
    assert "- [the registered version](#/models/lad-policy/versions/1)" in description
    assert f"- [the comparison report](#/experiments/{exp}/runs/{top_id}/artifacts/comparison/compare.html)" in description

    prep = stages["data_prep"]
    data_dir = next((out / "artifacts").glob("lad-training-*/data-prep/data"))
    assert prep.data.params["seed"] == "0" and prep.data.metrics["rows/train.parquet"] > 0
    assert prep.data.tags["sha256.train.parquet"] == content_hash(data_dir / "train.parquet")
    code = stages["code_execution"].data.metrics
    assert code["programs"] >= code["programs_passed"] and "tests_passed" in code

    def inputs(stage):
        return {d.dataset.name: (d.dataset.digest, {t.key: t.value for t in d.tags}, json.loads(d.dataset.source))
                for d in client.get_run(stages[stage].info.run_id).inputs.dataset_inputs}

    (sft,) = inputs("sft").values()
    assert sft[1]["mlflow.data.context"] == "train" and sft[2]["tags"]["synthetic"]["tasks"] == ["countdown"]
    train = inputs("train")["train"]
    assert train[1]["lad.sha256"] == prep.data.tags["sha256.train.parquet"] and train[0] == train[1]["lad.sha256"][:16]
    for stage in ("evaluate", "evaluate-warm-start"):
        evaluated = inputs(stage)
        assert sorted(evaluated) == ["humaneval", "synthetic_countdown"]
        assert {e[1]["mlflow.data.context"] for e in evaluated.values()} == {"eval"} and evaluated["humaneval"][1]["lad.rows"] == "1"
    assert inputs("evaluate") == inputs("evaluate-warm-start"), "both models were scored on the same problems"

    page = champion.description
    assert page.startswith("**lad-policy v1**: promoted to champion.") and row in page
    assert "**Promotion gate** (synthetic_countdown/avg@k, margin 0.00 points, floor 0.00%): **promoted**" in page
    assert "- base model: `tiny:1m`" in page and f"sha256 `{content_hash(data_dir)[:16]}`" in page
    assert f"- [the pipeline run](#/experiments/{exp}/runs/{top_id})" in page
    logged = client.get_logged_model(champion.source.split("/")[1])
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [{"name": "lad-policy", "version": "1"}]


def test_compare_run_trains_the_baseline_objective_from_the_same_warm_start(tmp_path):
    """``--set compare_objective=grpo`` (``make compare``): GRPO is trained from the same SFT model
    and evaluated the same way, and the one report holds all three runs."""
    done = run_cli(tmp_path, ["--set", "compare_objective=grpo"])
    out = tmp_path / "out"
    stages = sorted(line.split("  ")[0][2:] for line in done.stdout.splitlines() if line.startswith("✓ "))
    assert stages == sorted(["data prep", "SFT warm-up", "training pod GPUs", "LAD training", "baseline training", "evaluate",
                             "evaluate warm start", "evaluate baseline", "code execution", "register", "compare"])
    (run_dir,) = (out / "artifacts").glob("lad-training-*")
    folder = run_dir / "compare-evaluations" / "comparison"
    assert list(json.loads((folder / "compare.json").read_text())["mean"]) == ["warm start", "lad", "grpo"]
    assert (folder / "plots" / "compare.png").stat().st_size > 0 and "| grpo |" in (folder / "compare.md").read_text()
    run = json.loads((out / "run_summary.json").read_text())
    assert sorted(run["metrics"]) == ["grpo", "trained", "warm_start"]
    for task, objective in (("lad-train", "lad"), ("lad-train-2", "grpo")):
        card = json.loads((run_dir / task / "model" / "lad_card.json").read_text())
        assert (card["base_model"], card["config"]["algorithm"]["objective"]) == (str(run_dir / "sft-warmup" / "model"), objective)


def test_a_failed_step_leaves_the_pipeline_run_failed_in_mlflow(tmp_path):
    from lad.tracking import TAG_FAILED_STAGE, Tracker, TrackingConfig

    done = run_cli(tmp_path, ["--set", "promotion_metric=no_such/avg@k"], ok=False)
    assert "parameter promotion_metric 'no_such/avg@k'" in done.stdout + done.stderr
    tracker = Tracker(TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}", experiment="lad-pipeline"))
    runs = tracker.client.search_runs([tracker.experiment_id])
    (top,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert (top.info.status, top.data.tags[TAG_FAILED_STAGE]) == ("FAILED", "register")
    stages = {r.data.tags["lad.stage"]: r.info.status for r in runs if r.data.tags.get("mlflow.parentRunId") == top.info.run_id}
    assert stages == {"data_prep": "FINISHED", "sft": "FINISHED", "train": "FINISHED", "evaluate": "FINISHED",
                      "evaluate-warm-start": "FINISHED", "code_execution": "FINISHED", "compare": "FINISHED"}
    assert "✗ register failed after" in done.stdout and f"log: {tmp_path / 'out' / 'training.log'}" in done.stdout


def test_local_run_with_s3_data_and_an_mlflow_server(tmp_path, s3, mlflow_server):  # noqa: F811
    from lad.tracking import Tracker, TrackingConfig

    s3.server.client().put_object(Bucket=s3.bucket, Key="raw/math_train.jsonl", Body=read_text("math_train.jsonl").encode()[:200_000])
    datasets = [
        {"name": "synthetic/countdown", "role": "train", "synthetic": {"task": "countdown", "n": 200}, "decontaminate": False},
        {"name": "math_train", "role": "train", "adapter": "math_train", "uri": f"{s3.root}/raw/math_train.jsonl", "limit": 16,
         "on_bad_row": "skip"},
    ]
    done = run_cli(tmp_path, ["--tracking-uri", mlflow_server.uri, "--set", f"datasets={json.dumps(datasets)}",
                              "--set", "registered_model_name=lad-s3"])
    assert printed(done.stdout, "registered model:").startswith("registered model: lad-s3 v1 (alias champion")
    assert printed(done.stdout, "MLflow UI:") == f"MLflow UI: open {mlflow_server.uri}"
    report = Path(printed(done.stdout, "evaluation report:").split()[2])
    prep = json.loads(next((tmp_path / "out" / "artifacts").glob("lad-training-*/data-prep/data/report.json")).read_text())
    assert prep["sources"]["math_train"]["read"] == 16
    assert report.is_file()

    tracker = Tracker(TrackingConfig(tracking_uri=mlflow_server.uri))
    champion = tracker.champion("lad-s3")
    logged = tracker.client.get_logged_model(champion.source.split("/")[1])
    prefix = logged.artifact_location.removeprefix(f"s3://{mlflow_server.bucket}/")
    assert logged.artifact_location.startswith(f"s3://{mlflow_server.bucket}/artifacts/")
    keys = [o["Key"] for o in s3.server.client().list_objects_v2(Bucket=mlflow_server.bucket, Prefix=prefix)["Contents"]]
    assert any(k.endswith("/MLmodel") for k in keys) and any(k.endswith(".safetensors") for k in keys)
