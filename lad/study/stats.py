"""The study's statistics as pure functions: a mean over seeds with its t interval, and the paired
bootstrap of one arm against the reference over problems and seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def seed_interval(values: Sequence[float], level: float = 0.95) -> dict:
    """Mean over seeds and its Student-t interval (seeds are few: a normal interval would be too
    narrow). One seed has no interval: ci_low and ci_high are None."""
    from scipy.stats import t

    if not values:
        raise ValueError("seed_interval needs at least one value")
    n = len(values)
    mean = float(np.mean(values))
    if n == 1:
        return {"mean": mean, "ci_low": None, "ci_high": None, "n": 1}
    half = float(t.ppf((1 + level) / 2, n - 1) * np.std(values, ddof=1) / math.sqrt(n))
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def paired_bootstrap(arm: Sequence[Sequence[float]], reference: Sequence[Sequence[float]], *, resamples: int = 10_000,
                     level: float = 0.95, seed: int = 0) -> dict:
    """Difference of means arm - reference, with a percentile CI and a two-sided p-value.

    ``arm[s][p]`` and ``reference[s][p]`` are one problem's score (e.g. its Avg@8) in the run of
    seed s; row s of both comes from the same seed, column p from the same problem. Each resample
    draws seeds and problems with replacement, the same draw for both (the pairing), and takes the
    mean difference over the drawn cells. p = 2 min(P(d* <= 0), P(d* >= 0)), counting the observed
    difference as one resample so it is never 0.
    """
    a = np.asarray(arm, dtype=float)
    b = np.asarray(reference, dtype=float)
    if a.ndim != 2 or a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired_bootstrap needs two equal [seeds, problems] tables; got {a.shape} and {b.shape}")
    diff = a - b
    seeds, problems = diff.shape
    rng = np.random.default_rng(seed)
    s = rng.integers(0, seeds, size=(resamples, seeds))
    p = rng.integers(0, problems, size=(resamples, problems))
    # mean over the drawn seeds x drawn problems: per-seed means over the drawn problems first
    per_seed = np.stack([diff[:, p[i]].mean(axis=1) for i in range(resamples)])  # [resamples, seeds]
    means = np.take_along_axis(per_seed, s, axis=1).mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    below = (np.sum(means <= 0) + 1) / (resamples + 1)
    above = (np.sum(means >= 0) + 1) / (resamples + 1)
    return {"diff": float(diff.mean()), "ci_low": float(lo), "ci_high": float(hi),
            "p_value": float(min(1.0, 2 * min(below, above))), "seeds": seeds, "problems": problems, "resamples": resamples}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of p-values for testing them together (every arm against the
    reference): the i-th smallest is multiplied by (m - i), kept monotone and capped at 1. Unlike
    the raw p-values, rejecting where the adjusted one is below alpha keeps the chance of any
    false rejection among the m at most alpha."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
