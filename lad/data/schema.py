"""The canonical record: one row of the train/eval parquet, compatible with verl's RL dataset format.

    {"data_source": "math500",
     "prompt": [{"role": "system", ...}, {"role": "user", ...}],
     "ability": "math" | "code",
     "reward_model": {"style": "rule", "ground_truth": "..."},
     "extra_info": {"index": 0, "split": "test", "tests": ..., "entry_point": ..., ...}}

For code rows ``extra_info.tests`` is a JSON string: a list of test cases in the sandbox's format
(lad.sandbox.models.Test, validated with it),

    {"type": "stdin", "input": str, "output": str}
    {"type": "call", "entry_point": str, "args": list, "expected": any, "atol": float}
    {"type": "assert", "code": str}

and ``reward_model.ground_truth`` holds the same JSON (verl's code reward functions read it there).
A call's entry_point is a function name, or "Class.method" for LeetCode-style problems
(LiveCodeBench functional tests): the class is instantiated without arguments and the method called.
For countdown rows the ground truth is the JSON string {"numbers": [...], "target": N}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from lad.sandbox.models import AssertTest, CallTest, StdinTest, Test

if TYPE_CHECKING:
    from lad.data.templates import PromptTemplate

TestCase = StdinTest | CallTest | AssertTest

# How a code row's tests decide pass/fail: one test-case type, "mixed" when a row has several kinds,
# and "reference" when some expected values must come from running extra_info.reference_solution
# (HumanEval+ "plus" inputs, which ship without expected outputs).
RowTestType = Literal["stdin", "call", "assert", "mixed", "reference"]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1)

    @field_validator("content")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("message content is blank")
        return v


class RewardModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    style: Literal["rule"] = "rule"
    ground_truth: str = Field(min_length=1)


class ExtraInfo(BaseModel):
    # Sources keep their own metadata here (subject, level, url, ...), so extra keys are allowed.
    model_config = ConfigDict(extra="allow")

    index: int = Field(ge=0)
    split: str = Field(min_length=1)
    tests: Optional[str] = None
    entry_point: Optional[str] = None
    starter_code: Optional[str] = None
    test_type: Optional[RowTestType] = None
    reference_solution: Optional[str] = None


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_source: str = Field(min_length=1)
    prompt: list[Message] = Field(min_length=1)
    ability: Literal["math", "code"]
    reward_model: RewardModel
    extra_info: ExtraInfo

    @model_validator(mode="after")
    def _consistent(self) -> "Record":
        if self.prompt[-1].role != "user":
            raise ValueError("the last prompt message must be the user's")
        if self.ability == "code":
            info = self.extra_info
            if info.tests is None or info.test_type is None:
                raise ValueError("code rows need extra_info.tests and extra_info.test_type")
            cases = parse_tests(info.tests)
            if not cases:
                raise ValueError("extra_info.tests holds no test case")
            if info.test_type == "reference":
                if not info.reference_solution:
                    raise ValueError("test_type 'reference' needs extra_info.reference_solution")
            elif any(c.type == "call" and c.expected is None for c in cases):
                raise ValueError("a call test has no expected value and the row has no reference solution")
        return self


_TEST_CASE: TypeAdapter[TestCase] = TypeAdapter(Test)


def parse_tests(text: str) -> list[TestCase]:
    """Parse a JSON test list; raises ValueError saying which case is malformed."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"tests are not valid JSON: {err}") from None
    if not isinstance(raw, list):
        raise ValueError(f"tests must be a JSON list, got {type(raw).__name__}")
    out = []
    for i, case in enumerate(raw):
        try:
            out.append(_TEST_CASE.validate_python(case))
        except ValidationError as err:
            first = err.errors()[0]
            raise ValueError(f"test case {i}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    return out


def row_test_type(cases: list[dict]) -> str:
    """The row-level test type of a list of test-case dicts."""
    kinds = {c["type"] for c in cases}
    return kinds.pop() if len(kinds) == 1 else "mixed"


@dataclass
class Problem:
    """What a source adapter or generator extracts from one raw row, before the template is applied."""

    ability: Literal["math", "code"]
    problem: str
    ground_truth: str = ""  # math: the answer (countdown: its JSON spec); code: the tests' JSON, set by build_record
    tests: Optional[list[dict]] = None
    entry_point: Optional[str] = None
    starter_code: Optional[str] = None
    test_type: Optional[str] = None
    reference_solution: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)  # source metadata, kept in extra_info

    def text(self) -> str:
        """The problem as the model reads it, without the template: what dedup and decontamination compare."""
        return f"{self.problem}\n{self.starter_code}" if self.starter_code else self.problem


def build_record(problem: Problem, *, data_source: str, index: int, split: str, template: "PromptTemplate") -> dict:
    """The validated canonical record of a problem; raises pydantic.ValidationError or ValueError."""
    ground_truth = problem.ground_truth
    tests = None
    if problem.ability == "code":
        if not problem.tests:
            raise ValueError("a code problem needs tests")
        tests = json.dumps(problem.tests)
        ground_truth = tests
    info = {
        **problem.extra,
        "index": index,
        "split": split,
        "tests": tests,
        "entry_point": problem.entry_point,
        "starter_code": problem.starter_code,
        "test_type": problem.test_type,
        "reference_solution": problem.reference_solution,
    }
    record = {
        "data_source": data_source,
        "prompt": template.render(problem.ability, problem.problem, problem.starter_code),
        "ability": problem.ability,
        "reward_model": {"style": "rule", "ground_truth": ground_truth},
        "extra_info": info,
    }
    return Record.model_validate(record).model_dump()
