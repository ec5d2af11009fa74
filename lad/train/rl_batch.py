"""Rollout samples as training tensors, and per-token log-probs from a forward pass.

A micro-batch lays every sequence out as [left-padded prompt | right-padded response], so all
response tokens of the batch sit in the same trailing columns: only those columns' logits are
computed (``logits_to_keep``), and position ids are counted from the first real token so a
left-padded prompt sees the same positions as it did during generation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch


@dataclass
class Sample:
    """One completion of one prompt, with everything the update and the logs need."""

    prompt_index: int  # position of its prompt in the step's global batch
    record: dict
    prompt_ids: list[int]
    response_ids: list[int]
    sampling_logprobs: list[float]
    finish_reason: str
    text: str
    reward: float = 0.0
    reason: str = ""
    answer: Optional[str] = None
    advantage: float = 0.0
    old_logprobs: Optional[list[float]] = field(default=None, repr=False)
    ref_logprobs: Optional[list[float]] = field(default=None, repr=False)


def collate(samples: list[Sample], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask, position_ids [B, Lp + Tr]; response_ids and response_mask [B, Tr]."""
    lp = max(len(s.prompt_ids) for s in samples)
    tr = max(len(s.response_ids) for s in samples)
    b = len(samples)
    input_ids = torch.full((b, lp + tr), pad_id, dtype=torch.long)
    attention = torch.zeros((b, lp + tr), dtype=torch.long)
    response_mask = torch.zeros((b, tr), dtype=torch.float32)
    for i, s in enumerate(samples):
        p, r = s.prompt_ids, s.response_ids
        input_ids[i, lp - len(p) : lp] = torch.tensor(p)
        input_ids[i, lp : lp + len(r)] = torch.tensor(r, dtype=torch.long)
        attention[i, lp - len(p) : lp + len(r)] = 1
        response_mask[i, : len(r)] = 1.0
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    return {
        "input_ids": input_ids.to(device), "attention_mask": attention.to(device), "position_ids": position_ids.to(device),
        "response_ids": input_ids[:, lp:].to(device), "response_mask": response_mask.to(device),
    }


def pad_values(rows: list[list[float]], width: int, device: torch.device) -> torch.Tensor:
    """[B, width] float tensor of per-token values, zero past each row's end."""
    out = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.float32)
    return out.to(device)


def token_logprobs(forward: Callable, batch: dict[str, torch.Tensor], temperature: float, *,
                   entropy: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """log softmax(logits / T) of each response token [B, Tr] and, if asked, the entropy of each
    next-token distribution (detached). ``forward`` is the engine's (or a model's) forward."""
    tr = batch["response_ids"].shape[1]
    out = forward(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  position_ids=batch["position_ids"], logits_to_keep=tr + 1, use_cache=False)
    logits = out.logits[:, :-1].float() / temperature
    # log p(token) = logit(token) - logsumexp(logits): no [B, T, V] log-softmax kept for backward
    lse = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, batch["response_ids"].unsqueeze(-1)).squeeze(-1) - lse
    ent = None
    if entropy:
        with torch.no_grad():
            probs = torch.softmax(logits.detach(), dim=-1)
            ent = lse.detach() - (probs * logits.detach()).sum(-1)
    return logp, ent
