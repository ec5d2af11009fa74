"""Countdown: an arithmetic expression over the given numbers that hits the target, checked exactly."""

from __future__ import annotations

import ast
import json
from collections import Counter
from fractions import Fraction

from lad.rewards.extract import extract_answer
from lad.rewards.math import Score

_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b}


class _Invalid(ValueError):
    pass


def _evaluate(node: ast.AST, used: list[int]) -> Fraction:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, used)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        used.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_evaluate(node.left, used), _evaluate(node.right, used))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        left, right = _evaluate(node.left, used), _evaluate(node.right, used)
        if right == 0:
            raise _Invalid("division by zero")
        return left / right
    raise _Invalid(f"not allowed in countdown: {type(node).__name__}")


def check_expression(expression: str, numbers: list[int], target: int) -> tuple[bool, str]:
    """Exact check: only + - * / and parentheses, each given number used at most once."""
    text = expression.replace("\\times", "*").replace("\\cdot", "*").replace("\\div", "/")
    text = text.replace("×", "*").replace("÷", "/").replace("−", "-")
    text = text.split("=")[0].strip()
    if not text or len(text) > 200:
        return False, "invalid_expression"
    try:
        used: list[int] = []
        value = _evaluate(ast.parse(text, mode="eval"), used)
    except (SyntaxError, _Invalid, RecursionError):
        return False, "invalid_expression"
    if Counter(used) - Counter(numbers):
        return False, "number_misuse"
    return (True, "correct") if value == target else (False, "wrong")


def score_countdown(response: str, ground_truth: str, pattern: str | None = None) -> Score:
    """ground_truth: JSON {"numbers": [...], "target": N}; the answer is the last \\boxed{} expression."""
    spec = json.loads(ground_truth)
    answer = extract_answer(response, pattern)
    if answer is None:
        return Score(0.0, "no_answer", None)
    ok, reason = check_expression(answer, spec["numbers"], spec["target"])
    return Score(1.0 if ok else 0.0, reason, answer)
