"""Reference checks on the real benchmark files, through the same adapter + scorer path an
evaluation uses: OlympiadBench answer lists and units, GSM8K "#### N" answers, HumanEval(+), MBPP+
and LiveCodeBench reference programs through the code scorer.

HumanEval+ and MBPP+ canonical solutions against all base and plus inputs are proved in
tests/sandbox/test_correctness.py (same sandbox, raw file); here the scorer's own path (adapter
rows, expected values recorded from the reference, program assembly) is checked on a few.
"""

from __future__ import annotations

import json
import re

import pytest

from lad.data.public import read_jsonl
from lad.evaluation.benchmarks import load_records, resolve
from lad.evaluation.config import EvalConfig
from lad.evaluation.scoring import CodeScorer, MathScorer
from lad.rewards.code import ScoringError



def _records(name: str, **over) -> list[dict]:
    cfg = EvalConfig(model="unused", benchmarks=[{"name": name, **over}])
    return load_records(resolve(cfg.benchmarks[0], cfg), cfg)


@pytest.fixture(scope="module")
def math_scorer():
    scorer = MathScorer()
    yield scorer
    scorer.close()


def _split_top_level(answer: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in answer:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    return parts + [current.strip()]


def test_olympiadbench_reference_answers_verify_with_lists_and_units(math_scorer):
    records = _records("olympiadbench")
    assert len(records) == 675
    # Every single-answer row that is more than a plain number (units, expressions, tuples,
    # intervals) verifies against itself; answer lists are checked in another order below.
    # (Plain numbers are the MATH-500 case, checked 500/500 in test_rewards.py.)
    hard = [r for r in records if r["extra_info"]["is_multiple_answer"] == "false"
            and (r["extra_info"].get("unit") or r["extra_info"]["answer_type"] != "Numerical")]
    assert len(hard) == 79
    boxed = [f"The answer is \\boxed{{{r['reward_model']['ground_truth']}}}." for r in hard]
    verdicts = math_scorer.score(boxed, hard)
    assert [r["extra_info"]["source_id"] for r, v in zip(hard, verdicts) if not v.correct] == []

    multi = [r for r in records if r["extra_info"]["is_multiple_answer"] == "true"]
    assert len(multi) == 94
    parts = [_split_top_level(r["reward_model"]["ground_truth"]) for r in multi]
    # every answer list verifies against itself with its answers in reverse order
    reversed_ = math_scorer.score([f"\\boxed{{{', '.join(reversed(p))}}}" for p in parts], multi)
    assert sum(v.correct for v in reversed_) == 94
    # one answer of a list of several distinct ones is not enough
    several = [(r, p) for r, p in zip(multi, parts) if len(set(p)) > 1]
    assert len(several) == 91
    partial = math_scorer.score([f"\\boxed{{{p[0]}}}" for _, p in several], [r for r, _ in several])
    assert [v.reason for v in partial] == ["wrong"] * 91

    with_unit = [r for r in records if r["extra_info"].get("unit")]
    assert sorted(r["extra_info"]["unit"] for r in with_unit) == ["%", "^{\\circ}", "cm^2", "km", "km/h", "min", "minute", "minutes"]
    for spell in ("{a} {u}", "{a} \\text{{ {u}}}", "{a}\\mathrm{{~{u}}}", "{a}{u}"):
        answers = [spell.format(a=r["reward_model"]["ground_truth"], u=r["extra_info"]["unit"].replace("%", "\\%"))
                   for r in with_unit]
        verdicts = math_scorer.score([f"\\boxed{{{a}}}" for a in answers], with_unit)
        assert [v.reason for v in verdicts] == ["correct"] * 8, (spell, [(a, v.reason) for a, v in zip(answers, verdicts)])
    # a wrong number with the right unit stays wrong
    wrong = [f"\\boxed{{12345 \\text{{ {r['extra_info']['unit']}}}}}" for r in with_unit]
    assert [v.correct for v in math_scorer.score(wrong, with_unit)] == [False] * 8


def test_gsm8k_final_answers_parse_and_verify(math_scorer):
    records = _records("gsm8k")
    raw = read_jsonl("gsm8k_test.jsonl")
    assert len(records) == len(raw) == 1319
    expected = [re.search(r"####\s*(.+?)\s*$", r["answer"]).group(1).replace(",", "") for r in raw]
    assert [r["reward_model"]["ground_truth"] for r in records] == expected
    assert all(re.fullmatch(r"-?\d+", gt) for gt in expected)
    with_commas = [i for i, r in enumerate(raw) if re.search(r"#### \d{1,3}(,\d{3})+$", r["answer"])]
    assert len(with_commas) == 14
    # answers as a model writes them: with thousands separators, as a decimal, or as currency
    picks = with_commas[:5]
    sub = [records[i] for i in picks]
    written = [raw[i]["answer"].rsplit("####", 1)[1].strip() for i in picks]
    verdicts = math_scorer.score([f"\\boxed{{{w}}}" for w in written], sub)
    assert [v.correct for v in verdicts] == [True] * 5
    verdicts = math_scorer.score([f"\\boxed{{\\${gt}.00}}" for gt in (r["reward_model"]["ground_truth"] for r in sub)], sub)
    assert [v.correct for v in verdicts] == [True] * 5
    off = math_scorer.score([f"\\boxed{{{int(r['reward_model']['ground_truth']) + 1}}}" for r in sub], sub)
    assert [v.reason for v in off] == ["wrong"] * 5


@pytest.fixture(scope="module")
def code_scorer():
    scorer = CodeScorer(timeout_s=20)
    yield scorer
    scorer.close()


def _fenced(code: str) -> str:
    return f"Here is my solution.\n```python\n{code}\n```\n"


def test_humanevalplus_references_pass_through_the_code_scorer(code_scorer):
    records = _records("humanevalplus", limit=4)
    raw = read_jsonl("humanevalplus.jsonl")[:4]
    tests = [len(json.loads(r["extra_info"]["tests"])) for r in records]
    assert tests == [len(x["base_input"]) + len(x["plus_input"]) for x in raw]
    # the whole function, as a chat model writes it (without the prompt's imports) ...
    whole = [_fenced(x["prompt"].split("def ", 1)[0].replace("from typing import List", "") + "def " +
                     x["prompt"].split("def ", 1)[1] + x["canonical_solution"]) for x in raw]
    # ... or only the body, continuing the starter code
    body = [_fenced(x["canonical_solution"]) for x in raw]
    broken = [_fenced(x["prompt"] + "    return None\n") for x in raw]
    verdicts = code_scorer.score(whole + body + broken, records * 3)
    assert [v.reason for v in verdicts] == ["correct"] * 8 + ["failed"] * 4
    assert verdicts[0].answer.startswith(raw[0]["prompt"].split("def ", 1)[0].replace("from typing import List", ""))

    # without a working reference the expected outputs are unknown: an error, not wrong verdicts
    broken_ref = dict(records[1], extra_info=dict(records[1]["extra_info"], reference_solution="def nope(): pass\n"))
    with pytest.raises(ScoringError, match=r"humanevalplus problem 1: the reference solution fails \d+ of its \d+ inputs \(runtime_error"):
        code_scorer.score([body[1]], [broken_ref])


def test_mbppplus_through_the_code_scorer(code_scorer):
    """The evaluator's path for MBPP+: records through the adapter (tuples rebuilt, oracles in the
    JSON tests), expected values recorded from the reference, whole programs as a chat model writes
    them. Tasks 2 (set-compared), 124 (complex numbers, atol) and 737 (match or None)."""
    records = {r["extra_info"]["source_id"]: r for r in _records("mbppplus")}
    assert len(records) == 378
    raw = {x["task_id"]: x for x in read_jsonl("mbppplus.jsonl")}
    picked = [records[t] for t in ("Mbpp/2", "Mbpp/124", "Mbpp/737")]
    canonical = [_fenced(raw[t]["canonical_solution"]) for t in ("Mbpp/2", "Mbpp/124", "Mbpp/737")]
    other = [_fenced("def similar_elements(a, b):\n    return tuple(sorted(set(b) & set(a), reverse=True))\n"),
             _fenced("import cmath\ndef angle_complex(a, b):\n    return cmath.phase(a + b) + 1e-5\n"),
             _fenced("def check_str(s):\n    return s[:1].lower() in 'aeiou' and s[:1] != ''\n")]
    wrong = [_fenced("def similar_elements(a, b):\n    return tuple(set(a) | set(b))\n"),
             _fenced("import cmath\ndef angle_complex(a, b):\n    return cmath.phase(a + b) + 1e-3\n"),
             _fenced("def check_str(s):\n    return True\n")]
    verdicts = code_scorer.score(canonical + other + wrong, picked * 3)
    assert [v.reason for v in verdicts] == ["correct"] * 6 + ["failed"] * 3


def test_humaneval_and_livecodebench_through_the_code_scorer(code_scorer):
    he = _records("humaneval", limit=3)
    raw = read_jsonl("humaneval.jsonl")[:3]
    verdicts = code_scorer.score([_fenced(x["prompt"] + x["canonical_solution"]) for x in raw] + ["no code here"], he + he[:1])
    assert [v.reason for v in verdicts] == ["correct"] * 3 + ["no_code"]

    # A LeetCode-style (Class.method) problem whose answer uses List without importing it,
    # written whole, as the body of the starter code, and wrong.
    lcb = _records("livecodebench")
    problem = next(r for r in lcb if r["extra_info"]["entry_point"] == "Solution.countSubarrays")
    assert "List[int]" in problem["extra_info"]["starter_code"]
    body = "        return sum(1 for i in range(len(nums) - 2) if 2 * (nums[i] + nums[i + 2]) == nums[i + 1])\n"
    whole = "class Solution:\n    def countSubarrays(self, nums: List[int]) -> int:\n" + body
    wrong = whole.replace("return sum(", "return 1 + sum(")
    verdicts = code_scorer.score([_fenced(whole), _fenced(body), _fenced(wrong)], [problem] * 3)
    assert [v.reason for v in verdicts] == ["correct", "correct", "failed"]


def test_amc_float_answers_through_the_adapter(math_scorer):
    records = _records("amc23")
    raw = read_jsonl("amc23.jsonl")
    assert len(records) == 40 and all(isinstance(r["answer"], float) for r in raw)
    # the file's 27.0 becomes the ground truth 27; the answer verifies written either way
    assert [r["reward_model"]["ground_truth"] for r in records] == [f"{r['answer']:g}" for r in raw]
    as_float = math_scorer.score([f"\\boxed{{{r['answer']}}}" for r in raw], records)
    as_int = math_scorer.score([f"\\boxed{{{r['answer']:g}}}" for r in raw], records)
    assert [v.correct for v in as_float + as_int] == [True] * 80
