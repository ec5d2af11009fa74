"""Source adapters: one raw row of a source -> a :class:`Problem`, mapping each source's own fields.

Each adapter is a pure function ``(row: dict, fields: FieldMap) -> Problem`` registered in
``ADAPTERS``. A missing or ill-typed field raises :class:`RowError` naming the field, so the prep
report can say which file, row and field is wrong. The adapters for the bundled public benchmarks
(see lad/data/public/MANIFEST.json) carry the name of their file; ``generic`` maps any source through
the field names given in the config.
"""

from __future__ import annotations

import ast
import json
import math
import re
from typing import Any, Callable, Literal, Optional

from pydantic import BaseModel, Field

from lad.data import mbpp
from lad.data.schema import Problem, parse_tests, row_test_type
from lad.sandbox.runner import encode


class RowError(ValueError):
    """A row that cannot become a canonical record; ``field`` names the culprit (None: the whole row)."""

    def __init__(self, field: Optional[str], reason: str):
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


class FieldMap(BaseModel):
    """Field names of a ``generic`` source (dotted paths reach into nested objects, numbers into lists)."""

    ability: Literal["math", "code"] = Field("math", description="ability of every row of the source")
    problem: str = Field("problem", description="the problem statement")
    answer: Optional[str] = Field("answer", description="math: the final answer (string or number)")
    tests: Optional[str] = Field(
        "tests", description="code: test cases in the sandbox format (a list, or a JSON string of one)"
    )
    entry_point: Optional[str] = Field(None, description="code: function the call tests invoke")
    starter_code: Optional[str] = Field(None, description="code: code the answer must start from")
    keep: list[str] = Field(default_factory=list, description="other fields copied into extra_info as they are")


# --------------------------------------------------------------------------------------------
# field access
# --------------------------------------------------------------------------------------------

_MISSING = object()


def _get(row: dict, path: str) -> Any:
    """The value at a dotted path; _MISSING when a key (or a null object on the way) is absent. A
    number indexes a list ("prompt.0.content": the first chat message's text). A value on the way
    that is not an object is an error that says so: "meta.final" of a row whose meta is 5 is not
    missing, the row is malformed."""
    value: Any = row
    parts = path.split(".")
    for i, part in enumerate(parts):
        if value is None:
            return _MISSING
        if isinstance(value, list) and part.isdigit():
            if int(part) >= len(value):
                return _MISSING
            value = value[int(part)]
            continue
        if not isinstance(value, dict):
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
            holder = ".".join(parts[:i]) or "the row"
            raise RowError(path, f"{holder} is {type(value).__name__} {shown}, not an object")
        if part not in value:
            return _MISSING
        value = value[part]
    return value


def _require(row: dict, path: str, kind: type | tuple[type, ...]) -> Any:
    value = _get(row, path)
    if value is _MISSING or value is None:
        raise RowError(path, "missing")
    # bool is an int in Python; a true/false where a number belongs is still a type error
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise RowError(path, f"expected {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _text(row: dict, path: str) -> str:
    value = _require(row, path, str)
    if not value.strip():
        raise RowError(path, "empty")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in _as_tuple(kind))


