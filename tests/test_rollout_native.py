"""The native rollout engine: its fused forward against the model's own, greedy decoding against
transformers generate, sampling log-probs against a full forward, seeding, EOS / ignore_eos /
stop strings, top-p, batching, the generic fallback, and a short training run through it."""

import json

import pytest
import torch

from lad.rollout import SamplingParams, build_rollout
from lad.chat import prompt_ids
from lad.rollout.base import left_pad
from rollout_cases import PROMPTS, eos_biased
from lad.rollout.native import NativeRollout, _chunks
from lad.rollout.native_fused import FusedDecoder, fused_unsupported
from lad.rollout.native_generic import GenericDecoder
from lad.rollout.native_sampling import Sampler, nucleus_mask

DECODERS = ["fused", "generic"]


@pytest.fixture(scope="module")
def eager_stopper(tiny):
    """The tiny model with an untied output layer whose bias makes EOS likely."""
    model, tok = tiny
    return eos_biased(model, tok, 3.0), tok


def full_forward_logprobs(model, prompt: list[int], completion: list[int], temperature: float) -> torch.Tensor:
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, :-1].float() / temperature, -1)
    return logp[len(prompt) - 1 :].gather(-1, ids[0, len(prompt):, None]).squeeze(-1)


def completions(groups):
    return [c for g in groups for c in g]


@pytest.mark.parametrize("decoder_cls", [FusedDecoder, GenericDecoder])
def test_decoder_logits_equal_the_models_forward_over_the_left_padded_batch(tiny, decoder_cls):
    model, tok = tiny
    model.eval()
    ids = prompt_ids(tok, PROMPTS)
    input_ids, attention = left_pad(ids, tok.pad_token_id)
    n, new = 2, [[5, 9], [7, 7], [11, 3], [4, 8], [6, 2], [10, 12]]  # two appended tokens per row
    rows = input_ids.repeat_interleave(n, 0)
    mask = attention.repeat_interleave(n, 0)
    full_ids = torch.cat([rows, torch.tensor(new)], dim=1)
    full_mask = torch.cat([mask, torch.ones(len(new), 2, dtype=torch.long)], dim=1)
    with torch.no_grad():
        ref = model(input_ids=full_ids, attention_mask=full_mask, position_ids=(full_mask.cumsum(-1) - 1).clamp(min=0)).logits
        decoder = decoder_cls(model)
        first = decoder.prefill(input_ids, attention, n, 4).repeat_interleave(n, 0)
        second = decoder.step(torch.tensor([r[0] for r in new]))
        third = decoder.step(torch.tensor([r[1] for r in new]))
    w = input_ids.shape[1]
    for got, col in ((first, w - 1), (second, w), (third, w + 1)):
        assert torch.allclose(got, ref[:, col], atol=1e-5, rtol=0)


