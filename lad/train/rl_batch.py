"""Rollout samples as training tensors, and per-token log-probs from a forward pass.

A micro-batch lays every sequence out as [left-padded prompt | right-padded response], so all
response tokens of the batch sit in the same trailing columns: only those columns' logits are
computed (``logits_to_keep``), and position ids are counted from the first real token so a
left-padded prompt sees the same positions as it did during generation.

The G completions of a prompt repeat its tokens, so where a micro-batch holds several rows of
one prompt (``collate(..., share_prompts=True)``) the forward runs each distinct prompt once,
hands its keys and values to every row that shares it (an index-select on the KV cache, so
gradients flow back to the one prompt forward) and runs the responses on top. The result is
the full forward's, up to float rounding: same columns, masks and position ids.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from lad.train.logprobs import ChunkedHead, logprobs_from_logits


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
    reward: float = 0.0  # what the advantages see: the score plus the overlong penalty
    score: Optional[float] = None  # the reward function's value (None: the reward is the score)
    overlong_penalty: float = 0.0
    reason: str = ""
    answer: Optional[str] = None
    reward_metrics: dict[str, float] = field(default_factory=dict)  # a custom reward's extra numbers
    advantage: float = 0.0
    in_loss: bool = True  # False: it only fills the batch (dynamic sampling short of groups with signal)
    old_logprobs: Optional[list[float]] = field(default=None, repr=False)
    ref_logprobs: Optional[list[float]] = field(default=None, repr=False)
    # the rollout correction's weights: one per response token (token_tis) or one (sequence_tis)
    rollout_weights: Optional[list[float]] = field(default=None, repr=False)


def collate(samples: list[Sample], pad_id: int, device: torch.device, *, share_prompts: bool = False) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask, position_ids [B, Lp + Tr]; response_ids and response_mask [B, Tr].

    With ``share_prompts``, a micro-batch in which some prompt appears in more than one row also
    gets prompt_rows [U] (one row of each of its U distinct prompts) and prompt_of_row [B]
    (which of them row i continues), the layout ``token_logprobs`` forwards each prompt once from.
    """
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
    out = {
        "input_ids": input_ids.to(device), "attention_mask": attention.to(device), "position_ids": position_ids.to(device),
        "response_ids": input_ids[:, lp:].to(device), "response_mask": response_mask.to(device),
    }
    if share_prompts:
        distinct: dict[tuple[int, ...], int] = {}
        owner = [distinct.setdefault(tuple(s.prompt_ids), len(distinct)) for s in samples]
        # Every prompt distinct: nothing to share, and a second forward call would only add cost.
        if len(distinct) < b:
            first = {u: i for i, u in reversed(list(enumerate(owner)))}
            out["prompt_rows"] = torch.tensor([first[u] for u in range(len(distinct))], device=device)
            out["prompt_of_row"] = torch.tensor(owner, device=device)
    return out


def pad_values(rows: list[list[float]], width: int, device: torch.device) -> torch.Tensor:
    """[B, width] float tensor of per-token values, zero past each row's end."""
    out = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.float32)
    return out.to(device)


def token_logprobs(forward: Callable, batch: dict[str, torch.Tensor], temperature: float, *,
                   entropy: bool = False, cache_kwarg: Optional[str] = None,
                   head: Optional[ChunkedHead] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """log softmax(logits / T) of each response token [B, Tr] and, if asked, the entropy of each
    next-token distribution (detached). ``forward`` is the engine's (or a model's) forward;
    ``cache_kwarg`` the name under which it takes a KV cache (``shared_prompt_kwarg``), None if
    it takes none: then, or when ``collate`` found no prompt shared by two rows, one plain
    forward over [prompt | response]. With ``head`` (a ChunkedHead of the model ``forward``
    runs) the forward projects one position only and the response's logits are made chunk by
    chunk from the final hidden states."""
    ids = batch["response_ids"]
    tr = ids.shape[1]
    if cache_kwarg is None or "prompt_rows" not in batch:
        with _hidden_states(head) as seen:
            out = forward(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          position_ids=batch["position_ids"], logits_to_keep=1 if head else tr + 1, use_cache=False)
        if head is None:
            return logprobs_from_logits(out.logits[:, :-1], ids, temperature, entropy)
        return head.logprobs(seen[0][:, -tr - 1 : -1], ids, temperature, entropy)
    first, rest = _shared_prompt_logits(forward, batch, cache_kwarg, head)
    # Two halves rather than one [B, Tr, V] cat of the logits: no copy of the largest tensor.
    parts = [logprobs_from_logits(first, ids[:, :1], temperature, entropy)]
    if rest is not None:
        fn = logprobs_from_logits if head is None else head.logprobs
        parts.append(fn(rest, ids[:, 1:], temperature, entropy))
    logp = torch.cat([p[0] for p in parts], dim=1)
    return logp, torch.cat([p[1] for p in parts], dim=1) if entropy else None


def _hidden_states(head: Optional[ChunkedHead]):
    return contextlib.nullcontext([]) if head is None else head.final_hidden()


def shared_prompt_kwarg(model: torch.nn.Module) -> Optional[str]:
    """``cache_kwarg`` for ``token_logprobs``: the model's cache argument if forwarding the prompt
    once and the responses over its cache is exactly the full forward, else None."""
    from lad.modeling import cache_kwarg

    cfg = model.config
    # A sliding window crops the cache after the prompt forward; exact in principle, but the
    # responses would no longer see the same key columns as in the full forward: not taken.
    if getattr(cfg, "is_encoder_decoder", False) or getattr(cfg, "use_sliding_window", False):
        return None
    if any(t != "full_attention" for t in getattr(cfg, "layer_types", None) or []):
        return None
    # Under gradient checkpointing a layer drops the cache it is handed when gradients are taken
    # (its recompute would write it twice): the responses would not see their prompt.
    if any(getattr(m, "gradient_checkpointing", False) for m in model.modules()):
        return None
    return cache_kwarg(model)


def _shared_prompt_logits(forward: Callable, batch: dict[str, torch.Tensor], cache_kwarg: str,
                          head: Optional[ChunkedHead]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Next-token logits of the response tokens, split as the last prompt position's [B, 1, V]
    and the first Tr - 1 response positions' [B, Tr - 1, V] (None when Tr is 1); with ``head``,
    the latter's final hidden states [B, Tr - 1, H] instead."""
    ids, attention, positions = batch["input_ids"], batch["attention_mask"], batch["position_ids"]
    tr = batch["response_ids"].shape[1]
    lp = ids.shape[1] - tr
    rows, owner = batch["prompt_rows"], batch["prompt_of_row"]
    prompt = forward(input_ids=ids[rows, :lp], attention_mask=attention[rows, :lp], position_ids=positions[rows, :lp],
                     use_cache=True, logits_to_keep=1)
    first = prompt.logits.index_select(0, owner)
    if tr == 1:
        return first, None
    cache = prompt.cache if getattr(prompt, "cache", None) is not None else prompt.past_key_values
    cache.batch_select_indices(owner)  # each row gets its prompt's keys and values (differentiably)
    # The last response token predicts nothing: it is not fed.
    with _hidden_states(head) as seen:
        out = forward(input_ids=ids[:, lp:-1], attention_mask=attention[:, :-1], position_ids=positions[:, lp:-1],
                      use_cache=True, logits_to_keep=1 if head else 0, **{cache_kwarg: cache})
    return first, out.logits if head is None else seen[0]