def answer_text(value: Any, path: str) -> str:
    """An answer as a string: integral floats (AMC's 27.0) become "27"."""
    if isinstance(value, bool) or value is None:
        raise RowError(path, f"expected a string or number, got {type(value).__name__}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RowError(path, f"not a finite number: {value}")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if not value.strip():
            raise RowError(path, "empty")
        return value.strip()
    raise RowError(path, f"expected a string or number, got {type(value).__name__}")


_MATH_DOLLARS = re.compile(r"(?<!\\)\$")


def strip_math_delimiters(text: str) -> str:
    """OlympiadBench writes answers as "$69$,$84$"; the verifier wants the bare LaTeX."""
    return _MATH_DOLLARS.sub("", text).strip()


# --------------------------------------------------------------------------------------------
# math sources
# --------------------------------------------------------------------------------------------


def _math(problem: str, answer: str, **extra: Any) -> Problem:
    return Problem(ability="math", problem=problem, ground_truth=answer, extra={k: v for k, v in extra.items() if v is not None})


def math500(row: dict, fields: FieldMap) -> Problem:
    return _math(
        _text(row, "problem"), answer_text(_require(row, "answer", str), "answer"),
        subject=_require(row, "subject", str), level=str(_require(row, "level", int)), source_id=_text(row, "unique_id"),
    )


def aime24(row: dict, fields: FieldMap) -> Problem:
    return _math(_text(row, "problem"), answer_text(_require(row, "answer", str), "answer"), source_id=str(_require(row, "id", int)))


def amc(row: dict, fields: FieldMap) -> Problem:
    """amc23 (with an id) and amc22_23 (with a url): the answer is a float such as 27.0."""
    source_id = _get(row, "id")
    return _math(
        _text(row, "problem"), answer_text(_require(row, "answer", (int, float)), "answer"),
        source_id=None if source_id is _MISSING else str(source_id), url=_require(row, "url", str),
    )


def olympiadbench(row: dict, fields: FieldMap) -> Problem:
    """final_answer is a list of one string, which may itself hold several answers ("$69$,$84$")."""
    answers = _require(row, "final_answer", list)
    if not answers or not all(isinstance(a, str) and a.strip() for a in answers):
        raise RowError("final_answer", "expected a non-empty list of non-empty strings")
    answer = ", ".join(strip_math_delimiters(a) for a in answers)
    unit = _get(row, "unit")
    if unit is not _MISSING and unit is not None and not isinstance(unit, str):
        raise RowError("unit", f"expected a string or null, got {type(unit).__name__}")
    problem = _text(row, "question")
    context = _get(row, "context")
    if isinstance(context, str) and context.strip():
        problem = f"{context.strip()}\n\n{problem}"
    return _math(
        problem, answer,
        # the unit stays out of the ground truth (the verifier compares values) and is kept here
        unit=strip_math_delimiters(unit) if unit else None,
        answer_type=_require(row, "answer_type", str),
        is_multiple_answer=str(_require(row, "is_multiple_answer", bool)).lower(),
        source_id=str(_require(row, "id", int)),
    )


def minerva(row: dict, fields: FieldMap) -> Problem:
    """answer is a list of equivalent forms; the first is the ground truth, all are kept."""
    answers = _require(row, "answer", list)
    if not answers or not all(isinstance(a, str) and a.strip() for a in answers):
        raise RowError("answer", "expected a non-empty list of non-empty strings")
    forms = [a.strip() for a in answers]
    return _math(
        _text(row, "problem"), forms[0],
        all_answers=json.dumps(forms), subject=_require(row, "type", str), source_id=str(_require(row, "idx", int)),
    )


_GSM8K_ANSWER = re.compile(r"####\s*(.+?)\s*$")


def gsm8k(row: dict, fields: FieldMap) -> Problem:
    """The answer field is the worked solution ending in "#### N" (N may carry thousands commas)."""
    text = _text(row, "answer")
    m = _GSM8K_ANSWER.search(text)
    if not m:
        raise RowError("answer", 'no final "#### N" line')
    return _math(_text(row, "question"), m.group(1).replace(",", ""))


def math_train(row: dict, fields: FieldMap) -> Problem:
    return _math(
        _text(row, "problem"), answer_text(_require(row, "answer", str), "answer"),
        subject=_require(row, "type", str), level=answer_text(_require(row, "difficulty", (int, float)), "difficulty"),
    )


# --------------------------------------------------------------------------------------------
# code sources
# --------------------------------------------------------------------------------------------

HUMANEVAL_PROBLEM = "Complete the following Python function."


def humaneval(row: dict, fields: FieldMap) -> Problem:
    """Tests are HumanEval's own ``check(candidate)`` function, run as one assert test."""
    entry = _text(row, "entry_point")
    prompt = _text(row, "prompt")
    check = _text(row, "test")
    return Problem(
        ability="code", problem=HUMANEVAL_PROBLEM, ground_truth="",
        tests=[{"type": "assert", "code": f"{check}\n\ncheck({entry})\n"}],
        entry_point=entry, starter_code=prompt, test_type="assert",
        reference_solution=prompt + _text(row, "canonical_solution"),
        extra={"source_id": _text(row, "task_id")},
    )


def humanevalplus(row: dict, fields: FieldMap) -> Problem:
    """Base then plus inputs as call tests whose expected value is the reference solution's output.

    The file ships no expected outputs; computing them means running code, which data prep does
    not do. The rows carry the reference (prompt + canonical_solution) and test_type "reference",
    and the scorer computes each expected value by running it (as EvalPlus does, with ``atol``).
    """
    entry = _text(row, "entry_point")
    prompt = _text(row, "prompt")
    atol = _require(row, "atol", (int, float))
    tests = []
    for name in ("base_input", "plus_input"):
        inputs = _require(row, name, list)
        for i, args in enumerate(inputs):
            if not isinstance(args, list):
                raise RowError(f"{name}[{i}]", f"expected a list of arguments, got {type(args).__name__}")
            tests.append({"type": "call", "entry_point": entry, "args": args, "expected": None, "atol": float(atol)})
    if not tests:
        raise RowError("base_input", "no test inputs")
    return Problem(
        ability="code", problem=HUMANEVAL_PROBLEM, ground_truth="", tests=tests,
        entry_point=entry, starter_code=prompt, test_type="reference",
        reference_solution=prompt + _text(row, "canonical_solution"),
        extra={"source_id": _text(row, "task_id"), "base_tests": len(_require(row, "base_input", list))},
    )


def mbppplus(row: dict, fields: FieldMap) -> Problem:
    """MBPP+ as HumanEval+ (base then plus inputs, expected values from the reference solution),
    with the inputs rebuilt into the Python values EvalPlus passes (tuples, sets, complex numbers:
    see lad.data.mbpp) and written in the sandbox's tagged JSON, and EvalPlus's special oracles.
    The 5 inputs of 41,015 whose expected outputs cannot leave the sandbox are left out
    (``lad.data.mbpp.OMITTED``).

    The problem is EvalPlus's prompt (the task and one example assert, in a docstring); there is
    no starter code: the answer is a whole program defining the entry point.
    """
    task_id = _text(row, "task_id")
    try:
        task = mbpp.task_number(task_id)
    except ValueError as err:
        raise RowError("task_id", str(err)) from None
    entry = _text(row, "entry_point")
    prompt = _text(row, "prompt")
    atol = float(_require(row, "atol", (int, float)))
    tests, offset = [], 0
    for name in ("base_input", "plus_input"):
        inputs = _require(row, name, (list, dict))
        if isinstance(inputs, dict):
            # Mbpp/793's plus_input is {}: EvalPlus iterates it as no inputs
            if inputs:
                raise RowError(name, "expected a list of argument lists (or an empty object), got a non-empty object")
            inputs = []
        for i, args in enumerate(inputs):
            if not isinstance(args, list):
                raise RowError(f"{name}[{i}]", f"expected a list of arguments, got {type(args).__name__}")
        try:
            rebuilt = mbpp.rebuild_inputs(task, inputs)
        except (TypeError, ValueError, IndexError, AttributeError) as err:
            raise RowError(name, f"inputs of {task_id} are not in the form EvalPlus rebuilds: {err}") from None
        tests += [{"type": "call", "entry_point": entry, "args": encode(args), "expected": None, "atol": atol,
                   **mbpp.oracle(entry, args)} for i, args in enumerate(rebuilt) if mbpp.kept(task, offset + i)]
        offset += len(inputs)
        if name == "base_input":
            base_tests = len(tests)
    if not tests:
        raise RowError("base_input", "no test inputs")
    return Problem(
        ability="code", problem=prompt, ground_truth="", tests=tests, entry_point=entry, test_type="reference",
        reference_solution=prompt + _text(row, "canonical_solution"),
        extra={"source_id": task_id, "base_tests": base_tests},
    )


_METHOD = re.compile(r"^\s*def\s+(\w+)\s*\(\s*self\b", re.M)
_CLASS = re.compile(r"^class\s+(\w+)", re.M)


def _io_tests(raw_tests: list, starter: str, func_name: Optional[str] = None) -> tuple[list[dict], Optional[str]]:
    """LiveCodeBench-style tests ({testtype, input, output}) in the sandbox format, and the entry
    point of the call tests: stdin tests map to stdin/stdout; functional ones to calls, with one
    JSON value per input line (the arguments) and one JSON output, of Class.method when the starter
    code has a class, else of ``func_name``."""
    if not raw_tests:
        raise RowError("tests", "no test cases")
    tests = []
    entry = None
    for i, t in enumerate(raw_tests):
        where = f"tests[{i}]"
        if not isinstance(t, dict):
            raise RowError(where, f"expected an object, got {type(t).__name__}")
        kind, given, wanted = t.get("testtype"), t.get("input"), t.get("output")
        if not isinstance(given, str) or not isinstance(wanted, str):
            raise RowError(where, "input and output must be strings")
        if kind in ("stdin", "stdin_stdout"):
            tests.append({"type": "stdin", "input": given, "output": wanted})
        elif kind == "functional":
            if entry is None:
                cls, method = _CLASS.search(starter), _METHOD.search(starter)
                if cls and method:
                    entry = f"{cls.group(1)}.{method.group(1)}"
                elif func_name:
                    entry = func_name
                else:
                    raise RowError("starter_code", "functional tests need a class with a method in the starter code, or a function name")
            try:
                args = [json.loads(line) for line in given.split("\n") if line.strip()]
                expected = json.loads(wanted)
            except json.JSONDecodeError as err:
                raise RowError(where, f"functional test is not JSON: {err}") from None
            tests.append({"type": "call", "entry_point": entry, "args": args, "expected": expected, "atol": 0.0})
        else:
            raise RowError(f"{where}.testtype", f"expected 'stdin', 'stdin_stdout' or 'functional', got {kind!r}")
    return tests, entry


def livecodebench(row: dict, fields: FieldMap) -> Problem:
    """stdin tests map to stdin/stdout; functional tests (LeetCode style) to calls of Class.method.

    A functional test's input is one JSON value per line (the arguments) and its output one JSON value.
    """
    problem = _text(row, "problem")
    starter = _require(row, "starter_code", str)
    tests, entry = _io_tests(_require(row, "tests", list), starter)
    return Problem(
        ability="code", problem=problem, ground_truth="", tests=tests, entry_point=entry,
        starter_code=starter if starter.strip() else None, test_type=row_test_type(tests),
    )


def _json_field(row: dict, path: str, kind: type | tuple[type, ...]) -> Any:
    """A field that may hold its value, or the value as JSON or Python-literal text."""
    value = _get(row, path)
    if value is _MISSING or value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                raise RowError(path, f"not JSON: {err}") from None
    if not isinstance(value, kind):
        raise RowError(path, f"expected {_kind_name(kind)} (or its JSON), got {type(value).__name__}")
    return value


def deepcoder(row: dict, fields: FieldMap) -> Problem:
    """DeepCoder-Preview (agentica-org/DeepCoder-Preview-Dataset; the paper's code training set):
    ``tests`` (JSON or Python-literal text) is a LiveCodeBench-style list ({testtype: stdin |
    functional, input, output, metadata.func_name}: lcbv5), PrimeIntellect's list ({type:
    stdin_stdout | function_call, input, output, fn_name}) or TACO's {inputs, outputs[, fn_name]}.
    Stdin tests and LiveCodeBench's functional ones map to the sandbox's; the function-call form
    of TACO and PrimeIntellect is refused (its arguments' wrapping is not one convention), so such
    rows are quarantined. The function name may also be in the row's ``metadata``."""
    problem = _text(row, "problem")
    starter = _get(row, "starter_code")
    starter = starter if isinstance(starter, str) else ""
    raw = _json_field(row, "tests", (list, dict))
    if raw is None:
        raise RowError("tests", "missing")
    if isinstance(raw, dict):
        if raw.get("fn_name"):
            raise RowError("tests.fn_name", "TACO function-call tests are not supported (stdin tests only)")
        inputs, outputs = raw.get("inputs"), raw.get("outputs")
        if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs):
            raise RowError("tests", "expected {inputs: [...], outputs: [...]} of equal length")
        raw = [{"testtype": "stdin", "input": i, "output": o} for i, o in zip(inputs, outputs)]
    for i, t in enumerate(raw):
        if isinstance(t, dict) and "testtype" not in t and "type" in t:  # PrimeIntellect's
            if t["type"] != "stdin_stdout":
                raise RowError(f"tests[{i}].type", f"{t['type']!r} tests are not supported (stdin tests only)")
            raw[i] = {**t, "testtype": "stdin"}
    metas = [_json_field(t, "metadata", dict) if isinstance(t, dict) else None for t in raw]
    names = [(m or {}).get("func_name") for m in metas + [_json_field(row, "metadata", dict)]]
    tests, entry = _io_tests(raw, starter, next((n for n in names if n), None))
    return Problem(
        ability="code", problem=problem, ground_truth="", tests=tests, entry_point=entry,
        starter_code=starter if starter.strip() else None, test_type=row_test_type(tests),
    )


