"""Code rewards: the response's last fenced code block run against the record's tests in the sandbox.

The one place where a response becomes a program and a record becomes its tests, for the RL
reward and the evaluator alike:

- ``assemble_program`` completes the response's code with the problem's starter code, after
  the harness imports (``LEETCODE_PREAMBLE``) for functional problems;
- ``method_shim`` routes LeetCode-style "Class.method" call tests through a module function;
- rows whose expected values come from a reference solution (``test_type: reference``, as in
  HumanEval+) get them by running that solution first (``reference_outputs``), as EvalPlus does.

The reward is the fraction of tests passed, or 1.0 only when all pass (``mode="all_pass"``); the
reason of a program that fails names its first failing test. A response without a code block
scores 0 ("no_code"); a sandbox failure, or a record that cannot be scored, scores 0 with its
reason and never stops training.
"""

from __future__ import annotations

import ast
import json
from typing import Literal, Optional, Union

from lad.rewards.extract import last_code_block
from lad.rewards.math import Score
from lad.sandbox.models import EvaluateResult

CODE_MODES = ("fraction", "all_pass")

# Functional (call-tested) problems are written against the names LeetCode's judge and
# LiveCodeBench's harness make available to every program: inf, defaultdict, deque, heapify,
# bisect_left, accumulate, ascii_lowercase, ... LiveCodeBench prepends one import block to every
# program it grades (lcb_runner/evaluation/testing_util.py: `import_string`, used by
# grade_call_based and grade_stdio); this is that block, in its order: `from builtins import *`
# after math and operator puts back the builtins they shadow (pow, ...), and the plain imports
# after the star imports rebind datetime, copy, ... to the modules.
_HARNESS_MODULES = ("string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math", "random",
                    "statistics", "itertools", "functools", "operator", "io", "sys", "json", "builtins", "typing")
LEETCODE_PREAMBLE = ("".join(f"from {m} import *\n" for m in _HARNESS_MODULES)
                     + "".join(f"import {m}\n" for m in _HARNESS_MODULES if m not in ("builtins", "typing"))
                     + "sys.setrecursionlimit(50000)\n")
# the test types that get it: call tests, alone or with others; not HumanEval(+) rows, whose
# harness (EvalPlus, HumanEval's check) runs the program as written
FUNCTIONAL_TEST_TYPES = ("call", "mixed")
DETAIL_CHARS = 200  # of a failing test's error message, in a score's reason

# The sandbox calls module-level functions only; a "Class.method" entry point (LiveCodeBench's
# LeetCode-style tests) is reached through this function, which makes a fresh instance per call
# as the record schema specifies.
METHOD_SHIM = "_lad_call_method"


class ScoringError(RuntimeError):
    """Code records cannot be scored (their reference solution fails); the message names the problem
    and the cause."""


# what to do about a reference solution that does not pass, by the status it got
_REMEDIES = {
    "timeout": "raise the code timeout if the machine is slow",
    "memory_limit": "raise the sandbox's memory limit if the reference needs more",
    "output_limit": "raise the sandbox's returned-value cap (value_limit_mb) if the reference returns more",
    "sandbox_error": "the sandbox could not run it: check the sandbox service",
}
_BROKEN_REFERENCE = "the reference solution itself fails: the record is wrong"


# --------------------------------------------------------------------------------------------
# programs and tests
# --------------------------------------------------------------------------------------------


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


