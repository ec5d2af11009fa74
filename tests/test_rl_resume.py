"""End-to-end RL runs through DeepSpeed on CPU (gloo): MLflow metrics and JSONL samples of a
straight run, exact resume after SIGKILL, and two data-parallel processes (torchrun) against one
process with the same global batch."""

import json
import signal
import sys

import pytest
import yaml

from training_runs import final_weights, max_weight_diff, run, sigkill_at_step

STEPS, EVERY = 4, 2


def _config(tmp, name, model, **train):
    cfg = {
        "model": str(model),
        "output_dir": str(tmp / name),
        "data": {"train": {"synthetic": {"tasks": ["countdown"], "n_per_task": 32}},
                 "eval": {"synthetic": {"tasks": ["countdown"], "n_per_task": 4, "seed": 1, "split": "test"}}},
        "rollout": {"n": 4, "max_new_tokens": 12, "prompts_per_call": 2},
        # 4 prompts x 4 = 16 sequences, 2 mini-batches of 8: two optimizer steps per rollout step
        "train": {"prompts_per_step": 4, "mini_batch_size": 8, "micro_batch_size": 4, "max_steps": STEPS,
                  "samples_every": 2, "samples_per_dump": 5, **train},
        "algorithm": {"objective": "lad", "update_epochs": 2},
        # An untrained model never writes a countdown answer: a half-weight format reward for any
        # digit gives its groups reward variance, hence non-zero advantages and real updates.
        "reward": {"answer_pattern": "([0-9])", "format_weight": 0.5},
        "optim": {"lr": 3e-3},
        "engine": {"name": "deepspeed", "zero_stage": 1},
        "eval": {"every_steps": 0, "at_start": False, "k": 2},
        "checkpoint": {"every_steps": EVERY, "keep_last": 2},
        "tracking": {"enabled": False},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_dir):
    """The reference run, one process, logging to a local MLflow store."""
    tmp = tmp_path_factory.mktemp("straight")
    cfg = _config(tmp, "straight", tiny_dir)
    raw = yaml.safe_load(cfg.read_text())
    raw["tracking"] = {"enabled": True, "experiment": "rl-test", "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}"}
    cfg.write_text(yaml.safe_dump(raw))
    proc = run([sys.executable, "-m", "lad.cli", "train", str(cfg)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp


def test_straight_run_logs_metrics_samples_and_eval(straight):
    import mlflow

    out = straight / "straight"
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == list(range(1, STEPS + 1))
    required = {
        "reward/mean", "reward/std", "reward/accuracy", "reward/zero_variance_group_frac", "response/length_mean",
        "response/length_max", "response/clip_frac", "actor/entropy", "actor/ratio_mean", "actor/ratio_max",
        "actor/x_mean", "actor/past_target_frac", "actor/approx_kl", "actor/grad_norm", "actor/lr", "actor/loss",
        "perf/completion_tokens_per_s", "time/generate_s", "time/reward_s", "time/update_s", "rollout/logprob_diff_abs_mean",
    }
    assert required <= set(steps[0])
    assert 0 < sum(s["reward/mean"] for s in steps) and all(s["actor/grad_norm"] > 0 for s in steps)
    # the sampling engine (KV cache) and the training forward agree to float rounding on the same weights
    assert steps[0]["rollout/logprob_diff_abs_mean"] < 1e-4
    assert [p.name for p in sorted((out / "samples").iterdir())] == ["step_00000002.jsonl", "step_00000004.jsonl"]
    rows = [json.loads(line) for line in (out / "samples" / "step_00000002.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and {"prompt", "completion", "reward", "reason", "advantage"} <= set(rows[0])
    final_eval = json.loads((out / "eval" / f"step_{STEPS:08d}.json").read_text())
    assert {"avg@2", "pass@1", "pass@2", "distinct_correct", "dist-3"} <= set(final_eval["metrics"])
    assert len(final_eval["problems"]) == 4

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{straight / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("rl-test").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["algorithm.objective"] == "lad"
    assert required <= set(run.data.metrics)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "reward/mean")] == list(range(1, STEPS + 1))
    assert "eval/avg_2" in run.data.metrics  # MLflow keys cannot hold '@'
    assert all(m.value > 0 for m in client.get_metric_history(run.info.run_id, "actor/grad_norm"))
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "samples")}
    assert artifacts == {"samples/step_00000002.jsonl", "samples/step_00000004.jsonl"}


def test_sigkill_then_resume_matches_the_straight_run(straight, tiny_dir, tmp_path):
    cfg = _config(tmp_path, "killed", tiny_dir)
    script = sigkill_at_step("rl", cfg, EVERY + 1)
    proc = run([sys.executable, "-c", script])
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    ckpts = tmp_path / "killed" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == [f"step_{EVERY:08d}"]
    assert not (tmp_path / "killed" / "model").exists()

    proc = run([sys.executable, "-m", "lad.cli", "train", str(cfg), "--resume"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming from {ckpts / f'step_{EVERY:08d}'} (step {EVERY} of {STEPS})" in proc.stdout
    assert max_weight_diff(final_weights(straight / "straight"), final_weights(tmp_path / "killed")) < 1e-6
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / "steps.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))  # the step the kill lost is logged once, by the resume


def test_two_processes_match_one_process_with_the_same_global_batch(straight, tiny_dir, tmp_path):
    # 2 ranks x micro-batch 4 = one mini-batch of 8 without accumulation (grad_accum 2 in the straight run)
    cfg = _config(tmp_path, "ddp", tiny_dir)
    proc = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                 "-m", "lad.cli", "train", str(cfg)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert max_weight_diff(final_weights(straight / "straight"), final_weights(tmp_path / "ddp")) < 1e-5
    one = [json.loads(line) for line in (straight / "straight" / "steps.jsonl").read_text().splitlines()]
    two = [json.loads(line) for line in (tmp_path / "ddp" / "steps.jsonl").read_text().splitlines()]
    assert [s["reward/mean"] for s in one] == [s["reward/mean"] for s in two]
    assert [s["response/length_mean"] for s in one] == [s["response/length_mean"] for s in two]


def test_time_budget_stops_after_the_step_that_exceeds_it(tiny_dir, tmp_path):
    from lad.train.rl import load_config, train_rl

    cfg = _config(tmp_path, "budget", tiny_dir, max_steps=50, time_budget_min=1e-6)
    raw = yaml.safe_load(cfg.read_text())
    raw["engine"] = {"name": "torch"}
    cfg.write_text(yaml.safe_dump(raw))
    results = train_rl(load_config(cfg))
    assert results["train/steps"] == 1
    assert (tmp_path / "budget" / "model" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "budget" / "eval" / "step_00000001.json").read_text())["step"] == 1
