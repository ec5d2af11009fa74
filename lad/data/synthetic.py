"""Seeded generators of small verifiable tasks that a CPU can train on.

Three tasks exercise the same paths as the real sets: ``countdown`` (an expression reaching a
target; many answers are correct, checked exactly by lad.rewards.countdown), ``arithmetic``
(word problems whose numeric answer goes through the math verifier) and ``code`` (write
``def f(...)`` meeting a one-line spec, checked by call tests in the sandbox's format).

    generate(task, n, seed=..., difficulty=1, split="train") -> list of canonical records
    demonstration(record) -> a correct assistant response in the answer format (for SFT)

Each call is deterministic in (task, n, seed, difficulty, split). Problems are bucketed by a hash
of their content: ``train`` only ever yields problems of buckets 0-7 and every other split those of
buckets 8-9, so a held-out split never shares a problem with the training split, whatever the
seeds. Within one call no problem repeats. The vocabulary is kept small (digits, operators and
the few words below) because the tiny model's tokenizer is trained on these tasks.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable

from lad.data.schema import Problem, build_record
from lad.data.templates import PromptTemplate

DIFFICULTIES = (1, 2, 3)
TEMPLATE = PromptTemplate()
_HELD_OUT_BUCKETS = 2  # of 10: the share of the problem space reserved for non-train splits
# consecutive draws without a new problem after which the task's problem space counts as exhausted
_MAX_MISSES = 10_000


# --------------------------------------------------------------------------------------------
# countdown
# --------------------------------------------------------------------------------------------

_CD_SETTINGS = {  # difficulty -> (how many numbers, largest number, operators, largest target)
    1: (3, 10, "+-", 100),
    2: (4, 25, "+-*", 1000),
    3: (4, 50, "+-*/", 1000),
}


def _countdown(rng: random.Random, difficulty: int) -> Problem:
    count, top, ops, max_target = _CD_SETTINGS[difficulty]
    while True:
        numbers = [rng.randint(1, top) for _ in range(count)]
        # the reference solution uses every number at difficulty >= 2, two or more at difficulty 1
        used = rng.sample(numbers, count if difficulty > 1 else rng.randint(2, count))
        terms: list[tuple[str, Fraction]] = [(str(v), Fraction(v)) for v in used]
        while len(terms) > 1:
            a, b = terms.pop(rng.randrange(len(terms))), terms.pop(rng.randrange(len(terms)))
            op = rng.choice(ops)
            if op == "/" and (b[1] == 0 or (a[1] / b[1]).denominator != 1):
                op = "*"
            if op == "-" and a[1] < b[1]:
                a, b = b, a
            value = {"+": a[1] + b[1], "-": a[1] - b[1], "*": a[1] * b[1], "/": a[1] / b[1] if b[1] else 0}[op]
            terms.append((f"{_wrap(a[0])} {op} {_wrap(b[0])}", value))
        expression, value = terms[0]
        if value.denominator == 1 and 1 <= value <= max_target:
            break
    target = int(value)
    listed = ", ".join(map(str, numbers))
    problem = (
        f"Use the numbers {listed} to make {target}. You may use + - * / and brackets, "
        "and each number at most once. Write the expression."
    )
    truth = json.dumps({"numbers": numbers, "target": target})
    return Problem("math", problem, truth, extra={"solution": expression})


def _wrap(expr: str) -> str:
    return f"({expr})" if " " in expr else expr


# --------------------------------------------------------------------------------------------
# arithmetic word problems
# --------------------------------------------------------------------------------------------

_NAMES = ("Ana", "Ben", "Cara", "Dan", "Eva", "Finn", "Gina", "Hugo")
_ITEMS = ("apples", "pens", "books", "cards", "shells", "stamps", "coins", "eggs", "marbles", "stickers")
_BOXES = ("bags", "boxes", "packs", "jars")


def _arithmetic(rng: random.Random, difficulty: int) -> Problem:
    name, other = rng.sample(_NAMES, 2)
    item = rng.choice(_ITEMS)
    top = 10 * difficulty + 10
    total = rng.randint(2, top)
    sentences = [f"{name} has {total} {item}."]
    steps: list[str] = []
    kinds = ["add", "sub"] + (["bags", "double"] if difficulty > 1 else [])
    for _ in range(difficulty):
        kind = rng.choice(kinds)
        if kind == "sub" and total < 2:
            kind = "add"
        if kind == "add":
            k = rng.randint(1, top)
            sentences.append(f"{name} gets {k} more {item}.")
            steps.append(f"{total} + {k} = {total + k}.")
            total += k
        elif kind == "sub":
            k = rng.randint(1, total - 1)
            sentences.append(f"{name} gives {k} {item} to {other}.")
            steps.append(f"{total} - {k} = {total - k}.")
            total -= k
        elif kind == "bags":
            a, b = rng.randint(2, 9), rng.randint(2, 9)
            box = rng.choice(_BOXES)
            sentences.append(f"{name} buys {a} {box} with {b} {item} in each.")
            steps.append(f"{a} * {b} = {a * b}. {total} + {a * b} = {total + a * b}.")
            total += a * b
        else:
            sentences.append(f"Then the number of {item} {name} has doubles.")
            steps.append(f"{total} * 2 = {total * 2}.")
            total *= 2
    sentences.append(f"How many {item} does {name} have now?")
    return Problem("math", " ".join(sentences), str(total), extra={"solution": " ".join(steps)})


# --------------------------------------------------------------------------------------------
# tiny code tasks
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    """One family of code tasks: spec text, reference body and behaviour, each with parameter k (and m)."""

    arg: str  # "x" (an int) or "xs" (a list of ints)
    text: str
    body: str
    fn: Callable[..., Any]


_CODE_SPECS: dict[int, tuple[_Spec, ...]] = {
    1: (
        _Spec("x", "returns x plus {k}", "return x + {k}", lambda x, k, m: x + k),
        _Spec("x", "returns x minus {k}", "return x - {k}", lambda x, k, m: x - k),
        _Spec("x", "returns x times {k}", "return x * {k}", lambda x, k, m: x * k),
        _Spec("x", "returns x times {k} plus {m}", "return x * {k} + {m}", lambda x, k, m: x * k + m),
        _Spec("x", "returns True if x is greater than {k}, else False", "return x > {k}", lambda x, k, m: x > k),
        _Spec("x", "returns the remainder of x divided by {k}", "return x % {k}", lambda x, k, m: x % k),
        _Spec("x", "returns x times x plus {k}", "return x * x + {k}", lambda x, k, m: x * x + k),
    ),
    2: (
        _Spec("xs", "returns how many items of the list xs are greater than {k}",
              "return len([v for v in xs if v > {k}])", lambda xs, k, m: len([v for v in xs if v > k])),
        _Spec("xs", "returns the sum of the items of the list xs that are less than {k}",
              "return sum(v for v in xs if v < {k})", lambda xs, k, m: sum(v for v in xs if v < k)),
        _Spec("xs", "returns a list of the items of the list xs, each plus {k}",
              "return [v + {k} for v in xs]", lambda xs, k, m: [v + k for v in xs]),
        _Spec("xs", "returns a list of the items of the list xs, each times {k}",
              "return [v * {k} for v in xs]", lambda xs, k, m: [v * k for v in xs]),
        _Spec("xs", "returns a list of the items of the list xs that can be divided by {k}",
              "return [v for v in xs if v % {k} == 0]", lambda xs, k, m: [v for v in xs if v % k == 0]),
        _Spec("xs", "returns the sum of the items of the list xs plus {k}",
              "return sum(xs) + {k}", lambda xs, k, m: sum(xs) + k),
        _Spec("xs", "returns how many items of the list xs are greater than {k} and less than {m}",
              "return len([v for v in xs if {k} < v < {m}])", lambda xs, k, m: len([v for v in xs if k < v < m])),
        _Spec("xs", "returns a list of the items of the list xs, each times {k} plus {m}",
              "return [v * {k} + {m} for v in xs]", lambda xs, k, m: [v * k + m for v in xs]),
    ),
    3: (
        _Spec("xs", "returns the sum of the items of the list xs that are greater than {k}, times {m}",
              "return sum(v for v in xs if v > {k}) * {m}", lambda xs, k, m: sum(v for v in xs if v > k) * m),
        _Spec("xs", "returns the list xs sorted from small to large, each item plus {k}",
              "return sorted(v + {k} for v in xs)", lambda xs, k, m: sorted(v + k for v in xs)),
        _Spec("xs", "returns the largest item of the list xs plus {k}, or {m} if xs is empty",
              "return max(xs) + {k} if xs else {m}", lambda xs, k, m: max(xs) + k if xs else m),
        _Spec("xs", "returns a list of the items of the list xs that are less than {m}, each times {k}",
              "return [v * {k} for v in xs if v < {m}]", lambda xs, k, m: [v * k for v in xs if v < m]),
        _Spec("xs", "returns the sum of the items of the list xs that can be divided by {k}, plus {m}",
              "return sum(v for v in xs if v % {k} == 0) + {m}", lambda xs, k, m: sum(v for v in xs if v % k == 0) + m),
    ),
}
_CODE_TESTS = 5


def _code(rng: random.Random, difficulty: int) -> Problem:
    spec = rng.choice(_CODE_SPECS[difficulty])
    k, m = sorted(rng.sample(range(2, 100), 2))  # ordered, so "greater than k and less than m" is never empty
    # boundaries first, so solutions off by one fail: x = k, the empty list, a list around k and m
    inputs: list[Any] = [k] if spec.arg == "x" else [[], [k - 1, k, m - 1, m]]
    while len(inputs) < _CODE_TESTS:
        if spec.arg == "x":
            inputs.append(rng.randint(-20, 120))
        else:
            inputs.append([rng.randint(-10, 120) for _ in range(rng.randint(1, 6))])
    tests = [
        {"type": "call", "entry_point": "f", "args": [x], "expected": spec.fn(x, k, m), "atol": 0.0} for x in inputs
    ]
    problem = f"Write a Python function f({spec.arg}) that {spec.text.format(k=k, m=m)}."
    solution = f"def f({spec.arg}):\n    {spec.body.format(k=k, m=m)}\n"
    # the starter code stays out of the prompt (the problem names the signature) to keep prompts short
    return Problem(
        "code", problem, tests=tests, entry_point="f", test_type="call",
        extra={"solution": solution, "signature": f"def f({spec.arg}):"},
    )


# --------------------------------------------------------------------------------------------
# registry and public API
# --------------------------------------------------------------------------------------------

TASKS: dict[str, Callable[[random.Random, int], Problem]] = {
    "countdown": _countdown,
    "arithmetic": _arithmetic,
    "code": _code,
}


def _bucket(task: str, difficulty: int, problem: str) -> int:
    return hashlib.sha256(f"{task}|{difficulty}|{problem}".encode()).digest()[0] % 10


def problems(task: str, n: int, *, seed: int, difficulty: int = 1, split: str = "train") -> list[Problem]:
    """``n`` distinct problems of a synthetic task, before a template is applied (see the module docstring)."""
    if task not in TASKS:
        raise ValueError(f"unknown synthetic task {task!r}; expected one of {sorted(TASKS)}")
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    held_out = split != "train"
    rng = random.Random(f"lad.synthetic|{task}|{seed}|{difficulty}|{split}")
    out: list[Problem] = []
    seen: set[str] = set()
    misses = 0
    while len(out) < n:
        if misses >= _MAX_MISSES:
            raise ValueError(
                f"synthetic task {task!r} at difficulty {difficulty} ran out of distinct {split!r} problems "
                f"after {len(out)} of {n}; ask for fewer or raise the difficulty"
            )
        problem = TASKS[task](rng, difficulty)
        if problem.problem in seen or (_bucket(task, difficulty, problem.problem) >= 10 - _HELD_OUT_BUCKETS) != held_out:
            misses += 1
            continue
        misses = 0
        seen.add(problem.problem)
        problem.extra.update(task=task, difficulty=difficulty)
        out.append(problem)
    return out


def generate(task: str, n: int, *, seed: int, difficulty: int = 1, split: str = "train") -> list[dict]:
    """``n`` distinct canonical records of a synthetic task, with the default prompt template."""
    return [
        build_record(p, data_source=f"synthetic/{task}", index=i, split=split, template=TEMPLATE)
        for i, p in enumerate(problems(task, n, seed=seed, difficulty=difficulty, split=split))
    ]


def demonstration(record: dict) -> str:
    """A correct assistant response to a synthetic record, in the answer format the rewards parse."""
    info = record.get("extra_info") or {}
    task, solution = info.get("task"), info.get("solution")
    if task not in TASKS or solution is None:
        raise ValueError(
            f"demonstration needs a synthetic record (extra_info.task and .solution), got data_source {record.get('data_source')!r}"
        )
    if task == "countdown":
        return f"\\boxed{{{solution}}}"
    if task == "arithmetic":
        return f"{solution} The answer is \\boxed{{{record['reward_model']['ground_truth']}}}."
    return f"```python\n{solution}```"
