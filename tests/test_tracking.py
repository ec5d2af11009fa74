"""lad.tracking on both backends: the embedded default (sqlite in the working directory, no
server) and an ``mlflow server`` on 127.0.0.1 (sqlite backend, artifacts on moto's S3 server)."""

import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from pydantic import BaseModel
from servers import mlflow_server, s3_server  # noqa: F401
from typer.testing import CliRunner

from lad import storage
from lad.cli import app
from lad.tracking import (
    CHALLENGER,
    CHAMPION,
    TAG_DECISION,
    TAG_REASON,
    Tracker,
    TrackingConfig,
    TrackingError,
    VersionScore,
    config_hash,
    decide_promotion,
    flatten_params,
    metric_key,
)

# --------------------------------------------------------------------------------------------
# Pure pieces
# --------------------------------------------------------------------------------------------


class Inner(BaseModel):
    lr: float = 1e-3
    betas: list[float] = [0.9, 0.95]


class StageConfig(BaseModel):
    name: str = "sft"
    steps: int = 3
    optim: Inner = Inner()
    note: str | None = None


def test_flatten_params_and_config_hash():
    assert flatten_params(StageConfig()) == {
        "name": "sft", "steps": "3", "optim.lr": "0.001", "optim.betas": "[0.9, 0.95]", "note": "null",
    }  # fmt: skip
    assert flatten_params({}) == {} and flatten_params({"opt": {}}) == {"opt": "{}"}
    long = flatten_params({"xs": list(range(3000))})["xs"]
    assert len(long) == 6000 and long.endswith("...(cut; see config.json)")
    assert config_hash(StageConfig()) == config_hash(StageConfig().model_dump())
    assert config_hash(StageConfig()) != config_hash(StageConfig(steps=4))
    assert metric_key("aime24/avg@32") == "aime24/avg_32"


def test_uri_resolution(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "sqlite:///elsewhere.db")
    assert TrackingConfig().resolved_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert TrackingConfig().resolved_registry_uri() == "sqlite:///elsewhere.db"
    assert TrackingConfig(tracking_uri="http://mlflow:5000").resolved_registry_uri() == "http://mlflow:5000"
    assert TrackingConfig(tracking_uri="http://a", registry_uri="http://b").resolved_registry_uri() == "http://b"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-env:5000")
    assert TrackingConfig().resolved_tracking_uri() == "http://from-env:5000"


def score(v, metrics, benchmarks="aime24,math500"):
    return VersionScore(str(v), metrics, benchmarks)


@pytest.mark.parametrize(
    "cand, champ, margin, higher, expected",
    [
        (score(2, {"acc": 0.6}), None, 0.05, True, (True, "promoted: no champion yet; v2 acc=0.6")),
        (score(2, {"acc": 0.55}), score(1, {"acc": 0.5}), 0.05, True,
         (True, "promoted: acc 0.55 vs champion v1 0.5: gain 0.05 (higher is better), margin 0.05")),
        (score(2, {"acc": 0.54}), score(1, {"acc": 0.5}), 0.05, True,
         (False, "refused: acc 0.54 vs champion v1 0.5: gain 0.04 (higher is better), margin 0.05")),
        (score(2, {"acc": 0.4}), score(1, {"acc": 0.5}), 0.05, False,
         (True, "promoted: acc 0.4 vs champion v1 0.5: gain 0.1 (lower is better), margin 0.05")),
        (score(2, {"acc": 0.9}, "aime24"), score(1, {"acc": 0.5}), 0.0, True,
         (False, "refused: benchmarks differ (v2: aime24; champion v1: aime24,math500)")),
        (score(2, {"loss": 0.9}), score(1, {"acc": 0.5}), 0.0, True, (False, "refused: v2 has no metric 'acc' (has ['loss'])")),
        (score(2, {"acc": 0.9}), score(1, {"loss": 0.5}), 0.0, True, (False, "refused: champion v1 has no metric 'acc' to compare with")),
        (score(1, {"acc": 0.9}), score(1, {"acc": 0.9}), 0.0, True, (False, "refused: v1 is already the champion")),
        # a tie keeps the champion, margin 0 or not; any real gain passes margin 0
        (score(2, {"acc": 0.5}), score(1, {"acc": 0.5}), 0.0, True,
         (False, "refused: acc 0.5 vs champion v1 0.5: gain 0 (higher is better), margin 0 (a tie keeps the champion)")),
        (score(2, {"acc": 0.51}), score(1, {"acc": 0.5}), 0.0, True,
         (True, "promoted: acc 0.51 vs champion v1 0.5: gain 0.01 (higher is better), margin 0")),
        # the floor (min_score 0.01 by default) holds with or without a champion
        (score(2, {"acc": 0.0}), None, 0.0, True, (False, "refused: v2 acc=0 is below the floor min_score 0.01")),
        (score(2, {"acc": 0.005}), score(1, {"acc": 0.0}), 0.0, True, (False, "refused: v2 acc=0.005 is below the floor min_score 0.01")),
        (score(2, {"acc": 0.01}), None, 0.0, True, (True, "promoted: no champion yet; v2 acc=0.01")),
    ],
)  # fmt: skip
def test_decide_promotion(cand, champ, margin, higher, expected):
    assert decide_promotion(cand, champ, "acc", margin, higher) == expected


