"""Memory settings change what is kept for backward, never what is computed: chunked log-probs
and entropies against their closed forms, and log-probs, gradients and a whole RL update with
gradient checkpointing and chunking against the plain path (float64), on the tiny model and on the
real SmolLM2-135M-Instruct (small shapes)."""

import copy

import pytest
import torch
import yaml
from test_rl import samples
from test_rl_shared_prompt import MIXED, grouped_samples

from lad.config import ConfigError
from lad.train.engine import TorchEngine
from lad.train.logprobs import ChunkedHead
from lad.train.memory import MemoryConfig, apply_checkpointing, logprob_head
from lad.train.rl import RLConfig, load_config, policy_update
from lad.train.rl_batch import collate, shared_prompt_kwarg, token_logprobs

pytestmark = pytest.mark.usefixtures("release_memory")  # the real model in float64, trained in this process

CPU = torch.device("cpu")
TEMPERATURE = 0.7
KEPT_LAYERS = 3  # of the real model's 30


class Head(torch.nn.Module):
    """A bare output head: what ChunkedHead needs of a model."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.lm_head = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=weight.dtype)
        self.lm_head.weight.data.copy_(weight)

    def get_output_embeddings(self):
        return self.lm_head


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 50])
def test_chunked_logprobs_entropy_and_gradients_equal_the_closed_form(chunk_size):
    g = torch.Generator().manual_seed(0)
    b, t, h, v = 2, 7, 5, 11
    hidden = torch.randn(b, t, h, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, h, generator=g, dtype=torch.float64)
    ids = torch.randint(0, v, (b, t), generator=g)
    coef = torch.randn(b, t, generator=g, dtype=torch.float64)
    head = Head(weight)

    logp, ent = ChunkedHead(head, chunk_size).logprobs(hidden, ids, TEMPERATURE, entropy=True)
    (coef * logp).sum().backward()

    z = hidden.detach() @ weight.T / TEMPERATURE
    p = torch.exp(z - z.logsumexp(-1, keepdim=True))
    assert torch.allclose(logp, torch.log(p.gather(-1, ids.unsqueeze(-1)).squeeze(-1)), atol=1e-12, rtol=0)
    assert torch.allclose(ent, -(p * torch.log(p)).sum(-1), atol=1e-12, rtol=0)
    # d log p(y) / dz = onehot(y) - p, and z = hidden W^T / T
    dz = coef.unsqueeze(-1) * (torch.nn.functional.one_hot(ids, v).double() - p) / TEMPERATURE
    assert torch.allclose(hidden.grad, dz @ weight, atol=1e-12, rtol=0)
    assert torch.allclose(head.lm_head.weight.grad, torch.einsum("btv,bth->vh", dz, hidden.detach()), atol=1e-12, rtol=0)


def test_chunked_logprobs_keep_no_logits_for_backward():
    g = torch.Generator().manual_seed(0)
    b, t, h, v, chunk = 2, 64, 8, 1000, 8
    hidden = torch.randn(b, t, h, generator=g, requires_grad=True)
    head = Head(torch.randn(v, h, generator=g))
    ids = torch.randint(0, v, (b, t), generator=g)
    kept: list[int] = []

    def pack(x: torch.Tensor) -> torch.Tensor:
        kept.append(x.numel())
        return x

    for chunked in (False, True):
        kept.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            if chunked:
                logp, _ = ChunkedHead(head, chunk).logprobs(hidden, ids, 1.0, entropy=True)
            else:
                logp = torch.log_softmax(head.lm_head(hidden), -1).gather(-1, ids.unsqueeze(-1))
        logp.sum().backward()
        # whole logits: [B, T, V] kept; chunked: a chunk's hidden states [B, chunk, H], no logits
        # (backward remakes one chunk's at a time)
        assert max(kept) == (b * chunk * h if chunked else b * t * v)


def grads_of(model, batch, *, cache_kwarg=None, head=None):
    """Log-probs, entropies and parameter gradients of sum(w * logp) over the response mask."""
    model.zero_grad(set_to_none=True)
    logp, ent = token_logprobs(model, batch, TEMPERATURE, entropy=True, cache_kwarg=cache_kwarg, head=head)
    mask = batch["response_mask"].double()
    w = torch.randn(mask.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (logp * w * mask).sum().backward()
    return logp.detach() * mask, ent * mask, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(got, want, tol):
    for a, b in zip(got[:2], want[:2]):
        assert torch.allclose(a, b, atol=tol, rtol=0)
    assert got[2].keys() == want[2].keys()
    for name, g in got[2].items():
        scale = float(want[2][name].abs().max().clamp(min=1e-30))
        assert float((g - want[2][name]).abs().max()) / scale < tol, name


@pytest.fixture(scope="module")
def tiny64(tiny):
    return copy.deepcopy(tiny[0]).double().train()


@pytest.mark.parametrize("chunk_size", [1, 4, 1000])
def test_chunked_head_gives_the_whole_logits_path_on_the_tiny_model(tiny64, chunk_size):
    model = copy.deepcopy(tiny64)
    ss = grouped_samples(MIXED)
    plain, shared = collate(ss, 0, CPU), collate(ss, 0, CPU, share_prompts=True)
    want = grads_of(model, plain)
    head = ChunkedHead(model, chunk_size)
    assert_same(grads_of(model, plain, head=head), want, 1e-10)
    # the shared-prompt forward (each prompt once, responses over its cache): the head changes nothing
    kw = shared_prompt_kwarg(model)
    assert_same(grads_of(model, shared, cache_kwarg=kw, head=head), grads_of(model, shared, cache_kwarg=kw), 1e-10)


def test_gradient_checkpointing_gives_the_plain_gradients_on_the_tiny_model(tiny64):
    ss = grouped_samples(MIXED)
    plain = collate(ss, 0, CPU)
    want = grads_of(copy.deepcopy(tiny64), plain)
    model = copy.deepcopy(tiny64)
    apply_checkpointing(model, MemoryConfig(gradient_checkpointing=True))
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    # a checkpointed layer drops the prompt's cache when gradients are taken: the full forward is taken
    assert shared_prompt_kwarg(model) is None
    assert_same(grads_of(model, plain), want, 1e-10)
    assert_same(grads_of(model, plain, head=logprob_head(model, MemoryConfig(logprob_chunk_size=3))), want, 1e-10)


def test_checkpointing_and_chunking_give_the_plain_gradients_on_the_real_model(smollm2_dir):
    """SmolLM2-135M (Llama, GQA, its RoPE, tied embeddings: the LM head's gradient arrives from both
    ends) in float64: log-probs, entropies and every parameter's gradient as the plain path's (1e-10).
    Its first 3 of 30 decoder layers, real weights: the path is the same for every layer, and the
    whole model's four float64 copies (weights, gradients, both paths' results: 4.3 GB) would make
    this test the suite's memory peak."""
    from lad.modeling import load_model

    model = load_model(smollm2_dir)[0]
    model.model.layers = model.model.layers[:KEPT_LAYERS]
    model.config.num_hidden_layers = KEPT_LAYERS
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:KEPT_LAYERS]
    model = model.double().train()
    ss = grouped_samples([(5, [4, 2]), (3, [6])])
    plain = collate(ss, 0, CPU)
    want = grads_of(model, plain)
    apply_checkpointing(model, MemoryConfig(gradient_checkpointing=True))
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    got = grads_of(model, plain, head=logprob_head(model, MemoryConfig(logprob_chunk_size=3)))
    assert len(got[2]) == len(want[2]) == sum(1 for p in model.parameters() if p.requires_grad)
    assert_same(got, want, 1e-10)


