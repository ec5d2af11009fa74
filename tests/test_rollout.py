"""Rollout engines: shapes, seeding, sampling log-probs against a teacher-forced forward, EOS,
stop strings and ignore_eos on the hf engine; the vLLM engine where vLLM and a GPU exist."""

import copy

import pytest
import torch

from lad.rollout import ENGINES, Completion, RolloutEngine, SamplingParams, build_rollout
from lad.chat import prompt_ids
from lad.rollout.base import left_pad
from rollout_cases import PROMPTS, eos_biased



@pytest.fixture(scope="module")
def eager_stopper(tiny):
    """The tiny model with an untied output layer whose bias makes EOS the likeliest token."""
    model, tok = tiny
    return eos_biased(model, tok, 4.0), tok


def teacher_forced(model, c: Completion, temperature: float = 1.0) -> torch.Tensor:
    ids = torch.tensor([c.prompt_token_ids + c.token_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, :-1].float() / temperature, -1)
    n = len(c.prompt_token_ids)
    return logp[n - 1 :].gather(-1, ids[0, n:, None]).squeeze(-1)


def test_registry_and_protocol(tiny):
    assert set(ENGINES) == {"hf", "native", "vllm"}
    engine = build_rollout("hf", *tiny)
    assert isinstance(engine, RolloutEngine)
    with pytest.raises(ValueError, match="unknown rollout engine 'sglang'; expected one of \\['hf', 'native', 'vllm'\\]"):
        build_rollout("sglang", *tiny)


def test_sampling_params_validation():
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-0.5)
    assert SamplingParams(temperature=0).greedy and not SamplingParams(temperature=1e-6).greedy
    with pytest.raises(ValueError, match="stop strings must be non-empty"):
        SamplingParams(stop=[""])
    with pytest.raises(ValueError, match="extra"):
        SamplingParams(max_tokens=3)


def test_groups_shapes_and_logprobs_match_a_forward_pass(tiny):
    model, tok = tiny
    engine = build_rollout("hf", model, tok, max_batch_size=4)  # 3 x 3 sequences in 3 left-padded batches
    params = SamplingParams(n=3, max_new_tokens=10, seed=7, temperature=0.7)
    groups = engine.generate(PROMPTS, params)
    assert [len(g) for g in groups] == [3, 3, 3]
    expected_prompts = prompt_ids(tok, PROMPTS)
    for p, group in enumerate(groups):
        for c in group:
            assert c.prompt_token_ids == expected_prompts[p]
            assert len(c.token_ids) == len(c.logprobs) and 1 <= len(c.token_ids) <= 10
            if c.finish_reason == "length":
                assert len(c.token_ids) == 10 and tok.eos_token_id not in c.token_ids
            else:
                assert c.token_ids[-1] == tok.eos_token_id
            assert c.text == tok.decode(c.token_ids, skip_special_tokens=True)
            # log softmax(logits / T) of the sampled tokens, whatever the padding of the batch
            assert torch.allclose(torch.tensor(c.logprobs), teacher_forced(model, c, 0.7), atol=1e-4)
    model.train()
    engine.generate(PROMPTS[:1], SamplingParams(n=1, max_new_tokens=2, seed=0))
    assert model.training


