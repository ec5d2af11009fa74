"""The rollout interface: sampling settings, one completion, and what every engine provides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Protocol, runtime_checkable

from pydantic import BaseModel, Field, model_validator


class SamplingParams(BaseModel):
    """How completions are sampled; one object for every engine.

    Log-probs returned with a completion are those of the sampled tokens under
    softmax(logits / temperature), before any top-p truncation: the same quantity the trainer
    recomputes, so their difference measures engine numerics and nothing else.

    Temperature 0 is greedy decoding: every token is the argmax of its logits (top-p and the
    seed play no part, and the n completions of a prompt are the same), and the log-probs are
    those of the model's own distribution, softmax(logits).
    """

    n: int = Field(1, gt=0, description="completions per prompt (the group size G)")
    temperature: float = Field(1.0, ge=0, description="softmax temperature; 0: greedy decoding (argmax)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass; 1.0 disables it")
    max_new_tokens: int = Field(256, gt=0, description="completion length cap; a completion that hits it ends with finish_reason 'length'")
    stop: list[str] = Field([], description="stop strings; the completion ends after the token that completes one (kept in text)")
    seed: Optional[int] = Field(None, description="seeds the sampling of this call; None: the engine's current RNG state")
    ignore_eos: bool = Field(False, description="keep sampling past EOS up to max_new_tokens (fixed-length completions for benchmarks)")

    model_config = {"extra": "forbid"}

    @model_validator(mode="after")
    def _no_empty_stop(self) -> "SamplingParams":
        if any(s == "" for s in self.stop):
            raise ValueError("stop strings must be non-empty")
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Completion:
    """One sampled completion.

    token_ids: the sampled tokens, the EOS token included when the completion stopped on it
        (training on it is what teaches the policy to stop).
    text: the decoded completion without special tokens; a stop string that ended it is kept.
    logprobs: one sampling log-prob per token id (see SamplingParams).
    finish_reason: "stop" (EOS or a stop string) or "length" (max_new_tokens reached).
    """

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: Literal["stop", "length"]
    prompt_token_ids: list[int] = field(default_factory=list)


@runtime_checkable
class RolloutEngine(Protocol):
    """Samples completions for chat prompts with the current policy weights."""

    def generate(self, prompts: list[list[dict]], params: SamplingParams) -> list[list[Completion]]:
        """``params.n`` completions for each prompt (chat messages); result is [len(prompts)][n]."""

    def update_weights(self, model) -> None:
        """Make the next ``generate`` sample from ``model``'s current weights."""


def left_pad(ids: list[list[int]], pad_id: int):
    """(input_ids, attention_mask) [B, longest] of token-id lists padded on the left, as decoders
    batch prompts so that every row's next token sits in the last column."""
    import torch

    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(ids), width), dtype=torch.long)
    for i, p in enumerate(ids):
        input_ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        attention[i, width - len(p):] = 1
    return input_ids, attention