def update_cfg(memory: dict) -> RLConfig:
    return RLConfig.model_validate({
        "data": {"train": {"synthetic": {"tasks": ["countdown"], "n_per_task": 8}}},
        "rollout": {"n": 4, "max_new_tokens": 9}, "train": {"prompts_per_step": 4, "mini_batch_size": 8, "micro_batch_size": 4},
        "engine": {"name": "torch"}, "optim": {"lr": 1e-2, "eps": 1e-4}, "tracking": {"enabled": False}, "memory": memory})


def test_rl_update_with_checkpointing_and_chunking_equals_the_plain_update(tiny64):
    def update(memory: dict):
        c = update_cfg(memory)
        model = copy.deepcopy(tiny64)
        apply_checkpointing(model, c.memory)
        engine = TorchEngine(model, c.optim, c.engine, total_steps=4, grad_accum=c.mini_batch() // c.train.micro_batch_size)
        return engine.model, policy_update(engine, samples(seed=3), c, step=0, pad_id=0, ref_model=None)

    want_model, want = update({})
    for memory in ({"gradient_checkpointing": True}, {"logprob_chunk_size": 2}, {"gradient_checkpointing": True, "logprob_chunk_size": 2}):
        model, metrics = update(memory)
        assert max(float((p - q).detach().abs().max()) for p, q in zip(model.parameters(), want_model.parameters())) < 1e-10, memory
        assert metrics.keys() == want.keys()
        for k, v in metrics.items():
            assert abs(v - want[k]) <= 1e-8 * max(1.0, abs(want[k])), (memory, k)


def test_memory_settings_are_validated_and_left_out_of_the_trajectory(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"data": {"train": {"synthetic": {"tasks": ["countdown"]}}}, "memory": {"logprob_chunk_size": 0}}))
    with pytest.raises(ConfigError, match=r"c\.yaml: memory\.logprob_chunk_size: Input should be greater than 0$"):
        load_config(p)
    p.write_text(yaml.safe_dump({"data": {"train": {"synthetic": {"tasks": ["countdown"]}}}, "memory": {"checkpointing": True}}))
    with pytest.raises(ConfigError, match=r"memory\.checkpointing: Extra inputs are not permitted"):
        load_config(p)
    off = update_cfg({})
    on = update_cfg({"gradient_checkpointing": True, "logprob_chunk_size": 64})
    assert on.memory == MemoryConfig(gradient_checkpointing=True, logprob_chunk_size=64)
    # the same computation up to rounding: a run may resume with other memory settings
    assert on.trajectory() == off.trajectory()