@pytest.mark.parametrize("decoder", DECODERS)
def test_greedy_equals_transformers_generate_token_for_token(tiny, decoder):
    model, tok = tiny
    model.eval()
    ids = prompt_ids(tok, PROMPTS)
    assert len({len(p) for p in ids}) == 3  # three widths: real left padding
    input_ids, attention = left_pad(ids, tok.pad_token_id)
    steps = 12
    with torch.no_grad():
        ref = model.generate(input_ids=input_ids, attention_mask=attention, do_sample=False, max_new_tokens=steps,
                             min_new_tokens=steps, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        new = ref[:, input_ids.shape[1]:]
        logits = model(input_ids=ref, attention_mask=torch.cat([attention, torch.ones_like(new)], 1),
                       position_ids=(torch.cat([attention, torch.ones_like(new)], 1).cumsum(-1) - 1).clamp(min=0)).logits
    # Precondition of "tiny temperature = argmax": along the greedy path the best token leads the
    # second by far more than temperature x any plausible noise.
    top2 = logits[:, input_ids.shape[1] - 1 : -1].topk(2, dim=-1).values
    assert float((top2[..., 0] - top2[..., 1]).min()) > 1e-3
    engine = NativeRollout(model, tok, decoder=decoder)
    got = engine.generate(PROMPTS, SamplingParams(n=2, temperature=1e-6, max_new_tokens=steps, ignore_eos=True, seed=0))
    for p, group in enumerate(got):
        for c in group:
            assert c.token_ids == new[p].tolist()


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("top_p", [1.0, 0.8])
def test_sampling_logprobs_equal_a_full_forward(tiny, decoder, top_p):
    model, tok = tiny
    engine = NativeRollout(model, tok, decoder=decoder, max_batch_size=4)  # 3 prompts x 3 in batches of one prompt
    groups = engine.generate(PROMPTS, SamplingParams(n=3, max_new_tokens=10, seed=7, temperature=0.7, top_p=top_p))
    expected = prompt_ids(tok, PROMPTS)
    assert [len(g) for g in groups] == [3, 3, 3]
    for p, group in enumerate(groups):
        for c in group:
            assert c.prompt_token_ids == expected[p]
            assert len(c.token_ids) == len(c.logprobs) >= 1
            assert c.text == tok.decode(c.token_ids, skip_special_tokens=True)
            # log softmax(logits / T) of the sampled token, before top-p truncation
            assert torch.allclose(torch.tensor(c.logprobs), full_forward_logprobs(model, c.prompt_token_ids, c.token_ids, 0.7),
                                  atol=1e-5, rtol=0)


def test_seeded_calls_repeat_differ_by_seed_and_leave_the_global_rng_alone(tiny):
    engine = build_rollout("native", *tiny)
    ids = lambda seed: [c.token_ids for c in completions(engine.generate(PROMPTS, SamplingParams(n=2, max_new_tokens=8, seed=seed)))]
    state = torch.get_rng_state()
    assert ids(3) == ids(3)
    assert ids(3) != ids(4)
    assert torch.equal(state, torch.get_rng_state())
    torch.manual_seed(1)
    unseeded = [c.token_ids for c in completions(engine.generate(PROMPTS, SamplingParams(n=2, max_new_tokens=8)))]
    torch.manual_seed(1)
    assert unseeded == [c.token_ids for c in completions(engine.generate(PROMPTS, SamplingParams(n=2, max_new_tokens=8)))]


@pytest.mark.parametrize("decoder", DECODERS)
def test_eos_ends_completions_and_finished_rows_leave_the_others_unchanged(eager_stopper, decoder):
    model, tok = eager_stopper
    engine = NativeRollout(model, tok, decoder=decoder)
    params = SamplingParams(n=6, max_new_tokens=16, seed=0)
    stopped = completions(engine.generate(PROMPTS, params))
    fixed = completions(engine.generate(PROMPTS, params.model_copy(update={"ignore_eos": True})))
    reasons = {c.finish_reason for c in stopped}
    assert reasons == {"stop", "length"}  # some rows ended early: the batch shrank under the others
    for s, f in zip(stopped, fixed):
        assert len(f.token_ids) == 16 and f.finish_reason == "length"
        if s.finish_reason == "stop":
            assert s.token_ids[-1] == tok.eos_token_id and tok.eos_token_id not in s.token_ids[:-1]
        else:
            assert len(s.token_ids) == 16 and tok.eos_token_id not in s.token_ids
        # A row's draws depend on its seed and position only, not on which other rows still run.
        assert f.token_ids[: len(s.token_ids)] == s.token_ids
        assert torch.allclose(torch.tensor(f.logprobs[: len(s.logprobs)]), torch.tensor(s.logprobs), atol=1e-5, rtol=0)
    assert any(tok.eos_token_id in f.token_ids[:-1] for f in fixed)  # EOS sampled, and sampling went on
    for f in fixed:
        assert torch.allclose(torch.tensor(f.logprobs), full_forward_logprobs(model, f.prompt_token_ids, f.token_ids, 1.0),
                              atol=1e-5, rtol=0)


def test_stop_string_ends_after_the_token_that_completes_it(tiny):
    model, tok = tiny
    engine = build_rollout("native", model, tok)
    params = SamplingParams(n=2, max_new_tokens=12, seed=5)
    free = completions(engine.generate(PROMPTS, params))
    stop = tok.decode(free[0].token_ids[2:3], skip_special_tokens=True)
    assert stop.strip(), "pick a printable token"
    cut = completions(engine.generate(PROMPTS, params.model_copy(update={"stop": [stop]})))
    assert cut[0].finish_reason == "stop" and len(cut[0].token_ids) <= 3
    for a, b in zip(free, cut):
        assert b.token_ids == a.token_ids[: len(b.token_ids)]
        if b.finish_reason == "stop":
            assert stop in b.text and stop not in tok.decode(b.token_ids[:-1], skip_special_tokens=True)
        else:
            assert b.token_ids == a.token_ids and stop not in b.text


def test_nucleus_mask_keeps_the_smallest_set_reaching_top_p():
    logp = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]]).log()
    assert nucleus_mask(logp, 0.8).tolist() == [[False, False, True, True], [True, True, False, False]]
    assert nucleus_mask(logp, 0.81).tolist() == [[False, False, False, True], [True, False, False, False]]
    assert nucleus_mask(logp, 1e-9).tolist() == [[False, True, True, True], [True, True, True, False]]
    assert not nucleus_mask(logp, 1.0).any()


