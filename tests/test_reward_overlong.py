"""DAPO's soft overlong punishment (reward.overlong): its closed form, its settings (on for the dapo
objective, the buffer's default, bad values named), and a tiny dapo run whose training rewards are
the scores plus the closed-form penalty of each response's length."""

import json
from fractions import Fraction

import pytest
import yaml

from lad.rewards import OverlongConfig, overlong_penalty
from lad.train.rl import RLConfig, load_config, train_rl


def test_the_penalty_grows_linearly_over_the_buffer_before_the_max_length():
    # max 20, buffer 4, factor 0.5: nothing up to 16 tokens, then -0.5 * (L - 16) / 4, -0.5 from 20 on
    got = [overlong_penalty(n, 20, 4, 0.5) for n in range(26)]
    assert got == [0.0] * 17 + [-0.125, -0.25, -0.375, -0.5] + [-0.5] * 5
    for n in range(31):  # buffer 3, factor 1: to float rounding of -(L - 27) / 3
        want = -min(max(0, n - 27), 3) / Fraction(3)
        assert overlong_penalty(n, 30, 3, 1.0) == pytest.approx(float(want), abs=1e-15)
    assert overlong_penalty(30, 30, 30, 2.0) == -2.0 and overlong_penalty(0, 30, 30, 2.0) == 0.0
    assert [overlong_penalty(n, 10, 2, 0.0) for n in (8, 9, 10)] == [0.0, 0.0, 0.0]


def _cfg(**over) -> RLConfig:
    raw = {"data": {"train": {"synthetic": {}}}, "rollout": {"max_new_tokens": 24}}
    for key, value in over.items():
        section, _, field = key.partition(".")
        raw.setdefault(section, {})[field] = value
    return RLConfig.model_validate(raw)


def test_on_for_the_dapo_objective_with_a_buffer_of_a_fifth_of_the_max_length():
    assert [_cfg(**{"algorithm.objective": o}).reward.overlong.enabled for o in ("lad", "grpo", "dr_grpo", "dapo")] == [
        False, False, False, True]
    off = _cfg(**{"algorithm.objective": "dapo", "reward.overlong": {"enabled": False}})
    assert off.reward.overlong.enabled is False
    on = _cfg(**{"reward.overlong": {"enabled": True, "penalty_factor": 0.5}})
    assert (on.reward.overlong.enabled, on.reward.overlong.penalty_factor) == (True, 0.5)
    assert [OverlongConfig().buffer(n) for n in (24, 1024, 20480, 3)] == [4, 204, 4096, 1]
    assert OverlongConfig(buffer_len=7).buffer(24) == 7


def test_bad_settings_are_named(tmp_path):
    path = tmp_path / "c.yaml"
    data = {"train": {"synthetic": {}}}
    path.write_text(yaml.safe_dump({"data": data, "rollout": {"max_new_tokens": 24}, "reward": {"overlong": {"buffer_len": 25}}}))
    with pytest.raises(ValueError, match=r"reward.overlong.buffer_len 25 must be at most rollout.max_new_tokens 24"):
        load_config(path)
    path.write_text(yaml.safe_dump({"data": data, "reward": {"overlong": {"buffer": 4}}}))
    with pytest.raises(ValueError, match=r"c\.yaml: reward\.overlong\.buffer: Extra inputs are not permitted"):
        load_config(path)
    path.write_text(yaml.safe_dump({"data": data, "reward": {"overlong": {"penalty_factor": -1}}}))
    with pytest.raises(ValueError, match=r"reward\.overlong\.penalty_factor: Input should be greater than or equal to 0"):
        load_config(path)


def test_a_dapo_run_trains_on_the_score_plus_the_closed_form_penalty(tmp_path):
    from lad.modeling import build_tiny_model

    model, tok = build_tiny_model("1m", seed=0)
    model.save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    max_len, buffer, factor = 8, 4, 0.5
    cfg = RLConfig.model_validate({
        "model": str(tmp_path / "tiny"), "output_dir": str(tmp_path / "run"),
        "data": {"train": {"synthetic": {"tasks": ["countdown"], "n_per_task": 32}}},
        "rollout": {"n": 4, "max_new_tokens": max_len, "prompts_per_call": 2, "stop": ["a"]},  # ends at varied lengths
        "train": {"prompts_per_step": 4, "micro_batch_size": 8, "max_steps": 2, "samples_every": 1, "samples_per_dump": 16},
        "algorithm": {"objective": "dapo", "dynamic_sampling": False},
        "reward": {"answer_pattern": "([0-9])", "format_weight": 0.5, "overlong": {"buffer_len": buffer, "penalty_factor": factor}},
        "optim": {"lr": 3e-3}, "engine": {"name": "torch"}, "eval": {"every_steps": 0, "at_start": False},
        "checkpoint": {"every_steps": 10}, "tracking": {"enabled": False},
    })
    assert cfg.reward.overlong.enabled
    train_rl(cfg)
    rows = [json.loads(line) for step in (1, 2) for line in (tmp_path / "run" / "samples" / f"step_{step:08d}.jsonl").open()]
    assert len(rows) == 32
    for r in rows:
        penalty = -factor * max(0, r["response_tokens"] - (max_len - buffer)) / buffer
        assert r["overlong_penalty"] == penalty
        assert r["reward"] == r["score"] + penalty
    lengths = {r["response_tokens"] for r in rows}
    assert max(lengths) == max_len and min(lengths) <= max_len - buffer  # both sides of the buffer's start
    steps = [json.loads(line) for line in (tmp_path / "run" / "steps.jsonl").open()]
    for step in steps:
        mine = rows[16 * (step["step"] - 1) : 16 * step["step"]]
        assert step["reward/overlong_penalty_mean"] == pytest.approx(sum(r["overlong_penalty"] for r in mine) / 16, abs=1e-12)
        assert step["reward/overlong_frac"] == sum(r["overlong_penalty"] < 0 for r in mine) / 16
        assert step["reward/mean"] == pytest.approx(sum(r["reward"] for r in mine) / 16, abs=1e-6)