def test_zero_stage_defaults_to_2_on_gpu_and_offload_is_validated():
    from pydantic import ValidationError

    from lad.train.engine import EngineConfig, OptimConfig, deepspeed_config

    def zero(device: str, **engine) -> dict:
        return deepspeed_config(OptimConfig(), EngineConfig(**engine), device=torch.device(device), precision="bf16",
                                micro_batch_size=4, grad_accum=2)["zero_optimization"]

    assert zero("cuda") == {"stage": 2}
    assert zero("cpu") == {"stage": 0}
    assert zero("cuda", zero_stage=1) == {"stage": 1}
    offload = {"device": "cpu", "pin_memory": True}
    assert zero("cuda", zero_stage=3, offload_optimizer=True, offload_params=True) == {
        "stage": 3, "offload_optimizer": offload, "offload_param": offload}
    assert zero("cpu", zero_stage=2, offload_optimizer=True) == {"stage": 2, "offload_optimizer": {"device": "cpu", "pin_memory": False}}
    for engine, message in [({"name": "torch", "zero_stage": 2}, "zero_stage needs engine name 'deepspeed'"),
                            ({"offload_optimizer": True}, "offload_optimizer needs engine name 'deepspeed' and zero_stage 1, 2 or 3"),
                            ({"name": "torch", "offload_optimizer": True}, "offload_optimizer needs engine name 'deepspeed' and zero_stage 1, 2 or 3"),
                            ({"zero_stage": 2, "offload_params": True}, "offload_params needs engine name 'deepspeed' and zero_stage 3")]:
        with pytest.raises(ValidationError, match=message):
            EngineConfig(**engine)


