"""SFT data: (prompt messages, response) pairs, tokenized with completion-only labels, in
length-grouped global batches that are a pure function of (seed, epoch).

Because the batch plan depends on nothing but the seed, the epoch and the example lengths, the
data position of a run is just its step count: a resumed run rebuilds the same plan and carries
on from the next batch, and every data-parallel rank knows the whole global batch (its own slice
and the total number of completion tokens the loss is normalised by) without communicating.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import torch
from pydantic import BaseModel, Field, model_validator

from lad.chat import prompt_text
from lad.data.records import DataError, read_rows

IGNORE = -100  # label of positions that carry no loss (prompt and padding)


class SyntheticSource(BaseModel):
    """Records generated on the fly by ``lad.data.synthetic`` (train split)."""

    tasks: list[str] = Field(["countdown", "arithmetic", "code"], min_length=1, description="synthetic task names")
    n_per_task: int = Field(2000, gt=0, description="records per task and difficulty")
    difficulties: list[int] = Field([1], min_length=1, description="difficulty levels to mix")
    seed: int = Field(0, description="generator seed")


class SFTData(BaseModel):
    """Where the SFT pairs come from: a file of records, or a synthetic spec (exactly one)."""

    path: Optional[str] = Field(
        None,
        description="parquet or JSONL of canonical records, local or s3://; the response is the 'response' "
        "field, else a final assistant message in 'prompt', else the synthetic demonstration",
    )
    synthetic: Optional[SyntheticSource] = None
    max_seq_len: int = Field(512, gt=1, description="longer examples are dropped (and counted), never truncated")

    @model_validator(mode="after")
    def _one_source(self) -> "SFTData":
        if (self.path is None) == (self.synthetic is None):
            raise ValueError("give exactly one of data.path and data.synthetic")
        return self


@dataclass(frozen=True)
class Pair:
    messages: list[dict]
    response: str


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    n_prompt: int  # tokens before the completion; the loss covers input_ids[n_prompt:]

    @property
    def n_completion(self) -> int:
        return len(self.input_ids) - self.n_prompt


def pair_from_record(record: dict, where: str) -> Pair:
    """The (prompt, response) of one record; ``where`` names it in errors (file and row)."""
    prompt = record.get("prompt")
    if not isinstance(prompt, list) or not prompt:
        raise DataError(f"{where}: field 'prompt' must be a non-empty list of chat messages, got {type(prompt).__name__}")
    for i, m in enumerate(prompt):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: prompt[{i}] must be a message with string 'role' and 'content'")
    messages = [{"role": m["role"], "content": m["content"]} for m in prompt]
    response = record.get("response")
    if response is None and messages[-1]["role"] == "assistant":
        response = messages.pop()["content"]
    if response is None and str(record.get("data_source", "")).startswith("synthetic/"):
        from lad.data.synthetic import demonstration

        try:
            response = demonstration(record)
        except (ValueError, KeyError) as err:
            raise DataError(f"{where}: {err}") from None
    if not isinstance(response, str) or not response.strip():
        raise DataError(
            f"{where}: no response to train on: expected a non-empty 'response' field, a final assistant "
            "message in 'prompt', or a synthetic record"
        )
    if not messages:
        raise DataError(f"{where}: 'prompt' has no messages before the assistant response")
    return Pair(messages, response)


def load_pairs(data: SFTData) -> list[Pair]:
    if data.synthetic is not None:
        from lad.data.synthetic import demonstration, generate

        s = data.synthetic
        return [
            Pair([dict(m) for m in r["prompt"]], demonstration(r))
            for task in s.tasks
            for d in s.difficulties
            for r in generate(task, s.n_per_task, seed=s.seed, difficulty=d, split="train")
        ]
    return [pair_from_record(r, f"SFT data: {data.path}, {place}") for place, r in read_rows(data.path, "SFT data")]


def tokenize_pairs(pairs: Iterable[Pair], tokenizer, max_seq_len: int) -> tuple[list[Example], int]:
    """Examples and the number dropped for exceeding ``max_seq_len``.

    Prompt and completion are tokenized separately, exactly as generation will see the prompt;
    the completion ends with the EOS token so the model learns to stop.
    """
    examples, dropped = [], 0
    for pair in pairs:
        prompt = tokenizer(prompt_text(tokenizer, pair.messages), add_special_tokens=False)["input_ids"]
        completion = tokenizer(pair.response + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        if len(prompt) + len(completion) > max_seq_len:
            dropped += 1
            continue
        examples.append(Example(prompt + completion, len(prompt)))
    return examples, dropped


def batch_plan(lengths: list[int], batch_size: int, *, seed: int, epoch: int, group: int = 32) -> list[list[int]]:
    """Global batches of example indices for one epoch, grouped by length to cut padding.

    Shuffle, then sort by length within windows of ``group`` batches, cut into batches and shuffle
    their order. An incomplete last batch is dropped so every step sees exactly ``batch_size``.
    """
    rng = random.Random(f"lad.sft|{seed}|{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * group
    batches = []
    for start in range(0, len(order), window):
        part = sorted(order[start : start + window], key=lambda i: (-lengths[i], i))
        batches += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
    batches = [b for b in batches if len(b) == batch_size]
    rng.shuffle(batches)
    return batches


def micro_slice(batch: list[int], *, micro: int, rank: int, world_size: int, micro_batch_size: int) -> list[int]:
    """The indices of micro-batch ``micro`` on ``rank`` within a global batch."""
    start = (micro * world_size + rank) * micro_batch_size
    return batch[start : start + micro_batch_size]


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask and labels (IGNORE outside completions)."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        mask[row, :n] = 1
        labels[row, e.n_prompt : n] = ids[row, e.n_prompt : n]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def completion_nll_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token negative log-likelihood over labelled (completion) positions, in fp32."""
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
