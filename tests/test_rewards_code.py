"""Code rewards on programs written the way LeetCode and LiveCodeBench programs are: the harness's
imports are there without the program importing them; a failing test's error is in the reason;
a record that cannot be scored costs its own responses, not the batch."""

from __future__ import annotations

import json

import pytest

from lad.rewards import reason_label
from lad.rewards.code import (LEETCODE_PREAMBLE, ScoringError, _reference_failure, assemble_program, run_responses,
                              score_code)
from lad.sandbox.client import SandboxClient
from lad.sandbox.models import EvaluateResult, Verdict

# Correct solutions that use, unimported, the names the issue found missing: each is
# (method source, [(args, expected), ...]).
LEETCODE = {
    "inf_min": ("def run(self, xs):\n        best = inf\n        for x in xs:\n            best = min(best, x)\n"
                "        return best\n", [([[3, 1, 2]], 1)]),
    "defaultdict_deque": ("def run(self, edges):\n        g = defaultdict(list)\n        for a, b in edges:\n"
                          "            g[a].append(b)\n        q, seen = deque([0]), {0}\n        while q:\n"
                          "            for n in g[q.popleft()]:\n                if n not in seen:\n"
                          "                    seen.add(n)\n                    q.append(n)\n        return len(seen)\n",
                          [([[[0, 1], [1, 2], [3, 4]]], 3)]),
    "pairwise_accumulate": ("def run(self, xs):\n        return max(b - a for a, b in pairwise(accumulate(xs)))\n",
                            [([[1, 5, 2]], 5)]),
    "heapify": ("def run(self, xs: List[int]) -> int:\n        heapify(xs)\n        return heappop(xs) + heappop(xs)\n",
                [([[5, 1, 4, 2]], 3)]),
    "ascii_bisect": ("def run(self, c):\n        return bisect_left(ascii_lowercase, c)\n", [(["d"], 3)]),
    "combinations_sqrt_ceil": ("def run(self, xs):\n        return sum(ceil(sqrt(a * b)) for a, b in combinations(xs, 2))\n",
                               [([[1, 4, 9]], 2 + 3 + 6)]),
    "groupby_counter": ("def run(self, s):\n        return [len(list(g)) for _, g in groupby(s)] + [Counter(s)['a']]\n",
                        [(["aabccca"], [2, 1, 3, 1, 3])]),
    "modules": ("def run(self, n):\n        return math.comb(n, 2) + functools.reduce(operator.add, range(n))\n",
                [([4], 6 + 6)]),
}


def _leetcode_record(i: int, cases: list, *, entry_in_record: bool) -> dict:
    tests = [{"type": "call", "entry_point": "Solution.run", "args": args, "expected": want} for args, want in cases]
    info = {"index": i, "test_type": "call", "tests": json.dumps(tests)}
    if entry_in_record:
        info.update(entry_point="Solution.run", starter_code="class Solution:\n    def run(self, *args):\n        ")
    return {"data_source": "lc", "ability": "code", "reward_model": {"ground_truth": ""}, "extra_info": info}


def _fenced(code: str) -> str:
    return f"```python\n{code}```"


@pytest.fixture(scope="module")
def client():
    with SandboxClient(url="") as c:
        yield c


@pytest.mark.parametrize("entry_in_record", [True, False], ids=["entry_point", "no_entry_point"])
def test_leetcode_solutions_get_the_harness_imports(client, entry_in_record):
    records, responses = [], []
    for i, (method, cases) in enumerate(LEETCODE.values()):
        records.append(_leetcode_record(i, cases, entry_in_record=entry_in_record))
        responses.append(_fenced("class Solution:\n    " + method))
    scores = score_code(responses, records, client=client)
    assert {name: (s.value, s.reason) for name, s in zip(LEETCODE, scores)} == {name: (1.0, "correct") for name in LEETCODE}


