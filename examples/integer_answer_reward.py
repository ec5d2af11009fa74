"""An example custom reward for ``reward.functions`` (verl's ``compute_score`` signature).

For problems whose ground truth is an integer (the synthetic arithmetic task, GSM8K-style sets):
1.0 when the response's final answer, its last ``\\boxed{}`` or else its last integer, equals the
ground truth; 0.1 for an integer answer that is wrong (format credit, which gives an untrained
model's groups some reward variance to learn from); 0 without one. It returns a dict: ``score`` is
the reward, the other numbers are logged per step as ``reward/extra/<name>``.

    reward:
      functions: {"synthetic/arithmetic": "examples/integer_answer_reward.py:compute_score"}
"""

import re

_BOXED = re.compile(r"\\boxed\{\s*(-?\d+)\s*\}")
_INTEGER = re.compile(r"-?\d+")


def final_answer(text: str) -> int | None:
    """The last boxed integer of ``text``, else its last integer, else None."""
    found = _BOXED.findall(text) or _INTEGER.findall(text)
    return int(found[-1]) if found else None


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    answer = final_answer(solution_str)
    correct = answer is not None and answer == int(ground_truth)
    score = 1.0 if correct else 0.1 if answer is not None else 0.0
    return {"score": score, "correct": float(correct), "answered": float(answer is not None)}
