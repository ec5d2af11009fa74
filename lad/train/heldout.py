"""Greedy decoding on held-out synthetic problems: answer-format compliance and accuracy.

The SFT stage reports this after training so a warm-up run says at once whether the model
learned the answer format the RL rewards parse (\\boxed{} for math and countdown, one fenced
Python block for code) and how often its greedy answer is right.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from pydantic import BaseModel, Field

from lad.chat import prompt_text
from lad.rewards.extract import last_code_block


class HeldoutConfig(BaseModel):
    """Held-out problems from the synthetic generators' ``test`` split (never seen in training)."""

    tasks: list[str] = Field(["countdown", "arithmetic", "code"], description="synthetic tasks to evaluate; [] skips")
    n_per_task: int = Field(100, ge=0, description="problems per task")
    difficulty: int = Field(1, description="difficulty of the problems")
    seed: int = Field(1234, description="generator seed")
    max_new_tokens: int = Field(160, gt=0)
    batch_size: int = Field(32, gt=0, description="prompts decoded together")


@torch.no_grad()
def greedy_generate(model, tokenizer, prompts: list[list[dict]], *, max_new_tokens: int, batch_size: int) -> list[tuple[str, bool]]:
    """(response text, stopped at EOS) for each chat prompt, decoded greedily in left-padded batches."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    out: list[tuple[str, bool]] = []
    try:
        for start in range(0, len(prompts), batch_size):
            texts = [prompt_text(tokenizer, m) for m in prompts[start : start + batch_size]]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            gen = model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=False,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
            )
            for row in gen[:, enc["input_ids"].shape[1]:].tolist():
                stopped = tokenizer.eos_token_id in row
                if stopped:
                    row = row[: row.index(tokenizer.eos_token_id)]
                out.append((tokenizer.decode(row, skip_special_tokens=True), stopped))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out


def formatted(record: dict, response: str) -> bool:
    """Whether the response carries its answer in the format the task's reward parses."""
    if record["ability"] == "code":
        return last_code_block(response) is not None
    from lad.rewards import extract_answer

    return extract_answer(response) is not None


def correct(records: list[dict], responses: list[str]) -> list[bool]:
    """Exact verdicts through ``lad.rewards``' dispatcher, as training scores them; code must pass every test."""
    from lad.rewards import RewardConfig, score_batch

    return [s.value == 1.0 for s in score_batch(responses, records, RewardConfig(code_mode="all_pass"))]


def evaluate_heldout(model, tokenizer, cfg: HeldoutConfig) -> dict:
    """Per-task and overall format compliance, EOS rate and greedy accuracy on held-out problems."""
    from lad.data.synthetic import generate

    records = [r for t in cfg.tasks for r in generate(t, cfg.n_per_task, seed=cfg.seed, difficulty=cfg.difficulty, split="test")]
    if not records:
        return {}
    outputs = greedy_generate(model, tokenizer, [r["prompt"] for r in records], max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
    responses = [text for text, _ in outputs]
    fmt = [formatted(r, text) for r, text in zip(records, responses)]
    ok = correct(records, responses)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[r["data_source"].split("/", 1)[1]].append(i)
    groups["all"] = list(range(len(records)))
    metrics = {}
    for name, idx in groups.items():
        n = len(idx)
        metrics[f"heldout/{name}/format"] = sum(fmt[i] for i in idx) / n
        metrics[f"heldout/{name}/eos"] = sum(outputs[i][1] for i in idx) / n
        metrics[f"heldout/{name}/accuracy"] = sum(ok[i] for i in idx) / n
    metrics["heldout/all/n"] = len(records)
    return metrics