def codecontests(row: dict, fields: FieldMap) -> Problem:
    """tests is {inputs: [...], outputs: [...]}, paired stdin/stdout."""
    inputs = _require(row, "tests.inputs", list)
    outputs = _require(row, "tests.outputs", list)
    if len(inputs) != len(outputs):
        raise RowError("tests", f"{len(inputs)} inputs but {len(outputs)} outputs")
    if not inputs:
        raise RowError("tests.inputs", "no test cases")
    if not all(isinstance(x, str) for x in inputs + outputs):
        raise RowError("tests", "inputs and outputs must be strings")
    tests = [{"type": "stdin", "input": i, "output": o} for i, o in zip(inputs, outputs)]
    return Problem(ability="code", problem=_text(row, "problem"), ground_truth="", tests=tests, test_type="stdin")


# --------------------------------------------------------------------------------------------
# generic
# --------------------------------------------------------------------------------------------


def generic(row: dict, fields: FieldMap) -> Problem:
    """Any source whose fields the config names (see FieldMap); code tests in the sandbox format."""
    problem = _text(row, fields.problem)
    extra = {}
    for name in fields.keep:
        value = _get(row, name)
        if value is not _MISSING:
            extra[name.replace(".", "_")] = value
    if fields.ability == "math":
        if not fields.answer:
            raise RowError("answer", "a math source needs fields.answer")
        answer = _get(row, fields.answer)
        if answer is _MISSING or answer is None:
            raise RowError(fields.answer, "missing")
        return Problem(ability="math", problem=problem, ground_truth=answer_text(answer, fields.answer), extra=extra)
    if not fields.tests:
        raise RowError("tests", "a code source needs fields.tests")
    raw = _get(row, fields.tests)
    if raw is _MISSING or raw is None:
        raise RowError(fields.tests, "missing")
    try:
        text = raw if isinstance(raw, str) else json.dumps(raw)
        parse_tests(text)
    except (ValueError, TypeError) as err:
        raise RowError(fields.tests, str(err)) from None
    tests = json.loads(text)  # kept as given: validated, and free of the defaults a re-dump would add
    entry = _text(row, fields.entry_point) if fields.entry_point else None
    starter = _require(row, fields.starter_code, str) if fields.starter_code else None
    return Problem(
        ability="code", problem=problem, ground_truth="", tests=tests, entry_point=entry,
        starter_code=starter if starter and starter.strip() else None, test_type=row_test_type(tests), extra=extra,
    )


Adapter = Callable[[dict, FieldMap], Problem]

ADAPTERS: dict[str, Adapter] = {
    "math500": math500,
    "aime24": aime24,
    "amc23": amc,
    "amc22_23": amc,
    "olympiadbench": olympiadbench,
    "minerva_math": minerva,
    "gsm8k": gsm8k,
    "math_train": math_train,
    "humaneval": humaneval,
    "humanevalplus": humanevalplus,
    "mbppplus": mbppplus,
    "livecodebench": livecodebench,
    "codecontests": codecontests,
    "deepcoder": deepcoder,
    "generic": generic,
}
