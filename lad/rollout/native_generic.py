"""The native engine's decoder for any Hugging Face causal LM: the model's own forward over a
transformers ``DynamicCache``.

The fallback for architectures ``native_fused`` does not know. A DynamicCache rather than a
StaticCache because rows leave the batch as they finish: ``batch_select_indices`` drops them,
which a StaticCache's fixed batch cannot do.
"""

from __future__ import annotations

import torch

from lad.modeling import cache_kwarg


class GenericDecoder:
    """Prefill and one-token decode steps through ``model.forward``; same interface as FusedDecoder."""

    def __init__(self, model):
        self.model = model
        self.cache_kwarg = cache_kwarg(model) or "past_key_values"

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=ids, attention_mask=self.attention, position_ids=positions, use_cache=True,
                         logits_to_keep=1, **{self.cache_kwarg: self.cache})
        return out.logits[:, -1]

    def prefill(self, ids: torch.Tensor, attention: torch.Tensor, n: int, max_new_tokens: int) -> torch.Tensor:
        from transformers import DynamicCache

        self.cache = DynamicCache(config=self.model.config)
        self.attention = attention
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        logits = self._forward(ids, positions)
        self.pos = positions[:, -1] + 1
        self._select(torch.arange(ids.shape[0], device=ids.device).repeat_interleave(n))
        return logits

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.attention = torch.cat([self.attention, self.attention.new_ones((tokens.shape[0], 1))], dim=1)
        logits = self._forward(tokens.unsqueeze(1), self.pos.unsqueeze(1))
        self.pos = self.pos + 1
        return logits

    def plan_keep(self, live: list[bool]) -> list[int]:
        return [i for i, alive in enumerate(live) if alive]

    def keep(self, rows: list[int]) -> None:
        self._select(torch.tensor(rows, device=self.pos.device))

    def _select(self, rows: torch.Tensor) -> None:
        self.cache.batch_select_indices(rows)
        self.attention = self.attention.index_select(0, rows)
        self.pos = self.pos.index_select(0, rows)