def test_the_floor_is_a_ceiling_for_lower_is_better_and_zero_turns_it_off():
    loss = score(2, {"acc": 0.3})
    assert decide_promotion(loss, None, "acc", 0.0, False, min_score=0.2) == (
        False, "refused: v2 acc=0.3 is above the ceiling min_score 0.2")
    assert decide_promotion(score(2, {"acc": 0.0}), None, "acc", 0.0, min_score=0.0)[0] is True


# --------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------


@dataclass
class Backend:
    kind: str
    config: TrackingConfig
    artifact_bucket: str | None = None

    def tracker(self) -> Tracker:
        return Tracker(self.config)


@contextmanager
def mlflow_uris_restored():
    """Tracker sets MLflow's process-wide URIs (and their environment variables); undo that so
    later test modules do not talk to this module's store or stopped server."""
    import mlflow

    before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before["MLFLOW_TRACKING_URI"])
        mlflow.set_registry_uri(before["MLFLOW_REGISTRY_URI"])
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module", params=["embedded", "server"])
def backend(request, tmp_path_factory):
    with mlflow_uris_restored(), pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        if request.param == "embedded":
            work = tmp_path_factory.mktemp("embedded")
            mp.chdir(work)
            cfg = TrackingConfig(experiment="lad-test")
            assert cfg.resolved_tracking_uri() == f"sqlite:///{work / 'mlflow.db'}"
            yield Backend("embedded", cfg)
        else:
            server = request.getfixturevalue("mlflow_server")
            for k, v in server.env.items():  # the client writes artifacts to S3 itself
                mp.setenv(k, v)
            yield Backend("server", TrackingConfig(tracking_uri=server.uri, experiment="lad-test"), server.bucket)


@pytest.fixture(scope="module")
def logged(backend, tiny):
    """Two training runs, each with a logged model: (model_uri, run_id) pairs."""
    tracker = backend.tracker()
    out = []
    for i in range(2):
        with tracker.run(f"pipeline-{i}") as run, tracker.stage("train") as st:
            out.append((st.log_model(*tiny), st.run_id))
        assert run.run_id != st.run_id
    return out


def greedy(tiny, messages, max_new_tokens):
    """The project's own greedy rollout of one conversation (transformers generate)."""
    from lad.rollout import SamplingParams, build_rollout

    (completion,), = build_rollout("hf", *tiny).generate([messages], SamplingParams(temperature=0, max_new_tokens=max_new_tokens))
    return completion


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


