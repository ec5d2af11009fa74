"""Memory settings change what is kept for backward, never what is computed: chunked log-probs
and entropies against their closed forms, and log-probs, gradients and a whole RL update with
gradient checkpointing and chunking against the plain path (float64), on the tiny model and on
SmolLM2-135M-Instruct."""

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

CPU = torch.device("cpu")
TEMPERATURE = 0.7


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

