"""Every sandbox runs programs in the same environment: a program whose output follows the hash
order of strings prints one thing in every worker, in warm and in fresh sandboxes, and the same
as the interpreter started by hand with that PYTHONHASHSEED."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from lad.sandbox.config import SandboxConfig
from lad.sandbox.executor import Executor
from lad.sandbox.isolation import ENV
from lad.sandbox.models import EvaluateRequest, RunRequest

# set order of strings depends on the hash secret; so does hash() itself
HASH_ORDER = ("words = ['kx', 'DHBNiditD', 'ceRuVEV', 'aAXslGdbD', 'fHRtFowQVh', 'ITntCqEvPi', 'SmJpP', 'x']\n"
              "print(hash('abc'), tuple(set(words)), list({w: 0 for w in set(words)}))\n")
SHARED = "def shared(a, b):\n    return tuple(set(a) & set(b))\n"
RUNS = 24


def _by_hand(python: str, seed: int) -> str:
    env = {**ENV, "PYTHONHASHSEED": str(seed)}
    return subprocess.run([python, "-S", "-c", HASH_ORDER], env=env, capture_output=True, text=True,
                          check=True).stdout


def _outputs(ex: Executor) -> list[str]:
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: ex.run(RunRequest(code=HASH_ORDER)), range(RUNS)))
    assert {r.status for r in results} == {"ok"}
    return [r.stdout for r in results]


@pytest.mark.parametrize("isolation", ["bwrap", "none"])
def test_hash_order_is_the_same_in_every_sandbox(isolation):
    # 4 jobs per sandbox: the 24 runs on 2 workers go through at least 6 sandboxes
    with Executor(SandboxConfig(isolation=isolation, max_jobs_per_sandbox=4)) as ex:
        ex.warm(2)
        outputs = _outputs(ex)
        started = ex.stats()["started"]
        python = ex.python
    assert started >= RUNS // 4
    assert set(outputs) == {_by_hand(python, 0)}


def test_hash_seed_is_a_setting():
    with Executor(SandboxConfig(hash_seed=12345, max_jobs_per_sandbox=4)) as ex:
        ex.warm(2)
        outputs = _outputs(ex)
        python = ex.python
    assert set(outputs) == {_by_hand(python, 12345)}
    assert _by_hand(python, 12345) != _by_hand(python, 0)


def test_set_valued_call_test_gets_one_value_on_every_worker():
    """The MBPP pattern that flipped between runs: a tuple built from a set of strings, recorded
    as a reference output on one worker and compared on another."""
    args = [["DRwvS", "ITntCqEvPi", "SmJpP", "tUqF", "kx"], ["tUqF", "kx", "SmJpP", "DRwvS"]]
    req = EvaluateRequest(code=SHARED, tests=[{"type": "call", "entry_point": "shared", "args": args}])
    with Executor(SandboxConfig(max_jobs_per_sandbox=3)) as ex:
        ex.warm(2)
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda _: ex.evaluate(req), range(12)))
    outputs = {repr(r.verdicts[0].output) for r in results}
    assert len(outputs) == 1


def test_runner_path_has_no_work_dir_entry():
    """The runner no longer starts isolated (-I would ignore PYTHONHASHSEED): the '' that -c puts
    first on sys.path is dropped, so a module left in the work dir is not importable by name."""
    probe = ("import sys\nopen('/tmp/lad_probe.py', 'w').write('x = 1')\n"
             "try:\n    import lad_probe\n    print('imported')\nexcept ModuleNotFoundError:\n    print('not found')\n"
             "print('' in sys.path, sys.flags.isolated)\n")
    with Executor(SandboxConfig()) as ex:
        r = ex.run(RunRequest(code=probe))
    assert (r.status, r.stdout) == ("ok", "not found\nFalse 0\n")
