"""The native engine on real weights (SmolLM2-135M-Instruct: Llama, GQA 9/3 heads, tied
embeddings, RoPE theta 1e5): greedy decoding equals transformers' greedy token for token on
GSM8K prompts through both decoders, and sampling log-probs equal a full forward."""

import pytest
import torch

from lad.evaluation.benchmarks import load_records, resolve
from lad.evaluation.config import BenchmarkOverrides, EvalConfig
from lad.modeling import load_model
from lad.rollout import SamplingParams, build_rollout
from lad.chat import prompt_ids
from lad.rollout.base import left_pad
from lad.rollout.native_fused import fused_unsupported

PROMPTS, TOKENS = 16, 128  # the size: 16 GSM8K prompts x 128 tokens


@pytest.fixture(scope="module")
def smollm2(smollm2_dir):
    model, tok = load_model(smollm2_dir)
    return model.eval(), tok


@pytest.fixture(scope="module")
def gsm8k_prompts():
    over = BenchmarkOverrides(name="gsm8k", k=1, limit=PROMPTS)
    cfg = EvalConfig(model="unused", benchmarks=[over])
    return [r["prompt"] for r in load_records(resolve(over, cfg), cfg)]


@pytest.fixture(scope="module")
def hf_greedy(smollm2, gsm8k_prompts):
    """transformers' greedy continuation of each prompt (EOS an ordinary token, as with ignore_eos)
    and the smallest top-1 / top-2 logit margin along it."""
    model, tok = smollm2
    ids = prompt_ids(tok, gsm8k_prompts)
    input_ids, attention = left_pad(ids, tok.pad_token_id)
    saved, model.generation_config.eos_token_id = model.generation_config.eos_token_id, None
    try:
        with torch.no_grad():
            seq = model.generate(input_ids=input_ids, attention_mask=attention, do_sample=False, max_new_tokens=TOKENS,
                                 pad_token_id=tok.pad_token_id, eos_token_id=None)
            mask = torch.cat([attention, torch.ones_like(seq[:, input_ids.shape[1]:])], 1)
            logits = model(input_ids=seq, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    finally:
        model.generation_config.eos_token_id = saved
    top2 = logits[:, input_ids.shape[1] - 1 : -1].topk(2, dim=-1).values
    return seq[:, input_ids.shape[1]:].tolist(), float((top2[..., 0] - top2[..., 1]).min())


def test_the_fused_decoder_accepts_this_model(smollm2):
    model, _ = smollm2
    assert fused_unsupported(model) is None
    assert model.config.rope_parameters == {"rope_theta": 100000.0, "rope_type": "default"}


@pytest.mark.parametrize("decoder", ["fused", "generic"])
def test_native_greedy_equals_hf_greedy_token_for_token(smollm2, gsm8k_prompts, hf_greedy, decoder, capfd):
    model, tok = smollm2
    expected, margin = hf_greedy
    # The engine's logits differ from transformers' by float rounding (~1e-6): the same argmax
    # needs the best logit to lead by more than that all along the path.
    assert margin > 1e-4
    assert len({len(p) for p in prompt_ids(tok, gsm8k_prompts)}) >= PROMPTS // 2  # rows left-padded by many amounts
    engine = build_rollout("native", model, tok, decoder=decoder)
    got = engine.generate(gsm8k_prompts, SamplingParams(n=2, temperature=0, max_new_tokens=TOKENS, ignore_eos=True))
    assert [[c.token_ids for c in group] for group in got] == [[row, row] for row in expected]
    said = capfd.readouterr().err
    if decoder == "fused":
        assert "native rollout: fused decoder for llama\n" in said
    else:
        assert "native rollout: generic decoder for llama (decoder='generic')\n" in said


def test_sampling_logprobs_are_within_1e_4_of_a_full_forward(smollm2, gsm8k_prompts):
    model, tok = smollm2
    engine = build_rollout("native", model, tok)
    groups = engine.generate(gsm8k_prompts[:2], SamplingParams(n=3, temperature=0.6, top_p=0.95, max_new_tokens=32, seed=1))
    worst = 0.0
    for group in groups:
        for c in group:
            ids = torch.tensor([c.prompt_token_ids + c.token_ids])
            with torch.no_grad():
                logp = torch.log_softmax(model(ids).logits[0, :-1].float() / 0.6, -1)
            full = logp[len(c.prompt_token_ids) - 1 :].gather(-1, ids[0, len(c.prompt_token_ids):, None]).squeeze(-1)
            worst = max(worst, float((torch.tensor(c.logprobs) - full).abs().max()))
    assert len({tuple(c.token_ids) for g in groups for c in g}) == 6  # six distinct samples, so sampling really ran
    assert worst < 1e-4
