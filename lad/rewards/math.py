"""Math answers checked with math-verify, off the caller's thread.

math-verify bounds parsing and comparison with signal.alarm, which only works in a process's main
thread; a trainer calls rewards from worker threads. So every check runs in a pool of forked
worker processes, where it is the main thread (fork, not spawn: workers start in milliseconds,
need no importable __main__, and touch nothing of the parent but sympy). A batch that overruns its deadline (a pathological
expression, a crashed worker) has its unfinished items scored 0 with reason "timeout" and the pool
is replaced; training never stops on a reward.
"""

from __future__ import annotations

import atexit
import math
import multiprocessing as mp
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, TypeVar

from lad.rewards.extract import extract_answer

R = TypeVar("R")


@dataclass(frozen=True)
class Score:
    """One scored response: value (built-in rewards: in [0, 1]), why, the answer that was judged,
    and the extra numbers a custom reward function returned with it (logged as metrics)."""

    value: float
    reason: str
    answer: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def _as_latex(answer: str) -> str:
    # An escaped dollar is a currency sign ("\\$18.90"), not a math delimiter: drop it. Bare values
    # ("27.0", "x^2+1") parse best as the content of a box; text that already carries math
    # delimiters is left as written.
    answer = answer.replace("\\$", "")
    return answer if ("$" in answer or "\\boxed" in answer) else f"\\boxed{{{answer}}}"


# Answer forms math-verify misreads, rewritten before it parses either side:
# - a sentence's period inside the box ("60." is read as text, not 60);
# - thousands separated by LaTeX thin spaces or plain spaces ("1\\,000", "1 000"; it reads
#   "1,000" and "1{,}000" itself);
# - a multiple-choice letter before the value ("\\textbf{(C) } 12", "(C) 12"): compared as the
#   value, or as the letter when the ground truth is only a letter.
_TRAILING_PERIOD = re.compile(r"(?<=[^.\s])\.\s*$")
_SPACED_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:(?:\\,|\\ |~| )\d{3})+(?:\.\d+)?$")
_SPACE = re.compile(r"\\,|\\ |~| ")
_LETTER = r"\(\s*([A-E])\s*\)"
_CHOICE = re.compile(rf"^(?:\\(?:textbf|mathbf|text|mathrm)\s*\{{\s*{_LETTER}\s*([^{{}}]*)\}}|{_LETTER})\s*(.*)$", re.S)
_LEADING_SPACE = re.compile(r"^(?:\\[ ,;:!]|\\q?quad|~|\s)+")


def normalize_answer(text: str) -> str:
    """``text`` without a trailing period and with spaced thousands joined (see above)."""
    text = _TRAILING_PERIOD.sub("", text.strip())
    if _SPACED_THOUSANDS.match(text):
        text = _SPACE.sub("", text)
    return text


def split_choice(text: str) -> tuple[Optional[str], str]:
    """(letter, value) of a multiple-choice answer such as "\\textbf{(C) } 12", "(C)" or "C" (value
    ""); (None, text) when it is none."""
    text = text.strip()
    if re.fullmatch(r"[A-E]", text):
        return text, ""
    m = _CHOICE.match(text)
    if not m:
        return None, text
    letter = m.group(1) or m.group(3)
    value = " ".join(part.strip() for part in (m.group(2) or "", _LEADING_SPACE.sub("", m.group(4))) if part.strip())
    return letter, value


def verify_in_process(answer: str, ground_truth: str, timeout_s: int = 5) -> tuple[bool, str]:
    """math-verify equivalence of two answer strings (normalised first); must run in a main thread."""
    from math_verify import parse, verify

    answer, ground_truth = normalize_answer(answer), normalize_answer(ground_truth)
    letter, value = split_choice(answer)
    truth_letter, truth_value = split_choice(ground_truth)
    if letter is not None and truth_letter is not None and not (value and truth_value):
        ok = letter == truth_letter  # one side is only a letter: the letters decide
        return ok, "correct" if ok else "wrong"
    answer, ground_truth = value or answer, truth_value or ground_truth
    gold = parse(_as_latex(ground_truth), parsing_timeout=timeout_s)
    if not gold:
        return False, "unparsable_ground_truth"
    pred = parse(_as_latex(answer), parsing_timeout=timeout_s)
    if not pred:
        return False, "unparsable_answer"
    ok = verify(gold, pred, timeout_seconds=timeout_s)
    return ok, "correct" if ok else "wrong"


