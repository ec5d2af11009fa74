"""The three test protocols, verdicts and limits through the in-process executor (the client's
local mode), plus the pure comparison and value-encoding rules."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import time

import pytest

from lad.sandbox.client import AsyncSandboxClient, SandboxClient
from lad.sandbox.compare import call_matches, normalize_output, stdout_matches
from lad.sandbox.config import SandboxConfig
from lad.sandbox.executor import Executor, RequestError
from lad.sandbox.isolation import IsolationError, host_user
from lad.sandbox.models import SKIPPED_DETAIL, RunRequest
from lad.sandbox.runner import F64_MIN_LENGTH, decode, encode


@pytest.fixture(scope="module")
def local():
    with SandboxClient(url="", config=SandboxConfig(default_timeout_s=2)) as c:
        assert c.url is None
        yield c


def test_normalize_and_stdout_comparison():
    assert normalize_output("1 2 \r\n3\n\n\n") == ["1 2", "3"]
    assert stdout_matches("3\n", "3")
    assert not stdout_matches("3\n4\n", "3")
    assert not stdout_matches("0.3333\n", "0.3333333")
    assert stdout_matches("0.3333 x\n", "0.3333333 x", atol=1e-3)
    assert not stdout_matches("0.3333 y\n", "0.3333333 x", atol=1e-3)


IMPORTS = ("import importlib\nfor name in ('sortedcontainers', 'lad', 'pydantic', 'numpy'):\n    try:\n"
           "        importlib.import_module(name)\n        print(name, 'imported')\n"
           "    except ImportError:\n        print(name, 'missing')\n")


@pytest.mark.parametrize("isolation", ["bwrap", "none"])
def test_programs_import_the_configured_packages_and_nothing_else_of_lads_environment(isolation):
    with Executor(SandboxConfig(isolation=isolation)) as ex:
        r = ex.run(RunRequest(code=IMPORTS + "from sortedcontainers import SortedList\nprint(list(SortedList([3, 1, 2])))\n"))
    assert (r.status, r.stdout) == ("ok", "sortedcontainers imported\nlad missing\npydantic missing\nnumpy missing\n"
                                          "[1, 2, 3]\n")
    with Executor(SandboxConfig(isolation=isolation, packages=[])) as ex:
        r = ex.run(RunRequest(code=IMPORTS))
    assert r.stdout.split("\n")[0] == "sortedcontainers missing"


def test_a_package_missing_from_lads_environment_is_named():
    with pytest.raises(IsolationError, match=r"^sandbox package 'no_such_package_x' is not installed where lad runs "
                                             r"\(.*\): pip install no_such_package_x"):
        Executor(SandboxConfig(packages=["no_such_package_x"]))
    with pytest.raises(ValueError, match="packages.0"):
        SandboxConfig(packages=["a.b"])


def test_call_matches_follows_evalplus():
    assert call_matches([1, 2], [1, 2])
    assert not call_matches((1, 2), [1, 2])  # a tuple is not a list (EvalPlus: out == exp)
    assert call_matches(0.1 + 0.2, 0.3)  # floats get atol 1e-6
    assert not call_matches(0.3001, 0.3)
    assert call_matches(0.3001, 0.3, atol=1e-3)
    assert call_matches([1.0, 2.0000001], [1.0, 2.0])
    assert not call_matches(float("nan"), float("nan"))
    assert not call_matches(1, 1.5, atol=1.0)  # closeness needs equal types
    assert call_matches(True, 1)  # as ==


def test_call_matches_special_oracles_of_mbpp_plus():
    # set: the same elements in any order and container, duplicates aside; unhashable items fail
    assert call_matches((5, 4), (4, 5), compare="set")
    assert call_matches([4, 5, 5], (5, 4), compare="set")
    assert not call_matches((4,), (4, 5), compare="set")
    assert not call_matches([[1]], [[1]], compare="set")
    assert not call_matches(3, (3,), compare="set")
    # set equality first, then closeness to the expected value (EvalPlus's order)
    assert call_matches([0.1 + 0.2], [0.3], compare="set")
    # not_none: a match object (or any value) where the reference matched, None or False where it did not
    assert call_matches("ab", "a", compare="not_none") and call_matches(True, "a", compare="not_none")
    assert call_matches(None, None, compare="not_none") and call_matches(False, None, compare="not_none")
    assert not call_matches(None, "a", compare="not_none") and not call_matches(False, "a", compare="not_none")
    assert not call_matches(0, None, compare="not_none")  # 0 is not None
    assert not call_matches(True, None, compare="not_none")
    # alternatives: another accepted answer, by equality; closeness still to expected only
    assert call_matches(48, 33, alternatives=[48]) and call_matches(33, 33, alternatives=[48])
    assert not call_matches(47, 33, alternatives=[48])
    assert call_matches(33.0000001, 33.0, alternatives=[48.0]) and not call_matches(48.0000001, 33.0, alternatives=[48.0])


def test_call_test_oracle_fields_judged_outside_the_sandbox(local):
    code = "def f(xs):\n    return tuple(reversed(xs))\n"
    tests = [{"type": "call", "entry_point": "f", "args": [[1, 2]], "expected": [1, 2], "compare": "set"},
             {"type": "call", "entry_point": "f", "args": [[1, 2]], "expected": [1, 2]},
             {"type": "call", "entry_point": "f", "args": [[1, 2]], "expected": [9], "alternatives": [{"__tuple__": [2, 1]}]},
             {"type": "call", "entry_point": "f", "args": [[]], "expected": None, "compare": "not_none"}]
    r = local.evaluate(code, tests)
    assert [v.status for v in r.verdicts] == ["passed", "failed", "passed", "failed"]


def test_encode_decode_round_trip():
    values = [None, True, 3, -(2 ** 70), 2.5, float("inf"), "s", b"\x00\xff", (1, [2, (3,)]), {1: "a"},
              {"__tuple__": 1}, {3, 4}, frozenset(), 1 + 2j, [2 ** 60, 1.5, "x"], 10 ** 5000]
    for v in values:
        assert decode(json.loads(json.dumps(encode(v)))) == v
    assert math.isnan(decode(json.loads(json.dumps(encode(float("nan"))))))
    for bad in (object(), [1, object()], type("Int", (int,), {})(3)):
        with pytest.raises(TypeError):
            encode(bad)


def test_run_statuses(local):
    ok = local.run("import sys\nprint(sys.stdin.read().upper(), end='')\nprint('e', file=sys.stderr)", stdin="abc")
    assert (ok.status, ok.exit_code, ok.stdout, ok.stderr, ok.truncated) == ("ok", 0, "ABC", "e\n", False)
    assert ok.isolation == "bwrap"
    err = local.run("raise ValueError('boom')")
    assert err.status == "runtime_error" and err.exit_code == 1 and "ValueError: boom" in err.stderr
    assert local.run("import sys; sys.exit(0)").status == "ok"
    assert local.run("import sys; sys.exit(3)").exit_code == 3
    slow = local.run("import time; time.sleep(60)", timeout_s=0.5)
    assert slow.status == "timeout" and 0.5 <= slow.wall_s < 5
    assert local.run("x = ' ' * (300 << 20)", memory_mb=128).status == "memory_limit"
    big = local.run("print('y' * (3 << 20))")
    assert big.status == "output_limit" and big.truncated and len(big.stdout) == 1 << 20


def test_limits_above_the_service_maximum_are_refused():
    ex = Executor(SandboxConfig(max_timeout_s=10, max_memory_mb=256))
    with pytest.raises(RequestError, match="timeout_s: 11.0 exceeds"):
        ex.run(RunRequest(code="pass", timeout_s=11))
    with pytest.raises(RequestError, match="memory_mb: 512 exceeds"):
        ex.run(RunRequest(code="pass", memory_mb=512))


def test_three_protocols_in_one_request(local):
    code = ("import sys\nCALLS = []\ndef add(a, b):\n    CALLS.append(1)\n    return a + b\n"
            "def pair(x):\n    return (x, len(CALLS))\n"
            "if __name__ == '__main__':\n    a, b = map(int, sys.stdin.read().split())\n    print(add(a, b))\n")
    tests = [
        {"type": "call", "entry_point": "add", "args": [1, 2], "expected": 3},
        {"type": "call", "entry_point": "add", "args": [[1], [2]], "expected": [1, 2]},
        {"type": "call", "entry_point": "add", "args": [0.1, 0.2], "expected": 0.3},
        {"type": "call", "entry_point": "add", "args": [1, 1], "expected": 3},
        # one process runs every call/assert test: the module state counts the earlier calls
        {"type": "call", "entry_point": "pair", "args": [7], "expected": {"__tuple__": [7, 4]}},
        {"type": "call", "entry_point": "pair", "args": [7]},  # no expected: the value is recorded
        {"type": "assert", "code": "assert add(2, 2) == 4"},
        {"type": "assert", "code": "assert add(2, 2) == 5, 'wrong sum'"},
        {"type": "assert", "code": "add(None, 1)"},
        {"type": "stdin", "input": "4 5\n", "output": "9\n"},
        {"type": "stdin", "input": "4 5\n", "output": "10\n"},
        {"type": "stdin", "input": "x\n", "output": "1\n"},
        {"type": "call", "entry_point": "missing", "args": [], "expected": 1},
    ]
    r = local.evaluate(code, tests)
    statuses = [v.status for v in r.verdicts]
    assert statuses == ["passed", "passed", "passed", "failed", "passed", "passed", "passed", "failed",
                        "runtime_error", "passed", "failed", "runtime_error", "runtime_error"]
    assert (r.status, r.passed, r.total) == ("ok", 7, 13)
    assert r.verdicts[5].output == {"__tuple__": [7, 4]}
    assert r.verdicts[3].detail == "returned 2, expected 3"
    assert r.verdicts[7].detail == "AssertionError: wrong sum"
    assert "TypeError" in r.verdicts[8].detail
    assert "ValueError" in r.verdicts[11].detail
    assert r.verdicts[12].detail == "NameError: the program defines no 'missing'"
    assert all(v.wall_s >= 0 for v in r.verdicts)


def test_per_test_limits_and_recovery(local):
    """A test that hangs, blows memory or floods output gets its verdict; the next tests still run
    (the test process is restarted), all in the same sandbox."""
    code = ("import time\ndef f(x):\n    if x == 'hang':\n        while True:\n            pass\n"
            "    if x == 'mem':\n        return len(' ' * (1 << 34))\n"
            "    if x == 'flood':\n        print('z' * (4 << 20))\n    if x == 'exit':\n        import os; os._exit(7)\n"
            "    return x\n")
    tests = [{"type": "call", "entry_point": "f", "args": [a], "expected": a}
             for a in ("a", "hang", "b", "mem", "c", "flood", "d", "exit", "e")]
    r = local.evaluate(code, tests, timeout_s=1, memory_mb=256)
    assert [v.status for v in r.verdicts] == ["passed", "timeout", "passed", "memory_limit", "passed",
                                              "output_limit", "passed", "runtime_error", "passed"]
    assert 1 <= r.verdicts[1].wall_s < 3
    assert r.verdicts[7].detail == "exit status 7: "


def test_stdin_tests_share_one_sandbox_but_not_one_process(local):
    code = ("import os\nseen = os.path.exists('/tmp/mark')\nopen('/tmp/mark', 'w').close()\n"
            "print(os.getpid() > 1, seen)\n")
    r = local.evaluate(code, [{"type": "stdin", "input": "", "output": "True False"},
                              {"type": "stdin", "input": "", "output": "True True"}])
    assert r.passed == 2


def test_program_that_fails_to_load(local):
    r = local.evaluate("def f(:\n", [{"type": "call", "entry_point": "f", "args": [], "expected": 1}] * 3)
    assert [v.status for v in r.verdicts] == ["runtime_error"] * 3
    assert all(v.detail.startswith("while loading the program") for v in r.verdicts)
    hang = local.evaluate("while True:\n    pass\n", [{"type": "assert", "code": "pass"}] * 2, timeout_s=0.5)
    assert [v.status for v in hang.verdicts] == ["timeout"] * 2


def test_stdin_float_tolerance(local):
    code = "print(1 / 3)\n"
    r = local.evaluate(code, [{"type": "stdin", "input": "", "output": "0.33333", "atol": 1e-4},
                              {"type": "stdin", "input": "", "output": "0.33333"}])
    assert [v.status for v in r.verdicts] == ["passed", "failed"]


def test_async_batch_api(local):
    programs = [(f"def f():\n    return {i}\n", [{"type": "call", "entry_point": "f", "args": [], "expected": i % 3}])
                for i in range(6)]

    async def go():
        async with AsyncSandboxClient(url="", concurrency=2) as c:
            return await c.evaluate_many(programs), await c.run("print(5)")

    results, run = asyncio.run(go())
    assert [r.passed for r in results] == [1, 1, 1, 0, 0, 0]
    assert run.stdout == "5\n"
    assert [r.passed for r in local.evaluate_many(programs)] == [1, 1, 1, 0, 0, 0]
    assert [r.stdout for r in local.run_many(["print(1)", ("print(input())", "x\n")])] == ["1\n", "x\n"]


def _running(pid: int) -> bool:
    """Alive and not a zombie (killed orphans wait for the host's init to reap them)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and "Z" in line for line in f)
    except FileNotFoundError:
        return False


def test_isolation_none_is_reported_and_cleans_up_only_its_own_processes():
    cfg = SandboxConfig(isolation="none")
    # an unrelated process of the same host user: without a private pid namespace the runner
    # must not sweep /proc (that would kill everything this user runs)
    bystander = subprocess.Popen(["sleep", "60"], **host_user(cfg))
    try:
        with SandboxClient(url="", config=cfg) as c:
            r = c.run("import os, time\npid = os.fork()\nif pid == 0:\n    time.sleep(60)\n    os._exit(0)\nprint(pid)")
            e = c.evaluate("def f():\n    return 1\n", [{"type": "call", "entry_point": "f", "args": [], "expected": 1}])
        assert (r.status, r.isolation) == ("ok", "none")
        assert (e.passed, e.isolation) == (1, "none")
        time.sleep(0.2)
        assert not _running(int(r.stdout))  # the program's background child was killed
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_missing_bubblewrap_is_refused():
    with pytest.raises(IsolationError, match="bubblewrap .* is not installed.*--isolation none"):
        Executor(SandboxConfig(bwrap="bwrap-that-does-not-exist"))


def test_stop_on_first_failure_skips_the_rest_in_run_order(local):
    """Call and assert tests run first, then stdin tests: after the first failure (here the call
    test at index 2) every test not judged yet is skipped, the stdin test at index 0 included."""
    code = "import sys\ndef f(x):\n    return x\nif __name__ == '__main__':\n    print(sys.stdin.read())\n"
    tests = [{"type": "stdin", "input": "a", "output": "a"},
             {"type": "call", "entry_point": "f", "args": [1], "expected": 1},
             {"type": "call", "entry_point": "f", "args": [2], "expected": 3},
             {"type": "call", "entry_point": "f", "args": [3], "expected": 3},
             {"type": "assert", "code": "assert f(4) == 4"}]
    r = local.evaluate(code, tests, stop_on_first_failure=True)
    assert [v.status for v in r.verdicts] == ["skipped", "passed", "failed", "skipped", "skipped"]
    assert (r.status, r.passed, r.total) == ("ok", 1, 5)
    assert r.verdicts[3].detail == SKIPPED_DETAIL
    every = local.evaluate(code, tests)
    assert [v.status for v in every.verdicts] == ["passed", "passed", "failed", "passed", "passed"]


def test_stop_on_first_failure_stops_the_runner(tmp_path):
    """The test after the failing one would write a file on the host (isolation none) 20 s into
    its run: the runner is stopped long before, so it never does."""
    marker = tmp_path / "ran"
    os.chmod(tmp_path, 0o777)  # the runner writes as the unprivileged host user
    code = (f"import time\ndef f(x):\n    if x:\n        time.sleep(20)\n        open({str(marker)!r}, 'w').close()\n"
            "    return x\n")
    with SandboxClient(url="", config=SandboxConfig(isolation="none")) as c:
        r = c.evaluate(code, [{"type": "call", "entry_point": "f", "args": [0], "expected": 1},
                              {"type": "call", "entry_point": "f", "args": [1], "expected": 1}],
                       timeout_s=60, stop_on_first_failure=True)
    assert [v.status for v in r.verdicts] == ["failed", "skipped"]
    assert not marker.exists()


def test_long_float_lists_cross_as_raw_doubles(local):
    """A list of at least F64_MIN_LENGTH floats (ints mixed in) leaves the sandbox as raw doubles;
    recorded, it is a plain JSON list again (non-finite floats tagged), and it compares exactly."""
    mixed = [1, 2.5] * 200
    assert list(encode(mixed)) == ["__f64__"] and encode([1.5] * (F64_MIN_LENGTH - 1)) == [1.5] * (F64_MIN_LENGTH - 1)
    for v in (mixed, [float("inf"), -0.0] + [0.1] * 300, [2 ** 53] + [0.5] * 300):
        back = decode(json.loads(json.dumps(encode(v))))
        assert [(repr(a), type(a)) for a in back] == [(repr(a), type(a)) for a in v]
    code = ("def f(n):\n    return [i if i % 3 == 0 else i / 2 for i in range(n)]\n"
            "def g(n):\n    return [float('nan')] + [0.25] * n\n")
    recorded = local.evaluate(code, [{"type": "call", "entry_point": "f", "args": [1000]},
                                     {"type": "call", "entry_point": "g", "args": [300]}])
    assert recorded.verdicts[0].output == [i if i % 3 == 0 else i / 2 for i in range(1000)]
    assert recorded.verdicts[1].output == [{"__float__": "nan"}] + [0.25] * 300
    checked = local.evaluate(code, [{"type": "call", "entry_point": "f", "args": [1000], "expected": recorded.verdicts[0].output},
                                    {"type": "call", "entry_point": "f", "args": [999], "expected": recorded.verdicts[0].output}])
    assert [v.status for v in checked.verdicts] == ["passed", "failed"]


CONTAINERS = """
import collections, re
class Rigged(dict):
    def __eq__(self, other):
        return True
    def items(self):
        return [('x', 1)]
def count(s):
    return collections.Counter(s)
def ordered():
    return collections.OrderedDict([('b', 1), ('a', 2)])
def point():
    return collections.namedtuple('P', 'x y')(1, 2)
def frozen(xs):
    return frozenset(xs)
def pairs(xs):
    return {frozenset(p) for p in xs}
def find(pattern, s):
    return re.search(pattern, s)
def rigged():
    return Rigged(a=1)
"""


def test_returned_containers_compare_as_their_base_type(local):
    """Counter and OrderedDict compare as dicts, a namedtuple as a tuple, a frozenset as a set (a
    set of frozensets too); a dict subclass's own methods cannot change what is compared."""
    def call(entry, args, expected):
        return {"type": "call", "entry_point": entry, "args": args, "expected": expected}

    tests = [call("count", ["abca"], {"a": 2, "b": 1, "c": 1}), call("count", ["abca"], {"a": 2, "b": 1}),
             call("ordered", [], {"a": 2, "b": 1}), call("point", [], {"__tuple__": [1, 2]}),
             call("frozen", [[1, 2]], {"__set__": [2, 1]}),
             call("pairs", [[[1, 2], [3, 4]]], {"__set__": [{"__frozenset__": [4, 3]}, {"__frozenset__": [1, 2]}]}),
             call("rigged", [], {"x": 1}), call("rigged", [], {"a": 1})]
    r = local.evaluate(CONTAINERS, tests)
    assert [v.status for v in r.verdicts] == ["passed", "failed", "passed", "passed", "passed", "passed", "failed",
                                              "passed"]
    assert r.verdicts[1].detail == "returned {'a': 2, 'b': 1, 'c': 1}, expected {'a': 2, 'b': 1}"


def test_returned_match_compares_by_span_and_text(local):
    recorded = local.evaluate(CONTAINERS, [{"type": "call", "entry_point": "find", "args": ["b+", "abbbc"]},
                                           {"type": "call", "entry_point": "find", "args": ["z", "abc"]}])
    assert [v.output for v in recorded.verdicts] == [{"__match__": [1, 4, "bbb"]}, None]
    same_match = {"type": "call", "entry_point": "find", "args": ["ab*(?=c)", "abbbc"],
                  "expected": {"__match__": [0, 4, "abbb"]}}
    other_span = {"type": "call", "entry_point": "find", "args": ["b", "abbbc"], "expected": recorded.verdicts[0].output}
    r = local.evaluate(CONTAINERS, [same_match, other_span])
    assert [v.status for v in r.verdicts] == ["passed", "failed"]
    assert r.verdicts[1].detail == ("returned <re.Match object; span=(1, 2), match='b'>, "
                                    "expected <re.Match object; span=(1, 4), match='bbb'>")
    assert decode(json.loads(json.dumps(encode({frozenset({1, 2}), frozenset()})))) == {frozenset({1, 2}), frozenset()}


def test_returned_value_cap_is_a_setting_of_the_service_and_the_client():
    code = "def big(n):\n    return 'x' * n\n"
    test = [{"type": "call", "entry_point": "big", "args": [2 << 20]}]
    cfg = SandboxConfig(value_limit_bytes=1 << 20, max_value_limit_bytes=8 << 20)
    with SandboxClient(url="", config=cfg) as capped:
        assert capped.evaluate(code, test).verdicts[0].status == "output_limit"
    with SandboxClient(url="", config=cfg, value_limit_mb=4) as raised:
        assert raised.evaluate(code, test).verdicts[0].output == "x" * (2 << 20)
    with SandboxClient(url="", config=cfg, value_limit_mb=16) as too_much:
        with pytest.raises(RequestError, match=r"^value_limit_mb: 16 exceeds this service's maximum of 8$"):
            too_much.evaluate(code, test)
    with pytest.raises(ValueError, match="value_limit_mb must be positive, got 0"):
        SandboxClient(url="", value_limit_mb=0)