def test_leetcode_solution_with_sortedcontainers_passes(client):
    """LeetCode's judge has sortedcontainers installed; a correct solution that imports it (here
    LeetCode 315, Count of Smaller Numbers After Self) passes in the sandbox as it does there."""
    solution = ("from sortedcontainers import SortedList\n\n"
                "class Solution:\n    def countSmaller(self, nums: List[int]) -> List[int]:\n"
                "        seen, out = SortedList(), []\n        for x in reversed(nums):\n"
                "            out.append(seen.bisect_left(x))\n            seen.add(x)\n        return out[::-1]\n")
    cases = [([[5, 2, 6, 1]], [2, 1, 1, 0]), ([[-1]], [0]), ([[-1, -1]], [0, 0]), ([[3, 3, 1, 2, 2]], [3, 3, 0, 0, 0])]
    tests = [{"type": "call", "entry_point": "Solution.countSmaller", "args": a, "expected": e} for a, e in cases]
    record = {"data_source": "lc", "ability": "code", "reward_model": {"ground_truth": ""},
              "extra_info": {"index": 0, "test_type": "call", "tests": json.dumps(tests)}}
    (score,) = score_code([_fenced(solution)], [record], client=client)
    assert (score.value, score.reason) == (1.0, "correct")


def test_plain_function_call_tests_get_the_imports_and_humaneval_rows_do_not():
    code = "def f(xs):\n    return list(accumulate(xs))\n"
    assert assemble_program(code, {"test_type": "call", "entry_point": "f"}) == LEETCODE_PREAMBLE + code
    assert assemble_program(code, {"test_type": "mixed"}) == LEETCODE_PREAMBLE + code
    for evalplus_style in ("reference", "assert", "stdin"):
        assert assemble_program(code, {"test_type": evalplus_style, "entry_point": "f"}) == code
    future = '"""Doc."""\nfrom __future__ import annotations\nx: int = 1\n'
    assert assemble_program(future, {"test_type": "call"}) == (
        '"""Doc."""\nfrom __future__ import annotations\n' + LEETCODE_PREAMBLE + "x: int = 1\n")


def test_preamble_lists_the_livecodebench_modules_and_keeps_builtins(client):
    names = ("string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math", "random", "statistics",
             "itertools", "functools", "operator", "io", "sys", "json", "typing")
    assert all(f"from {m} import *\n" in LEETCODE_PREAMBLE for m in names)
    # math's pow is shadowed back by the builtin one (an int, not 8.0); datetime is the module
    probe = LEETCODE_PREAMBLE + "print(pow(2, 3), datetime.__name__, sys.getrecursionlimit())\n"
    assert client.run(probe).stdout == "8 datetime 50000\n"


def test_reason_names_the_first_failing_test_error(client):
    cases = [([[1]], 1), ([[2]], 2)]
    record = _leetcode_record(0, cases, entry_in_record=True)
    np_user = _fenced("class Solution:\n    def run(self, xs):\n        return int(np.sum(xs))\n")
    wrong = _fenced("class Solution:\n    def run(self, xs):\n        return xs[0] * 3 - 2\n")
    long_error = _fenced("class Solution:\n    def run(self, xs):\n        raise ValueError('x' * 500)\n")
    scores = score_code([np_user, wrong, long_error], [record] * 3, client=client)
    assert [(s.value, s.reason) for s in scores] == [
        (0.0, "passed_0_of_2: runtime_error: NameError: name 'np' is not defined"),
        (0.5, "passed_1_of_2: failed: returned 4, expected 2"),
        (0.0, "passed_0_of_2: runtime_error: ValueError: " + "x" * (200 - len("ValueError: ")) + "..."),
    ]
    assert [reason_label(s.reason) for s in scores] == ["passed_0_of_2", "passed_1_of_2", "passed_0_of_2"]


def _reference_record(index: int, solution: str, args: list) -> dict:
    tests = [{"type": "call", "entry_point": "f", "args": a} for a in args]
    return {"data_source": "heplus", "ability": "code", "reward_model": {"ground_truth": ""},
            "extra_info": {"index": index, "entry_point": "f", "test_type": "reference", "starter_code": "def f(x):\n",
                           "reference_solution": solution, "tests": json.dumps(tests)}}


