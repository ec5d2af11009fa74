"""Dynamic sampling (algorithm.dynamic_sampling): the choice of groups, the dapo objective's
default, and tiny runs in which some groups' rewards are all equal: every trained group has reward
variance, every step trains P groups, and a run killed with SIGKILL and resumed draws the same
prompts and ends with the same weights as an uninterrupted one."""

import json
import signal
import sys
from statistics import pvariance

import pytest
import yaml

from training_runs import final_weights, max_weight_diff, run, sigkill_at_step

from lad.train.rl import RLConfig, select_groups

STEPS, EVERY, P, G = 4, 2, 4, 4


def test_select_groups_takes_the_first_p_with_signal_and_fills_with_uniform_ones():
    uniform = [True, False, True, False, False, True, False]
    assert select_groups(uniform, 3) == ([1, 3, 4], [])
    assert select_groups(uniform, 4) == ([1, 3, 4, 6], [])
    # short of groups with signal: the first uniform ones fill the batch (trained on nothing)
    assert select_groups([True, False, True, True], 3) == ([1], [0, 2])
    assert select_groups([True, True], 2) == ([], [0, 1])


def test_dynamic_sampling_is_the_dapo_objectives_default_and_can_be_set_either_way():
    from lad.objectives import get_policy_loss

    def algo(**over):
        return RLConfig.model_validate({"data": {"train": {"synthetic": {}}}, "algorithm": over}).algorithm

    assert {o: get_policy_loss(o).dynamic_sampling for o in ("lad", "grpo", "dr_grpo", "dapo")} == {
        "lad": False, "grpo": False, "dr_grpo": False, "dapo": True}
    assert [algo(objective=o).dynamic_sampling for o in ("lad", "grpo", "dr_grpo", "dapo")] == [False, False, False, True]
    assert algo(objective="dapo", dynamic_sampling=False).dynamic_sampling is False
    assert algo(objective="lad", dynamic_sampling=True).dynamic_sampling is True
    assert algo().max_gen_batches == 10
    with pytest.raises(ValueError, match="max_gen_batches\n  Input should be greater than 0"):
        algo(max_gen_batches=0)