def _worker(args: tuple[str, str, int]) -> tuple[bool, str]:
    try:
        return verify_in_process(*args)
    except Exception as err:  # a verifier bug must cost one item, not the batch
        return False, f"error: {type(err).__name__}"


class MathVerifier:
    """A pool of verifier processes with per-item timeouts: the reward worker pool, where math
    answers are checked and custom reward functions run (``run_many``).

    workers: processes (forked lazily on first use). timeout_s: math-verify's own per-item bound;
    the batch deadline adds slack for queueing behind other items.
    """

    def __init__(self, workers: int = 2, timeout_s: int = 5):
        self.workers = workers
        self.timeout_s = timeout_s
        self._pool = None
        self._lock = threading.Lock()

    def _get_pool(self):
        if self._pool is None:
            self._pool = mp.get_context("fork").Pool(self.workers)
        return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.terminate()
                self._pool.join()
                self._pool = None

    def equivalent_many(self, pairs: list[tuple[str, str]]) -> list[tuple[bool, str]]:
        """(answer, reference) pairs -> (equivalent, reason) each, in order."""
        # Each item's bound: timeout_s for each of parse, parse and verify, plus slack.
        return self.run_many(_worker, [(a, g, self.timeout_s) for a, g in pairs], 3 * self.timeout_s + 2, (False, "timeout"))

    def run_many(self, worker: Callable[[Any], R], items: list, per_item_s: float, on_timeout: R) -> list[R]:
        """``worker(item)`` for each item in the pool's processes, in order; an item not done by
        its deadline gets ``on_timeout`` and the pool is replaced. ``worker`` must be a module-level
        function and must not raise. Items queue behind each other, so the deadline of the whole
        batch is ``per_item_s`` times (1 + the queue length per worker)."""
        if not items:
            return []
        with self._lock:
            pool = self._get_pool()
            pending = [pool.apply_async(worker, (item,)) for item in items]
            deadline = time.monotonic() + per_item_s * (1 + math.ceil(len(items) / self.workers))
            results: list[R] = []
            stalled = False
            for res in pending:
                try:
                    results.append(res.get(timeout=max(0.0, deadline - time.monotonic())))
                except mp.TimeoutError:
                    results.append(on_timeout)
                    stalled = True
            if stalled:
                # A stuck or dead worker: replace the whole pool so the next batch starts clean.
                self._pool.terminate()
                self._pool.join()
                self._pool = None
            return results

    def score(self, responses: list[str], ground_truths: list[str], pattern: str | None = None,
              fallbacks: list[str | None] | None = None) -> list[Score]:
        """``fallbacks``: per response, the answer regex read when it has no \\boxed{} (None: none)."""
        fallbacks = fallbacks or [None] * len(responses)
        answers = [extract_answer(r, pattern, f) for r, f in zip(responses, fallbacks)]
        todo = [(i, a, g) for i, (a, g) in enumerate(zip(answers, ground_truths)) if a]
        verdicts = self.equivalent_many([(a, g) for _, a, g in todo])
        scores = [Score(0.0, "no_answer", None) for _ in responses]
        for (i, a, _), (ok, reason) in zip(todo, verdicts):
            scores[i] = Score(1.0 if ok else 0.0, reason, a)
        return scores


_default: MathVerifier | None = None


def default_verifier() -> MathVerifier:
    global _default
    if _default is None:
        _default = MathVerifier()
        atexit.register(_default.close)
    return _default


def score_math(response: str, ground_truth: str) -> float:
    """1.0 when the last \\boxed{} of ``response`` equals ``ground_truth`` under math-verify, else 0.0."""
    return default_verifier().score([response], [ground_truth])[0].value
