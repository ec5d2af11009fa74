"""Reward functions from outside the package, called with verl's ``compute_score`` signature.

``reward.functions`` maps a data_source (or ``"*"``: every source not named) to a reference,
``package.module:function`` (importable where training runs) or ``path/to/file.py:function``
(relative paths from the working directory; an ``s3://`` file is downloaded into the storage
cache first, so a pipeline's pods need nothing baked into their image). The function is called with verl's keywords,
``compute_score(data_source=, solution_str=, ground_truth=, extra_info=)``, and returns a number
or a dict holding ``score`` and, optionally, more numbers, which are logged as metrics.

Calls run in the reward worker pool (``MathVerifier.run_many``): user code never runs on the
trainer's thread, a per-item timer (SIGALRM: each worker is its process's main thread) bounds
each call, and the pool's deadline catches what the timer cannot (a call stuck in C code). A
call that raises, times out or returns something else scores 0 with the reason counted;
training goes on. References are loaded when the config is validated, so a missing module or
file, a missing function or one that cannot take the four keywords stops the run before it
starts, with one line naming the reference.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import math
import numbers
import re
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from lad.rewards.math import MathVerifier, Score

ARGS = ("data_source", "solution_str", "ground_truth", "extra_info")
ANY_SOURCE = "*"
OK_REASON = "custom"
_DETAIL = 200  # characters of an error message kept in a reason
_METRIC_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")  # what MLflow accepts in a metric name


class RewardFunctionError(ValueError):
    """A reference that names no usable reward function; the message says which and why."""


def _local_file(ref: str, target: str) -> Path:
    """``target`` as a local path; an s3:// file is downloaded into the storage cache."""
    from lad.storage import StorageConfig, StorageError, get_file, is_s3

    if not is_s3(target):
        return Path(target)
    digest = hashlib.sha256(target.encode()).hexdigest()[:16]
    dest = StorageConfig().resolved_cache_dir() / "rewards" / digest / target.rsplit("/", 1)[-1]
    try:
        return get_file(target, dest)
    except StorageError as err:
        raise RewardFunctionError(f"{ref!r}: cannot read {target}: {err}") from None


def _module_from_file(ref: str, path: Path):
    if not path.is_file():
        raise RewardFunctionError(f"{ref!r}: no file {path}")
    # One module per file, under a name no import can clash with.
    name = "lad_reward_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise RewardFunctionError(f"{ref!r}: importing {path} failed: {type(err).__name__}: {err}") from None
    sys.modules[name] = module
    return module


def _module(ref: str, target: str):
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as err:
        raise RewardFunctionError(f"{ref!r}: no module {err.name!r}") from None
    except Exception as err:
        raise RewardFunctionError(f"{ref!r}: importing {target} failed: {type(err).__name__}: {err}") from None


@functools.cache
def load_function(ref: str) -> Callable[..., Any]:
    """The function ``ref`` names, checked to accept verl's four keywords; RewardFunctionError."""
    target, sep, name = ref.rpartition(":")
    if not sep or not target or not name:
        raise RewardFunctionError(f"{ref!r}: expected module:function or path/to/file.py:function")
    module = _module_from_file(ref, _local_file(ref, target)) if target.endswith(".py") else _module(ref, target)
    fn = getattr(module, name, None)
    if fn is None:
        raise RewardFunctionError(f"{ref!r}: {target} has no attribute {name!r}")
    if not callable(fn):
        raise RewardFunctionError(f"{ref!r}: {name} is a {type(fn).__name__}, not a function")
    try:
        inspect.signature(fn).bind(**dict.fromkeys(ARGS))
    except (TypeError, ValueError) as err:
        raise RewardFunctionError(f"{ref!r}: {name} cannot be called as compute_score({', '.join(ARGS)}): {err}") from None
    return fn


def function_for(functions: dict[str, str], data_source: str) -> Optional[str]:
    """The reference that scores ``data_source`` (its own entry, else ``"*"``), or None."""
    return functions.get(data_source, functions.get(ANY_SOURCE))


def as_score(out: Any) -> tuple[float, str, dict[str, float]]:
    """(value, reason, metrics) of what a reward function returned."""
    metrics: dict[str, float] = {}
    if isinstance(out, dict):
        if "score" not in out:
            return 0.0, f"bad_return: a dict without 'score' (keys {sorted(map(str, out))[:8]})", {}
        metrics = {_METRIC_CHARS.sub("_", str(k)): float(v) for k, v in out.items()
                   if k != "score" and isinstance(v, numbers.Real) and math.isfinite(float(v))}
        out = out["score"]
    if not isinstance(out, numbers.Real) or not math.isfinite(float(out)):
        return 0.0, f"bad_return: expected a finite number or a dict with 'score', got {type(out).__name__}", {}
    return float(out), OK_REASON, metrics


class _Timeout(BaseException):
    """Raised into a call by its timer; a BaseException, so that user code's ``except Exception`` lets it pass."""


def _raise_timeout(signum, frame):
    raise _Timeout


def call_in_worker(item: tuple[str, float, dict]) -> tuple[float, str, dict[str, float]]:
    """One call, in a worker of the pool (its main thread): (reference, timeout, keywords) -> as_score."""
    ref, timeout_s, kwargs = item
    previous = signal.signal(signal.SIGALRM, _raise_timeout)
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout_s)
            out = load_function(ref)(**kwargs)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:
        return 0.0, "timeout", {}
    except Exception as err:  # the function's own failure costs its item only
        detail = " ".join(str(err).split())[:_DETAIL]
        return 0.0, f"error: {type(err).__name__}: {detail}", {}
    finally:
        signal.signal(signal.SIGALRM, previous)
    return as_score(out)


def score_custom(responses: list[str], records: list[dict], refs: list[str], pool: MathVerifier, timeout_s: float) -> list[Score]:
    """Each response scored by its reference's function in ``pool``, ``timeout_s`` per call."""
    items = [(ref, timeout_s, {"data_source": rec.get("data_source", ""), "solution_str": resp,
                               "ground_truth": (rec.get("reward_model") or {}).get("ground_truth"),
                               "extra_info": rec.get("extra_info") or {}})
             for resp, rec, ref in zip(responses, records, refs)]
    results = pool.run_many(call_in_worker, items, timeout_s + 2, (0.0, "timeout", {}))
    return [Score(value, reason, None, metrics) for value, reason, metrics in results]
