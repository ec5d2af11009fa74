"""Custom reward functions (reward.functions): loaded and checked when the config is read, called
with verl's keywords in the reward worker pool, selected per data_source over the built-in
rewards, failures and timeouts scored 0 and counted; and a tiny RL run scored by the example file."""

import json
import textwrap
from pathlib import Path

import pytest
import yaml
from servers import s3, s3_server  # noqa: F401

from lad.config import ConfigError
from lad.data.synthetic import generate
from lad.rewards import MathVerifier, RewardConfig, score_batch
from lad.train.rl import load_config, rollout_metrics, train_rl

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "integer_answer_reward.py"
ROWS = {"synthetic/countdown": {"data_source": "synthetic/countdown", "ability": "math",
                                "reward_model": {"ground_truth": '{"numbers": [5, 6, 10], "target": 5}'}},
        "mine": {"data_source": "mine", "ability": "math", "reward_model": {"ground_truth": "7"}, "extra_info": {"unit": "cm"}}}


@pytest.fixture(scope="module")
def rewards_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("rewards") / "my_rewards.py"
    path.write_text(textwrap.dedent('''
        import time

        NOT_A_FUNCTION = 3

        def echo(data_source, solution_str, ground_truth, extra_info):
            # every argument comes back: the score is the answer's length, the rest as metrics
            return {"score": len(solution_str), "truth": float(ground_truth), "has_unit": float(extra_info.get("unit") == "cm"),
                    "note": "not a number", "bad name!": 1.0, "source_is_mine": float(data_source == "mine")}

        def plain(data_source, solution_str, ground_truth, extra_info=None):
            return solution_str == ground_truth

        def flaky(data_source, solution_str, ground_truth, extra_info):
            if solution_str == "boom":
                raise ValueError("cannot\\nparse this")
            if solution_str == "slow":
                time.sleep(30)
            if solution_str == "no score":
                return {"value": 1.0}
            if solution_str == "nan":
                return float("nan")
            if solution_str == "text":
                return "1.0"
            return 0.5

        def two_args(solution_str, ground_truth):
            return 0.0
    '''))
    return path


@pytest.fixture(scope="module")
def pool():
    p = MathVerifier(workers=2, timeout_s=5)
    yield p
    p.close()


def test_a_function_from_a_file_gets_verls_arguments_and_returns_score_and_metrics(rewards_file, pool):
    cfg = RewardConfig(functions={"mine": f"{rewards_file}:echo"})
    (s,) = score_batch(["12345"], [ROWS["mine"]], cfg, verifier=pool)
    assert (s.value, s.reason, s.answer) == (5.0, "custom", None)
    # numbers only, with names MLflow accepts
    assert s.metrics == {"truth": 7.0, "has_unit": 1.0, "bad name_": 1.0, "source_is_mine": 1.0}


def test_functions_are_chosen_per_data_source_over_the_built_in_rewards(rewards_file, pool):
    cfg = RewardConfig(functions={"mine": f"{rewards_file}:plain"})
    scores = score_batch(["7", "6", "\\boxed{10 - 5}"], [ROWS["mine"], ROWS["mine"], ROWS["synthetic/countdown"]], cfg, verifier=pool)
    assert [(s.value, s.reason) for s in scores] == [(1.0, "custom"), (0.0, "custom"), (1.0, "correct")]
    # "*": every source without its own entry
    cfg = RewardConfig(functions={"*": f"{rewards_file}:plain", "mine": f"{rewards_file}:echo"})
    scores = score_batch(["7", "5"], [ROWS["mine"], ROWS["synthetic/countdown"]], cfg, verifier=pool)
    assert [(s.value, s.reason) for s in scores] == [(1.0, "custom"), (0.0, "custom")]
    # a format weight shapes the built-in rewards only
    cfg = RewardConfig(functions={"mine": f"{rewards_file}:plain"}, format_weight=0.5)
    scores = score_batch(["7", "\\boxed{10 - 5}"], [ROWS["mine"], ROWS["synthetic/countdown"]], cfg, verifier=pool)
    assert [s.value for s in scores] == [1.0, 1.0]


