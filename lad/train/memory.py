"""Memory settings of a training stage: activation (gradient) checkpointing and chunked log-probs.

Neither changes what is computed, only what is kept for backward: checkpointing keeps each
decoder layer's input and recomputes the layer in backward (about one more forward per step);
chunked log-probs (``lad.train.logprobs.ChunkedHead``) never hold the response's [B, T, V]
float32 logits whole. Both are off by default, the fastest choice for the small CPU models;
the GPU presets turn them on, where activations and logits, not weights, fill the memory.
"""

from __future__ import annotations

from typing import Optional

import torch
from pydantic import BaseModel, Field

from lad.train.logprobs import ChunkedHead


class MemoryConfig(BaseModel):
    model_config = {"extra": "forbid"}

    gradient_checkpointing: bool = Field(
        False, description="recompute each decoder layer in backward instead of keeping its activations (GPU presets: on)")
    logprob_chunk_size: Optional[int] = Field(
        None, gt=0, description="response positions whose logits are made at once from the final hidden states "
        "(fused with the LM head, float32 per chunk); None: the whole response's logits at once (GPU presets: 1024)")


def apply_checkpointing(model: torch.nn.Module, cfg: MemoryConfig) -> None:
    """Turn on ``model``'s gradient checkpointing if ``cfg`` asks for it."""
    if not cfg.gradient_checkpointing:
        return
    # Non-reentrant: gradients reach the parameters without the inputs requiring grad.
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # the name in newer transformers (the old one warns)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def logprob_head(model: torch.nn.Module, cfg: MemoryConfig) -> Optional[ChunkedHead]:
    """The ``head`` argument of ``token_logprobs`` for ``model``: None for whole logits."""
    return None if cfg.logprob_chunk_size is None else ChunkedHead(model, cfg.logprob_chunk_size)
