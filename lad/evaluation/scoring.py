"""Scorers: per-sample verdicts for a benchmark's responses, and answer classes for maj@k.

Both score through :func:`lad.rewards.score_batch`, the dispatcher training uses too (math-verify
in a worker pool, countdown checked exactly, code run against the record's tests in the sandbox),
strictly: a record that cannot be scored is an error, not a wrong answer. ``math`` keeps a
verifier pool and removes an answer's unit first; ``code`` keeps a sandbox client. Each scorer
also says which answers count as the same (math-verify equivalence for math, exact
expression for countdown, AST-normalised program for code), so maj@k and the number of distinct
correct answers group answers the way the scorer judges them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Optional, Protocol

from lad.evaluation.metrics import normalize_program
from lad.rewards import MathVerifier, RewardConfig, Score, extract_answer, reward_kind, score_batch
from lad.rewards.code import outcome


@dataclass(frozen=True)
class Verdict:
    correct: bool
    reason: str  # "correct", "wrong", "no_answer", "no_code", a test status such as "timeout", ...
    answer: Optional[str]  # the extracted answer or program that was judged


def verdicts(scores: list[Score], records: list[dict]) -> list[Verdict]:
    """The evaluator's verdict of each score: correct only at full marks; a code score's reason
    shortened to what happened (see :func:`lad.rewards.code.outcome`)."""
    return [Verdict(s.value == 1.0, outcome(s.reason) if reward_kind(r) == "code" else s.reason, s.answer)
            for s, r in zip(scores, records)]


class Scorer(Protocol):
    def score(self, responses: list[str], records: list[dict]) -> list[Verdict]: ...

    def answer_classes(self, answers: list[list[str]], records: list[dict]) -> list[dict[str, int]]:
        """Per problem: each of its answers -> the label of its equivalence class."""
        ...


# --------------------------------------------------------------------------------------------
# grouping answers into classes, batched across problems
# --------------------------------------------------------------------------------------------


def group_batched(
    problems: list[list[str]], equivalent_many: Callable[[list[tuple[str, str]]], list[bool]]
) -> list[dict[str, int]]:
    """The labels of :func:`lad.evaluation.metrics.group_equivalent` for many problems at once.

    Every item joins the first earlier class whose representative it equals (string equality
    first, then ``equivalent(item, representative)``). The items of all problems are processed
    in lock-step rounds, one ``equivalent_many`` call per round, so a verifier pool checks the
    pairs of many problems in parallel instead of one pair at a time.
    """
    uniq = [list(dict.fromkeys(items)) for items in problems]
    reps: list[list[str]] = [[] for _ in problems]
    labels: list[dict[str, int]] = [{} for _ in problems]
    for j in range(max((len(u) for u in uniq), default=0)):
        pairs, owners = [], []
        for p, u in enumerate(uniq):
            if j < len(u):
                pairs += [(u[j], rep) for rep in reps[p]]
                owners += [p] * len(reps[p])
        verdicts = equivalent_many(pairs) if pairs else []
        matches: dict[int, list[bool]] = {}
        for p, ok in zip(owners, verdicts):
            matches.setdefault(p, []).append(ok)
        for p, u in enumerate(uniq):
            if j < len(u):
                hits = matches.get(p, [])
                label = next((i for i, ok in enumerate(hits) if ok), None)
                if label is None:
                    reps[p].append(u[j])
                    label = len(reps[p]) - 1
                labels[p][u[j]] = label
    return labels


def classes_by_key(answers: list[list[str]], key: Callable[[str], str]) -> list[dict[str, int]]:
    """Per problem: answers with equal ``key`` share a class, numbered in order of appearance."""
    out = []
    for items in answers:
        ids: dict[str, int] = {}
        out.append({a: ids.setdefault(key(a), len(ids)) for a in items})
    return out


# --------------------------------------------------------------------------------------------
# math (and countdown)
# --------------------------------------------------------------------------------------------

_UNIT_WRAPPER = r"\\(?:text|mathrm|mbox|operatorname)\s*\{{\s*~?\s*{unit}\s*\}}"


def strip_unit(answer: str, unit: Optional[str]) -> str:
    """``answer`` without a trailing ``unit`` (plain, escaped as in "\\%", or in \\text{}/\\mathrm{}).

    OlympiadBench keeps units out of the reference answer; math-verify ignores most unit words
    itself but not all (a percent sign makes "4.2\\%" differ from "4.2"), so the record's own unit
    is removed before comparing.
    """
    if not unit or not unit.strip():
        return answer
    core = unit.strip().replace("\\%", "%")
    escaped = re.escape(core).replace("%", r"\\?%")
    pattern = re.compile(rf"(?:{_UNIT_WRAPPER.format(unit=escaped)}|\\?\s*~?\s*{escaped})\s*$")
    stripped = pattern.sub("", answer.rstrip()).rstrip(" ~\\,;")
    return stripped if stripped else answer


class MathScorer:
    """math-verify through lad.rewards (countdown: exact check); answers grouped by math-verify."""

    def __init__(self, verifier=None, *, owned: bool = False):
        self.verifier = verifier or MathVerifier()
        self._owned = owned or verifier is None

    def score(self, responses: list[str], records: list[dict]) -> list[Verdict]:
        prepared = []
        for response, record in zip(responses, records):
            unit = (record.get("extra_info") or {}).get("unit")
            answer = extract_answer(response) if unit else None
            bare = strip_unit(answer, unit) if answer is not None else None
            prepared.append(f"\\boxed{{{bare}}}" if bare != answer else response)
        return verdicts(score_batch(prepared, records, RewardConfig(code_mode="all_pass"), verifier=self.verifier, strict=True),
                        records)

    def answer_classes(self, answers: list[list[str]], records: list[dict]) -> list[dict[str, int]]:
        kinds = [reward_kind(r) for r in records]
        math_idx = [i for i, k in enumerate(kinds) if k == "math"]
        other_idx = [i for i, k in enumerate(kinds) if k != "math"]
        out: list[dict[str, int]] = [{} for _ in answers]

        def equivalent_many(pairs: list[tuple[str, str]]) -> list[bool]:
            return [ok for ok, _ in self.verifier.equivalent_many(pairs)]

        for i, labels in zip(math_idx, group_batched([answers[i] for i in math_idx], equivalent_many)):
            out[i] = labels
        # countdown: an expression is its own answer (spacing aside): two different ones are two answers
        for i, labels in zip(other_idx, classes_by_key([answers[i] for i in other_idx], squash)):
            out[i] = labels
        return out

    def close(self) -> None:
        if self._owned:
            self.verifier.close()


def squash(text: str) -> str:
    """Answers that differ only in spacing count as one."""
    return "".join(text.split())


# --------------------------------------------------------------------------------------------
# code
# --------------------------------------------------------------------------------------------

class CodeScorer:
    """Programs run against the record's tests in the sandbox; correct when every test passes.

    Rows whose expected values come from a reference solution (HumanEval+) get them by running
    that solution on the problems of each ``score`` call, as EvalPlus does. They are not kept
    across calls: some HumanEval+ outputs are hundreds of MB, and the stage scores each problem's
    k samples in one call anyway.
    """

    def __init__(self, client=None, *, timeout_s: float = 10.0, url: Optional[str] = None):
        from lad.sandbox.client import SandboxClient

        self.client = client or SandboxClient(url)
        self._owned = client is None
        self.timeout_s = timeout_s

    def score(self, responses: list[str], records: list[dict]) -> list[Verdict]:
        cfg = RewardConfig(code_mode="all_pass", code_timeout_s=self.timeout_s)
        return verdicts(score_batch(responses, records, cfg, sandbox=self.client, strict=True), records)

    def answer_classes(self, answers: list[list[str]], records: list[dict]) -> list[dict[str, int]]:
        return classes_by_key(answers, normalize_program)

    def close(self) -> None:
        if self._owned:
            self.client.close()


def _math_scorer(cfg) -> MathScorer:
    return MathScorer(MathVerifier(workers=cfg.verifier_workers), owned=True)


# scorer name -> factory taking the run's EvalConfig
SCORERS: dict[str, Callable[..., Scorer]] = {
    "math": _math_scorer,
    "code": lambda cfg: CodeScorer(timeout_s=cfg.code_timeout_s, url=cfg.sandbox_url),
}
