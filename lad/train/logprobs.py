"""Per-token log-probs and entropies of a causal LM, from its logits or fused with its LM head.

From logits, the float32 copy of a [B, T, V] tensor and what its log-softmax keeps for backward
dominate a training step's memory once V is large (a 152k vocabulary and 4 x 8192 tokens: about
20 GB). ``ChunkedHead`` never builds it whole: it applies the LM head to ``chunk_size``
positions of the final hidden states at a time, takes the log-softmax of that chunk in float32,
and lets autograd keep only the chunk's hidden states (``torch.utils.checkpoint``): the chunk's
logits are recomputed in backward. Peak: one [B, chunk_size, V] float32 block, forward and
backward, at the cost of one more LM-head matmul per chunk in backward.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
from torch.utils.checkpoint import checkpoint


def logprobs_from_logits(logits: torch.Tensor, ids: torch.Tensor, temperature: float,
                         entropy: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """log softmax(logits / T) at ``ids`` [B, T] and, if asked, the (detached) entropy of each row."""
    # float32 at least (bf16 logits are upcast), float64 kept: the gradient checks run in it
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature
    # log p(token) = logit(token) - logsumexp(logits): no [B, T, V] log-softmax kept for backward
    lse = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - lse
    ent = None
    if entropy:
        # After logp, so a checkpointed chunk's recompute (which stops once the tensors backward
        # needs are back) never redoes it.
        with torch.no_grad():
            probs = torch.softmax(logits.detach(), dim=-1)
            ent = lse.detach() - (probs * logits.detach()).sum(-1)
    return logp, ent


@dataclass(frozen=True)
class ChunkedHead:
    """A causal LM's output head applied ``chunk_size`` positions at a time."""

    model: torch.nn.Module
    chunk_size: int

    def logprobs(self, hidden: torch.Tensor, ids: torch.Tensor, temperature: float,
                 entropy: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``logprobs_from_logits(head(hidden), ids, ...)`` for final hidden states [B, T, H]."""
        head = self.model.get_output_embeddings()
        dtype = head.weight.dtype

        def chunk(h: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
            return logprobs_from_logits(head(h.to(dtype)), i, temperature, entropy)

        parts = []
        for start in range(0, hidden.shape[1], self.chunk_size):
            h, i = hidden[:, start : start + self.chunk_size], ids[:, start : start + self.chunk_size]
            parts.append(checkpoint(chunk, h, i, use_reentrant=False) if torch.is_grad_enabled() else chunk(h, i))
        logp = torch.cat([p[0] for p in parts], dim=1)
        return logp, torch.cat([p[1] for p in parts], dim=1) if entropy else None

    @contextlib.contextmanager
    def final_hidden(self) -> Iterator[list[torch.Tensor]]:
        """Inside, every forward of the model appends its decoder's last hidden states (after
        the final norm, what the head reads) to the yielded list."""
        seen: list[torch.Tensor] = []

        def keep(module, args, out) -> None:
            seen.append(out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0])

        handle = self.model.get_decoder().register_forward_hook(keep)
        try:
            yield seen
        finally:
            handle.remove()
