import itertools
from fractions import Fraction

import pytest

from lad.evaluation.metrics import (
    avg_at_k,
    avg_at_k_with_ci,
    bootstrap_ci,
    distinct_correct,
    distinct_n,
    length_stats,
    majority_vote,
    mean_pass_at_k,
    normalize_program,
    pass_at_k,
    pass_at_k_curve,
)


def _enumerated_pass_at_k(n: int, c: int, k: int) -> Fraction:
    """Share of k-subsets of n samples (c correct) that contain a correct one, by enumeration."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return Fraction(sum(any(samples[i] for i in s) for s in subsets), len(subsets))


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_equals_enumeration_of_all_subsets(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(float(_enumerated_pass_at_k(n, c, k)), abs=1e-12)


def test_pass_at_k_edges_and_stability():
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    # Binomials of this size overflow floats; the product form does not.
    assert pass_at_k(2000, 1, 1000) == pytest.approx(0.5)
    assert pass_at_k_curve(4, 1) == pytest.approx([0.25, 0.5, 0.75, 1.0])
    with pytest.raises(ValueError, match="got n=4, c=5, k=1"):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError, match="got n=4, c=1, k=5"):
        pass_at_k(4, 1, 5)


def test_avg_and_mean_pass_at_k_hand_computed():
    correct = [[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 0]]
    assert avg_at_k(correct) == pytest.approx((0.5 + 0 + 0.75) / 3)
    assert mean_pass_at_k(correct, 1) == pytest.approx((0.5 + 0 + 0.75) / 3)
    assert mean_pass_at_k(correct, 4) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        avg_at_k([[1], []])


def test_bootstrap_ci_brackets_the_mean_and_is_seeded():
    values = [0.0, 0.25, 0.5, 1.0, 1.0, 0.75, 0.0, 0.5]
    lo, hi = bootstrap_ci(values, seed=3)
    assert lo <= sum(values) / len(values) <= hi
    assert bootstrap_ci(values, seed=3) == (lo, hi)
    assert bootstrap_ci([0.4] * 5) == (0.4, 0.4)
    summary = avg_at_k_with_ci([[1, 0], [1, 1], [0, 0]])
    assert summary["mean"] == pytest.approx(0.5) and summary["ci_low"] <= 0.5 <= summary["ci_high"]


def test_majority_vote_groups_by_equivalence_not_string():
    def same_number(a, b):
        return float(a) == float(b)

    answers = ["27", "27.0", "26", "26", None, None]
    correct = [True, True, False, False, False, False]
    assert majority_vote(answers, correct) is False  # as strings "26" wins 2 to 1
    assert majority_vote(answers, correct, same_number) is True  # as numbers 27 wins 2 to 2 (first seen)
    assert majority_vote([None, None], [False, False]) is False
    assert majority_vote(["5", "6", "6"], [True, False, False]) is False


def test_distinct_n_hand_computed():
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)  # (a b) twice, (b c), (b d)
    assert distinct_n(["a b", "a b"], 1) == pytest.approx(2 / 4)
    assert distinct_n(["a"], 3) == 0.0


def test_distinct_correct_counts_classes_of_correct_answers():
    answers = ["1/2", "0.5", "2/4", "3", None]
    correct = [True, True, True, False, False]
    assert distinct_correct(answers, correct) == 3
    assert distinct_correct(answers, correct, lambda a, b: eval(a) == eval(b)) == 1


def test_normalize_program_ignores_comments_whitespace_and_docstrings():
    a = 'def f(x):\n    """Double."""\n    return x * 2  # twice\n'
    b = "def f(x):\n\n    return x*2\n"
    c = "def f(x):\n    return x + x\n"
    assert normalize_program(a) == normalize_program(b) != normalize_program(c)
    assert normalize_program("def (:") == "def (:"


def test_length_stats():
    assert length_stats([1, 2, 3, 10]) == {"mean": 4.0, "std": pytest.approx(3.5355339), "median": 2.5, "min": 1.0,
                                           "max": 10.0}
