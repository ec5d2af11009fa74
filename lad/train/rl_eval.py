"""Held-out evaluation of a policy during and after RL: k samples per problem, scored by the
same rewards as training; Avg@k, Pass@k for every k up to the sample count, distinct correct
answers per problem and dist-n of the responses (``lad.evaluation.metrics``)."""

from __future__ import annotations

from statistics import fmean
from typing import Callable, Optional

from pydantic import BaseModel, Field

from lad.evaluation.metrics import avg_at_k, distinct_correct, distinct_n, mean_pass_at_k
from lad.rollout import RolloutEngine, SamplingParams


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


def normalize_answer(answer: str) -> str:
    """Answers that differ only in spacing count as one."""
    return "".join(answer.split())


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
        distinct_correct([normalize_answer(a) if a else None for a in r["answers"]], r["correct"]) for r in rows
    )
    for n in (1, 2, 3, 4):
        metrics[f"dist-{n}"] = fmean(distinct_n(r["responses"], n) for r in rows)
    metrics["response_len_mean"] = fmean(v for r in rows for v in r["lengths"])
    metrics["answered"] = fmean(a is not None for r in rows for a in r["answers"])
    return metrics
