"""Verifiable rewards, keyed by data_source as verl does, with a fallback on the record's ability.

``score_batch(responses, records, cfg)`` is the one dispatcher every scorer goes through (the RL
reward, held-out evaluation during training, the evaluation stage): code records run in the
sandbox (``lad.rewards.code``: the response's program completed with the starter code,
"Class.method" tests routed through a module function), math in a pool of verifier processes,
countdown checked exactly, and a data_source named in ``reward.functions`` by the user's own
function (``lad.rewards.custom``). It returns one ``Score`` (value, reason, judged answer, extra
metrics) per response. The RL trainer may add ``overlong_penalty`` of a response's length to it
(``RewardConfig.overlong``, training only).
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lad.rewards.countdown import score_countdown
from lad.rewards.custom import RewardFunctionError, function_for, load_function, score_custom
from lad.rewards.extract import extract_answer, last_boxed, last_code_block
from lad.rewards.math import MathVerifier, Score, default_verifier, score_math

# data_source -> reward kind; anything not listed falls back on the record's ability.
SOURCE_KINDS: dict[str, str] = {"synthetic/countdown": "countdown"}
KINDS = ("math", "countdown", "code")


class OverlongConfig(BaseModel):
    """DAPO's soft overlong punishment (arXiv 2503.14476, eq. 13), added to the RL training reward
    (see ``overlong_penalty``); held-out evaluation scores without it."""

    model_config = ConfigDict(extra="forbid")

    enabled: Optional[bool] = Field(None, description="None: the objective's own (dapo: on, the others off)")
    buffer_len: Optional[int] = Field(
        None, gt=0, description="the last tokens before rollout.max_new_tokens over which the penalty grows from 0 to "
        "penalty_factor; None: a fifth of max_new_tokens (DAPO's 4096 of 20480)")
    penalty_factor: float = Field(1.0, ge=0, description="the penalty of a response of max_new_tokens tokens")

    def buffer(self, max_len: int) -> int:
        """``buffer_len``, or its default for responses of at most ``max_len`` tokens."""
        return self.buffer_len or max(1, max_len // 5)


def overlong_penalty(length: int, max_len: int, buffer_len: int, penalty_factor: float) -> float:
    """The soft overlong punishment of a response of ``length`` tokens, at most ``max_len``: 0 up to
    ``max_len - buffer_len`` tokens, then falling linearly to ``-penalty_factor`` at ``max_len``
    (and staying there past it). verl's ``overlong_buffer``, TRL's ``get_soft_overlong_punishment``."""
    excess = min(max(0, length - (max_len - buffer_len)), buffer_len)
    return -penalty_factor * excess / buffer_len if excess else 0.0


class RewardConfig(BaseModel):
    """How responses are scored."""

    code_mode: Literal["fraction", "all_pass"] = Field("fraction", description="code reward: fraction of tests passed, or all-pass")
    answer_pattern: Optional[str] = Field(None, description="regex with one group for the answer; None: the last \\boxed{}")
    format_weight: float = Field(0.0, ge=0, le=1, description="reward = (1 - w) * correctness + w * (an answer was given); 0 disables")
    sandbox_url: Optional[str] = Field(None, description="sandbox service for code; None: $LAD_SANDBOX_URL, else in-process")
    code_timeout_s: Optional[float] = Field(None, gt=0, description="per-test time limit of code rewards; None: the sandbox's default")
    functions: dict[str, str] = Field(
        {}, description="custom rewards: data_source (or '*': every source not named) -> 'module:function' or "
        "'path/to/file.py:function' (local or s3://), called as verl's compute_score(data_source, solution_str, ground_truth, extra_info) "
        "and returning a number or a dict with 'score' (its other numbers are logged); over the built-in rewards")
    function_timeout_s: float = Field(10.0, gt=0, description="time limit of one custom reward call; past it the item scores 0 (timeout)")
    overlong: OverlongConfig = Field(OverlongConfig(), description="RL training only: DAPO's soft overlong punishment")

    @field_validator("functions")
    @classmethod
    def _loadable(cls, functions: dict[str, str]) -> dict[str, str]:
        for source, ref in functions.items():
            try:
                load_function(ref)
            except RewardFunctionError as err:
                raise ValueError(f"data_source {source!r}: {err}") from None
        return functions


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
    responses: list[str], records: list[dict], cfg: Optional[RewardConfig] = None, *,
    verifier: MathVerifier | None = None, sandbox=None, strict: bool = False,
) -> list[Score]:
    """Score each response against its record's reward_model.ground_truth (code: its tests).

    A math record's ``extra_info.answer_fallback`` (set by data prep from its source's
    ``answer_fallback``) is the answer regex for responses without a \\boxed{}. ``verifier``: the
    reward worker pool, where math-verify and custom functions run (None: the shared default one); ``sandbox``: a SandboxClient for code (None:
    one for this call at ``cfg.sandbox_url``, started only when a response has code to run).
    ``strict`` (the evaluator's mode): a code record that cannot be scored, or a sandbox that
    cannot be reached, raises instead of scoring 0 with the reason, so no number is reported
    without it; training keeps going past one bad row.
    """
    from lad.rewards.code import score_code

    cfg = cfg or RewardConfig()
    if len(responses) != len(records):
        raise ValueError(f"{len(responses)} responses for {len(records)} records")
    refs = [function_for(cfg.functions, r.get("data_source", "")) for r in records]
    kinds = ["custom" if ref else reward_kind(r) for r, ref in zip(records, refs)]
    scores: list[Score | None] = [None] * len(responses)
    custom_idx = [i for i, k in enumerate(kinds) if k == "custom"]
    if custom_idx:
        custom_scores = score_custom([responses[i] for i in custom_idx], [records[i] for i in custom_idx],
                                     [refs[i] for i in custom_idx], verifier or default_verifier(), cfg.function_timeout_s)
        for i, s in zip(custom_idx, custom_scores):
            scores[i] = s
    truths = [r["reward_model"]["ground_truth"] if k != "custom" else None for r, k in zip(records, kinds)]
    math_idx = [i for i, k in enumerate(kinds) if k == "math"]
    if math_idx:
        math_scores = (verifier or default_verifier()).score(
            [responses[i] for i in math_idx], [truths[i] for i in math_idx], cfg.answer_pattern,
            [(records[i].get("extra_info") or {}).get("answer_fallback") for i in math_idx],
        )
        for i, s in zip(math_idx, math_scores):
            scores[i] = s
    for i, k in enumerate(kinds):
        if k == "countdown":
            scores[i] = score_countdown(responses[i], truths[i], cfg.answer_pattern)
    code_idx = [i for i, k in enumerate(kinds) if k == "code"]
    if code_idx:
        own = sandbox is None and any(last_code_block(responses[i]) is not None for i in code_idx)
        if own:
            from lad.sandbox.client import SandboxClient

            sandbox = SandboxClient(cfg.sandbox_url)
        try:
            code_scores = score_code([responses[i] for i in code_idx], [records[i] for i in code_idx], mode=cfg.code_mode,
                                     client=sandbox, timeout_s=cfg.code_timeout_s, strict=strict)
        finally:
            if own:
                sandbox.close()
        for i, s in zip(code_idx, code_scores):
            scores[i] = s
    if cfg.format_weight:  # a custom function's score is its own
        w = cfg.format_weight
        scores = [s if k == "custom" else Score((1 - w) * s.value + w * (s.answer is not None), s.reason, s.answer)
                  for s, k in zip(scores, kinds)]
    return scores


__all__ = [
    "KINDS", "MathVerifier", "RewardConfig", "RewardFunctionError", "SOURCE_KINDS", "Score", "extract_answer", "last_boxed", "reason_label",
    "reward_kind", "score_batch", "score_countdown", "score_math",
]
