"""The native engine's decoder for any Hugging Face causal LM: the model's own forward over a
transformers ``DynamicCache``.

The fallback for architectures ``native_fused`` does not know. A DynamicCache rather than a
StaticCache because rows leave the batch as they finish: ``batch_select_indices`` drops them,
which a StaticCache's fixed batch cannot do.
"""

from __future__ import annotations

import torch


class GenericDecoder:
    """Prefill and one-token decode steps through ``model.forward``; same interface as FusedDecoder."""

    def __init__(self, model):
        self.model = model

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=ids, attention_mask=self.attention, position_ids=positions,
                         past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1]

    def prefill(self, ids: torch.Tensor, attention: torch.Tensor, repeats: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        from transformers import DynamicCache

        self.cache = DynamicCache(config=self.model.config)
        self.attention = attention
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        logits = self._forward(ids, positions)
        self.pos = positions[:, -1] + 1
        self.keep(torch.repeat_interleave(torch.arange(ids.shape[0], device=ids.device), repeats))
        return logits

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.attention = torch.cat([self.attention, self.attention.new_ones((tokens.shape[0], 1))], dim=1)
        logits = self._forward(tokens.unsqueeze(1), self.pos.unsqueeze(1))
        self.pos = self.pos + 1
        return logits

    def keep(self, rows: torch.Tensor) -> None:
        self.cache.batch_select_indices(rows)
        self.attention = self.attention.index_select(0, rows)
        self.pos = self.pos.index_select(0, rows)