def _config(tmp, name, model, **algorithm):
    cfg = {
        "model": str(model),
        "output_dir": str(tmp / name),
        "data": {"train": {"synthetic": {"tasks": ["countdown"], "n_per_task": 64}}},
        "rollout": {"engine": "native", "n": G, "max_new_tokens": 8, "prompts_per_call": 2},
        "train": {"prompts_per_step": P, "mini_batch_size": 8, "micro_batch_size": 4, "max_steps": STEPS,
                  "samples_every": 1, "samples_per_dump": P * G},
        "algorithm": {"objective": "lad", "dynamic_sampling": True, **algorithm},
        # An untrained model writes a digit in some responses and not in others: some groups' rewards
        # are all 0 or all 0.5 (no signal), the others are mixed.
        "reward": {"answer_pattern": "([0-9])", "format_weight": 0.5},
        "optim": {"lr": 3e-3},
        "engine": {"name": "torch"},
        "eval": {"every_steps": 0, "at_start": False},
        "checkpoint": {"every_steps": EVERY, "keep_last": 2},
        "tracking": {"enabled": False},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _steps(out):
    return [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]


def _dump(out, step):
    return [json.loads(line) for line in (out / "samples" / f"step_{step:08d}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_dir):
    tmp = tmp_path_factory.mktemp("straight")
    proc = run([sys.executable, "-m", "lad.cli", "train", str(_config(tmp, "straight", tiny_dir))])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "straight"


def test_every_step_trains_p_groups_that_all_have_reward_variance(straight):
    steps = _steps(straight)
    assert [s["step"] for s in steps] == list(range(1, STEPS + 1))
    for s in steps:
        assert s["sampling/groups_kept"] == P
        assert s["sampling/groups_generated"] == s["sampling/gen_batches"] * P
        assert s["sampling/groups_generated"] == s["sampling/groups_kept"] + s["sampling/groups_dropped"] + s["sampling/groups_surplus"]
    # the reward leaves some groups uniform: they were dropped and more prompts drawn in their place
    assert sum(s["sampling/groups_dropped"] for s in steps) > 0
    assert max(s["sampling/gen_batches"] for s in steps) > 1
    drawn = sum(s["sampling/gen_batches"] for s in steps)
    assert steps[-1]["data/epoch"] == drawn * P / 64
    for step in range(1, STEPS + 1):
        rows = _dump(straight, step)
        groups: dict[int, list[float]] = {}
        for r in rows:
            groups.setdefault(r["prompt_index"], []).append(r["reward"])
        assert sorted(groups) == list(range(P)) and all(len(v) == G for v in groups.values())
        assert all(pvariance(v) > 0 for v in groups.values())


def test_sigkill_then_resume_draws_the_same_prompts_and_matches_the_straight_run(straight, tiny_dir, tmp_path):
    cfg = _config(tmp_path, "killed", tiny_dir)
    proc = run([sys.executable, "-c", sigkill_at_step("rl", cfg, EVERY + 1)])
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    proc = run([sys.executable, "-m", "lad.cli", "train", str(cfg), "--resume"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    killed = tmp_path / "killed"
    assert f"(step {EVERY} of {STEPS})" in proc.stdout
    assert max_weight_diff(final_weights(straight), final_weights(killed)) == 0.0
    keys = ("sampling/gen_batches", "sampling/groups_dropped", "data/epoch", "reward/mean")
    assert [[s[k] for k in keys] for s in _steps(killed)] == [[s[k] for k in keys] for s in _steps(straight)]
    for step in range(EVERY + 1, STEPS + 1):
        assert _dump(killed, step) == _dump(straight, step)


def test_a_step_short_of_groups_with_signal_trains_on_those_it_has_and_says_so(tiny_dir, tmp_path):
    cfg = _config(tmp_path, "short", tiny_dir, max_gen_batches=1)
    raw = yaml.safe_load(cfg.read_text())
    raw["train"]["max_steps"] = 2
    cfg.write_text(yaml.safe_dump(raw))
    proc = run([sys.executable, "-m", "lad.cli", "train", str(cfg)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = _steps(tmp_path / "short")
    short = [s for s in steps if s["sampling/groups_kept"] < P]
    assert short and all(s["sampling/gen_batches"] == 1 for s in steps)
    for s in short:
        assert (f"step {s['step']}: 1 generation batches (algorithm.max_gen_batches) gave {s['sampling/groups_kept']:.0f} "
                f"of {P} groups with reward variance; trained on those") in proc.stderr + proc.stdout
        # the batch is the one drawn: its uniform groups fill it
        assert s["sampling/groups_dropped"] == P - s["sampling/groups_kept"]


def test_groups_that_only_fill_the_batch_leave_the_update_as_if_they_were_not_there():
    """The filling groups (Sample.in_loss False) are forwarded but weigh nothing: the update is the
    one on the other groups alone, under every objective's aggregation."""
    import copy

    from test_rl import cfg, samples, small_model

    from lad.train.engine import TorchEngine
    from lad.train.rl import policy_update

    def update(c, batch, model):
        engine = TorchEngine(model, c.optim, c.engine, total_steps=10, grad_accum=-(-len(batch) // c.train.micro_batch_size))
        return engine.model, policy_update(engine, batch, c, step=0, pad_id=0, ref_model=None)

    def max_diff(a, b):
        return max(float((p - q).detach().abs().max()) for p, q in zip(a.parameters(), b.parameters()))

    base = small_model().double()
    for objective in ("lad", "grpo", "dr_grpo"):
        c = cfg(**{"algorithm.objective": objective, "train.micro_batch_size": 4})
        batch = samples()
        for s in batch[4:8]:  # the second group fills the batch
            s.in_loss = False
        filled, m_filled = update(c, batch, copy.deepcopy(base))
        alone, m_alone = update(c, [s for i, s in enumerate(samples()) if not 4 <= i < 8], copy.deepcopy(base))
        assert max_diff(base, filled) > 1e-3
        assert max_diff(filled, alone) < 1e-10, objective
        assert m_filled["actor/loss"] == pytest.approx(m_alone["actor/loss"], rel=1e-10)
