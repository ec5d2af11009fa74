"""Evaluation metrics as pure functions: Avg@k, unbiased Pass@k, maj@k, diversity.

Inputs are plain Python data (per-problem lists of per-sample verdicts, answers, responses), so
every metric is testable against enumeration and reusable by the trainer's periodic evaluation.
"""

from __future__ import annotations

import ast
import random
from collections.abc import Callable, Sequence
from statistics import fmean, median, pstdev


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k).

    Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms the huge binomials.
    """
    if not (0 <= c <= n) or not (1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def pass_at_k_curve(n: int, c: int) -> list[float]:
    """Pass@k for k = 1..n."""
    return [pass_at_k(n, c, k) for k in range(1, n + 1)]


def mean_pass_at_k(correct: Sequence[Sequence[bool]], k: int) -> float:
    """Pass@k averaged over problems; correct[p] holds problem p's per-sample verdicts."""
    return fmean(pass_at_k(len(row), sum(map(bool, row)), k) for row in correct)


def avg_at_k(correct: Sequence[Sequence[float]]) -> float:
    """Avg@k: mean correctness over each problem's samples, then over problems."""
    if not correct or any(len(row) == 0 for row in correct):
        raise ValueError("avg_at_k needs at least one problem and one sample per problem")
    return fmean(fmean(map(float, row)) for row in correct)


def bootstrap_ci(
    per_problem: Sequence[float], *, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean, resampling problems with replacement (seeded)."""
    if not per_problem:
        raise ValueError("bootstrap_ci needs at least one value")
    rng = random.Random(seed)
    n = len(per_problem)
    means = sorted(fmean(rng.choices(per_problem, k=n)) for _ in range(resamples))
    lo = means[int((1 - level) / 2 * resamples)]
    hi = means[min(resamples - 1, int((1 + level) / 2 * resamples))]
    return lo, hi


def avg_at_k_with_ci(correct: Sequence[Sequence[float]], *, resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    per_problem = [fmean(map(float, row)) for row in correct]
    lo, hi = bootstrap_ci(per_problem, resamples=resamples, seed=seed)
    return {"mean": avg_at_k(correct), "ci_low": lo, "ci_high": hi}


def group_equivalent(items: Sequence[str], equivalent: Callable[[str, str], bool]) -> list[int]:
    """Class label per item: each item joins the first earlier class whose representative it equals."""
    reps: list[str] = []
    labels = []
    for item in items:
        for label, rep in enumerate(reps):
            if item == rep or equivalent(item, rep):
                labels.append(label)
                break
        else:
            reps.append(item)
            labels.append(len(reps) - 1)
    return labels


def majority_vote(
    answers: Sequence[str | None], correct: Sequence[bool], equivalent: Callable[[str, str], bool] = str.__eq__
) -> bool:
    """maj@k for one problem: is the most frequent answer class correct?

    Samples without an extracted answer do not vote. Ties go to the class seen first, so the
    result is deterministic given the sample order.
    """
    voting = [(a, ok) for a, ok in zip(answers, correct) if a is not None]
    if not voting:
        return False
    labels = group_equivalent([a for a, _ in voting], equivalent)
    counts: dict[int, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    winner = max(counts, key=lambda label: (counts[label], -label))
    return any(ok for (_, ok), label in zip(voting, labels) if label == winner)


def distinct_n(responses: Sequence[str], n: int) -> float:
    """dist-n: distinct n-grams / total n-grams over one problem's responses (whitespace tokens)."""
    grams = [tuple(toks[i : i + n]) for r in responses for toks in [r.split()] for i in range(len(toks) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def distinct_correct(
    answers: Sequence[str | None], correct: Sequence[bool], equivalent: Callable[[str, str], bool] = str.__eq__
) -> int:
    """Number of distinct correct answers (classes under ``equivalent``) among one problem's samples."""
    good = [a for a, ok in zip(answers, correct) if ok and a is not None]
    return len(set(group_equivalent(good, equivalent))) if good else 0


def normalize_program(code: str) -> str:
    """A program's AST dump with docstrings removed, to count distinct programs.

    Two programs that differ only in comments, whitespace or docstrings normalise to the same text;
    code that does not parse is kept as its stripped text.
    """
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code.strip()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False)


def length_stats(lengths: Sequence[int]) -> dict[str, float]:
    if not lengths:
        raise ValueError("length_stats needs at least one length")
    return {
        "mean": fmean(lengths),
        "std": pstdev(lengths),
        "median": float(median(lengths)),
        "min": float(min(lengths)),
        "max": float(max(lengths)),
    }
