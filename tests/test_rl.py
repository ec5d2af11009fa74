"""RL trainer units: config errors, data order, the update plan, exact micro-batch accumulation,
the reference-KL term, rewards (code through the sandbox, format weight)."""

import copy
import json
import random

import pytest
import torch
import yaml

from lad.train.engine import TorchEngine
from lad.train.rl import RLConfig, load_config, make_scorer, policy_update, rollout_metrics, step_prompts, update_plan
from lad.train.rl_batch import Sample, collate, token_logprobs

DATA = {"train": {"synthetic": {"tasks": ["countdown"], "n_per_task": 8}}}


def small_model(seed=0):
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         intermediate_size=64, max_position_embeddings=64, tie_word_embeddings=True, pad_token_id=0)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def samples(n=16, g=4, seed=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt = [rng.randrange(1, 64) for _ in range(rng.randint(2, 6))]
        resp = [rng.randrange(1, 64) for _ in range(rng.randint(1, 9))]
        s = Sample(i // g, {}, prompt, resp, [0.0] * len(resp), "stop", "")
        s.advantage = rng.choice([-1.5, -0.5, 0.5, 1.5])
        out.append(s)
    return out


def cfg(**over):
    raw = {"data": DATA, "rollout": {"n": 4, "max_new_tokens": 9}, "train": {"prompts_per_step": 4, "micro_batch_size": 16},
           "engine": {"name": "torch"}, "optim": {"lr": 1e-2, "max_grad_norm": 0.0, "eps": 1e-4}, "tracking": {"enabled": False}}
    for key, value in over.items():
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return RLConfig.model_validate(raw)


def run_update(c: RLConfig, model, ref=None, seed=0):
    engine = TorchEngine(model, c.optim, c.engine, total_steps=10, grad_accum=c.mini_batch() // c.train.micro_batch_size)
    metrics = policy_update(engine, samples(seed=seed), c, step=0, pad_id=0, ref_model=ref)
    return engine.model, metrics


def max_diff(a, b):
    return max(float((p - q).detach().abs().max()) for p, q in zip(a.parameters(), b.parameters()))


# ----------------------------------------------------------------------------------- config


def test_config_errors_name_file_and_field(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": DATA, "rollout": {"n": 1}}))
    with pytest.raises(ValueError, match=r"c\.yaml: rollout\.n: Input should be greater than or equal to 2"):
        load_config(path)
    path.write_text(yaml.safe_dump({"data": DATA, "algorithm": {"objective": "lad", "loss_params": {"kapa": 4}}}))
    with pytest.raises(ValueError, match=r"algorithm: Value error, loss_params for 'lad': .*unexpected keyword argument 'kapa'"):
        load_config(path)
    path.write_text(yaml.safe_dump({"data": DATA, "algorithm": {"objective": "ppo"}}))
    with pytest.raises(ValueError, match=r"unknown policy loss 'ppo'"):
        load_config(path)
    path.write_text(yaml.safe_dump({"data": DATA, "rollout": {"n": 4}, "train": {"prompts_per_step": 3, "mini_batch_size": 5}}))
    with pytest.raises(ValueError, match=r"train.mini_batch_size 5 must divide prompts_per_step x rollout.n = 12"):
        load_config(path)
    with pytest.raises(ValueError, match=r"no such file"):
        load_config(tmp_path / "missing.yaml")
    path.write_text(yaml.safe_dump({"data": DATA}))
    c = load_config(path, **{"train.max_steps": 7, "algorithm.objective": "grpo"})
    assert (c.train.max_steps, c.algorithm.objective, c.optim.lr) == (7, "grpo", 1e-6)


def test_shipped_presets_load():
    from pathlib import Path

    presets = sorted(Path(__file__).resolve().parents[1].glob("configs/train/*.yaml"))
    assert {p.name for p in presets} >= {"tiny_cpu.yaml", "paper_math.yaml", "paper_code.yaml"}
    for p in presets:
        c = load_config(p)
        assert c.optimizer_steps() >= 1
    math = load_config(Path(presets[0]).parent / "paper_math.yaml")
    assert (math.algorithm.objective, math.algorithm.loss_params["divergence"], math.algorithm.loss_params["kappa"]) == ("lad", "js", 4.0)


# ------------------------------------------------------------------------- data and the plan


def test_step_prompts_cover_each_epoch_once_and_reshuffle():
    steps = [step_prompts(10, 3, s, seed=1, shuffle=True) for s in range(6)]
    assert all(len(s) == 3 for s in steps)
    first, second = sum(steps[:3], []), sum(steps[3:], [])
    assert len(set(first)) == 9 and len(set(second)) == 9  # 3 steps per epoch, one prompt left over
    assert first != second
    assert steps == [step_prompts(10, 3, s, seed=1, shuffle=True) for s in range(6)]
    assert step_prompts(10, 3, 1, seed=1, shuffle=False) == [3, 4, 5]


def test_update_plan_shares_add_up_to_the_one_process_plan():
    one = update_plan(24, 8, 2, 0, 1, seed=3, step=5)
    two = [update_plan(24, 8, 2, r, 2, seed=3, step=5) for r in range(2)]
    assert len(one) == 3
    assert sorted(i for whole, _ in one for i in whole) == list(range(24))
    for m, (whole, micros) in enumerate(one):
        assert sum(micros, []) == whole and all(len(mb) == 2 for mb in micros)
        assert two[0][m][0] == whole == two[1][m][0]
        # rank 0 then rank 1 micro-batches are exactly the one-process micro-batches
        assert two[0][m][1] + two[1][m][1] == micros


# ---------------------------------------------------------------------------------- updates


def test_token_logprobs_match_a_plain_forward_with_left_padding():
    model = small_model()
    ss = samples(n=5)
    batch = collate(ss, 0, torch.device("cpu"))
    logp, ent = token_logprobs(model, batch, 0.7, entropy=True)
    for row, s in enumerate(ss):
        ids = torch.tensor([s.prompt_ids + s.response_ids])
        with torch.no_grad():
            ref = torch.log_softmax(model(ids).logits[0, :-1] / 0.7, -1)
        n = len(s.prompt_ids)
        want = ref[n - 1 :].gather(-1, ids[0, n:, None]).squeeze(-1)
        assert torch.allclose(logp[row, : len(s.response_ids)].detach(), want, atol=1e-5)
        want_ent = -(ref.exp() * ref).sum(-1)[n - 1 :]
        assert torch.allclose(ent[row, : len(s.response_ids)], want_ent, atol=1e-4)


@pytest.mark.parametrize("objective", ["lad", "grpo", "dr_grpo", "dapo"])
def test_micro_batches_accumulate_to_the_whole_mini_batch_update(objective):
    # float64: in float32 the rounding of the two summation orders sits at ~1e-6 and its size
    # depends on the CPU's vector width, so a float32 bound is either loose or flaky across machines
    base = small_model().double()
    whole, m_whole = run_update(cfg(**{"algorithm.objective": objective, "train.mini_batch_size": 8, "train.micro_batch_size": 8}), copy.deepcopy(base))
    micro, m_micro = run_update(cfg(**{"algorithm.objective": objective, "train.mini_batch_size": 8, "train.micro_batch_size": 2}), copy.deepcopy(base))
    assert max_diff(base, whole) > 1e-3  # it did move
    # Equal up to float rounding of the summation order. (Adam's eps is raised so that gradient
    # entries that are rounding noise around 0 are not blown up to +-lr by Adam's normalisation.)
    assert max_diff(whole, micro) < 1e-10
    assert m_whole["actor/loss"] == pytest.approx(m_micro["actor/loss"], rel=1e-10)
    # two optimizer steps: the first mini-batch is on-policy (ratio 1), the second sees the first's update
    assert m_whole["actor/ratio_max"] > 1.0


@pytest.mark.parametrize("objective", ["lad", "grpo"])
@pytest.mark.parametrize("micro_batch_size", [16, 4])
def test_masked_truncated_responses_update_as_if_they_were_not_there(objective, micro_batch_size):
    """One on-policy mini-batch of 16: with algorithm.mask_truncated, the update (and the actor's
    figures) are those of the 11 responses that ended, trained alone; a whole group of 4 truncated
    responses leaves one micro-batch with nothing to train on."""
    def update(c, batch, model):  # one optimizer step after the batch's micro-batches
        engine = TorchEngine(model, c.optim, c.engine, total_steps=10, grad_accum=-(-len(batch) // c.train.micro_batch_size))
        return engine.model, policy_update(engine, batch, c, step=0, pad_id=0, ref_model=None)

    truncated = {0, 1, 2, 3, 9}
    batch = samples()
    for i in truncated:
        batch[i].finish_reason = "length"
    ended = [s for i, s in enumerate(samples()) if i not in truncated]
    base = small_model().double()
    over = {"algorithm.objective": objective, "train.micro_batch_size": micro_batch_size}
    masked, m_masked = update(cfg(**over, **{"algorithm.mask_truncated": True}), batch, copy.deepcopy(base))
    alone, m_alone = update(cfg(**over), ended, copy.deepcopy(base))
    unmasked, _ = update(cfg(**over), samples(), copy.deepcopy(base))
    assert max_diff(base, masked) > 1e-3
    assert max_diff(masked, alone) < 1e-10
    assert max_diff(masked, unmasked) > 1e-3
    for key in ("actor/loss", "actor/entropy", "actor/ratio_mean"):
        assert m_masked[key] == pytest.approx(m_alone[key], rel=1e-10), key


def test_first_update_is_on_policy_and_logs_every_actor_metric():
    _, m = run_update(cfg(**{"optim.max_grad_norm": 1.0}), small_model())  # one mini-batch: all 16 sequences
    assert m["actor/ratio_mean"] == pytest.approx(1.0, abs=1e-6) and m["actor/ratio_max"] == pytest.approx(1.0, abs=1e-6)
    assert m["actor/approx_kl"] == pytest.approx(0.0, abs=1e-7)
    assert m["rollout/logprob_diff_abs_mean"] > 0  # sampling log-probs were zeros: the mismatch shows
    for key in ("actor/entropy", "actor/x_mean", "actor/past_target_frac", "actor/grad_norm", "actor/loss"):
        assert key in m
    assert 0 < m["actor/entropy"] <= torch.log(torch.tensor(64.0)).item() + 1e-5


def test_kl_to_the_reference_is_zero_at_the_start_and_then_pulls_back():
    base = small_model()
    plain, _ = run_update(cfg(), copy.deepcopy(base))
    with_kl, m = run_update(cfg(**{"algorithm.kl_coef": 0.5}), copy.deepcopy(base), ref=copy.deepcopy(base))
    assert m["actor/kl_ref"] == pytest.approx(0.0, abs=1e-7)
    assert max_diff(plain, with_kl) < 1e-6  # k3 has zero gradient where pi_theta = pi_ref
    # from a moved policy, the KL term changes the update
    moved_plain, _ = run_update(cfg(), copy.deepcopy(plain), seed=1)
    moved_kl, m2 = run_update(cfg(**{"algorithm.kl_coef": 0.5}), copy.deepcopy(plain), ref=copy.deepcopy(base), seed=1)
    assert m2["actor/kl_ref"] > 0 and max_diff(moved_plain, moved_kl) > 1e-6


def test_rollout_metrics():
    ss = samples(n=8, g=4)
    for s, r in zip(ss, [1, 1, 0, 0, 1, 1, 1, 1]):
        s.reward, s.reason = float(r), "correct" if r else "wrong"
    ss[0].finish_reason = "length"
    rewards = torch.tensor([s.reward for s in ss]).view(2, 4)
    from lad.advantages import grpo_advantages

    _, adv_m = grpo_advantages(rewards)
    m = rollout_metrics(ss, rewards, adv_m)
    assert m["reward/mean"] == 0.75 and m["reward/accuracy"] == 0.75
    assert m["reward/zero_variance_group_frac"] == 0.5
    assert m["response/clip_frac"] == 1 / 8
    assert m["reward/reason/wrong"] == 0.25
    assert m["response/length_max"] == max(len(s.response_ids) for s in ss)


# ---------------------------------------------------------------------------------- rewards


def test_code_reward_fraction_and_all_pass():
    from lad.data.synthetic import demonstration, generate
    from lad.rewards.code import score_code

    records = generate("code", 3, seed=0)
    good = demonstration(records[0])
    wrong = "```python\ndef f(x):\n    return 0\n```"
    responses = [good, wrong, "no code here"]
    frac = score_code(responses, records)
    assert (frac[0].value, frac[0].reason) == (1.0, "correct")
    assert frac[2].value == 0.0 and frac[2].reason == "no_code"
    allp = score_code(responses, records, mode="all_pass")
    assert allp[0].value == 1.0
    assert 0.0 <= frac[1].value < 1.0 and allp[1].value == 0.0
    passed, total = map(int, frac[1].reason.split(":")[0].split("_")[1::2])
    assert frac[1].value == passed / total


def test_code_reward_runs_class_methods_and_reference_tested_rows():
    """The RL reward scores LeetCode-style and HumanEval+-style rows as the evaluator does:
    Class.method call tests, starter code, and expected values from the reference solution."""
    from lad.rewards.code import score_code

    leetcode = {"data_source": "lcb", "ability": "code", "reward_model": {"ground_truth": ""},
                "extra_info": {"index": 0, "entry_point": "Solution.add", "test_type": "call",
                               "starter_code": "class Solution:\n    def add(self, a: List[int], b: int) -> int:\n        ",
                               "tests": json.dumps([{"type": "call", "entry_point": "Solution.add", "args": [[1, 2], 3], "expected": 6},
                                                    {"type": "call", "entry_point": "Solution.add", "args": [[], 5], "expected": 5}])}}
    reference = {"data_source": "heplus", "ability": "code", "reward_model": {"ground_truth": ""},
                 "extra_info": {"index": 7, "entry_point": "sq", "test_type": "reference",
                                "reference_solution": "def sq(x):\n    return x * x\n", "starter_code": "def sq(x):\n",
                                "tests": json.dumps([{"type": "call", "entry_point": "sq", "args": [a]} for a in (2, 3, 4)])}}
    good_lc = "```python\nclass Solution:\n    def add(self, a: List[int], b: int) -> int:\n        return sum(a) + b\n```"
    body_only = "```python\n    return x * x\n```"  # continues the starter code
    half_right = "```python\ndef sq(x):\n    return x * x if x < 3 else 0\n```"
    scores = score_code([good_lc, body_only, half_right], [leetcode, reference, reference])
    assert [(s.value, s.reason) for s in scores] == [(1.0, "correct"), (1.0, "correct"),
                                                     (1 / 3, "passed_1_of_3: failed: returned 0, expected 9")]
    strict = score_code([half_right], [reference], mode="all_pass")
    assert (strict[0].value, strict[0].reason) == (0.0, "passed_1_of_3: failed: returned 0, expected 9")


def test_code_reward_fraction_counts_passed_tests():
    from lad.rewards.code import code_score

    assert code_score(3, 5, "ok", "fraction").value == 0.6
    assert code_score(3, 5, "ok", "all_pass").value == 0.0
    assert code_score(5, 5, "ok", "all_pass").value == 1.0
    assert code_score(5, 5, "sandbox_error", "fraction").value == 0.0
    with pytest.raises(ValueError, match="unknown code reward mode 'most'"):
        code_score(1, 1, "ok", "most")


def test_scorer_dispatches_by_ability_and_weights_format():
    from lad.data.synthetic import demonstration, generate
    from lad.train.rl import RewardConfig

    cd, code = generate("countdown", 1, seed=0)[0], generate("code", 1, seed=0)[0]
    records = [cd, cd, cd, code]
    responses = [demonstration(cd), "\\boxed{1}", "no answer", demonstration(code)]
    plain = make_scorer(RewardConfig())(responses, records)
    assert [x.value for x in plain] == [1.0, 0.0, 0.0, 1.0]
    assert plain[2].reason == "no_answer"
    shaped = make_scorer(RewardConfig(format_weight=0.25))(responses, records)
    assert [x.value for x in shaped] == [1.0, 0.25, 0.0, 1.0]
