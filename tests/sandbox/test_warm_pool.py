"""Warm sandboxes: a job runs in a sandbox an earlier job used, and sees nothing that job left;
anything abnormal recycles the sandbox. Pids prove which sandbox a job ran in: the runner is pid 1
of a fresh sandbox, so the first process it forks there is pid 2, and every later one is higher."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import time

import pytest

from lad.sandbox import executor as executor_module
from lad.sandbox import runner
from lad.sandbox.config import SandboxConfig
from lad.sandbox.executor import Executor
from lad.sandbox.models import EvaluateRequest, RunRequest

PID = "import os\nprint(os.getpid())\n"
ADD_KEY_SYSCALL = {"x86_64": 248, "aarch64": 217}  # add_key(2)

# Everything a program can leave behind in its sandbox: files in the work dir (one in a
# directory it made unreadable), in /dev/shm and a large one in /tmp, SysV shared memory, a
# semaphore set and a message queue, a key in the user keyring, and a double-forked setsid
# process holding 200 MiB. It also holds 300 MiB itself, changes its environment, builtins,
# modules and cwd, and at last takes every permission off /tmp and /dev/shm.
LEAVE_BEHIND = f"""
import builtins, ctypes, os, sys
own = bytearray(300 << 20)
libc = ctypes.CDLL(None, use_errno=True)
open('/tmp/left.txt', 'w').write('x')
os.mkdir('/tmp/locked')
open('/tmp/locked/f', 'w').write('y')
os.chmod('/tmp/locked', 0)
open('/dev/shm/left', 'w').write('z')
open('/tmp/big', 'wb').write(b'0' * (8 << 20))
ids = [libc.shmget(0x1ad, 1 << 20, 0o1600), libc.semget(0x1ae, 1, 0o1600), libc.msgget(0x1af, 0o1600)]
key = libc.syscall({ADD_KEY_SYSCALL[os.uname().machine]}, b'user', b'lad-left', b'secret', 6, {runner.KEY_SPEC_USER_KEYRING})
os.environ['LAD_LEFT'] = '1'
builtins.LAD_LEFT = True
sys.modules['lad_left'] = sys
os.chdir('/dev/shm')
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        hog = bytearray(200 << 20)
        os.write(w, b'up')
        import time
        time.sleep(600)
    os._exit(0)
os.wait()
print(os.getpid(), min(ids) >= 0, key > 0, os.read(r, 2).decode())
os.chmod('/tmp', 0)
os.chmod('/dev/shm', 0)
"""

# What the next job looks at, as JSON.
LOOK = f"""
import builtins, ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def entries(path):
    with open(path) as f:
        return f.read().splitlines()[1:]
tmp = os.statvfs('/tmp')
with open('/proc/self/status') as f:
    vm = [int(line.split()[1]) for line in f if line.startswith('VmSize:')][0]
print(json.dumps({{
    "pid": os.getpid(), "procs": sorted(int(p) for p in os.listdir('/proc') if p.isdigit()),
    "tmp": os.listdir('/tmp'), "shm": os.listdir('/dev/shm'), "tmp_blocks": [tmp.f_bfree, tmp.f_blocks],
    "sysv": [entries('/proc/sysvipc/' + k) for k in ('shm', 'sem', 'msg')],
    "keyring_bytes": libc.syscall({runner.KEYCTL_SYSCALL[os.uname().machine]}, {runner.KEYCTL_READ},
                                  {runner.KEY_SPEC_USER_KEYRING}, 0, 0),
    "env": 'LAD_LEFT' in os.environ, "builtins": hasattr(builtins, 'LAD_LEFT'), "modules": 'lad_left' in sys.modules,
    "cwd": os.getcwd(), "vm_mb": vm >> 10,
    "modes": [oct(os.stat(d).st_mode & 0o7777) for d in ('/tmp', '/dev/shm')]}}))
