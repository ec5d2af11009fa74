"""Verifiable rewards, keyed by data_source as verl does, with a fallback on the record's ability.

``score_batch(responses, records)`` scores a batch concurrently (math in a pool of verifier
processes) and returns one ``Score`` (value, reason, judged answer) per response.
"""

from __future__ import annotations

from lad.rewards.countdown import score_countdown
from lad.rewards.extract import extract_answer, last_boxed
from lad.rewards.math import MathVerifier, Score, default_verifier, score_math

# data_source -> reward kind; anything not listed falls back on the record's ability.
SOURCE_KINDS: dict[str, str] = {"synthetic/countdown": "countdown"}
KINDS = ("math", "countdown")


def reward_kind(record: dict) -> str:
    kind = SOURCE_KINDS.get(record.get("data_source", ""), record.get("ability"))
    if kind not in KINDS:
        raise ValueError(
            f"no reward for data_source {record.get('data_source')!r} (ability {record.get('ability')!r}); "
            f"known kinds: {list(KINDS)}"
        )
    return kind


def reason_label(reason: str) -> str:
    """The kind of a score's reason, without the detail after its first colon ("passed_0_of_3:
    runtime_error: NameError: ..." -> "passed_0_of_3"): what metrics count, one name per kind."""
    return reason.split(":", 1)[0]


def score_batch(
    responses: list[str], records: list[dict], *, verifier: MathVerifier | None = None, pattern: str | None = None
) -> list[Score]:
    """Score each response against its record's reward_model.ground_truth; a math record's
    ``extra_info.answer_fallback`` (set by data prep from its source's ``answer_fallback``) is the
    answer regex for responses without a \\boxed{}."""
    if len(responses) != len(records):
        raise ValueError(f"{len(responses)} responses for {len(records)} records")
    kinds = [reward_kind(r) for r in records]
    truths = [r["reward_model"]["ground_truth"] for r in records]
    scores: list[Score | None] = [None] * len(responses)
    math_idx = [i for i, k in enumerate(kinds) if k == "math"]
    math_scores = (verifier or default_verifier()).score(
        [responses[i] for i in math_idx], [truths[i] for i in math_idx], pattern,
        [(records[i].get("extra_info") or {}).get("answer_fallback") for i in math_idx],
    )
    for i, s in zip(math_idx, math_scores):
        scores[i] = s
    for i, k in enumerate(kinds):
        if k == "countdown":
            scores[i] = score_countdown(responses[i], truths[i], pattern)
    return scores


__all__ = [
    "KINDS", "MathVerifier", "SOURCE_KINDS", "Score", "extract_answer", "last_boxed", "reason_label", "reward_kind",
    "score_batch", "score_countdown", "score_math",
]
