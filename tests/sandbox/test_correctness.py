"""Correctness proofs through the real service: HumanEval+ and MBPP+ (all base and plus inputs),
HumanEval's check tests, wrong programs failing, and LiveCodeBench's public stdin tests."""

from __future__ import annotations

import ast
import math
import textwrap
import warnings

import pytest

from lad.data import mbpp
from lad.data.adapters import ADAPTERS, FieldMap
from lad.data.public import read_jsonl
from lad.sandbox.client import SandboxClient
from lad.sandbox.compare import stdout_matches

# Solutions written for this test (LiveCodeBench ships no reference solutions), keyed by the
# first words of the problem statement.
LCB_SOLUTIONS = {
    "You are given an integer sequence A=(A_1,\\ldots,A_N) of length N. Here, A_1, A_2":
        "n = int(input())\na = list(map(int, input().split()))\n"
        "print(sorted(range(n), key=lambda i: a[i])[-2] + 1)\n",
    "You are given an integer Y between 1583 and 2023.":
        "y = int(input())\nprint(366 if (y % 4 == 0 and y % 100 != 0) or y % 400 == 0 else 365)\n",
}


@pytest.fixture(scope="module")
def client(service):
    with SandboxClient(service.url, token=service.token, concurrency=2) as c:
        yield c


@pytest.fixture(scope="module")
def humanevalplus():
    return read_jsonl("humanevalplus.jsonl")


def _inputs(task: dict) -> list:
    return task["base_input"] + task["plus_input"]


def test_humanevalplus_canonical_solutions_pass_all_base_and_plus_inputs(client, humanevalplus):
    assert len(humanevalplus) == 164
    solved, inputs, wrong_checked = [], 0, False
    # Expected outputs are what the canonical solution returns (as EvalPlus does): record them
    # in the sandbox first, then verify against them. A few tasks at a time: some outputs are
    # 12 MB each, and holding all of them at once needs gigabytes (inside the test fence).
    for start in range(0, 164, 4):
        group = humanevalplus[start:start + 4]
        programs = [t["prompt"] + t["canonical_solution"] for t in group]
        recorded = client.evaluate_many(
            [(code, [{"type": "call", "entry_point": t["entry_point"], "args": args} for args in _inputs(t)])
             for code, t in zip(programs, group)], timeout_s=60)
        requests = []
        for code, task, rec in zip(programs, group, recorded):
            assert rec.status == "ok" and rec.passed == rec.total == len(_inputs(task)), (
                task["task_id"], [v for v in rec.verdicts if v.status != "passed"][:3])
            tests = [{"type": "call", "entry_point": task["entry_point"], "args": args, "expected": v.output,
                      "atol": task["atol"]} for args, v in zip(_inputs(task), rec.verdicts)]
            requests.append((task["task_id"], code, tests))  # the client splits oversized ones
            if task["task_id"] == "HumanEval/13":
                # A deliberately wrong program fails: off by one on every result of gcd.
                wrong = client.evaluate("def greatest_common_divisor(a, b):\n    import math\n"
                                        "    return math.gcd(a, b) + 1\n", tests)
                assert wrong.passed == 0 and wrong.total == len(tests) > 100
                assert {v.status for v in wrong.verdicts} == {"failed"}
                wrong_checked = True
        del recorded
        # 60 s per input: special_factorial's largest inputs take seconds on a loaded machine
        results = client.evaluate_many([(code, tests) for _, code, tests in requests], timeout_s=60)
        failed = {tid for (tid, _, _), r in zip(requests, results) if r.passed != r.total}
        assert failed == set(), [(tid, [v for v in r.verdicts if v.status != "passed"][:2])
                                 for (tid, _, _), r in zip(requests, results) if r.passed != r.total]
        solved += sorted({tid for tid, _, _ in requests})
        inputs += sum(r.total for r in results)
    assert len(solved) == 164 and wrong_checked
    assert inputs == sum(len(_inputs(t)) for t in humanevalplus) > 100_000


