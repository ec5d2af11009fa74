"""Every training stage on a real pretrained model: SmolLM2-135M-Instruct from the packaged GGUF
(converted once per session, see conftest.smollm2_cache). Sizes are the smallest that still show
the behaviour: a few steps, G = 4, P = 2, short completions."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from lad.modeling import load_model, read_card

NAME = "smollm2-135m-instruct"
ARITHMETIC = {"synthetic": {"tasks": ["arithmetic"], "n_per_task": 8, "difficulties": [1], "seed": 0}}


@pytest.fixture
def named(smollm2_cache, monkeypatch):
    """The name smollm2-135m-instruct resolving to the session's conversion."""
    monkeypatch.setenv("LAD_CACHE_DIR", str(smollm2_cache))
    return NAME


def test_sft_on_the_real_model_lowers_its_loss(named, tmp_path):
    from mlflow import MlflowClient

    from lad.train.sft import SFTConfig, train_sft

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = SFTConfig.model_validate({
        "model": named, "output_dir": str(tmp_path / "out"),
        # 8 demonstrations in batches of 4: the 6 steps see each one 3 times, so the loss must fall
        "data": {**ARITHMETIC, "max_seq_len": 256},
        "train": {"micro_batch_size": 4, "max_steps": 6, "log_every": 1},
        "optim": {"lr": 1e-4, "warmup_steps": 0}, "engine": {"name": "torch"},
        "checkpoint": {"every_steps": 100}, "heldout": {"n_per_task": 1, "max_new_tokens": 8, "tasks": ["arithmetic"]},
        "tracking": {"tracking_uri": uri, "experiment": "sft-real"},
    })
    results = train_sft(cfg)
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("sft-real").experiment_id])
    losses = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step)]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.5 * losses[0]  # the first epoch's batches, seen a third time
    assert results["train/steps"] == 6
    card = read_card(tmp_path / "out" / "model")
    assert card["base_model"] == NAME
    model, tok = load_model(tmp_path / "out" / "model")
    assert model.config.model_type == "llama" and tok.eos_token == "<|im_end|>"


@pytest.mark.parametrize("objective", ["lad", "grpo"])
def test_rl_steps_on_the_real_model_change_its_weights(smollm2_dir, objective, tmp_path):
    from lad.train.rl import RLConfig, train_rl

    cfg = RLConfig.model_validate({
        "model": str(smollm2_dir), "output_dir": str(tmp_path / "run"),
        "data": {"train": ARITHMETIC, "max_prompt_len": 256},
        "rollout": {"engine": "native", "n": 4, "max_new_tokens": 32, "temperature": 1.0},
        "algorithm": {"objective": objective},
        # the answer is the last number, and half the reward is for giving one at all: the 135M model
        # rarely boxes in 32 tokens, and with these settings its groups' rewards differ (advantages not all zero)
        "reward": {"answer_pattern": r"(\d+)", "format_weight": 0.5},
        "train": {"prompts_per_step": 2, "micro_batch_size": 4, "max_steps": 2, "samples_every": 0, "seed": 0},
        "engine": {"name": "torch"}, "optim": {"lr": 1e-5, "warmup_steps": 0}, "eval": {"at_start": False, "every_steps": 0},
        "checkpoint": {"every_steps": 100}, "tracking": {"enabled": False},
    })
    train_rl(cfg)
    steps = [json.loads(line) for line in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2]
    assert all(math.isfinite(s["actor/loss"]) for s in steps)
    assert any(s["reward/zero_variance_group_frac"] < 1 for s in steps)
    for s in steps:
        # the trainer's recomputed log-probs are the native engine's sampling log-probs
        assert s["rollout/logprob_diff_abs_max"] < 1e-4
    before, after = load_file(str(smollm2_dir / "model.safetensors")), load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert "model.layers.0.self_attn.q_proj.weight" in changed and len(changed) > len(before) // 2