def test_top_p_never_samples_outside_the_nucleus():
    probs = torch.tensor([0.4, 0.25, 0.2, 0.1, 0.05])
    rows = 20_000
    logits = probs.log().expand(rows, -1)
    sampler = Sampler(rows, temperature=1.0, top_p=0.6, device=torch.device("cpu"), generator=torch.Generator().manual_seed(0))
    tokens, logprobs = sampler(logits, None)
    counts = torch.bincount(tokens, minlength=5)
    assert counts[2:].sum() == 0  # nucleus {0, 1}: 0.4 < 0.6 <= 0.65
    assert abs(float(counts[0]) / rows - 0.4 / 0.65) < 0.02  # renormalised inside the nucleus
    assert torch.allclose(logprobs, probs.log()[tokens])  # log-probs before truncation
    full = Sampler(rows, temperature=1.0, top_p=1.0, device=torch.device("cpu"), generator=torch.Generator().manual_seed(0))
    assert (torch.bincount(full(logits, None)[0], minlength=5) > 0).all()  # without top-p every token occurs


def test_sampler_never_draws_a_zero_probability_token():
    logits = torch.tensor([[0.0, float("-inf"), 0.0, float("-inf")]]).expand(5000, -1)
    sampler = Sampler(5000, temperature=0.5, top_p=1.0, device=torch.device("cpu"), generator=torch.Generator().manual_seed(1))
    for _ in range(3):
        tokens, _ = sampler(logits, None)
        assert set(tokens.tolist()) == {0, 2}


def test_batches_hold_whole_groups():
    assert list(_chunks(5, 4, 8)) == [([0, 1], 4), ([2, 3], 4), ([4], 4)]
    assert list(_chunks(2, 4, 4)) == [([0], 4), ([1], 4)]
    assert list(_chunks(2, 5, 3)) == [([0], 3), ([0], 2), ([1], 3), ([1], 2)]


def test_split_groups_and_batch_sizes_give_valid_completions(tiny):
    model, tok = tiny
    engine = NativeRollout(model, tok, max_batch_size=3)  # each group of 5 split 3 + 2
    groups = engine.generate(PROMPTS[:2], SamplingParams(n=5, max_new_tokens=6, seed=2, temperature=0.9))
    assert [len(g) for g in groups] == [5, 5]
    for c in completions(groups):
        assert torch.allclose(torch.tensor(c.logprobs), full_forward_logprobs(model, c.prompt_token_ids, c.token_ids, 0.9),
                              atol=1e-5, rtol=0)


def test_generic_fallback_for_other_architectures(tiny):
    from transformers import GPT2Config, GPT2LMHeadModel

    _, tok = tiny
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=32, n_layer=2, n_head=2,
                                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)).eval()
    assert fused_unsupported(gpt2) == "model type 'gpt2' is not one of ('qwen2', 'llama')"
    with pytest.raises(ValueError, match="decoder 'fused': model type 'gpt2'"):
        NativeRollout(gpt2, tok, decoder="fused")
    engine = NativeRollout(gpt2, tok)
    assert isinstance(engine._make_decoder(), GenericDecoder)
    for c in completions(engine.generate(PROMPTS, SamplingParams(n=2, max_new_tokens=5, seed=0))):
        assert torch.allclose(torch.tensor(c.logprobs), full_forward_logprobs(gpt2, c.prompt_token_ids, c.token_ids, 1.0),
                              atol=1e-5, rtol=0)


def test_update_weights_shares_the_module_and_restores_training_mode(tiny, eager_stopper):
    model, tok = tiny
    engine = build_rollout("native", model, tok)
    params = SamplingParams(n=4, max_new_tokens=16, seed=0)
    before = sum(len(c.token_ids) for c in completions(engine.generate(PROMPTS, params)))
    engine.update_weights(eager_stopper[0])
    assert engine.model is eager_stopper[0]
    assert sum(len(c.token_ids) for c in completions(engine.generate(PROMPTS, params))) < before
    model.train()
    engine.update_weights(model)
    engine.generate(PROMPTS[:1], SamplingParams(n=1, max_new_tokens=2, seed=0))
    assert model.training


def test_training_run_through_the_native_engine(tmp_path):
    from lad.train.rl import RLConfig, train_rl

    cfg = RLConfig.model_validate({
        "model": "tiny:1m", "output_dir": str(tmp_path / "run"),
        "data": {"train": {"synthetic": {"tasks": ["countdown"], "n_per_task": 8}}},
        "rollout": {"engine": "native", "n": 4, "max_new_tokens": 8},
        "train": {"prompts_per_step": 2, "micro_batch_size": 8, "max_steps": 2, "samples_every": 0},
        "engine": {"name": "torch"}, "optim": {"lr": 1e-3}, "eval": {"at_start": False},
        "checkpoint": {"every_steps": 100}, "tracking": {"enabled": False},
    })
    train_rl(cfg)
    steps = [json.loads(line) for line in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2]
    for s in steps:
        # the trainer's recomputed log-probs are the engine's sampling log-probs
        assert s["rollout/logprob_diff_abs_max"] < 1e-5
        assert 1 <= s["response/length_mean"] <= 8
