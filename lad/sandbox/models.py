"""Request and response schemas of the sandbox API (shared by the service, the client and the
local executor)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

RunStatus = Literal["ok", "runtime_error", "timeout", "memory_limit", "output_limit", "sandbox_error"]
SKIPPED_DETAIL = "not run: an earlier test did not pass (stop_on_first_failure)"
VerdictStatus = Literal["passed", "failed", "timeout", "runtime_error", "memory_limit", "output_limit", "sandbox_error",
                        "skipped"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunRequest(_Strict):
    code: str = Field(description="Python 3 program, run as __main__")
    stdin: str = ""
    timeout_s: Optional[float] = Field(None, gt=0, description="wall-clock limit; default from the service config")
    memory_mb: Optional[int] = Field(None, gt=0, description="address-space limit; default from the service config")


class RunResult(BaseModel):
    status: RunStatus
    exit_code: Optional[int] = None
    stdout: str = ""
    stderr: str = ""
    wall_s: float = 0.0
    truncated: bool = False
    isolation: str = "bwrap"


class StdinTest(_Strict):
    type: Literal["stdin"]
    input: str = ""
    output: str
    atol: Optional[float] = Field(None, ge=0, description="compare numeric tokens with this absolute tolerance")


class CallTest(_Strict):
    """Call ``entry_point(*args)`` and compare with ``expected`` (EvalPlus rules: exact, else
    numeric closeness with ``atol``; floats get atol 1e-6 when none is given). Leave ``expected``
    out to record the returned value in the verdict's ``output`` instead.

    ``compare`` and ``alternatives`` carry EvalPlus's special oracles for tasks whose answer is not
    one value (MBPP+); like ``expected``, the sandbox never sees them."""

    type: Literal["call"]
    entry_point: str = Field(min_length=1)
    args: list[Any] = Field(default_factory=list)
    expected: Any = None
    atol: float = Field(0.0, ge=0)
    compare: Literal["value", "set", "not_none"] = Field(
        "value", description="value: equal to expected (or close, see atol); set: the same elements, in any order; "
                             "not_none: None exactly when expected is None (a returned bool is taken as that verdict)")
    alternatives: list[Any] = Field(
        default_factory=list, description="other returned values that pass, compared by equality")


class AssertTest(_Strict):
    """Test code run against the program's namespace; it passes when it raises nothing.
    It runs in the program's own process (as HumanEval's check does), so unlike call and stdin
    tests a hostile program can tamper with it."""

    type: Literal["assert"]
    code: str


Test = Annotated[Union[StdinTest, CallTest, AssertTest], Field(discriminator="type")]


class EvaluateRequest(_Strict):
    """Tests run in this order: every call and assert test (in one process), then each stdin test."""

    code: str
    tests: list[Test] = Field(min_length=1)
    timeout_s: Optional[float] = Field(None, gt=0, description="wall-clock limit per test")
    memory_mb: Optional[int] = Field(None, gt=0)
    value_limit_mb: Optional[int] = Field(
        None, gt=0, description="cap on one returned value of a call test (as JSON); default from the service config")
    stop_on_first_failure: bool = Field(
        False, description="stop at the first test that does not pass (in the order tests run); every later test "
                           "gets the verdict 'skipped'. For all-pass rewards, which need no more than that")


class Verdict(BaseModel):
    """``skipped``: not run, because an earlier test failed and the request asked to stop."""

    status: VerdictStatus
    wall_s: float = 0.0
    detail: str = ""
    output: Any = None


class EvaluateResult(BaseModel):
    status: Literal["ok", "sandbox_error"]
    passed: int
    total: int
    verdicts: list[Verdict]
    wall_s: float = 0.0
    isolation: str = "bwrap"
