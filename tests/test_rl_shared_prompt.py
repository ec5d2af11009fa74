"""The RL update's shared-prompt forward (each distinct prompt of a micro-batch run once, its
keys/values index-selected to the rows that continue it) against the full [prompt | response]
forward: the same log-probs, entropies, gradients and updates; the group-keeping update plan;
and the fallbacks to the full forward."""

import copy
import random

import pytest
import torch

from lad.train.engine import TorchEngine
from lad.train.rl import RLConfig, policy_update, update_plan
from lad.train.rl_batch import Sample, collate, shared_prompt_kwarg, token_logprobs

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_lm(tiny):
    """The tiny model alone."""
    return tiny[0]


def grouped_samples(groups: list[tuple[int, list[int]]], seed: int = 0) -> list[Sample]:
    """One group per (prompt length, response lengths): the rows of a group share its prompt."""
    rng = random.Random(seed)
    out = []
    for p, (prompt_len, lengths) in enumerate(groups):
        prompt = [rng.randrange(5, 400) for _ in range(prompt_len)]
        for n in lengths:
            resp = [rng.randrange(5, 400) for _ in range(n)]
            s = Sample(p, {}, prompt, resp, [0.0] * n, "stop", "")
            s.advantage = rng.choice([-1.5, -0.5, 0.5, 1.5])
            out.append(s)
    return out


# Groups of different prompt and response lengths; one micro-batch mixes all of them and a
# prompt that only one row has.
MIXED = [(3, [5, 1, 9]), (11, [7, 7]), (6, [2, 9, 4, 1]), (8, [3])]


class Spy:
    """A forward that records whether each call used a KV cache."""

    def __init__(self, forward):
        self.forward, self.calls = forward, []

    def __call__(self, **kw):
        self.calls.append(bool(kw.get("use_cache")))
        return self.forward(**kw)