# Tasks whose stored inputs break their own contract (EvalPlus's release as it is): square_Sum
# gets 1000000.0 where the contract asks for an int, sum_Of_Subarray_Prod empty lists where it
# asks for non-empty ones. Neither has inputs to rebuild; they run without the contract.
CONTRACT_BROKEN = {"Mbpp/267", "Mbpp/734"}


def _with_contract(task: dict) -> str:
    """The canonical solution with EvalPlus's input contract (``assert isinstance(x, tuple)``, ...)
    as the first statements of the entry point: an input rebuilt into the wrong type fails it (the
    contracts of all 52 tasks whose inputs are rebuilt fail on the inputs as stored)."""
    code = task["prompt"] + task["canonical_solution"]
    if task["task_id"] in CONTRACT_BROKEN:
        return code
    with warnings.catch_warnings():  # invalid escape sequences ("\w") in some solutions' regexes
        warnings.simplefilter("ignore")
        tree = ast.parse(code)
    fn = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == task["entry_point"]][-1]
    first = fn.body[0]
    assert first.lineno > fn.lineno, task["task_id"]  # the body starts on a line of its own
    lines = code.splitlines(keepends=True)
    indent = lines[first.lineno - 1][:first.col_offset]
    contract = textwrap.indent(textwrap.dedent(task["contract"].strip("\n")), indent) + "\n"
    return "".join(lines[:first.lineno - 1]) + contract + "".join(lines[first.lineno - 1:])


def test_mbppplus_canonical_solutions_pass_all_base_and_plus_inputs(client):
    """All 378 MBPP+ canonical solutions against the tests lad makes of them (the mbppplus adapter:
    inputs rebuilt as EvalPlus rebuilds them, expected values from the reference solution, atol and
    EvalPlus's special oracles), in two runs through the 2-worker service: the first runs each
    solution with EvalPlus's input contract and records its outputs, the second runs the records'
    reference solution and must return the same value for every input, compared exactly. The
    contract is left out for the two tasks of CONTRACT_BROKEN.

    Exception: Mbpp/255 (combinations_colors) is tested on 107 of its 112 inputs; the adapter
    leaves out 5 whose outputs (79,079 to 1,663,740 tuples of 76-77 items) exceed what a call may
    return (16 MB as JSON; the largest also exceeds a program's 1 GiB of memory)."""
    raw = read_jsonl("mbppplus.jsonl")
    assert len(raw) == 378
    problems = [ADAPTERS["mbppplus"](row, FieldMap()) for row in raw]
    assert sum(len(t["base_input"]) + len(t["plus_input"]) for t in raw) == 41_015
    assert sum(len(p.tests) for p in problems) == 41_010
    (omitted,) = [t for t in raw if t["task_id"] == "Mbpp/255"]
    everything = omitted["base_input"] + omitted["plus_input"]
    sizes = {i: math.comb(len(colours) + n - 1, n) * n for i, (colours, n) in enumerate(everything)
             if isinstance(n, int) and n >= 0 and colours}
    # items in the output of each input: the 5 left out have 6 to 128 million, the rest 112,000 at most
    assert {i for i, items in sizes.items() if items > 1_000_000} == mbpp.OMITTED[255]
    assert max(items for i, items in sizes.items() if i not in mbpp.OMITTED[255]) < 200_000

    first = client.evaluate_many([(_with_contract(t), [{k: v for k, v in c.items() if k != "expected"} for c in p.tests])
                                  for t, p in zip(raw, problems)], timeout_s=60)
    failed = {t["task_id"]: [v for v in r.verdicts if v.status != "passed"][:2]
              for t, r in zip(raw, first) if r.status != "ok" or r.passed != r.total}
    assert failed == {}
    # the second run: every output as the first run's, exactly (not as the oracles would accept it)
    same = [[dict(c, expected=v.output, compare="value", alternatives=[]) for c, v in zip(p.tests, r.verdicts)]
            for p, r in zip(problems, first)]
    second = client.evaluate_many([(p.reference_solution, tests) for p, tests in zip(problems, same)], timeout_s=60)
    assert {t["task_id"]: [v for v in r.verdicts if v.status != "passed"][:2]
            for t, r in zip(raw, second) if r.passed != r.total} == {}
    assert sum(r.total for r in second) == 41_010

    # the tests as scoring uses them: expected values recorded, oracles on; a reordered answer to a
    # set-compared task passes, a wrong one fails
    by_entry = {p.entry_point: (p, r) for p, r in zip(problems, first)}
    similar, recorded = by_entry["similar_elements"]
    tests = [dict(c, expected=v.output) for c, v in zip(similar.tests, recorded.verdicts)]
    assert [c["compare"] for c in tests] == ["set"] * len(tests)
    reordered = "def similar_elements(a, b):\n    return tuple(sorted(set(a) & set(b), reverse=True))\n"
    dropped = "def similar_elements(a, b):\n    return tuple(sorted(set(a) & set(b))[1:])\n"
    good, bad = client.evaluate_many([(reordered, tests), (dropped, tests)])
    assert (good.passed, good.total) == (len(tests), len(tests)) and good.total > 100
    assert 0 < bad.passed < bad.total and {v.status for v in bad.verdicts} == {"passed", "failed"}
    # not_none: a bool verdict passes where the canonical solution returns a match object or None
    check, recorded = by_entry["check_str"]
    tests = [dict(c, expected=v.output) for c, v in zip(check.tests, recorded.verdicts)]
    as_bool = "import re\ndef check_str(string):\n    return bool(re.match('[aeiouAEIOU]', string))\n"
    inverted = "import re\ndef check_str(string):\n    return not re.match('[aeiouAEIOU]', string)\n"
    good, bad = client.evaluate_many([(as_bool, tests), (inverted, tests)])
    assert good.passed == good.total > 100 and bad.passed == 0


