"""Scorers: per-sample verdicts for a benchmark's responses, and answer classes for maj@k.

``math`` scores through :mod:`lad.rewards` (math-verify in a worker pool; countdown checked
exactly), ``code`` runs the extracted program against the record's tests in the sandbox. Each
scorer also says which answers count as the same (math-verify equivalence for math, exact
expression for countdown, AST-normalised program for code), so maj@k and the number of distinct
correct answers group answers the way the scorer judges them.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Callable, Optional, Protocol

from lad.evaluation.metrics import normalize_program
from lad.rewards.extract import last_code_block


@dataclass(frozen=True)
class Verdict:
    correct: bool
    reason: str  # "correct", "wrong", "no_answer", "no_code", a test status such as "timeout", ...
    answer: Optional[str]  # the extracted answer or program that was judged


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
        from lad.rewards import MathVerifier

        self.verifier = verifier or MathVerifier()
        self._owned = owned or verifier is None

    def score(self, responses: list[str], records: list[dict]) -> list[Verdict]:
        from lad.rewards import extract_answer, score_batch

        prepared = []
        for response, record in zip(responses, records):
            unit = (record.get("extra_info") or {}).get("unit")
            answer = extract_answer(response) if unit else None
            bare = strip_unit(answer, unit) if answer is not None else None
            prepared.append(f"\\boxed{{{bare}}}" if bare != answer else response)
        scores = score_batch(prepared, records, verifier=self.verifier)
        return [Verdict(s.value == 1.0, s.reason, s.answer) for s in scores]

    def answer_classes(self, answers: list[list[str]], records: list[dict]) -> list[dict[str, int]]:
        from lad.rewards import reward_kind

        kinds = [reward_kind(r) for r in records]
        math_idx = [i for i, k in enumerate(kinds) if k == "math"]
        other_idx = [i for i, k in enumerate(kinds) if k != "math"]
        out: list[dict[str, int]] = [{} for _ in answers]

        def equivalent_many(pairs: list[tuple[str, str]]) -> list[bool]:
            return [ok for ok, _ in self.verifier.equivalent_many(pairs)]

        for i, labels in zip(math_idx, group_batched([answers[i] for i in math_idx], equivalent_many)):
            out[i] = labels
        # countdown: an expression is its own answer (spacing aside): two different ones are two answers
        for i, labels in zip(other_idx, classes_by_key([answers[i] for i in other_idx], _squash)):
            out[i] = labels
        return out

    def close(self) -> None:
        if self._owned:
            self.verifier.close()


def _squash(text: str) -> str:
    return "".join(text.split())


# --------------------------------------------------------------------------------------------
# code
# --------------------------------------------------------------------------------------------

# LeetCode-style (Class.method) problems are written against an implicit typing import, as
# LiveCodeBench's own harness assumes.
LEETCODE_PREAMBLE = "from typing import *\n"


def _defines(code: str, name: str) -> bool:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == name for n in tree.body)


def _imports(code: str) -> str:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return ""
    lines = code.splitlines()
    return "".join(
        "\n".join(lines[n.lineno - 1 : n.end_lineno]) + "\n" for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
    )


def assemble_program(code: str, info: dict) -> str:
    """The program to test: the response's code, completed with the problem's starter code.

    A response that defines the entry point (function, or the class of "Class.method") runs as
    written, after the starter code's imports (HumanEval prompts import typing names the answer
    uses). One that does not is taken as the continuation of the starter code (a function body).
    """
    entry, starter = info.get("entry_point"), info.get("starter_code") or ""
    preamble = LEETCODE_PREAMBLE if entry and "." in entry else ""
    if not entry or not starter:
        return preamble + code
    if _defines(code, entry.split(".")[0]):
        return preamble + _imports(starter) + code
    return preamble + starter + ("" if starter.endswith("\n") else "\n") + code


def _tests(record: dict) -> list[dict]:
    info = record["extra_info"]
    return json.loads(info["tests"] or record["reward_model"]["ground_truth"])


# The sandbox calls module-level functions only; a "Class.method" entry point (LiveCodeBench's
# LeetCode-style tests) is reached through this function, which makes a fresh instance per call
# as the record schema specifies.
METHOD_SHIM = "_lad_call_method"


def method_shim(program: str, tests: list[dict]) -> tuple[str, list[dict]]:
    """The program and tests with every "Class.method" call routed through :data:`METHOD_SHIM`."""
    entries = {t["entry_point"] for t in tests if t["type"] == "call" and "." in t["entry_point"]}
    if not entries:
        return program, tests
    if len(entries) > 1:
        raise ValueError(f"tests call several methods {sorted(entries)}; one entry point per problem is supported")
    cls, method = next(iter(entries)).split(".", 1)
    program += f"\n\ndef {METHOD_SHIM}(*args):\n    return {cls}().{method}(*args)\n"
    return program, [dict(t, entry_point=METHOD_SHIM) if t["type"] == "call" else t for t in tests]


class ScoringError(RuntimeError):
    """A benchmark cannot be scored (its reference solution fails); the message names the problem."""


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

    def _reference_outputs(self, records: list[dict]) -> dict[str, list]:
        todo = {}
        for r in records:
            if r["extra_info"].get("test_type") == "reference":
                todo.setdefault(_reference_key(r), r)
        requests = []
        for r in todo.values():
            tests = [{k: v for k, v in t.items() if k != "expected"} if t["type"] == "call" else t for t in _tests(r)]
            requests.append(method_shim(r["extra_info"]["reference_solution"], tests))
        expected = {}
        for (key, r), result in zip(todo.items(), self._evaluate_many(requests)):
            failed = [v for v in result.verdicts if v.status != "passed"]
            if result.status != "ok" or failed:
                detail = failed[0].detail if failed else result.status
                raise ScoringError(
                    f"{r['data_source']} problem {r['extra_info']['index']}: the reference solution fails {len(failed)} of "
                    f"its {result.total} inputs ({failed[0].status if failed else result.status}: {detail[:200]}), so the "
                    "expected outputs are unknown; raise code_timeout_s if the machine is slow"
                )
            expected[key] = [v.output for v in result.verdicts]
        return expected

    def _evaluate_many(self, requests: list[tuple[str, list[dict]]]):
        return self.client.evaluate_many(requests, timeout_s=self.timeout_s) if requests else []

    @staticmethod
    def _resolved_tests(record: dict, expected: dict[str, list]) -> list[dict]:
        tests = _tests(record)
        if record["extra_info"].get("test_type") != "reference":
            return tests
        outputs = expected[_reference_key(record)]
        return [dict(t, expected=o) if t["type"] == "call" else t for t, o in zip(tests, outputs)]

    def score(self, responses: list[str], records: list[dict]) -> list[Verdict]:
        programs = [last_code_block(r) for r in responses]
        todo = [i for i, p in enumerate(programs) if p is not None and p.strip()]
        expected = self._reference_outputs([records[i] for i in todo])
        requests = [
            method_shim(assemble_program(programs[i], records[i]["extra_info"]), self._resolved_tests(records[i], expected))
            for i in todo
        ]
        results = self._evaluate_many(requests)
        verdicts = [Verdict(False, "no_code", None) for _ in responses]
        for i, result in zip(todo, results):
            if result.status != "ok":
                verdicts[i] = Verdict(False, "sandbox_error", programs[i])
            elif result.passed == result.total:
                verdicts[i] = Verdict(True, "correct", programs[i])
            else:
                first = next(v.status for v in result.verdicts if v.status != "passed")
                verdicts[i] = Verdict(False, first, programs[i])
        return verdicts

    def answer_classes(self, answers: list[list[str]], records: list[dict]) -> list[dict[str, int]]:
        return classes_by_key(answers, normalize_program)

    def close(self) -> None:
        if self._owned:
            self.client.close()


def _reference_key(record: dict) -> str:
    return f"{record['data_source']}|{record['extra_info']['index']}"


def _math_scorer(cfg) -> MathScorer:
    from lad.rewards import MathVerifier

    return MathScorer(MathVerifier(workers=cfg.verifier_workers), owned=True)


# scorer name -> factory taking the run's EvalConfig
SCORERS: dict[str, Callable[..., Scorer]] = {
    "math": _math_scorer,
    "code": lambda cfg: CodeScorer(timeout_s=cfg.code_timeout_s, url=cfg.sandbox_url),
}