class NoCacheLM(torch.nn.Module):
    """A causal LM whose forward takes no KV cache (as some custom models' do)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config = inner, inner.config

    def forward(self, input_ids, attention_mask, position_ids, logits_to_keep, use_cache):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          logits_to_keep=logits_to_keep, use_cache=use_cache)


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def test_shared_prompt_logprobs_entropies_and_gradients_equal_the_full_forward(tiny_lm):
    model = copy.deepcopy(tiny_lm)
    ss = grouped_samples(MIXED)
    kw = shared_prompt_kwarg(model)
    assert kw == "cache"
    shared_batch = collate(ss, 0, CPU, share_prompts=True)
    plain_batch = collate(ss, 0, CPU)
    assert shared_batch["prompt_rows"].tolist() == [0, 3, 5, 9]
    assert shared_batch["prompt_of_row"].tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2, 3]
    assert "prompt_rows" not in plain_batch
    weights = torch.randn(plain_batch["response_mask"].shape, generator=torch.Generator().manual_seed(0))

    def run(batch, cache_kwarg):
        model.zero_grad(set_to_none=True)
        spy = Spy(model)
        logp, ent = token_logprobs(spy, batch, 0.7, entropy=True, cache_kwarg=cache_kwarg)
        mask = batch["response_mask"]
        (logp * weights * mask).sum().backward()
        return logp.detach() * mask, ent * mask, {n: p.grad.clone() for n, p in model.named_parameters()}, spy.calls

    logp, ent, grads, calls = run(shared_batch, kw)
    want_logp, want_ent, want_grads, want_calls = run(plain_batch, kw)
    assert calls == [True, True] and want_calls == [False]  # prompts once, then responses over their cache
    assert torch.allclose(logp, want_logp, atol=1e-5, rtol=0)
    assert torch.allclose(ent, want_ent, atol=1e-5, rtol=0)
    assert grads.keys() == want_grads.keys()
    for name, g in grads.items():
        assert rel_diff(g, want_grads[name]) < 1e-5, name
    # the old-log-prob pass: no gradients kept, same values
    with torch.no_grad():
        old, _ = token_logprobs(model, shared_batch, 0.7, cache_kwarg=kw)
    assert torch.allclose(old * shared_batch["response_mask"], want_logp, atol=1e-5, rtol=0)


def test_one_token_responses_take_the_prompt_forward_only(tiny_lm):
    ss = grouped_samples([(4, [1, 1]), (9, [1, 1, 1])])
    batch = collate(ss, 0, CPU, share_prompts=True)
    spy = Spy(tiny_lm)
    with torch.no_grad():
        logp, ent = token_logprobs(spy, batch, 1.0, entropy=True, cache_kwarg="cache")
        want, want_ent = token_logprobs(tiny_lm, collate(ss, 0, CPU), 1.0, entropy=True)
    assert spy.calls == [True]
    assert torch.allclose(logp, want, atol=1e-5, rtol=0) and torch.allclose(ent, want_ent, atol=1e-5, rtol=0)


def test_the_full_forward_is_taken_where_nothing_is_shared_or_the_model_takes_no_cache(tiny_lm):
    distinct = grouped_samples([(3, [4]), (5, [2]), (7, [6])])
    batch = collate(distinct, 0, CPU, share_prompts=True)
    assert "prompt_rows" not in batch  # every prompt distinct
    spy = Spy(tiny_lm)
    with torch.no_grad():
        token_logprobs(spy, batch, 1.0, cache_kwarg="cache")
    assert spy.calls == [False]

    no_cache = NoCacheLM(tiny_lm)
    assert shared_prompt_kwarg(no_cache) is None
    shared = collate(grouped_samples(MIXED), 0, CPU, share_prompts=True)
    spy = Spy(no_cache)
    with torch.no_grad():
        token_logprobs(spy, shared, 1.0, cache_kwarg=shared_prompt_kwarg(no_cache))
    assert spy.calls == [False]

    sliding = copy.deepcopy(tiny_lm)
    sliding.config.layer_types = ["full_attention", "sliding_attention"] + ["full_attention"] * (sliding.config.num_hidden_layers - 2)
    assert shared_prompt_kwarg(sliding) is None


def _config(**train) -> RLConfig:
    return RLConfig.model_validate({
        "data": {"train": {"synthetic": {"tasks": ["countdown"], "n_per_task": 8}}},
        "rollout": {"n": 4, "max_new_tokens": 9},
        "algorithm": {"objective": "lad", "update_epochs": 2, "kl_coef": 0.1},
        "train": {"prompts_per_step": 4, **train},
        "engine": {"name": "torch"}, "optim": {"lr": 1e-3, "max_grad_norm": 0.0, "eps": 1e-3}, "tracking": {"enabled": False},
    })


def test_policy_update_with_shared_prompts_equals_the_full_forward_update(tiny_lm):
    """Old log-probs, reference log-probs and two epochs of two mini-batches each: the same
    weights and metrics whether the micro-batches forward each prompt once or every row in full.
    (Adam's eps is raised to lr: near-zero gradient entries are rounding noise that Adam would
    otherwise scale up to +-lr per step.)"""
    groups = [(3, [5, 1, 9, 2]), (11, [7, 7, 3, 8]), (6, [2, 9, 4, 1]), (8, [3, 6, 6, 9])]
    cfg = _config(mini_batch_size=8, micro_batch_size=4)
    results = {}
    for name, wrap in (("shared", lambda m: m), ("full", NoCacheLM)):
        model = wrap(copy.deepcopy(tiny_lm))
        ref = wrap(copy.deepcopy(tiny_lm)).eval().requires_grad_(False)
        engine = TorchEngine(model, cfg.optim, cfg.engine, total_steps=10, grad_accum=2)
        spy = Spy(engine.forward)
        engine.forward = spy
        metrics = policy_update(engine, grouped_samples(groups), cfg, step=0, pad_id=0, ref_model=ref)
        results[name] = (list(engine.model.parameters()), metrics, spy.calls)
    (shared, m_shared, calls), (full, m_full, full_calls) = results["shared"], results["full"]
    assert set(calls) == {True} and set(full_calls) == {False}
    assert max(float((p - q).abs().max()) for p, q in zip(shared, full)) < 1e-6
    assert max(float((p - q).abs().max()) for p, q in zip(shared, tiny_lm.parameters())) > 1e-3  # it did move
    assert m_shared.keys() == m_full.keys()
    for key, value in m_full.items():
        assert m_shared[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


@pytest.mark.parametrize("mini,micro", [(8, 4), (8, 8), (16, 8), (8, 2), (16, 16)])
def test_plan_keeps_groups_together_and_covers_every_sample_once(mini, micro):
    g, n = 4, 32
    one = update_plan(n, mini, micro, 0, 1, seed=3, step=5, group=g)
    assert sorted(i for whole, _ in one for i in whole) == list(range(n))
    for whole, micros in one:
        assert sum(micros, []) == whole
        assert all(len(mb) == micro for mb in micros)
        for mb in micros:
            groups = [i // g for i in mb]
            if micro % g == 0:  # whole groups, consecutive
                assert all(groups.count(x) == g for x in groups)
            else:  # a slice of one group
                assert len(set(groups)) == 1
    # the groups are shuffled, not left in order
    assert [i // g for whole, _ in one for i in whole[::g]] != list(range(n // g))
    # two processes split each mini-batch into the same micro-batches
    two = [update_plan(n, mini, micro // 2, r, 2, seed=3, step=5, group=g) for r in range(2)]
    for m, (whole, _) in enumerate(one):
        assert two[0][m][0] == whole == two[1][m][0]
        assert sum(two[0][m][1] + two[1][m][1], []) == whole


def test_plan_falls_back_to_the_per_sample_shuffle_when_mini_batches_would_split_groups():
    order = list(range(24))
    random.Random("lad.rl.plan|3|5").shuffle(order)
    per_sample = [(order[m : m + 6], [order[m + k : m + k + 2] for k in range(0, 6, 2)]) for m in range(0, 24, 6)]
    assert update_plan(24, 6, 2, 0, 1, seed=3, step=5, group=4) == per_sample  # 6 is not a multiple of G = 4
    assert update_plan(24, 6, 2, 0, 1, seed=3, step=5) == per_sample  # group 1: today's plan, unchanged
