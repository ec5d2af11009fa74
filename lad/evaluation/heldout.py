"""Held-out evaluation inside the training stages, scored by the rewards training uses.

- SFT (``evaluate_heldout``): greedy decoding on held-out synthetic problems after the warm-up,
  so a run says at once whether the model learned the answer format the RL rewards parse
  (\\boxed{} for math and countdown, one fenced Python block for code) and how often its
  greedy answer is right.
- RL (``evaluate_policy``): k samples per held-out problem before, during and after training;
  Avg@k, Pass@k for every k up to the sample count, distinct correct answers per problem and
  dist-n of the responses (``lad.evaluation.metrics``).

The evaluation stage itself (``lad eval``: benchmarks, resumable sample logs, reports) is
``lad.evaluation.stage``.
"""

from __future__ import annotations

from collections import defaultdict
from statistics import fmean
from typing import Callable, Optional

import torch
from pydantic import BaseModel, Field

from lad.chat import prompt_text
from lad.evaluation.metrics import avg_at_k, distinct_correct, distinct_n, mean_pass_at_k
from lad.evaluation.scoring import squash
from lad.rewards.extract import last_code_block
from lad.rollout import RolloutEngine, SamplingParams

# --------------------------------------------------------------------------------------------
# SFT: greedy, on the synthetic generators' test split
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# RL: k samples per problem, during and after training
# --------------------------------------------------------------------------------------------


class HeldoutEvalConfig(BaseModel):
    """Periodic evaluation on held-out prompts (rank 0 samples, the others wait)."""

    every_steps: int = Field(0, ge=0, description="evaluate every N steps; 0: only before the first and after the last step")
    at_start: bool = Field(True, description="also evaluate the starting policy (the baseline of the run)")
    k: int = Field(8, gt=0, description="samples per problem (Avg@k, Pass@1..k)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of the evaluation")
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: Optional[int] = Field(None, gt=0, description="None: the rollout's max_new_tokens")
    seed: int = Field(4321, description="sampling seed: every evaluation of a run draws with the same seed")
    prompts_per_call: int = Field(16, gt=0, description="problems sampled together")


def evaluate_policy(rollout: RolloutEngine, records: list[dict], cfg: HeldoutEvalConfig, max_new_tokens: int,
                    score: Callable[[list[str], list[dict]], list]) -> tuple[dict[str, float], list[dict]]:
    """(metrics, one row per problem with its samples). ``score(responses, records)`` -> Scores."""
    params = SamplingParams(n=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p,
                            max_new_tokens=cfg.max_new_tokens or max_new_tokens)
    rows = []
    for start in range(0, len(records), cfg.prompts_per_call):
        chunk = records[start : start + cfg.prompts_per_call]
        groups = rollout.generate([r["prompt"] for r in chunk], params.model_copy(update={"seed": cfg.seed + start}))
        texts = [c.text for g in groups for c in g]
        scores = score(texts, [r for r in chunk for _ in range(cfg.k)])
        for i, (record, group) in enumerate(zip(chunk, groups)):
            s = scores[i * cfg.k : (i + 1) * cfg.k]
            rows.append({
                "index": (record.get("extra_info") or {}).get("index", start + i),
                "data_source": record.get("data_source"),
                "responses": [c.text for c in group],
                "rewards": [x.value for x in s],
                "correct": [x.value >= 1.0 for x in s],
                "answers": [x.answer for x in s],
                "lengths": [len(c.token_ids) for c in group],
            })
    metrics = summarize(rows, cfg.k)
    sources = sorted({str(r["data_source"]) for r in rows})
    if len(sources) > 1:  # one benchmark per source, e.g. the paper's six math sets
        for source in sources:
            part = summarize([r for r in rows if str(r["data_source"]) == source], cfg.k)
            metrics.update({f"{source}/{k}": v for k, v in part.items()})
    return metrics, rows


def summarize(rows: list[dict], k: int) -> dict[str, float]:
    correct = [r["correct"] for r in rows]
    metrics = {f"avg@{k}": avg_at_k(correct), "reward_mean": fmean(v for r in rows for v in r["rewards"])}
    for j in range(1, k + 1):
        metrics[f"pass@{j}"] = mean_pass_at_k(correct, j)
    metrics["distinct_correct"] = fmean(
        distinct_correct([squash(a) if a else None for a in r["answers"]], r["correct"]) for r in rows
    )
    for n in (1, 2, 3, 4):
        metrics[f"dist-{n}"] = fmean(distinct_n(r["responses"], n) for r in rows)
    metrics["response_len_mean"] = fmean(v for r in rows for v in r["lengths"])
    metrics["answered"] = fmean(a is not None for r in rows for a in r["answers"])
    return metrics
