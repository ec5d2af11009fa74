"""Rollout engines: sample G completions per chat prompt with their sampling log-probs.

    from lad.rollout import SamplingParams, build_rollout
    engine = build_rollout("native", model, tokenizer, max_batch_size=64)
    groups = engine.generate(prompts, SamplingParams(n=8, max_new_tokens=256, seed=0))  # [P][n] Completion
    engine.update_weights(model)   # after each optimizer step

``native`` (the engine's own decode loop, fastest on small models) and ``hf`` (transformers
generate) run on CPU and GPU; ``vllm`` on GPU nodes, imported lazily.
"""

from __future__ import annotations

from typing import Callable

from lad.rollout.base import Completion, RolloutEngine, SamplingParams


def _hf(model, tokenizer, **cfg) -> RolloutEngine:
    from lad.rollout.hf import HFRollout

    return HFRollout(model, tokenizer, **cfg)


def _native(model, tokenizer, **cfg) -> RolloutEngine:
    from lad.rollout.native import NativeRollout

    return NativeRollout(model, tokenizer, **cfg)


def _vllm(model, tokenizer, **cfg) -> RolloutEngine:
    from lad.rollout.vllm import VLLMRollout

    return VLLMRollout(model, tokenizer, **cfg)


ENGINES: dict[str, Callable[..., RolloutEngine]] = {"hf": _hf, "native": _native, "vllm": _vllm}


def build_rollout(name: str, model, tokenizer, **cfg) -> RolloutEngine:
    """The rollout engine ``name`` over ``model``; ``cfg`` goes to its constructor."""
    try:
        factory = ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown rollout engine {name!r}; expected one of {sorted(ENGINES)}") from None
    return factory(model, tokenizer, **cfg)


__all__ = ["Completion", "ENGINES", "RolloutEngine", "SamplingParams", "build_rollout"]
