"""Math answers in the forms that real responses and benchmark files use, hand-written, each in
both directions: the right value scores 1, a wrong one 0 (math-verify judges both)."""

from __future__ import annotations

import pytest

from lad.data.adapters import FieldMap
from lad.data.config import SourceConfig
from lad.rewards import MathVerifier, score_batch
from lad.rewards.math import normalize_answer, split_choice

# (response, ground truth, right) for each form
FORMS = [
    # a sentence's period inside the box
    ("\\boxed{60.}", "60", True), ("\\boxed{61.}", "60", False),
    ("\\boxed{\\frac{3}{4}.}", "0.75", True), ("\\boxed{\\frac{3}{5}.}", "0.75", False),
    ("\\boxed{60}", "60.", True), ("\\boxed{6}", "60.", False),
    # a multiple-choice letter before the value, against the value
    ("\\boxed{\\textbf{(C) } 12}", "12", True), ("\\boxed{\\textbf{(C) } 13}", "12", False),
    ("\\boxed{\\textbf{(C) }12}", "12", True), ("\\boxed{\\textbf{(C) 12}}", "12", True),
    ("\\boxed{\\text{(E)}\\ \\frac{1}{2}}", "\\frac12", True), ("\\boxed{\\text{(E)}\\ \\frac{1}{3}}", "\\frac12", False),
    ("\\boxed{(C) 12}", "12", True), ("\\boxed{(C) 21}", "12", False),
    ("\\boxed{(C) 12}", "(B) 12", True), ("\\boxed{(C) 12}", "(B) 11", False),
    # ... and against the letter
    ("\\boxed{\\textbf{(C) } 12}", "C", True), ("\\boxed{\\textbf{(B) } 12}", "C", False),
    ("\\boxed{(C) 12}", "(C)", True), ("\\boxed{(D) 12}", "(C)", False),
    ("\\boxed{\\textbf{(C)}}", "\\textbf{(C)}", True), ("\\boxed{\\textbf{(A)}}", "\\textbf{(C)}", False),
    ("\\boxed{C}", "(C) 12", True), ("\\boxed{D}", "(C) 12", False),
    # thousands separators
    ("\\boxed{1\\,000\\,000}", "1000000", True), ("\\boxed{1\\,000\\,001}", "1000000", False),
    ("\\boxed{1000000}", "1\\,000\\,000", True), ("\\boxed{100000}", "1\\,000\\,000", False),
    ("\\boxed{12 345}", "12345", True), ("\\boxed{12 346}", "12345", False),
    ("\\boxed{12,345.5}", "12345.5", True), ("\\boxed{12,345.6}", "12345.5", False),
    ("\\boxed{\\$1{,}250}", "1250", True), ("\\boxed{\\$1{,}205}", "1250", False),
    # what the rewrites must leave alone
    ("\\boxed{(1,2)}", "(1,2)", True), ("\\boxed{(1,2)}", "(2,1)", False),
    ("\\boxed{1, 2, \\ldots}", "1, 2, \\ldots", True),
]


def _record(truth: str, fallback: str | None = None) -> dict:
    info = {"index": 0, "split": "test"} | ({"answer_fallback": fallback} if fallback else {})
    return {"data_source": "hand", "ability": "math", "reward_model": {"ground_truth": truth}, "extra_info": info}


@pytest.fixture(scope="module")
def verifier():
    v = MathVerifier(workers=2, timeout_s=5)
    yield v
    v.close()


def test_answer_forms_score_right_and_wrong(verifier):
    scores = score_batch([f"So the answer is {r}" for r, _, _ in FORMS], [_record(t) for _, t, _ in FORMS],
                         verifier=verifier)
    got = [(r, t, s.value) for (r, t, _), s in zip(FORMS, scores)]
    assert got == [(r, t, 1.0 if right else 0.0) for r, t, right in FORMS]


def test_normalisation_and_choice_split():
    assert normalize_answer(" 60. ") == "60"
    assert normalize_answer("1, 2, ...") == "1, 2, ..."
    assert normalize_answer("1\\,000") == "1000" and normalize_answer("1 0000") == "1 0000"
    assert split_choice("\\textbf{(C) } 12") == ("C", "12")
    assert split_choice("\\textbf{(C) 12}") == ("C", "12")
    assert split_choice("(C)") == ("C", "") and split_choice("C") == ("C", "")
    assert split_choice("(1, 2)") == (None, "(1, 2)") and split_choice("(F) 3") == (None, "(F) 3")


def test_answer_fallback_reads_stated_answers_only_when_configured(verifier):
    fallback = "The answer is (.+)"
    responses = ["So the total is 60. The answer is 60.", "The answer is 61.", "The answer is 5, so \\boxed{6}",
                 "The answer is 60."]
    records = [_record("60", fallback), _record("60", fallback), _record("6", fallback), _record("60")]
    scores = score_batch(responses, records, verifier=verifier)
    assert [(s.value, s.reason, s.answer) for s in scores] == [
        (1.0, "correct", "60."), (0.0, "wrong", "61."), (1.0, "correct", "6"), (0.0, "no_answer", None)]


def test_answer_fallback_must_be_a_regex_with_one_group():
    ok = SourceConfig(name="s", uri="x.jsonl", answer_fallback="The answer is (.+)")
    assert ok.answer_fallback == "The answer is (.+)"
    with pytest.raises(ValueError, match=r"answer_fallback\n.*needs exactly one group \(the answer\), 'The answer is .+' has 0"):
        SourceConfig(name="s", uri="x.jsonl", answer_fallback="The answer is .+")
    with pytest.raises(ValueError, match=r"answer_fallback\n.*not a regular expression \(missing \), unterminated subpattern"):
        SourceConfig(name="s", uri="x.jsonl", answer_fallback="The answer is (.+")


def test_bundled_answers_verify_in_these_forms(verifier):
    """On data the rules were not written against: every MATH-500 answer with a period inside
    its box, and every GSM8K answer of 1,000 or more with thin-space thousands."""
    from lad.data.adapters import ADAPTERS
    from lad.data.public import read_jsonl

    math500 = [r["answer"] for r in read_jsonl("math500.jsonl")]
    gsm8k = [ADAPTERS["gsm8k"](r, FieldMap()).ground_truth for r in read_jsonl("gsm8k_test.jsonl")]
    large = [g for g in gsm8k if g.isdigit() and int(g) >= 1000]
    assert (len(math500), len(large)) == (500, 131)
    responses = [f"\\boxed{{{a}.}}" for a in math500] + [f"\\boxed{{{int(g):,}}}".replace(",", "\\,") for g in large]
    scores = verifier.score(responses, math500 + large)
    assert [r for r, s in zip(responses, scores) if s.value != 1.0] == []