"""


def _pid(ex: Executor) -> int:
    r = ex.run(RunRequest(code=PID))
    assert r.status == "ok", r
    return int(r.stdout)


@pytest.fixture
def ex():
    with Executor(SandboxConfig(default_timeout_s=5)) as e:
        yield e


def test_the_second_job_runs_in_the_same_warm_sandbox(ex):
    assert [_pid(ex), _pid(ex), _pid(ex)] == [2, 3, 4]
    stats = ex.stats()
    assert (stats["started"], stats["jobs"], stats["recycled"], stats["idle"]) == (1, 3, {}, [(1, 3)])


def test_the_next_job_sees_nothing_the_last_one_left(ex):
    if os.uname().machine not in ADD_KEY_SYSCALL:
        pytest.skip(f"no add_key(2) number for {os.uname().machine}")
    first = ex.run(RunRequest(code=LEAVE_BEHIND))
    assert (first.status, first.stdout) == ("ok", "2 True True up\n"), first.stderr[-2000:]
    r = ex.run(RunRequest(code=LOOK))
    assert r.status == "ok", r.stderr[-2000:]
    seen = json.loads(r.stdout)
    # the same sandbox (pids went on from the first job's), and the first job's processes are gone
    assert seen["pid"] > 2 and seen["procs"] == [1, seen["pid"]]
    assert seen["tmp"] == [] and seen["shm"] == [] and seen["modes"] == ["0o755", "0o755"]
    assert seen["tmp_blocks"][0] == seen["tmp_blocks"][1]  # the 8 MiB file's space is free again
    assert seen["sysv"] == [[], [], []]
    assert seen["keyring_bytes"] == 0
    assert (seen["env"], seen["builtins"], seen["modules"], seen["cwd"]) == (False, False, False, "/tmp")
    assert seen["vm_mb"] < 150  # the runner it was forked from never held the first job's 300 MiB
    assert (ex.stats()["started"], ex.stats()["recycled"]) == (1, {})


def test_the_next_evaluate_job_sees_nothing_either(ex):
    """Call tests run in a child of the runner too: module state, files and processes of one
    request do not reach the next."""
    code = ("import os, subprocess\nSTATE = []\ndef f(x):\n    STATE.append(x)\n"
            "    open('/tmp/f%d' % x, 'w').close()\n"
            "    if os.fork() == 0:\n        os.setsid()\n        import time\n        time.sleep(600)\n"
            "    return [len(STATE), sorted(os.listdir('/tmp')), len([p for p in os.listdir('/proc') if p.isdigit()])]\n")
    tests = [{"type": "call", "entry_point": "f", "args": [i]} for i in range(2)]
    first = ex.evaluate(EvaluateRequest(code=code, tests=tests))
    second = ex.evaluate(EvaluateRequest(code=code, tests=tests))
    # within a request the state carries over (one process runs the call tests) ...
    assert [v.output for v in first.verdicts] == [[1, ["f0"], 3], [2, ["f0", "f1"], 4]]
    # ... and the next request starts from nothing
    assert [v.output for v in second.verdicts] == [v.output for v in first.verdicts]
    assert (ex.stats()["started"], ex.stats()["jobs"], ex.stats()["recycled"]) == (1, 2, {})


def test_a_program_cannot_reach_the_runner_across_jobs(ex):
    """The runner is pid 1 of the sandbox and installs no signal handler, so the kernel drops
    every signal a program sends it; it is non-dumpable, so its memory and fds are closed."""
    attack = ("import os, signal\nfor s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1,\n"
              "          signal.SIGSTOP, signal.SIGKILL):\n    os.kill(1, s)\n"
              "for path in ('/proc/1/mem', '/proc/1/environ'):\n    try:\n        open(path, 'rb').read(1)\n"
              "        print('READ', path)\n    except OSError as e:\n        print('BLOCKED', e.errno)\n"
              "try:\n    print('FDS', os.listdir('/proc/1/fd'))\nexcept OSError as e:\n    print('BLOCKED', e.errno)\n")
    r = ex.run(RunRequest(code=attack))
    assert (r.status, r.stdout) == ("ok", "BLOCKED 13\nBLOCKED 13\nBLOCKED 13\n")
    assert _pid(ex) == 3  # the same runner answered
    assert (ex.stats()["started"], ex.stats()["recycled"]) == (1, {})


@pytest.mark.parametrize("request_, status", [
    (RunRequest(code="while True:\n    pass\n", timeout_s=0.5), "timeout"),
    (RunRequest(code="x = bytearray(1 << 34)\n", memory_mb=256), "memory_limit"),
    (RunRequest(code="import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n"), "output_limit"),
], ids=["timeout", "memory_limit", "output_limit"])
def test_a_limit_recycles_the_sandbox(ex, request_, status):
    assert _pid(ex) == 2
    assert ex.run(request_).status == status
    assert ex.stats()["recycled"] == {status: 1}
    assert _pid(ex) == 2  # a fresh sandbox
    assert ex.stats()["started"] == 2


def test_a_test_verdict_over_a_limit_recycles_the_sandbox(ex):
    assert _pid(ex) == 2
    code = "def f(x):\n    while x:\n        pass\n    return x\n"
    r = ex.evaluate(EvaluateRequest(code=code, timeout_s=0.5, tests=[
        {"type": "call", "entry_point": "f", "args": [a], "expected": a} for a in (0, 1, 0)]))
    assert [v.status for v in r.verdicts] == ["passed", "timeout", "passed"]
    assert ex.stats()["recycled"] == {"timeout": 1}
    assert _pid(ex) == 2


@pytest.mark.parametrize("code", [
    "import resource\nresource.prlimit(1, resource.RLIMIT_NOFILE, (100, 100))\n",
    "import os\nos.setpriority(os.PRIO_PROCESS, 1, os.getpriority(os.PRIO_PROCESS, 1) + 1)\n",
    "import os\nos.sched_setaffinity(1, {sorted(os.sched_getaffinity(0))[0]})\n",
    f"for i in range({runner.WIPE_BUDGET + 1}):\n    open('/tmp/%d' % i, 'w').close()\n",
], ids=["prlimit_on_the_runner", "renice_the_runner", "pin_the_runner", "too_many_files"])
def test_a_state_the_cleanup_cannot_restore_recycles_the_sandbox(ex, code):
    """prlimit(2), setpriority(2) and sched_setaffinity(2) work across processes of one uid; the
    runner notices the change, and the sandbox is replaced instead of reused."""
    if "sched_setaffinity" in code and len(os.sched_getaffinity(0)) == 1:
        pytest.skip("one CPU: pinning the runner changes nothing")
    assert _pid(ex) == 2
    r = ex.run(RunRequest(code=code))
    assert (r.status, r.stderr) == ("ok", "")
    # the verdict comes after the answer: the next job reads it, and gets a fresh sandbox
    assert _pid(ex) == 2
    assert ex.stats()["recycled"] == {"unclean": 1}


def test_after_max_jobs_a_fresh_sandbox_takes_over():
    with Executor(SandboxConfig(max_jobs_per_sandbox=3)) as ex:
        assert [_pid(ex) for _ in range(5)] == [2, 3, 4, 2, 3]
        assert (ex.stats()["started"], ex.stats()["recycled"]) == (2, {"max_jobs": 1})


def test_a_sandbox_that_died_while_idle_is_replaced(ex):
    assert _pid(ex) == 2
    (ident, _), = ex.stats()["idle"]
    sandbox = ex._pool._idle[0]
    os.kill(sandbox.proc.pid, signal.SIGKILL)
    sandbox.proc.wait(30)
    assert _pid(ex) == 2
    assert ex.stats()["recycled"] == {"died": 1}
    assert [i for i, _ in ex.stats()["idle"]] != [ident]


def test_isolation_none_reuses_its_runner_with_a_fresh_work_dir_per_job():
    with Executor(SandboxConfig(isolation="none")) as ex:
        code = "import os\nprint(os.getcwd(), os.listdir('.'))\nopen('left', 'w').close()\n"
        first, second = (ex.run(RunRequest(code=code)) for _ in range(2))
        assert first.stdout.endswith(" []\n") and second.stdout.endswith(" []\n")
        assert first.stdout != second.stdout  # another directory ...
        assert not os.path.exists(first.stdout.split()[0])  # ... and the last one is gone
        assert (ex.stats()["started"], ex.stats()["jobs"]) == (1, 2)


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def test_a_sandbox_that_dies_during_a_job_is_a_sandbox_error_and_replaced(ex):
    assert _pid(ex) == 2
    sandbox = ex._pool._idle[0]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        job = pool.submit(ex.run, RunRequest(code="import time\ntime.sleep(30)\n", timeout_s=60))
        (runner_pid,) = _children(sandbox.proc.pid)
        while not _children(runner_pid) and not job.done():  # until the program runs
            time.sleep(0.01)
        os.kill(sandbox.proc.pid, signal.SIGKILL)
        r = job.result()
    assert (r.status, r.exit_code, r.stderr) == ("sandbox_error", None, "the sandbox's runner died")
    assert ex.stats()["recycled"] == {"died": 1}
    assert _pid(ex) == 2


def test_every_job_gets_stdio_streams_no_earlier_job_wrote_to(ex):
    """The children's sys.stdin/stdout/stderr are made once by the runner; what a program left in
    their buffers (it never flushed, os._exit skips it) stays in its own process."""
    left = ex.run(RunRequest(code="import os, sys\nsys.stdout.write('left')\nsys.stderr.write('left')\n"
                                  "sys.stdin.read(1)\nos._exit(0)\n", stdin="abc"))
    assert (left.status, left.stdout, left.stderr) == ("ok", "", "")
    streams = ("import sys\nprint([(s.seekable(), s.isatty(), s.encoding, s.errors, s.line_buffering, s.closed)"
               " for s in (sys.stdin, sys.stdout, sys.stderr)], sys.stdin.read())\n")
    r = ex.run(RunRequest(code=streams, stdin="in"))
    assert (r.status, r.stdout, r.stderr) == (
        "ok", "[(False, False, 'utf-8', 'strict', False, False), (False, False, 'utf-8', 'strict', False, False), "
              "(False, False, 'utf-8', 'strict', False, False)] in\n", "")
    r = ex.evaluate(EvaluateRequest(code="import sys\nprint(sys.stdin.seekable(), sys.stdin.read())\n",
                                    tests=[{"type": "stdin", "input": "x", "output": "False x"}]))
    assert [v.status for v in r.verdicts] == ["passed"]
    assert ex.stats()["started"] == 1


def test_a_runner_whose_cleanup_verdict_never_comes_is_recycled_as_late(ex, monkeypatch):
    """The next job waits for the verdict on the last one's cleanup, then gives up on that
    sandbox: here its runner is stopped before the verdict it owes."""
    monkeypatch.setattr(executor_module, "CLEANUP_TIMEOUT_S", 0.5)
    assert _pid(ex) == 2
    sandbox = ex._pool._idle[0]
    assert sandbox.settle(5.0) == ""  # the real verdict, read ahead of the next job ...
    (runner_pid,) = _children(sandbox.proc.pid)
    os.kill(runner_pid, signal.SIGSTOP)  # ... and a runner that will not send another
    sandbox.verdict_pending = True
    try:
        assert _pid(ex) == 2  # a fresh sandbox ran it
        assert ex.stats()["recycled"] == {"late": 1} and ex.stats()["started"] == 2
    finally:
        with contextlib.suppress(ProcessLookupError):  # killed with its sandbox, as it should be
            os.kill(runner_pid, signal.SIGCONT)


def test_more_sysv_objects_than_one_read_of_proc_returns_are_all_removed(ex):
    make = ("import ctypes\nlibc = ctypes.CDLL(None)\nids = [libc.semget(0, 1, 0o1600) for _ in range(1000)]\n"
            "print(min(ids) >= 0, len(open('/proc/sysvipc/sem').read()) > 1 << 16)\n")
    assert ex.run(RunRequest(code=make)).stdout == "True True\n"
    left = ex.run(RunRequest(code="print(len(open('/proc/sysvipc/sem').read().splitlines()) - 1)\n"))
    assert left.stdout == "0\n"
    assert (ex.stats()["started"], ex.stats()["recycled"]) == (1, {})
