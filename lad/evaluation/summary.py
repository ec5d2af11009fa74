"""From per-sample results to the numbers of summary.json, with the paper's metric names.

Pure functions over result rows (dicts as written by :mod:`lad.evaluation.results`) and the
scorer's answer classes; no I/O.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from statistics import fmean
from typing import Optional

from lad.evaluation.metrics import (
    avg_at_k_with_ci,
    distinct_correct,
    distinct_n,
    length_stats,
    majority_vote,
    mean_pass_at_k,
    pass_at_k_curve,
)


def by_problem(rows: list[dict]) -> dict[int, list[dict]]:
    """Rows grouped by problem id (in first-seen order), each problem's samples in sample order."""
    grouped: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        grouped[r["problem_id"]].append(r)
    return {pid: sorted(samples, key=lambda r: r["sample"]) for pid, samples in grouped.items()}


def pass_ks(k: int) -> list[int]:
    """The Pass@k values reported as numbers: powers of two below k, and k itself."""
    out, j = [], 1
    while j < k:
        out.append(j)
        j *= 2
    return out + [k]


def benchmark_summary(
    name: str,
    ability: str,
    k: int,
    problems: dict[int, list[dict]],
    classes: dict[int, dict[str, int]],
    *,
    dist_n: list[int],
    resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """The metrics of one benchmark whose every problem has exactly k samples.

    ``classes[problem_id]`` maps each extracted answer of that problem to its equivalence class
    (math-verify for math, exact expression for countdown, normalised program for code).
    """
    short = {pid: len(s) for pid, s in problems.items() if len(s) != k}
    if short:
        pid, n = next(iter(short.items()))
        raise ValueError(f"{name}: {len(short)} problem(s) do not have k={k} samples (problem {pid} has {n})")
    ids = list(problems)
    correct = [[bool(r["correct"]) for r in problems[p]] for p in ids]
    answers = [[r["answer"] for r in problems[p]] for p in ids]
    responses = [[r["response"] for r in problems[p]] for p in ids]
    tokens = [r["tokens"] for p in ids for r in problems[p]]

    def same(p: int):
        labels = classes.get(p, {})
        return lambda a, b: labels.get(a, -1) == labels.get(b, -2)

    avg = avg_at_k_with_ci(correct, resamples=resamples, seed=seed)
    curves = [pass_at_k_curve(k, sum(c)) for c in correct]
    curve = [fmean(cv[j] for cv in curves) for j in range(k)]
    out = {
        "benchmark": name,
        "ability": ability,
        "k": k,
        "problems": len(ids),
        "samples": len(ids) * k,
        f"avg@{k}": avg["mean"],
        f"avg@{k}_ci95": [avg["ci_low"], avg["ci_high"]],
        **{f"pass@{j}": mean_pass_at_k(correct, j) for j in pass_ks(k)},
        "pass@k_curve": curve,
        f"maj@{k}": fmean(majority_vote(a, c, same(p)) for p, a, c in zip(ids, answers, correct)),
        **{f"dist-{n}": fmean(distinct_n(r, n) for r in responses) for n in dist_n},
        "distinct_correct": fmean(distinct_correct(a, c, same(p)) for p, a, c in zip(ids, answers, correct)),
        "distinct_correct_of": "programs" if ability == "code" else "answers",
        "solved_problems": sum(any(c) for c in correct),
        "answer_rate": fmean(a is not None for row in answers for a in row),
        "truncated_rate": fmean(r["finish_reason"] == "length" for p in ids for r in problems[p]),
        "response_tokens": length_stats(tokens),
        "reasons": dict(Counter(r["reason"] for p in ids for r in problems[p]).most_common()),
    }
    correct_tokens = [r["tokens"] for p in ids for r in problems[p] if r["correct"]]
    out["response_tokens_correct"] = length_stats(correct_tokens) if correct_tokens else None
    return out


def _mean_of(items: list[dict], key) -> Optional[float]:
    values = [key(b) for b in items]
    values = [v for v in values if v is not None]
    return fmean(values) if values else None


def aggregate(benchmarks: dict[str, dict]) -> dict:
    """Unweighted means over benchmarks (the paper's "benchmark mean"), overall and per ability.

    Each benchmark contributes its own k (avg@k is avg@32 for math, avg@16 for code by default).
    """
    groups = {"all": list(benchmarks.values())}
    for b in benchmarks.values():
        groups.setdefault(b["ability"], []).append(b)
    out = {}
    for group, items in groups.items():
        dist_keys = sorted({key for b in items for key in b if key.startswith("dist-")})
        out[group] = {
            "benchmarks": [b["benchmark"] for b in items],
            "avg@k": _mean_of(items, lambda b: b[f"avg@{b['k']}"]),
            "pass@1": _mean_of(items, lambda b: b["pass@1"]),
            "pass@k": _mean_of(items, lambda b: b[f"pass@{b['k']}"]),
            "maj@k": _mean_of(items, lambda b: b[f"maj@{b['k']}"]),
            **{key: _mean_of(items, lambda b, key=key: b.get(key)) for key in dist_keys},
            "distinct_correct": _mean_of(items, lambda b: b["distinct_correct"]),
            "response_tokens_mean": _mean_of(items, lambda b: b["response_tokens"]["mean"]),
        }
    return out