def test_memory_estimate_counts_the_parameters_and_shards_the_states_as_zero_does(tiny):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from lad.modeling import parameter_count
    from lad.train.memory_estimate import ModelShape, peak_bytes, state_bytes

    assert ModelShape.from_config(tiny[0].config.to_dict()).params == parameter_count(tiny[0])
    untied = Qwen2ForCausalLM(Qwen2Config(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                                          num_key_value_heads=2, intermediate_size=24, tie_word_embeddings=False))
    assert ModelShape.from_config(untied.config.to_dict()).params == parameter_count(untied)
    n = 1000
    # bf16 weights 2 + bf16 gradients 2 + fp32 master weights and moments 12, per parameter
    assert [state_bytes(n, zero_stage=s, world=8) for s in range(4)] == [16000, 2000 + 2000 + 1500, 2000 + 250 + 1500, 2000]
    assert state_bytes(n, zero_stage=2, world=8, offload_optimizer=True) == 2250
    assert state_bytes(n, zero_stage=3, world=8, offload_optimizer=True, offload_params=True) == 250
    shape = ModelShape(params=10, hidden=8, layers=2, intermediate=16, vocab=100)
    # states + 2 layers x (10 h + 4 f) values x 2 bytes x 3 tokens + 4 float32 rows of V per response token
    plain = peak_bytes(shape, micro_batch=1, seq_len=3, response_len=2, zero_stage=0, world=1, checkpointing=False, logprob_chunk=None)
    assert plain == 160 + 2 * (80 + 64) * 2 * 3 + 4 * 4 * 2 * 100
    # checkpointing: each layer's input, one layer's activations; a chunk of one position's logits
    ckpt = peak_bytes(shape, micro_batch=1, seq_len=3, response_len=2, zero_stage=0, world=1, checkpointing=True, logprob_chunk=1)
    assert ckpt == 160 + (2 * 8 + 80 + 64) * 2 * 3 + 4 * 4 * 1 * 100
    # the AdamW step's temporary (4 bytes per parameter) when it outgrows activations and logits
    assert peak_bytes(ModelShape(params=10**6, hidden=8, layers=2, intermediate=16, vocab=100), micro_batch=1, seq_len=3,
                      response_len=2, zero_stage=0, world=1, checkpointing=True, logprob_chunk=1) == 20 * 10**6


OFFLOAD_CHILD = """
import copy, sys
sys.path.insert(0, {tests!r})
from test_rl import cfg, samples, small_model
from lad.train.engine import DeepSpeedEngine, TorchEngine
from lad.train.rl import policy_update

def update(engine_cfg, make):
    c = cfg(**{{"engine": engine_cfg, "train.mini_batch_size": 8, "train.micro_batch_size": 4}})
    engine = make(copy.deepcopy(base), c)
    policy_update(engine, samples(seed=1), c, step=0, pad_id=0, ref_model=None)
    return engine.module

base = small_model()
want = update({{"name": "torch"}}, lambda m, c: TorchEngine(m, c.optim, c.engine, total_steps=4, grad_accum=2))
got = update({{"name": "deepspeed", "zero_stage": 2, "offload_optimizer": True}},
             lambda m, c: DeepSpeedEngine(m, c.optim, c.engine, total_steps=4, grad_accum=2, micro_batch_size=4))
moved = max(float((p - q).detach().abs().max()) for p, q in zip(want.parameters(), base.parameters()))
diff = max(float((p - q).detach().abs().max()) for p, q in zip(got.parameters(), want.parameters()))
print("RESULT", moved, diff)
"""


def test_zero2_with_the_optimizer_offloaded_updates_as_the_torch_engine_does():
    import sys
    from pathlib import Path

    from training_runs import run

    proc = run([sys.executable, "-c", OFFLOAD_CHILD.format(tests=str(Path(__file__).parent))])
    assert proc.returncode == 0, proc.stderr[-3000:]
    moved, diff = proc.stdout.split("RESULT")[-1].split()
    assert float(moved) > 1e-3  # two AdamW steps at lr 1e-2 did move the weights
    # torch's AdamW on DeepSpeed's offloaded fp32 partition: the torch engine's update
    assert float(diff) < 1e-6


@pytest.mark.parametrize("preset", ["paper_math.yaml", "paper_code.yaml"])
def test_the_7b_gpu_presets_checkpoint_chunk_and_shard_the_weights(preset):
    from pathlib import Path

    c = load_config(Path(__file__).resolve().parents[1] / "configs" / "train" / preset)
    assert c.memory == MemoryConfig(gradient_checkpointing=True, logprob_chunk_size=512)
    assert (c.engine.name, c.engine.zero_stage, c.engine.precision) == ("deepspeed", 3, "bf16")