def test_humaneval_check_tests(client):
    tasks = read_jsonl("humaneval.jsonl")
    assert len(tasks) == 164

    def check(task: dict) -> list:
        return [{"type": "assert", "code": task["test"] + f"\ncheck({task['entry_point']})\n"}]

    results = client.evaluate_many([(t["prompt"] + t["canonical_solution"], check(t)) for t in tasks])
    assert [r.passed for r in results] == [1] * 164, [r.verdicts[0] for r in results if r.passed != 1][:2]
    # wrong programs: every function returns None
    wrong = client.evaluate_many([(t["prompt"] + "    return None\n", check(t)) for t in tasks[:20]])
    assert all(r.passed == 0 for r in wrong)
    assert {r.verdicts[0].status for r in wrong} <= {"failed", "runtime_error"}


def test_livecodebench_public_stdin_tests(client):
    problems = read_jsonl("livecodebench_public.jsonl")
    stdin_problems = [p for p in problems if p["tests"] and all(t["testtype"] == "stdin" for t in p["tests"])]
    assert len(stdin_problems) > 100
    checked = 0
    for prefix, solution in LCB_SOLUTIONS.items():
        problem = next(p for p in stdin_problems if p["problem"].startswith(prefix))
        tests = [{"type": "stdin", "input": t["input"], "output": t["output"]} for t in problem["tests"]]
        good = client.evaluate(solution, tests)
        assert (good.passed, good.total) == (len(tests), len(tests))
        bad = client.evaluate(solution + "print(0)\n", tests)  # one extra line of output
        assert bad.passed == 0 and {v.status for v in bad.verdicts} == {"failed"}
        checked += 1
    assert checked == 2

    # Every public stdin test of the set runs through the protocol: an echo program's output is
    # compared with each expected output, and matches exactly where input equals output.
    tests = [{"type": "stdin", "input": t["input"], "output": t["output"]} for p in stdin_problems for t in p["tests"]]
    echo = client.evaluate("import sys\nsys.stdout.write(sys.stdin.read())\n", tests)
    same = sum(stdout_matches(t["input"], t["output"]) for t in tests)
    assert echo.status == "ok" and echo.total == len(tests)
    assert {v.status for v in echo.verdicts} <= {"passed", "failed"}
    assert echo.passed == same