@pytest.mark.parametrize("engine_name, options", [("hf", {}), ("native", {"decoder": "fused"}), ("native", {"decoder": "generic"})])
def test_temperature_zero_is_transformers_greedy_search_in_every_engine(tiny, engine_name, options):
    model, tok = tiny
    model.eval()
    ids = prompt_ids(tok, PROMPTS)
    input_ids, attention = left_pad(ids, tok.pad_token_id)
    steps = 12
    with torch.no_grad():
        ref = model.generate(input_ids=input_ids, attention_mask=attention, do_sample=False, max_new_tokens=steps,
                             min_new_tokens=steps, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    expected = ref[:, input_ids.shape[1]:].tolist()
    engine = build_rollout(engine_name, model, tok, max_batch_size=4, **options)  # 3 x 2 rows in batches of 4 (hf) / 2 prompts (native)
    # top_p and the seed have no say in greedy decoding
    for seed, top_p in ((0, 1.0), (5, 0.3)):
        groups = engine.generate(PROMPTS, SamplingParams(n=2, temperature=0, top_p=top_p, max_new_tokens=steps, ignore_eos=True, seed=seed))
        assert [[c.token_ids for c in g] for g in groups] == [[row, row] for row in expected]
        for c in (c for g in groups for c in g):
            assert c.finish_reason == "length"
            # the model's own log-probs, softmax(logits) at temperature 1
            assert torch.allclose(torch.tensor(c.logprobs), teacher_forced(model, c, 1.0), atol=1e-5, rtol=0)


def test_seeded_calls_repeat_and_differ_by_seed(tiny):
    engine = build_rollout("hf", *tiny, max_batch_size=8)
    ids = lambda seed: [[c.token_ids for c in g] for g in engine.generate(PROMPTS, SamplingParams(n=2, max_new_tokens=8, seed=seed))]
    state = torch.get_rng_state()
    assert ids(3) == ids(3)
    assert ids(3) != ids(4)
    assert torch.equal(state, torch.get_rng_state())  # a seeded call leaves the global RNG alone


def test_eos_ends_a_completion_and_ignore_eos_runs_to_the_cap(eager_stopper):
    model, tok = eager_stopper
    engine = build_rollout("hf", model, tok)
    stopped = [c for g in engine.generate(PROMPTS, SamplingParams(n=4, max_new_tokens=16, seed=0)) for c in g]
    assert any(c.finish_reason == "stop" for c in stopped)
    for c in stopped:
        if c.finish_reason == "stop":
            assert c.token_ids[-1] == tok.eos_token_id and tok.eos_token_id not in c.token_ids[:-1]
    fixed = [c for g in engine.generate(PROMPTS, SamplingParams(n=4, max_new_tokens=16, seed=0, ignore_eos=True)) for c in g]
    assert all(len(c.token_ids) == 16 and c.finish_reason == "length" for c in fixed)
    assert any(tok.eos_token_id in c.token_ids for c in fixed)  # EOS sampled, and sampling went on
    for c in fixed:
        assert torch.allclose(torch.tensor(c.logprobs), teacher_forced(model, c), atol=1e-4)


def test_stop_string_cuts_after_the_token_that_completes_it(tiny):
    model, tok = tiny
    engine = build_rollout("hf", model, tok, max_batch_size=16)
    params = SamplingParams(n=2, max_new_tokens=12, seed=5)
    free = engine.generate(PROMPTS, params)
    first = free[0][0]
    # a stop string that the first completion produces at its third token
    stop = tok.decode(first.token_ids[2:3], skip_special_tokens=True)
    assert stop.strip(), "pick a printable token"
    cut = engine.generate(PROMPTS, params.model_copy(update={"stop": [stop]}))
    c = cut[0][0]
    assert c.finish_reason == "stop" and stop in c.text
    assert len(c.token_ids) <= 3 and c.token_ids == first.token_ids[: len(c.token_ids)]
    assert stop not in tok.decode(c.token_ids[:-1], skip_special_tokens=True)
    for a, b in zip((x for g in free for x in g), (x for g in cut for x in g)):
        assert b.token_ids == a.token_ids[: len(b.token_ids)]  # same draws up to the stop


def test_update_weights_switches_the_sampling_model(tiny, eager_stopper):
    engine = build_rollout("hf", *tiny)
    params = SamplingParams(n=4, max_new_tokens=16, seed=0)
    before = sum(len(c.token_ids) for g in engine.generate(PROMPTS, params) for c in g)
    engine.update_weights(eager_stopper[0])
    after = sum(len(c.token_ids) for g in engine.generate(PROMPTS, params) for c in g)
    assert after < before


def _vllm_skip_reason():
    from lad.rollout.vllm import vllm_available

    ok, why = vllm_available()
    return None if ok else why


@pytest.mark.skipif(_vllm_skip_reason() is not None, reason=f"vllm rollout: {_vllm_skip_reason()}")
def test_vllm_matches_the_policy_and_takes_pushed_weights(tiny):
    model, tok = tiny
    model = copy.deepcopy(model).cuda()
    engine = build_rollout("vllm", model, tok, gpu_memory_utilization=0.2, dtype="float32", enforce_eager=True)
    params = SamplingParams(n=4, max_new_tokens=12, seed=0)
    for step in range(2):
        if step:  # an "update": new weights, pushed into the engine
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(1)
                for p in model.parameters():
                    p.add_(0.05 * torch.randn_like(p))
        engine.update_weights(model)
        groups = engine.generate(PROMPTS, params)
        assert [len(g) for g in groups] == [4, 4, 4]
        cpu = copy.deepcopy(model).cpu()
        for c in (c for g in groups for c in g):
            assert len(c.token_ids) == len(c.logprobs) >= 1
            assert torch.allclose(torch.tensor(c.logprobs), teacher_forced(cpu, c), atol=2e-3)