def _after_future_imports(head: str, program: str) -> str:
    """``head`` + ``program``, but after the program's ``from __future__`` imports (and a docstring
    before them), which must open the module."""
    try:
        tree = ast.parse(program)
    except SyntaxError:
        return head + program
    end = 0
    for i, node in enumerate(tree.body):
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            end = node.end_lineno
        elif not (i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            break
    lines = program.splitlines(keepends=True)
    return "".join(lines[:end]) + head + "".join(lines[end:])


def assemble_program(code: str, info: dict) -> str:
    """The program to test: the response's code, completed with the problem's starter code.

    A response that defines the entry point (function, or the class of "Class.method") runs as
    written, after the starter code's imports (HumanEval prompts import typing names the answer
    uses). One that does not is taken as the continuation of the starter code (a function body).
    Functional problems (call tests: ``info["test_type"]`` in FUNCTIONAL_TEST_TYPES, or a
    "Class.method" entry point) get LEETCODE_PREAMBLE first, with or without an entry point.
    """
    entry, starter = info.get("entry_point"), info.get("starter_code") or ""
    if not entry or not starter:
        program = code
    elif _defines(code, entry.split(".")[0]):
        program = _imports(starter) + code
    else:
        program = starter + ("" if starter.endswith("\n") else "\n") + code
    if info.get("test_type") in FUNCTIONAL_TEST_TYPES or (entry and "." in entry):
        return _after_future_imports(LEETCODE_PREAMBLE, program)
    return program


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


def record_tests(record: dict) -> list[dict]:
    """A code record's tests: extra_info.tests, else reward_model.ground_truth (a JSON list)."""
    info = record.get("extra_info") or {}
    raw = info.get("tests") or (record.get("reward_model") or {}).get("ground_truth")
    try:
        tests = json.loads(raw)
    except (TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"code record {record.get('data_source')!r} index {info.get('index')!r}: "
                         f"extra_info.tests or reward_model.ground_truth must be a JSON list of tests ({err})") from None
    if not isinstance(tests, list):
        raise ValueError(f"code record {record.get('data_source')!r} index {info.get('index')!r}: "
                         f"tests must be a JSON list, got {type(tests).__name__}")
    return tests


def _reference_key(record: dict) -> str:
    return f"{record.get('data_source')}|{record['extra_info']['index']}"


def _needs_reference(record: dict) -> bool:
    return (record.get("extra_info") or {}).get("test_type") == "reference"


def _reference_failure(record: dict, result) -> Optional[str]:
    """Why a reference solution's run gives no expected outputs (None: it passed every input)."""
    failed = [(i, v) for i, v in enumerate(result.verdicts) if v.status != "passed"]
    if result.status == "ok" and not failed:
        return None
    where = f"{record['data_source']} problem {record['extra_info']['index']}"
    status = failed[0][1].status if failed else result.status
    detail = failed[0][1].detail if failed else (result.verdicts[0].detail if result.verdicts else "")
    first = f", first on input {failed[0][0]}" if failed else ""
    return (f"{where}: the reference solution fails {len(failed)} of its {result.total} inputs ({status}: "
            f"{detail[:DETAIL_CHARS]}{first}), so the expected outputs are unknown; "
            f"{_REMEDIES.get(status, _BROKEN_REFERENCE)}")


def reference_outputs(client, records: list[dict], *, timeout_s: Optional[float] = None,
                      strict: bool = True) -> tuple[dict[str, list], dict[str, str]]:
    """Expected call outputs of the reference-tested records, from their reference solutions (one
    sandbox request per distinct problem), and why each problem without them has none. With
    ``strict``, the first reference that fails raises ScoringError instead."""
    todo: dict[str, dict] = {}
    for r in records:
        if _needs_reference(r):
            todo.setdefault(_reference_key(r), r)
    requests = []
    for r in todo.values():
        tests = [{k: v for k, v in t.items() if k != "expected"} if t["type"] == "call" else t for t in record_tests(r)]
        requests.append(method_shim(r["extra_info"]["reference_solution"], tests))
    expected, failures = {}, {}
    results = client.evaluate_many(requests, timeout_s=timeout_s) if requests else []
    for (key, r), result in zip(todo.items(), results):
        failure = _reference_failure(r, result)
        if failure is None:
            expected[key] = [v.output for v in result.verdicts]
        elif strict:
            raise ScoringError(failure)
        else:
            failures[key] = failure
    return expected, failures


def program_request(code: str, record: dict, expected: dict[str, list]) -> tuple[str, list[dict]]:
    """The (program, tests) the sandbox runs for a response's ``code`` to ``record``; reference
    tests take their expected values from ``expected`` (see :func:`reference_outputs`)."""
    tests = record_tests(record)
    if _needs_reference(record):
        outputs = expected[_reference_key(record)]
        tests = [dict(t, expected=o) if t["type"] == "call" else t for t, o in zip(tests, outputs)]
    return method_shim(assemble_program(code, record.get("extra_info") or {}), tests)


def run_responses(client, responses: list[str], records: list[dict], *, timeout_s: Optional[float] = None,
                  stop_on_first_failure: bool = False, strict: bool = True
                  ) -> list[Optional[tuple[str, Union[EvaluateResult, str]]]]:
    """Per response: None when it has no code block, else (its code, the sandbox's EvaluateResult),
    or with ``strict`` off (its code, why its record cannot be scored: a reference solution that
    fails, tests that cannot be read). With ``strict``, those raise ScoringError / ValueError."""
    if len(responses) != len(records):
        raise ValueError(f"{len(responses)} responses for {len(records)} records")
    programs = [last_code_block(r) for r in responses]
    todo = [i for i, p in enumerate(programs) if p is not None and p.strip()]
    out: list[Optional[tuple[str, Union[EvaluateResult, str]]]] = [None] * len(responses)
    readable = []
    for i in todo:
        try:
            record_tests(records[i])
            readable.append(i)
        except ValueError as err:
            if strict:
                raise
            out[i] = (programs[i], f"bad_record: {err}")
    expected, failures = reference_outputs(client, [records[i] for i in readable], timeout_s=timeout_s, strict=strict)
    runnable = []
    for i in readable:
        if _needs_reference(records[i]) and _reference_key(records[i]) in failures:
            out[i] = (programs[i], f"reference_failed: {failures[_reference_key(records[i])]}")
            continue
        try:
            request = program_request(programs[i], records[i], expected)
        except ValueError as err:  # several Class.method entry points
            if strict:
                raise
            out[i] = (programs[i], f"bad_record: {err}")
            continue
        runnable.append((i, request))
    results = (client.evaluate_many([req for _, req in runnable], timeout_s=timeout_s,
                                    stop_on_first_failure=stop_on_first_failure) if runnable else [])
    for (i, _), result in zip(runnable, results):
        out[i] = (programs[i], result)
    return out


# --------------------------------------------------------------------------------------------
# the reward
# --------------------------------------------------------------------------------------------


def first_failure(result: EvaluateResult) -> str:
    """The first test that did not pass, as "status: detail" (detail truncated); "" when all passed."""
    for v in result.verdicts:
        if v.status not in ("passed", "skipped"):
            detail = v.detail if len(v.detail) <= DETAIL_CHARS else v.detail[:DETAIL_CHARS] + "..."
            return f"{v.status}: {detail}" if detail else v.status
    return ""


def outcome(reason: str) -> str:
    """What a code score's ``reason`` says happened, in one word: the first failing test's status
    ("failed", "timeout", "runtime_error", ...) for a program that ran and failed, else the
    reason's kind ("correct", "no_code", "sandbox_error", ...). The evaluator's verdicts count these."""
    label, _, failure = reason.partition(": ")
    if label.startswith("passed_") and failure:
        return failure.split(":", 1)[0]
    return label


def code_score(passed: int, total: int, status: str, mode: Literal["fraction", "all_pass"],
               failure: str = "") -> Score:
    """One program's reward from its sandbox verdicts; ``failure`` (see :func:`first_failure`)
    follows the count in the reason of a program that did not pass every test."""
    if mode not in CODE_MODES:
        raise ValueError(f"unknown code reward mode {mode!r}; expected one of {list(CODE_MODES)}")
    if status != "ok":
        return Score(0.0, status)
    if total == 0:
        return Score(0.0, "no_tests")
    if passed == total:
        return Score(1.0, "correct")
    reason = f"passed_{passed}_of_{total}" + (f": {failure}" if failure else "")
    return Score(0.0 if mode == "all_pass" else passed / total, reason)


def score_code(responses: list[str], records: list[dict], *, mode: Literal["fraction", "all_pass"] = "fraction",
               client=None, timeout_s: Optional[float] = None, strict: bool = False) -> list[Score]:
    """Score code responses against their records' tests; ``client`` is a SandboxClient (None: a local one).

    In ``all_pass`` mode the sandbox stops at a program's first failing test: the rest cannot
    change its reward. A sandbox that cannot be reached scores the batch 0 with the reason. A
    record that cannot be scored (its reference solution fails, its tests are unreadable) scores
    its responses 0 with the reason and the rest of the batch as usual: in training, one bad row
    must not stop the run. With ``strict`` (the evaluator, which must not report a number
    computed without them) both raise instead: SandboxRequestError, ScoringError, ValueError.
    """
    from lad.sandbox.client import SandboxClient, SandboxRequestError

    if mode not in CODE_MODES:
        raise ValueError(f"unknown code reward mode {mode!r}; expected one of {list(CODE_MODES)}")
    if all(last_code_block(r) is None for r in responses):
        return [Score(0.0, "no_code") for _ in responses]  # no sandbox started for nothing to run
    own = client is None
    client = client or SandboxClient()
    try:
        ran = run_responses(client, responses, records, timeout_s=timeout_s, stop_on_first_failure=mode == "all_pass",
                            strict=strict)
    except SandboxRequestError as err:
        if strict:
            raise
        return [Score(0.0, "no_code") if last_code_block(r) is None else Score(0.0, f"sandbox_error: {err.status_code}")
                for r in responses]
    finally:
        if own:
            client.close()
    scores = []
    for item in ran:
        if item is None:
            scores.append(Score(0.0, "no_code"))
            continue
        code, result = item
        if isinstance(result, str):
            scores.append(Score(0.0, result, code))
            continue
        # skipped tests (stop_on_first_failure) count as not passed
        verdict = code_score(result.passed, result.total, result.status, mode, first_failure(result))
        scores.append(Score(verdict.value, verdict.reason, code))
    return scores
