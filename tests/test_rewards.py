import json
import time

import pytest

import lad.rewards.math as math_rewards
from lad.data.public import read_jsonl
from lad.rewards import MathVerifier, Score, last_boxed, score_batch, score_countdown, score_math
from lad.rewards.countdown import check_expression



@pytest.fixture(scope="module")
def verifier():
    v = MathVerifier(workers=2, timeout_s=5)
    yield v
    v.close()


@pytest.mark.parametrize(
    "text,expected",
    [
        ("so \\boxed{3} then \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("nested \\boxed{\\{1, \\{2\\}\\}} and \\boxed{x^{2}+1}", "x^{2}+1"),
        ("\\fbox{42}", "42"),
        ("the answer is \\boxed 7.", "7."),
        ("no box here", None),
        ("unbalanced \\boxed{12", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize(
    "expr,numbers,target,result",
    [
        ("(8 - 2) * 4", [2, 4, 8], 24, (True, "correct")),
        ("8 / (3 / 6)", [3, 6, 8], 16, (True, "correct")),  # exact fractions, not floats
        ("2 \\times 12 = 24", [2, 12], 24, (True, "correct")),
        ("6 × 4", [4, 6, 9], 24, (True, "correct")),
        ("8 * 3", [2, 4, 8], 24, (False, "number_misuse")),  # 3 is not given
        ("4 * 4 + 8", [4, 8, 9], 24, (False, "number_misuse")),  # 4 used twice
        ("8 + 4 + 2", [2, 4, 8], 24, (False, "wrong")),
        ("__import__('os').system('true')", [1], 1, (False, "invalid_expression")),
        ("2 ** 3", [2, 3], 8, (False, "invalid_expression")),
        ("8 / (2 - 2)", [2, 2, 8], 1, (False, "invalid_expression")),
        ("", [1], 1, (False, "invalid_expression")),
    ],
)
def test_countdown_exact_check(expr, numbers, target, result):
    assert check_expression(expr, numbers, target) == result


def test_countdown_score_reads_the_ground_truth_spec():
    gt = json.dumps({"numbers": [3, 5, 7], "target": 22})
    assert score_countdown("try \\boxed{3 * 5 + 7}", gt) == Score(1.0, "correct", "3 * 5 + 7")
    assert score_countdown("I give up", gt) == Score(0.0, "no_answer", None)


@pytest.mark.parametrize(
    "response,truth,value",
    [
        ("\\boxed{27}", "27.0", 1.0),
        ("\\boxed{\\frac12}", "0.5", 1.0),
        ("\\boxed{\\dfrac{\\sqrt{3}}{2}}", "\\frac{\\sqrt 3}{2}", 1.0),
        ("\\boxed{28}", "27.0", 0.0),
        ("27", "27", 0.0),  # no boxed answer
    ],
)
def test_score_math(response, truth, value):
    assert score_math(response, truth) == value


def test_math500_reference_solutions_verify(verifier):
    rows = read_jsonl("math500.jsonl")
    scores = verifier.score([r["solution"] for r in rows], [r["answer"] for r in rows])
    failures = [(r["unique_id"], s.reason) for r, s in zip(rows, scores) if s.value != 1.0]
    assert failures == []


def test_amc_float_answers_match_integers(verifier):
    rows = read_jsonl("amc23.jsonl")
    answers = [str(r["answer"]) for r in rows]
    assert all(a.endswith(".0") for a in answers)
    scores = verifier.score([f"\\boxed{{{int(float(a))}}}" for a in answers], answers)
    assert [s.value for s in scores] == [1.0] * len(rows)


def test_score_batch_mixes_kinds_and_names_unknown_sources(verifier):
    records = [
        {"data_source": "math500", "ability": "math", "reward_model": {"ground_truth": "9"}},
        {"data_source": "synthetic/countdown", "ability": "math",
         "reward_model": {"ground_truth": json.dumps({"numbers": [2, 3], "target": 6})}},
        {"data_source": "aime24", "ability": "math", "reward_model": {"ground_truth": "204"}},
    ]
    scores = score_batch(["\\boxed{9}", "\\boxed{2*3}", "\\boxed{205}"], records, verifier=verifier)
    assert [(s.value, s.reason) for s in scores] == [(1.0, "correct"), (1.0, "correct"), (0.0, "wrong")]
    with pytest.raises(ValueError, match="no reward for data_source 'mystery' \\(ability 'poetry'\\)"):
        score_batch(["x"], [{"data_source": "mystery", "ability": "poetry", "reward_model": {"ground_truth": ""}}])


def _hanging_worker(args):
    if args[0] == "HANG":
        time.sleep(3600)
    return math_rewards.verify_in_process(*args)


def test_stuck_verification_scores_zero_and_the_pool_recovers(monkeypatch):
    monkeypatch.setattr(math_rewards, "_worker", _hanging_worker)
    v = MathVerifier(workers=2, timeout_s=1)
    try:
        scores = v.score(["\\boxed{HANG}", "\\boxed{4}"], ["1", "4"])
        assert scores[0] == Score(0.0, "timeout", "HANG")
        assert scores[1].reason in ("correct", "timeout")  # may have queued behind the stuck one
        assert v.score(["\\boxed{5}"], ["5"]) == [Score(1.0, "correct", "5")]
    finally:
        v.close()