def test_a_module_function_is_referenced_by_its_import_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE.parent))
    cfg = RewardConfig(functions={"mine": "integer_answer_reward:compute_score"})
    pool = MathVerifier(workers=1)  # forked with the path set, as a run's pool is
    try:
        scores = score_batch(["so \\boxed{7}", "it is 8", "none"], [ROWS["mine"]] * 3, cfg, verifier=pool)
    finally:
        pool.close()
    assert [(s.value, s.metrics) for s in scores] == [
        (1.0, {"correct": 1.0, "answered": 1.0}), (0.1, {"correct": 0.0, "answered": 1.0}), (0.0, {"correct": 0.0, "answered": 0.0})]


def test_failures_and_timeouts_score_zero_with_their_reason_and_the_batch_goes_on(rewards_file, pool):
    cfg = RewardConfig(functions={"mine": f"{rewards_file}:flaky"}, function_timeout_s=1.0)
    answers = ["ok", "boom", "slow", "no score", "nan", "text", "ok"]
    scores = score_batch(answers, [ROWS["mine"]] * len(answers), cfg, verifier=pool)
    assert [s.value for s in scores] == [0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5]
    assert [s.reason for s in scores] == [
        "custom", "error: ValueError: cannot parse this", "timeout",
        "bad_return: a dict without 'score' (keys ['value'])",
        "bad_return: expected a finite number or a dict with 'score', got float",
        "bad_return: expected a finite number or a dict with 'score', got str", "custom"]
    # the timer stopped the slow call inside its worker: the pool was not replaced, and still scores
    assert pool._pool is not None
    assert score_batch(["ok"], [ROWS["mine"]], cfg, verifier=pool)[0].value == 0.5


def test_a_bad_reference_stops_the_config_with_one_line_naming_it(rewards_file, tmp_path):
    cases = {
        "no_such_module_xyz:f": "'no_such_module_xyz:f': no module 'no_such_module_xyz'",
        f"{tmp_path}/missing.py:f": f"no file {tmp_path}/missing.py",
        f"{rewards_file}:nope": f"{rewards_file} has no attribute 'nope'",
        f"{rewards_file}:NOT_A_FUNCTION": "NOT_A_FUNCTION is a int, not a function",
        f"{rewards_file}:two_args": "two_args cannot be called as compute_score(data_source, solution_str, ground_truth, "
                                    "extra_info): got an unexpected keyword argument 'data_source'",
        "os.path:join": "join cannot be called as compute_score",
        "just_a_name": "'just_a_name': expected module:function or path/to/file.py:function",
    }
    for ref, message in cases.items():
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump({"data": {"train": {"synthetic": {"tasks": ["arithmetic"]}}},
                                        "reward": {"functions": {"mine": ref}}}))
        with pytest.raises(ConfigError) as err:
            load_config(path)
        text = str(err.value)
        assert "\n" not in text and text.startswith(f"{path}: reward.functions: ") and "data_source 'mine'" in text, text
        assert message in text, text


def test_extra_metrics_are_averaged_over_the_samples_that_have_them():
    from lad.train.rl_batch import Sample

    ss = [Sample(0, {}, [1], [2], [0.0], "stop", "", reason=r, reward_metrics=m)
          for r, m in (("custom", {"correct": 1.0}), ("custom", {"correct": 0.0, "answered": 1.0}), ("timeout", {}))]
    import torch

    metrics = rollout_metrics(ss, torch.zeros(1, 3), {"zero_adv_group_frac": 1.0, "adv_abs_mean": 0.0})
    assert metrics["reward/extra/correct"] == 0.5 and metrics["reward/extra/answered"] == 1.0
    assert metrics["reward/reason/custom"] == 2 / 3 and metrics["reward/reason/timeout"] == 1 / 3


