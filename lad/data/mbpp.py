"""MBPP+ (EvalPlus's MBPP release, v0.2.0): the test inputs as the programs receive them, and the
tasks whose outputs EvalPlus does not compare by plain equality.

The release stores every input as JSON, so tuples, sets and complex numbers arrive as lists and
strings; EvalPlus turns them back into Python values before calling the function
(``mbpp_deserialize_inputs`` in evalplus/data/mbpp.py, 0.3.1), and a solution may depend on that
(``isinstance(t, tuple)``, hashing, ``.real``). ``REBUILD`` says, task by task, which arguments
change and how; ``rebuild_inputs`` applies it. The values then reach the sandbox in its tagged JSON
(``lad.sandbox.runner.encode``), which the runner decodes into the same Python values.

Special oracles (evalplus/eval/_special_oracle.py and ``unsafe_execute``): a few tasks accept
answers that differ from the canonical solution's, and their call tests say so with the sandbox's
``compare`` and ``alternatives`` (see :class:`lad.sandbox.models.CallTest`).
"""

from __future__ import annotations

import math
from typing import Any, Callable

Args = list[Any]


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------


def _tuple(value: list) -> tuple:
    return tuple(value)


def _tuples_in(value: list) -> list[tuple]:
    """A list of lists as a list of tuples ([(1, 2), (3, 4)]: the "list of pairs" of many tasks)."""
    return [tuple(item) for item in value]


def _tuple_of_tuples(value: list) -> tuple:
    return tuple(tuple(item) for item in value)


def _inner_lists_then_tuple(value: list) -> tuple:
    """(1, 5, (4, 6), 10): the list items of a mixed list become tuples, then the list itself."""
    return tuple(tuple(item) if isinstance(item, list) else item for item in value)


def _nested_tuple(value: Any) -> Any:
    """Every list, at any depth, as a tuple."""
    return tuple(_nested_tuple(item) for item in value) if isinstance(value, list) else value


def _tuple_values(value: dict) -> dict:
    return {key: tuple(item) for key, item in value.items()}


def _every(convert: Callable[[Any], Any]) -> Callable[[Args], Args]:
    return lambda args: [convert(a) for a in args]


def _first(convert: Callable[[Any], Any]) -> Callable[[Args], Args]:
    return lambda args: [convert(args[0]), *args[1:]]


def _second(convert: Callable[[Any], Any]) -> Callable[[Args], Args]:
    return lambda args: [args[0], convert(args[1]), *args[2:]]


def _float_complex(args: Args) -> Args:
    """angle_complex(a, b): stored as the strings "0" and "1j"."""
    return [float(args[0]), complex(args[1])]


def _complex(args: Args) -> Args:
    """convert(z): stored as an int (1) or a string ("(1+2j)")."""
    return [complex(args[0])]


def _groups(*groups: tuple[Callable[[Args], Args], tuple[int, ...]]) -> dict[int, Callable[[Args], Args]]:
    return {task: rebuild for rebuild, tasks in groups for task in tasks}


# MBPP task number -> the arguments as the function receives them (tasks of the v0.2.0 release only)
REBUILD: dict[int, Callable[[Args], Args]] = _groups(
    (_every(_tuple), (2, 116, 132, 222, 261, 273, 394, 421, 424, 429, 470, 560, 579, 596, 616, 630, 726, 740, 744,
                      809)),
    (_every(_tuples_in), (63, 64, 70, 94, 120, 237, 272, 299, 409, 473, 614, 780)),
    (_first(_tuples_in), (75, 413, 753)),
    (_second(_tuple), (106, 750)),
    (_first(_tuple), (250, 405, 446, 720, 763, 808)),
    (_every(_tuple_of_tuples), (259, 445)),
    (_first(_inner_lists_then_tuple), (278,)),
    (_first(_tuple_values), (722,)),
    (_every(_nested_tuple), (580, 615, 791)),
    (_float_complex, (124,)),
    (_complex, (252,)),
)


# Inputs left out, by task: positions in base_input + plus_input. Their canonical outputs cannot
# leave the sandbox under its default limits: combinations_colors returns 79,079 to 1,663,740
# tuples of 76 or 77 items for them, 20 MB to over 1 GB as JSON (the cap on a returned value is
# 16 MB; the largest also exceeds the 1 GiB of memory a program gets).
OMITTED: dict[int, frozenset[int]] = {255: frozenset({88, 89, 93, 99, 103})}


def task_number(task_id: str) -> int:
    """"Mbpp/2" -> 2."""
    prefix, _, number = task_id.partition("/")
    if prefix != "Mbpp" or not number.isdigit():
        raise ValueError(f"expected an MBPP+ task id such as 'Mbpp/2', got {task_id!r}")
    return int(number)


def rebuild_inputs(task: int, inputs: list[Args]) -> list[Args]:
    """The stored inputs of ``task`` as Python values (a new list; ``inputs`` is not changed)."""
    rebuild = REBUILD.get(task)
    return [list(args) for args in inputs] if rebuild is None else [rebuild(list(args)) for args in inputs]


def kept(task: int, position: int) -> bool:
    """Whether the input at ``position`` of base_input + plus_input is tested (see OMITTED)."""
    return position not in OMITTED.get(task, ())


# --------------------------------------------------------------------------------------------
# special oracles
# --------------------------------------------------------------------------------------------

# Outputs compared as sets: the statement does not fix the order (shared elements, differences).
SET_EQUAL = frozenset({"similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly",
                       "larg_nnum", "find_dissimilar", "Diff"})
# re.search results: only whether there was a match counts (a bool answer is taken as that verdict).
NOT_NONE = frozenset({"check_str", "text_match_three", "text_starta_endb"})


def _pyramid_surface(base_edge: float, height: float) -> int:
    """surface_Area's other reading: ``height`` is the apex's height above the base, not the slant
    height the canonical solution takes it for (the total area rounded to an integer)."""
    slant = math.sqrt((base_edge / 2) ** 2 + height ** 2)
    return round(base_edge ** 2 + 4 * (base_edge * slant) / 2)


def _padded_digit_distance(n1: int, n2: int) -> int:
    """digit_distance_nums with the shorter number zero-padded on the left (the canonical solution
    stops at the shorter one)."""
    a, b = str(n1), str(n2)
    width = max(len(a), len(b))
    return sum(abs(int(x) - int(y)) for x, y in zip(a.zfill(width), b.zfill(width)))


# entry point -> the other answer accepted for given arguments (exact equality)
ALTERNATIVE: dict[str, Callable[..., Any]] = {
    "surface_Area": _pyramid_surface,
    "digit_distance_nums": _padded_digit_distance,
}


def oracle(entry_point: str, args: Args) -> dict[str, Any]:
    """The call test's fields beyond the expected value for ``entry_point(*args)``: ``compare``
    and ``alternatives`` where they differ from plain equality, else nothing."""
    if entry_point in SET_EQUAL:
        return {"compare": "set"}
    if entry_point in NOT_NONE:
        return {"compare": "not_none"}
    if entry_point in ALTERNATIVE:
        return {"alternatives": [ALTERNATIVE[entry_point](*args)]}
    return {}