def test_pipeline_run_with_nested_stages(backend, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tracker = backend.tracker()
    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "1+1", "answer": "2"}\n')
    report = tmp_path / "report.md"
    report.write_text("# eval\nacc 0.5\n")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])

    with tracker.run("pipeline", config={"seed": 7, "stages": ["sft", "rl"]}, tags={"pipeline": "kfp-123"}) as run:
        with tracker.stage("sft", config=StageConfig()) as sft:
            for step, loss in enumerate([2.0, 1.5, 1.25]):
                sft.log_metrics({"loss": loss, "eval/avg@4": 0.1 * step}, step=step)
            sha = sft.log_dataset(data, name="train", context="train")
            sft.log_artifact(report, "reports")
            sft.log_figure(fig, "plots/loss.png")
            sft.log_text('{"prompt": "1+1", "response": "2"}\n', "rollouts/step-0.jsonl")
        with pytest.raises(RuntimeError, match="boom"), tracker.stage("rl") as rl:
            raise RuntimeError("boom")

    c = tracker.client
    parent, child, failed = c.get_run(run.run_id), c.get_run(sft.run_id), c.get_run(rl.run_id)
    assert parent.info.status == "FINISHED" and child.info.status == "FINISHED" and failed.info.status == "FAILED"
    assert child.data.tags["mlflow.parentRunId"] == run.run_id == failed.data.tags["mlflow.parentRunId"]
    assert child.info.run_name == "sft" and child.data.tags["lad.stage"] == "sft"
    assert parent.data.params == {"seed": "7", "stages": '["sft", "rl"]'} and parent.data.tags["pipeline"] == "kfp-123"
    assert child.data.params == flatten_params(StageConfig())
    assert child.data.tags["config_hash"] == config_hash(StageConfig())
    assert [(m.step, m.value) for m in c.get_metric_history(sft.run_id, "loss")] == [(0, 2.0), (1, 1.5), (2, 1.25)]
    assert [m.value for m in c.get_metric_history(sft.run_id, "eval/avg_4")] == pytest.approx([0.0, 0.1, 0.2])

    files = {a.path for a in c.list_artifacts(sft.run_id)} | {a.path for d in ("reports", "plots", "rollouts") for a in c.list_artifacts(sft.run_id, d)}
    assert files >= {"config.json", "reports/report.md", "plots/loss.png", "rollouts/step-0.jsonl"}

    (ds,) = child.inputs.dataset_inputs
    assert sha == storage.content_hash(data)
    assert (ds.dataset.name, ds.dataset.digest) == ("train", sha[:16])
    assert {t.key: t.value for t in ds.tags} == {"mlflow.data.context": "train", "lad.sha256": sha}

    if backend.kind == "server":  # the artifacts really are on the S3 server
        folder = f"s3://{backend.artifact_bucket}/datasets/eval"
        manifest = storage.put_dir(_tree(tmp_path), folder)
        with tracker.run("eval-pipeline"), tracker.stage("eval") as ev:
            assert ev.log_dataset(folder, name="eval", context="eval") == manifest.digest()
        (ds,) = c.get_run(ev.run_id).inputs.dataset_inputs
        assert ds.dataset.source_type == "s3" and folder in ds.dataset.source
        assert {t.key: t.value for t in ds.tags}["lad.sha256"] == manifest.digest()
        root = child.info.artifact_uri
        assert root.startswith(f"s3://{backend.artifact_bucket}/artifacts/")
        assert f"{root}/reports/report.md" in storage.list_uri(root)
        assert storage.read_bytes(f"{root}/reports/report.md") == report.read_bytes()


def _tree(root):
    d = root / "eval_set"
    (d / "part").mkdir(parents=True)
    (d / "part" / "0.jsonl").write_text('{"prompt": "2+2", "answer": "4"}\n')
    return d


def test_stage_needs_a_parent(backend):
    with pytest.raises(TrackingError, match="stage 'sft': no active pipeline run and no parent_run_id given"):
        with backend.tracker().stage("sft"):
            pass


def test_stage_in_another_process_joins_the_pipeline_run(backend):
    # A pipeline step in another pod gets the pipeline run's id and nests its stage under it;
    # the last step resumes the pipeline run to log the summary.
    tracker = backend.tracker()
    with tracker.run("pipeline") as run:
        pass
    with tracker.stage("eval", parent_run_id=run.run_id) as st:
        st.log_metrics({"acc": 0.5}, step=0)
    with tracker.run("ignored", run_id=run.run_id) as again:
        again.log_metrics({"final/acc": 0.5}, step=0)
    c = tracker.client
    assert c.get_run(st.run_id).data.tags["mlflow.parentRunId"] == run.run_id
    assert again.run_id == run.run_id and c.get_run(run.run_id).data.metrics == {"final/acc": 0.5}
    with tracker.run("other") as other:
        with pytest.raises(TrackingError, match=f"parent_run_id {run.run_id} is not the active run {other.run_id}"):
            with tracker.stage("eval", parent_run_id=run.run_id):
                pass