def test_a_custom_reward_from_a_file_trains_the_tiny_model(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("example_reward", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    path = tmp_path / "rl.yaml"
    path.write_text(yaml.safe_dump({
        "model": "tiny:1m", "output_dir": str(tmp_path / "out"),
        "data": {"train": {"synthetic": {"tasks": ["arithmetic"], "n_per_task": 16}}},
        "rollout": {"engine": "native", "n": 4, "max_new_tokens": 12},
        "reward": {"functions": {"synthetic/arithmetic": f"{EXAMPLE}:compute_score"}},
        "train": {"prompts_per_step": 4, "micro_batch_size": 16, "max_steps": 3, "samples_every": 1, "samples_per_dump": 16},
        "optim": {"lr": 3e-3}, "engine": {"name": "torch"}, "eval": {"at_start": False},
        "checkpoint": {"every_steps": 10}, "tracking": {"enabled": False},
    }))
    cfg = load_config(path)
    assert train_rl(cfg)["train/steps"] == 3
    truths = {json.dumps(r["prompt"]): r["reward_model"]["ground_truth"]
              for r in generate("arithmetic", 16, seed=0, difficulty=1, split="train")}
    steps = [json.loads(line) for line in (tmp_path / "out" / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 3
    for step in steps:
        rows = [json.loads(line) for line in (tmp_path / "out" / "samples" / f"step_{step['step']:08d}.jsonl").read_text().splitlines()]
        assert len(rows) == 16 and {r["reason"] for r in rows} == {"custom"}
        # every completion scored by the example's own function, and its numbers logged
        want = [example.compute_score("synthetic/arithmetic", r["completion"], truths[json.dumps(r["prompt"])], None) for r in rows]
        assert [r["reward"] for r in rows] == [w["score"] for w in want]
        assert step["reward/reason/custom"] == 1.0
        assert step["reward/extra/answered"] == pytest.approx(sum(w["answered"] for w in want) / 16, abs=1e-12)
        assert step["reward/extra/correct"] == pytest.approx(sum(w["correct"] for w in want) / 16, abs=1e-12)
    assert any(s["actor/grad_norm"] > 0 for s in steps)  # some group's rewards varied: the model was updated


def test_the_pipeline_parameter_reaches_the_rl_config_and_a_bad_one_stops_the_step(tmp_path):
    from lad.pipeline.steps import StepError, rl_config

    ref = f"{EXAMPLE}:compute_score"
    cfg = rl_config("tiny:1m", "data/train.parquet", None, "out", reward_functions={"synthetic/arithmetic": ref})
    assert cfg.reward.functions == {"synthetic/arithmetic": ref}
    assert rl_config("tiny:1m", "data/train.parquet", None, "out", reward_functions={}).reward.functions == {}
    with pytest.raises(StepError) as err:
        rl_config("tiny:1m", "data/train.parquet", None, "out", reward_functions={"*": f"{tmp_path}/gone.py:f"})
    assert str(err.value) == (f"RL settings: reward.functions: Value error, data_source '*': '{tmp_path}/gone.py:f': "
                              f"no file {tmp_path}/gone.py")


def test_a_function_file_in_s3_is_fetched_and_a_missing_one_named(s3, rewards_file, tmp_path, monkeypatch):
    from lad import storage

    monkeypatch.setenv("LAD_CACHE_DIR", str(tmp_path / "cache"))
    uri = f"{s3.root}/rewards/shared_rewards.py"
    storage.put_file(rewards_file, uri)
    cfg = RewardConfig(functions={"mine": f"{uri}:plain"})
    assert len(list((tmp_path / "cache" / "rewards").rglob("shared_rewards.py"))) == 1
    pool = MathVerifier(workers=1)  # forked with the S3 settings, as a run's pool is
    try:
        (s,) = score_batch(["7"], [ROWS["mine"]], cfg, verifier=pool)
    finally:
        pool.close()
    assert (s.value, s.reason) == (1.0, "custom")
    with pytest.raises(ValueError, match=rf"data_source 'mine': '{s3.root}/rewards/gone.py:plain': cannot read {s3.root}/rewards/gone.py: "):
        RewardConfig(functions={"mine": f"{s3.root}/rewards/gone.py:plain"})
