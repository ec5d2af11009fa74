"""Pure comparisons of program outputs with expected ones (run outside the sandbox, so a
program can never influence them)."""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

RTOL = 1e-7  # numpy.allclose's default, as EvalPlus uses


def normalize_output(text: str) -> list[str]:
    """Lines without trailing whitespace, trailing empty lines dropped ("\\r\\n" == "\\n")."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def stdout_matches(actual: str, expected: str, atol: Optional[float] = None) -> bool:
    got, want = normalize_output(actual), normalize_output(expected)
    if got == want:
        return True
    if atol is None:
        return False
    got_tokens = " ".join(got).split()
    want_tokens = " ".join(want).split()
    if len(got_tokens) != len(want_tokens):
        return False
    for g, w in zip(got_tokens, want_tokens):
        if g == w:
            continue
        try:
            gf, wf = float(g), float(w)
        except ValueError:
            return False
        if not abs(gf - wf) <= atol:
            return False
    return True


def _is_floats(x: Any) -> bool:
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)) and x:
        return all(isinstance(i, float) for i in x)
    return False


def _close(a: Any, b: Any, atol: float) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y, atol) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if math.isnan(a) or math.isnan(b):
            return False
        if math.isinf(a) or math.isinf(b):
            return a == b
        return abs(a - b) <= atol + RTOL * abs(b)
    return False


def _numerically_close(out: Any, expected: Any, atol: float) -> bool:
    if atol == 0 and _is_floats(expected):
        atol = 1e-6
    if atol == 0 or type(out) is not type(expected):
        return False
    return _close(out, expected, atol)


def call_matches(out: Any, expected: Any, atol: float = 0.0, compare: str = "value",
                 alternatives: Sequence[Any] = ()) -> bool:
    """A call test's verdict as EvalPlus reaches it (``unsafe_execute``, with its special oracles):
    the exact match (``compare`` "value": equality; "set": equal as sets) or equality with one of
    ``alternatives``, else (with atol, 1e-6 for floats) the same type, the same length and
    element-wise closeness |out - exp| <= atol + 1e-7 |exp| to ``expected``. "not_none" only asks
    whether ``out`` is None where ``expected`` is, a bool ``out`` being the answer to that. An
    exception while comparing (unhashable items for "set") fails the test."""
    try:
        if compare == "not_none":
            return (out if type(out) is bool else out is not None) == (expected is not None)
        exact = set(out) == set(expected) if compare == "set" else out == expected
        if exact or any(out == other for other in alternatives):
            return True
    except Exception:  # noqa: BLE001 - comparing arbitrary decoded values
        return False
    return _numerically_close(out, expected, atol)
