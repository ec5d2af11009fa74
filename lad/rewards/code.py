"""Code rewards: the response's last fenced code block run against the record's tests in the sandbox.

The one place where a response becomes a program and a record becomes its tests, for the RL
reward and the evaluator alike:

- ``assemble_program`` completes the response's code with the problem's starter code;
- ``method_shim`` routes LeetCode-style "Class.method" call tests through a module function;
- rows whose expected values come from a reference solution (``test_type: reference``, as in
  HumanEval+) get them by running that solution first (``reference_outputs``), as EvalPlus does.

The reward is the fraction of tests passed, or 1.0 only when all pass (``mode="all_pass"``). A
response without a code block scores 0 ("no_code"); a sandbox failure scores 0 with its reason
and never stops training.
"""

from __future__ import annotations

import ast
import json
from typing import Literal, Optional

from lad.rewards.extract import last_code_block
from lad.rewards.math import Score

CODE_MODES = ("fraction", "all_pass")

# LeetCode-style (Class.method) problems are written against an implicit typing import, as
# LiveCodeBench's own harness assumes.
LEETCODE_PREAMBLE = "from typing import *\n"

# The sandbox calls module-level functions only; a "Class.method" entry point (LiveCodeBench's
# LeetCode-style tests) is reached through this function, which makes a fresh instance per call
# as the record schema specifies.
METHOD_SHIM = "_lad_call_method"


class ScoringError(RuntimeError):
    """Code records cannot be scored (their reference solution fails); the message names the problem."""


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


def reference_outputs(client, records: list[dict], *, timeout_s: Optional[float] = None) -> dict[str, list]:
    """Expected call outputs of the reference-tested records, from their reference solutions
    (one sandbox request per distinct problem). Raises ScoringError when a reference fails."""
    todo: dict[str, dict] = {}
    for r in records:
        if _needs_reference(r):
            todo.setdefault(_reference_key(r), r)
    requests = []
    for r in todo.values():
        tests = [{k: v for k, v in t.items() if k != "expected"} if t["type"] == "call" else t for t in record_tests(r)]
        requests.append(method_shim(r["extra_info"]["reference_solution"], tests))
    expected = {}
    results = client.evaluate_many(requests, timeout_s=timeout_s) if requests else []
    for (key, r), result in zip(todo.items(), results):
        failed = [v for v in result.verdicts if v.status != "passed"]
        if result.status != "ok" or failed:
            detail = failed[0].detail if failed else result.status
            raise ScoringError(
                f"{r['data_source']} problem {r['extra_info']['index']}: the reference solution fails {len(failed)} of "
                f"its {result.total} inputs ({failed[0].status if failed else result.status}: {detail[:200]}), so the "
                "expected outputs are unknown; raise the code timeout if the machine is slow"
            )
        expected[key] = [v.output for v in result.verdicts]
    return expected


def program_request(code: str, record: dict, expected: dict[str, list]) -> tuple[str, list[dict]]:
    """The (program, tests) the sandbox runs for a response's ``code`` to ``record``; reference
    tests take their expected values from ``expected`` (see :func:`reference_outputs`)."""
    tests = record_tests(record)
    if _needs_reference(record):
        outputs = expected[_reference_key(record)]
        tests = [dict(t, expected=o) if t["type"] == "call" else t for t, o in zip(tests, outputs)]
    return method_shim(assemble_program(code, record.get("extra_info") or {}), tests)


def run_responses(client, responses: list[str], records: list[dict], *, timeout_s: Optional[float] = None,
                  stop_on_first_failure: bool = False) -> list[Optional[tuple[str, object]]]:
    """Per response: None when it has no code block, else (its code, the sandbox's EvaluateResult)."""
    if len(responses) != len(records):
        raise ValueError(f"{len(responses)} responses for {len(records)} records")
    programs = [last_code_block(r) for r in responses]
    todo = [i for i, p in enumerate(programs) if p is not None and p.strip()]
    expected = reference_outputs(client, [records[i] for i in todo], timeout_s=timeout_s)
    requests = [program_request(programs[i], records[i], expected) for i in todo]
    results = (client.evaluate_many(requests, timeout_s=timeout_s, stop_on_first_failure=stop_on_first_failure)
               if requests else [])
    out: list[Optional[tuple[str, object]]] = [None] * len(responses)
    for i, result in zip(todo, results):
        out[i] = (programs[i], result)
    return out


# --------------------------------------------------------------------------------------------
# the reward
# --------------------------------------------------------------------------------------------


def code_score(passed: int, total: int, status: str, mode: Literal["fraction", "all_pass"]) -> Score:
    """One program's reward from its sandbox verdicts."""
    if mode not in CODE_MODES:
        raise ValueError(f"unknown code reward mode {mode!r}; expected one of {list(CODE_MODES)}")
    if status != "ok":
        return Score(0.0, status)
    if total == 0:
        return Score(0.0, "no_tests")
    if mode == "all_pass":
        return Score(1.0 if passed == total else 0.0, "correct" if passed == total else f"passed_{passed}_of_{total}")
    return Score(passed / total, "correct" if passed == total else f"passed_{passed}_of_{total}")


def score_code(responses: list[str], records: list[dict], *, mode: Literal["fraction", "all_pass"] = "fraction",
               client=None, timeout_s: Optional[float] = None) -> list[Score]:
    """Score code responses against their records' tests; ``client`` is a SandboxClient (None: a local one).

    In ``all_pass`` mode the sandbox stops at a program's first failing test: the rest cannot
    change its reward. A sandbox that cannot be reached scores the batch 0 with the reason; a
    reference solution that fails is a data error and raises ScoringError.
    """
    from lad.sandbox.client import SandboxClient, SandboxRequestError

    if mode not in CODE_MODES:
        raise ValueError(f"unknown code reward mode {mode!r}; expected one of {list(CODE_MODES)}")
    if all(last_code_block(r) is None for r in responses):
        return [Score(0.0, "no_code") for _ in responses]  # no sandbox started for nothing to run
    own = client is None
    client = client or SandboxClient()
    try:
        ran = run_responses(client, responses, records, timeout_s=timeout_s, stop_on_first_failure=mode == "all_pass")
    except SandboxRequestError as err:
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
        # skipped tests (stop_on_first_failure) count as not passed
        verdict = code_score(result.passed, result.total, result.status, mode)
        scores.append(Score(verdict.value, verdict.reason, code))
    return scores