def test_a_record_that_cannot_be_scored_costs_only_its_own_responses(client):
    good = _reference_record(1, "def f(x):\n    return x + 1\n", [[1], [2]])
    broken = _reference_record(2, "def f(x):\n    return x + 'a'\n", [[1], [2]])
    unreadable = dict(good, extra_info=dict(good["extra_info"], index=3, test_type="call", tests="[{"))
    answer = _fenced("def f(x):\n    return x + 1\n")
    scores = score_code([answer] * 3, [good, broken, unreadable], client=client)
    assert (scores[0].value, scores[0].reason) == (1.0, "correct")
    assert (scores[1].value, scores[1].reason) == (0.0, (
        "reference_failed: heplus problem 2: the reference solution fails 2 of its 2 inputs (runtime_error: "
        "TypeError: unsupported operand type(s) for +: 'int' and 'str', first on input 0), so the expected outputs "
        "are unknown; the reference solution itself fails: the record is wrong"))
    assert scores[2].value == 0.0 and scores[2].reason.startswith(
        "bad_record: code record 'heplus' index 3: extra_info.tests or reward_model.ground_truth must be a JSON list")
    assert [reason_label(s.reason) for s in scores] == ["correct", "reference_failed", "bad_record"]
    # the evaluator scores strictly: the same batch stops on the broken reference, with its cause
    with pytest.raises(ScoringError, match=r"^heplus problem 2: .*TypeError.*the record is wrong$"):
        run_responses(client, [answer] * 2, [good, broken])


def _result(status: str, detail: str) -> EvaluateResult:
    verdicts = [Verdict(status="passed"), Verdict(status=status, detail=detail)]
    return EvaluateResult(status="ok", passed=1, total=2, verdicts=verdicts)


def test_reference_failures_name_their_cause():
    record = {"data_source": "heplus", "extra_info": {"index": 4}}
    start = "heplus problem 4: the reference solution fails 1 of its 2 inputs ("
    end = ", first on input 1), so the expected outputs are unknown; "
    assert _reference_failure(record, _result("timeout", "exceeded 10 s")) == (
        start + "timeout: exceeded 10 s" + end + "raise the code timeout if the machine is slow")
    assert _reference_failure(record, _result("memory_limit", "MemoryError")) == (
        start + "memory_limit: MemoryError" + end + "raise the sandbox's memory limit if the reference needs more")
    assert _reference_failure(record, _result("output_limit", "returned value exceeded")) == (
        start + "output_limit: returned value exceeded" + end
        + "raise the sandbox's returned-value cap (value_limit_mb) if the reference returns more")
    assert _reference_failure(record, _result("runtime_error", "TypeError: bad")) == (
        start + "runtime_error: TypeError: bad" + end + "the reference solution itself fails: the record is wrong")
    passed = EvaluateResult(status="ok", passed=1, total=1, verdicts=[Verdict(status="passed")])
    assert _reference_failure(record, passed) is None


def test_one_dispatcher_scores_code_with_the_rest_strictly_for_the_evaluator(client):
    from lad.rewards import RewardConfig, score_batch
    from lad.rewards.code import outcome

    cases = [([[1]], 1), ([[2]], 2)]
    lc = _leetcode_record(0, cases, entry_in_record=True)
    countdown = {"data_source": "synthetic/countdown", "ability": "math",
                 "reward_model": {"ground_truth": json.dumps({"numbers": [2, 3], "target": 6})}}
    wrong = _fenced("class Solution:\n    def run(self, xs):\n        return xs[0] * 3 - 2\n")
    body = _fenced("        return xs[0]\n")  # the method's body: continues the record's starter code
    responses = [wrong, "\\boxed{2*3}", body, "no code"]
    records = [lc, countdown, dict(lc, extra_info=dict(lc["extra_info"], starter_code="class Solution:\n    def run(self, xs):\n")), lc]
    scores = score_batch(responses, records, RewardConfig(), sandbox=client)
    assert [(s.value, s.reason) for s in scores] == [
        (0.5, "passed_1_of_2: failed: returned 4, expected 2"), (1.0, "correct"), (1.0, "correct"), (0.0, "no_code")]
    # all-pass (held-out and evaluation): the sandbox stops at the first failing test
    assert [s.value for s in score_batch(responses, records, RewardConfig(code_mode="all_pass"), sandbox=client)] == [0, 1, 1, 0]
    assert [outcome(s.reason) for s in scores] == ["failed", "correct", "correct", "no_code"]
    assert outcome("sandbox_error") == "sandbox_error" and outcome("passed_0_of_2: timeout") == "timeout"
    broken = _reference_record(2, "def f(x):\n    return x + 'a'\n", [[1], [2]])
    answer = _fenced("def f(x):\n    return x + 1\n")
    assert score_batch([answer], [broken], sandbox=client)[0].reason.startswith("reference_failed: heplus problem 2")
    with pytest.raises(ScoringError, match=r"^heplus problem 2: .*the record is wrong$"):
        score_batch([answer], [broken], sandbox=client, strict=True)