def test_pipeline_run_and_its_stages_are_reused_by_retried_steps(backend):
    # Every step of a KFP run asks for the pipeline run by the KFP run's id; a retried step finds
    # the run and its own stage again instead of adding runs.
    tracker = backend.tracker()
    key = f"kfp-{os.urandom(4).hex()}"
    parent = tracker.pipeline_run(key, "lad-training-abc")
    assert tracker.pipeline_run(key, "ignored") == parent
    with pytest.raises(RuntimeError, match="boom"), tracker.stage("train", config=StageConfig(steps=1), parent_run_id=parent):
        raise RuntimeError("boom")
    with tracker.stage("train", config=StageConfig(steps=2), parent_run_id=parent) as st:
        st.log_metrics({"loss": 1.0}, step=0)
    with tracker.stage("evaluate", parent_run_id=parent):
        pass
    c = tracker.client
    runs = c.search_runs([tracker.experiment_id], filter_string=f"tags.`lad.pipeline_run` = '{key}'")
    assert [(r.info.run_id, r.info.run_name) for r in runs] == [(parent, "lad-training-abc")]
    children = c.search_runs([tracker.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
    assert sorted((r.info.run_name, r.data.tags["lad.stage"], r.info.status) for r in children) == [
        ("evaluate", "evaluate", "FINISHED"), ("train", "train", "FINISHED")]
    train = next(r for r in children if r.info.run_name == "train")
    assert train.info.run_id == st.run_id
    assert train.data.params["steps"] == "1" and train.data.metrics == {"loss": 1.0}  # params of the first attempt


def test_pipeline_run_created_twice_at_once_keeps_the_oldest(backend):
    # Two steps that start together both create a run; each keeps the oldest and deletes its own.
    tracker = backend.tracker()
    key = f"kfp-{os.urandom(4).hex()}"
    first = tracker.client.create_run(tracker.experiment_id, run_name="p", tags={"lad.pipeline_run": key}).info.run_id
    time.sleep(0.01)  # start times are in ms: the second run starts strictly later
    real = tracker._runs  # what the second step saw before the first step's run existed
    calls = iter([[], None])
    tracker._runs = lambda where: next(calls) or real(where)
    assert tracker.pipeline_run(key, "p") == first
    runs = tracker.client.search_runs([tracker.experiment_id], filter_string=f"tags.`lad.pipeline_run` = '{key}'")
    assert [r.info.run_id for r in runs] == [first]


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def register(tracker, name, logged, i, acc, benchmarks=("aime24", "math500")):
    uri, _ = logged[i]
    return tracker.register_model(
        name, uri, metrics={"avg@4": acc}, benchmarks=list(benchmarks), data_hash="d" * 64,
        config_hash="c" * 64, base_model="tiny-qwen2-1m",
    )  # fmt: skip


def test_log_register_alias_load_generate(backend, logged, tiny):
    import mlflow

    tracker = backend.tracker()
    name = "tiny-load"
    mv = register(tracker, name, logged, 0, 0.25)
    assert str(mv.version) == "1" and mv.run_id == logged[0][1]
    assert list(mv.aliases) == [CHALLENGER]
    tags = mv.tags
    assert (tags["data_hash"], tags["config_hash"], tags["base_model"]) == ("d" * 64, "c" * 64, "tiny-qwen2-1m")
    assert tags["metric.avg_4"] == "0.25" and tags["benchmarks"] == "aime24,math500"
    assert re.fullmatch(r"0\.1\.0(\+g[0-9a-f]{12}(-dirty)?)?", tags["code_version"])

    result = tracker.promote(name, 1, "avg@4", margin=0.1)
    assert result.promoted and result.champion == "1"
    assert list(tracker.client.get_model_version(name, "1").aliases) == [CHAMPION]

    model = mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}")
    for messages in ([{"role": "user", "content": "2 + 3 ="}], [{"role": "system", "content": "Be brief."},
                                                                 {"role": "user", "content": "def add(a, b):"}]):
        answer = model.predict({"messages": messages, "max_tokens": 6})
        ours = greedy(tiny, messages, 6)
        assert answer["choices"] == [{"index": 0, "message": {"role": "assistant", "content": ours.text}, "finish_reason": ours.finish_reason}]
        assert answer["usage"]["completion_tokens"] == len(ours.token_ids)
    default = model.predict({"messages": [{"role": "user", "content": "2 + 3 ="}]})  # the logged defaults: greedy, 64 tokens
    assert default["choices"][0]["message"]["content"] == greedy(tiny, [{"role": "user", "content": "2 + 3 ="}], 64).text
    reqs = (mlflow.artifacts.download_artifacts(f"models:/{name}@{CHAMPION}/requirements.txt"))
    lines = open(reqs).read().split()
    assert any(x.startswith("torch==") for x in lines) and not any(x.startswith("torchvision") for x in lines)


def test_trackers_keep_their_own_registry(backend, logged, tmp_path):
    tracker = backend.tracker()
    other = Tracker(TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'other.db'}"))  # moves MLflow's global URIs
    mv = register(tracker, "tiny-own", logged, 0, 0.5)
    assert str(mv.version) == "1" and [str(v.version) for v in tracker.list_versions("tiny-own")] == ["1"]
    assert other.list_versions("tiny-own") == []


def test_register_needs_a_logged_model_uri(backend):
    with pytest.raises(TrackingError, match="register runs:/abc/model: expected the models:/m-... URI returned by log_model"):
        backend.tracker().register_model("x", "runs:/abc/model")
    with pytest.raises(TrackingError, match="register models:/m-0000: .*"):
        backend.tracker().register_model("x", "models:/m-0000")


def test_register_same_run_twice_is_idempotent(backend, logged):
    tracker = backend.tracker()
    name = "tiny-idem"
    first = register(tracker, name, logged, 0, 0.25)
    again = register(tracker, name, logged, 0, 0.25)
    assert str(again.version) == str(first.version) == "1"
    assert [str(v.version) for v in tracker.list_versions(name)] == ["1"]
    assert str(register(tracker, name, logged, 1, 0.3).version) == "2"
    assert [str(v.version) for v in tracker.list_versions(name)] == ["2", "1"]

    # A step that logs its model in a new run on each attempt dedupes by its own key.
    keyed = "tiny-idem-key"
    first = tracker.register_model(keyed, logged[0][0], idempotency_key="kfp-run-7/register")
    retry = tracker.register_model(keyed, logged[1][0], idempotency_key="kfp-run-7/register")
    assert str(retry.version) == str(first.version) == "1" and retry.tags["registration_key"] == "kfp-run-7/register"
    assert str(tracker.register_model(keyed, logged[1][0], idempotency_key="kfp-run-8/register").version) == "2"


def test_promotion_gate(backend, logged):
    tracker = backend.tracker()
    name = "tiny-gate"
    register(tracker, name, logged, 0, 0.50)
    assert tracker.promote(name, 1, "avg@4", 0.05).promoted
    register(tracker, name, logged, 1, 0.53)

    refused = tracker.promote(name, 2, "avg@4", margin=0.05)
    assert not refused.promoted and refused.champion == "1"
    assert refused.reason == "refused: avg_4 0.53 vs champion v1 0.5: gain 0.03 (higher is better), margin 0.05"
    v2 = tracker.client.get_model_version(name, "2")
    assert (v2.tags[TAG_DECISION], v2.tags[TAG_REASON]) == ("refused", refused.reason)
    assert list(v2.aliases) == [CHALLENGER]  # nothing moved
    assert list(tracker.client.get_model_version(name, "1").aliases) == [CHAMPION]

    accepted = tracker.promote(name, 2, "avg@4", margin=0.02)
    assert accepted.promoted and accepted.champion == "2"
    assert accepted.reason == "promoted: avg_4 0.53 vs champion v1 0.5: gain 0.03 (higher is better), margin 0.02"
    v2 = tracker.client.get_model_version(name, "2")
    assert list(v2.aliases) == [CHAMPION] and v2.tags[TAG_DECISION] == "promoted"
    assert list(tracker.client.get_model_version(name, "1").aliases) == []

    # A challenger measured on other benchmarks is not comparable.
    other = "tiny-gate-bench"
    register(tracker, other, logged, 0, 0.5)
    tracker.promote(other, 1, "avg@4")
    register(tracker, other, logged, 1, 0.9, benchmarks=["aime24"])
    r = tracker.promote(other, 2, "avg@4")
    assert not r.promoted and r.reason.startswith("refused: benchmarks differ")


def test_a_promotion_with_a_bad_input_writes_nothing_and_a_refusal_leaves_the_champion_alone(backend, logged):
    """Every input is checked before a tag is written; a refused challenger is the only version
    whose tags record it."""
    tracker = backend.tracker()
    name = "tiny-safe"
    register(tracker, name, logged, 0, 0.5)
    tracker.promote(name, 1, "avg@4")
    register(tracker, name, logged, 1, 0.4)

    def state():
        return [(str(v.version), dict(v.tags), sorted(v.aliases)) for v in tracker.list_versions(name)]

    before = state()
    bad = [
        (dict(version=2, metric="all/avg@k"), f"promote {name} v2: no metric 'all/avg_k' on this version; its metrics: avg_4"),
        (dict(version=1, metric="avg@k"), f"promote {name} v1: no metric 'avg_k' on this version; its metrics: avg_4"),
        (dict(version=1, metric="avg@4"), f"promote {name} v1: it is already the champion"),
        (dict(version=2, metric="avg@4", margin=-0.1), "promote: margin must be a number >= 0, got -0.1"),
        (dict(version=2, metric="avg@4", margin=float("nan")), "promote: margin must be a number >= 0, got nan"),
        (dict(version=2, metric="avg@4", min_score=-1.0), "promote: min_score must be a number >= 0, got -1.0"),
        (dict(version=9, metric="avg@4"), f"model '{name}' version/alias '9': "),
    ]
    for kwargs, message in bad:
        with pytest.raises(TrackingError) as err:
            tracker.promote(name, kwargs.pop("version"), kwargs.pop("metric"), **kwargs)
        assert str(err.value).startswith(message)
        assert state() == before, kwargs
    with pytest.raises(TrackingError, match=r"^promote: no registered model 'tiny-nope'; registered: .*tiny-safe"):
        tracker.promote("tiny-nope", 1, "avg@4")

    refused = tracker.promote(name, 2, "avg@4")
    assert (refused.promoted, refused.champion, refused.version) == (False, "1", "2")
    after = state()
    assert after[1] == before[1], "the champion's tags and aliases are as they were"
    assert after[0][1] == {**before[0][1], TAG_DECISION: "refused", TAG_REASON: refused.reason}
    champion_tags = before[1][1]
    assert (champion_tags[TAG_DECISION], champion_tags[TAG_REASON]) == ("promoted", "promoted: no champion yet; v1 avg_4=0.5")


def test_models_cli(backend, logged):
    tracker = backend.tracker()
    name = "tiny-cli"
    register(tracker, name, logged, 0, 0.5)
    register(tracker, name, logged, 1, 0.6)
    uri = ["--tracking-uri", tracker.tracking_uri]
    runner = CliRunner()

    res = runner.invoke(app, ["models", "promote", name, "1", "--metric", "avg@4", *uri], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "promoted: no champion yet; v1 avg_4=0.5" in res.output

    res = runner.invoke(app, ["models", "promote", name, "challenger", "--metric", "avg@4", "--margin", "0.2", *uri], env={"COLUMNS": "200"})
    assert res.exit_code == 1, res.output
    assert "refused: avg_4 0.6 vs champion v1 0.5: gain 0.1 (higher is better), margin 0.2" in res.output

    res = runner.invoke(app, ["models", "list", name, *uri], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    rows = [line for line in res.output.splitlines() if name in line and "│" in line]
    assert len(rows) == 2
    assert "challenger" in rows[0] and "avg_4=0.6" in rows[0] and "refused" in rows[0]
    assert "champion" in rows[1] and "avg_4=0.5" in rows[1] and "promoted" in rows[1]

    res = runner.invoke(app, ["models", "show", name, "champion", *uri], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "tiny-qwen2-1m" in res.output and "promotion.reason" in res.output

    # a metric the versions do not hold: the names they do, exit 2, the champion's record untouched
    champion_tags = dict(tracker.client.get_model_version(name, "1").tags)
    res = runner.invoke(app, ["models", "promote", name, "2", "--metric", "all/avg@k", *uri], env={"COLUMNS": "200"})
    assert res.exit_code == 2, res.output
    assert res.output.strip() == f"error: promote {name} v2: no metric 'all/avg_k' on this version; its metrics: avg_4"
    assert dict(tracker.client.get_model_version(name, "1").tags) == champion_tags

    res = runner.invoke(app, ["models", "show", name, "7", *uri], env={"COLUMNS": "200"})
    assert res.exit_code == 2 and f"model '{name}' version/alias '7'" in res.output
    assert "Traceback" not in res.output

    res = runner.invoke(app, ["models", "list", "no-such-model", *uri], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "no registered versions of 'no-such-model'" in res.output


def test_models_cli_unreachable_server(monkeypatch):
    from lad.local_server import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with mlflow_uris_restored():
        res = CliRunner().invoke(app, ["models", "list", "--tracking-uri", f"http://127.0.0.1:{free_port()}"], env={"COLUMNS": "200"})
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: list models: API request to http://127.0.0.1:") and "Traceback" not in res.output
