import json
import re

import pytest

from lad.data.schema import Problem, Record
from lad.data.synthetic import TASKS, demonstration, generate
from lad.rewards import Score, default_verifier, score_countdown


@pytest.mark.parametrize("task", sorted(TASKS))
def test_seeded_deterministic_and_distinct(task):
    a = generate(task, 50, seed=3, difficulty=2)
    assert a == generate(task, 50, seed=3, difficulty=2)
    assert a != generate(task, 50, seed=4, difficulty=2)
    prompts = [r["prompt"][-1]["content"] for r in a]
    assert len(set(prompts)) == 50
    assert [r["extra_info"]["index"] for r in a] == list(range(50))
    for r in a:
        Record.model_validate(r)
        assert r["data_source"] == f"synthetic/{task}"
        assert r["prompt"][0]["role"] == "system"
        assert r["extra_info"]["split"] == "train"


@pytest.mark.parametrize("task", sorted(TASKS))
def test_held_out_split_never_shares_a_problem_with_train(task):
    train = {r["prompt"][-1]["content"] for r in generate(task, 400, seed=0, difficulty=1)}
    test = generate(task, 100, seed=0, difficulty=1, split="test")
    assert {r["extra_info"]["split"] for r in test} == {"test"}
    assert train.isdisjoint(r["prompt"][-1]["content"] for r in test)


@pytest.mark.parametrize("difficulty,count", [(1, 3), (2, 4), (3, 4)])
def test_countdown_demonstrations_are_correct(difficulty, count):
    records = generate("countdown", 200, seed=1, difficulty=difficulty)
    for r in records:
        truth = r["reward_model"]["ground_truth"]
        assert len(json.loads(truth)["numbers"]) == count
        demo = demonstration(r)
        assert re.fullmatch(r"\\boxed\{.+\}", demo), demo
        assert score_countdown(demo, truth) == Score(1.0, "correct", demo[7:-1])
    ops = "".join(demonstration(r) for r in records)
    assert ("*" in ops) == (difficulty > 1)
    assert ("/" in ops) == (difficulty > 2)


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_arithmetic_demonstrations_reason_correctly_and_verify(difficulty):
    records = generate("arithmetic", 100, seed=2, difficulty=difficulty)
    demos = [demonstration(r) for r in records]
    # the project's math reward (math-verify) accepts every demonstration
    assert [s.value for s in default_verifier().score(demos, [r["reward_model"]["ground_truth"] for r in records])] == [1.0] * 100
    for r, demo in zip(records, demos):
        steps = re.findall(r"(-?\d+) ([-+*]) (\d+) = (-?\d+)\.", demo)
        ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
        assert steps and all(ops[o](int(a), int(b)) == int(c) for a, o, b, c in steps)
        # one sentence per step in the problem, besides the opening and the question
        problem = r["prompt"][-1]["content"].split("\n\n")[0]
        assert problem.count(".") + problem.count("?") == difficulty + 2
        truth = r["reward_model"]["ground_truth"]
        assert int(truth) >= 0
        assert demo.endswith(f"\\boxed{{{truth}}}.")


def _run_code_tests(records, solutions):
    """Whether each solution passes all its record's tests, judged by the sandbox."""
    from lad.sandbox.executor import Executor
    from lad.sandbox.models import EvaluateRequest

    executor = Executor()
    verdicts = []
    for record, code in zip(records, solutions):
        result = executor.evaluate(EvaluateRequest(code=code, tests=json.loads(record["extra_info"]["tests"])))
        verdicts.append(result.status == "ok" and result.passed == result.total)
    return verdicts


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_code_demonstrations_pass_their_tests_and_wrong_code_fails(difficulty):
    records = generate("code", 20, seed=5, difficulty=difficulty)
    codes = []
    for r in records:
        info = r["extra_info"]
        assert info["test_type"] == "call" and info["entry_point"] == "f"
        assert r["reward_model"]["ground_truth"] == info["tests"]
        m = re.fullmatch(r"```python\n(.*)```", demonstration(r), flags=re.S)
        assert m and m.group(1).startswith(info["signature"])
        codes.append(m.group(1))
    assert _run_code_tests(records, codes) == [True] * 20
    # the tests catch solutions whose first constant is off by one
    wrong = [re.sub(r"\d+", lambda m: str(int(m.group()) - 1), c, count=1) for c in codes]
    assert _run_code_tests(records, wrong) == [False] * 20


def test_vocabulary_is_small():
    words = set()
    for task in TASKS:
        for difficulty in (1, 2, 3):
            for r in generate(task, 300, seed=0, difficulty=difficulty):
                text = " ".join(m["content"] for m in r["prompt"]) + " " + demonstration(r)
                words.update(w for w in re.findall(r"[A-Za-z_]+", text))
    assert len(words) < 200, sorted(words)


def test_bad_arguments_are_named(monkeypatch):
    with pytest.raises(ValueError, match="unknown synthetic task 'sudoku'"):
        generate("sudoku", 3, seed=0)
    with pytest.raises(ValueError, match="difficulty must be one of"):
        generate("countdown", 3, seed=0, difficulty=7)
    # a task with only 20 problems cannot give 30 distinct ones
    monkeypatch.setitem(TASKS, "arithmetic", lambda rng, d: Problem("math", f"What is {rng.randint(1, 20)} + 0?", "1"))
    assert len(generate("arithmetic", 10, seed=0)) == 10
    with pytest.raises(ValueError, match="'arithmetic' at difficulty 1 ran out of distinct 'train' problems"):
        generate("arithmetic", 30, seed=0)
    with pytest.raises(ValueError, match="needs a synthetic record"):
        demonstration({"data_source": "math500", "extra_info": {"index": 0}})
