"""Runs programs and test batches in a pool of warm sandboxes. Thread-safe; the service runs
several requests at once through it.

Each sandbox is one bubblewrap process whose pid 1 is the runner (lad/sandbox/runner.py) acting
as a zygote: its interpreter, modules and limits are set up once, then it runs one job at a time
in forked children and restores a clean sandbox after each (see the runner's docstring). A job
reaches it as four pipes passed over a unix socket, so its output ends exactly when its processes
do. A sandbox is recycled (killed, and a fresh one started in the background) after
``max_jobs_per_sandbox`` jobs, and at once after anything abnormal: the zygote died or missed the
deadline, a job ended in timeout, memory_limit, output_limit or sandbox_error, or the cleanup
could not verify a clean state or sent no verdict in time (the verdict is read before the
sandbox's next job, so the cleanup runs while the last job's answer travels)."""

from __future__ import annotations

import array
import collections
import fcntl
import itertools
import json
import marshal
import os
import queue
import select
import selectors
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Callable, Optional

import pydantic_core

from lad.sandbox import runner
from lad.sandbox.compare import call_matches, stdout_matches
from lad.sandbox.config import SandboxConfig
from lad.sandbox.isolation import TMPFS_DIRS, WORKDIR, IsolationError, host_user, make_launcher
from lad.sandbox.models import (SKIPPED_DETAIL, CallTest, EvaluateRequest, EvaluateResult, RunRequest, RunResult,
                                StdinTest, Verdict)

RUNNER_SOURCE = Path(runner.__file__).read_text()
_PY_FLAGS = ["-I", "-S", "-B"]  # isolated, no site-packages, no .pyc writes
# The sandbox's runner: not -I, whose -E would ignore PYTHONHASHSEED (the hash secret is drawn
# once at interpreter start and every program forked from the runner inherits it). The
# environment is the launcher's own (bwrap --clearenv), so no other PYTHON* variable reaches it;
# no user site (-s) and no site-packages (-S); BOOTSTRAP drops the '' that -c puts on sys.path,
# so nothing a program leaves in the work dir can be imported by the runner.
_SANDBOX_FLAGS = ["-s", "-S", "-B"]
# Reads the control socket (fd argv[1]): the runner's code object (argv[2] bytes, marshalled by
# the same interpreter), then the sandbox's settings (argv[3] bytes); runs the runner as __main__.
BOOTSTRAP = ("import marshal, os, sys\n"
             "sys.path[:] = [p for p in sys.path if p]\n"
             "fd, n, m = map(int, sys.argv[1:4])\n"
             "d = b''\n"
             "while len(d) < n + m:\n"
             "    c = os.read(fd, n + m - len(d))\n"
             "    if not c:\n        os._exit(3)\n"
             "    d += c\n"
             "exec(marshal.loads(d[:n]), {'__name__': '__main__', '__builtins__': __builtins__,"
             " '_CTL': fd, '_INIT': d[n:]})\n")
_COMPILE = ("import marshal, sys\n"
            "sys.stdout.buffer.write(marshal.dumps(compile(sys.stdin.read(), 'lad-sandbox-runner', 'exec')))\n")
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
START_TIMEOUT_S = 60.0  # a sandbox that is not ready by then is reported as a start failure
DRAIN_S = 0.5  # after the job's end, how long output may still arrive (isolation none: escaped processes)
CLEANUP_TIMEOUT_S = 10.0  # a zygote whose cleanup verdict takes longer is recycled as "late"
RECYCLE_STATUSES = {"timeout", "memory_limit", "output_limit", "sandbox_error"}


def _compiled_runner(python: str) -> bytes:
    """The runner compiled by the sandbox's own interpreter (marshal is version-specific)."""
    done = subprocess.run([python, *_PY_FLAGS, "-c", _COMPILE], input=RUNNER_SOURCE.encode(), capture_output=True,
                          timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"cannot compile the sandbox runner with {python}: {done.stderr.decode()[-500:]}")
    return done.stdout


class RequestError(ValueError):
    """A request value the service refuses; ``field`` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class SandboxStartError(RuntimeError):
    """A sandbox could not be started; the message carries bubblewrap's own words."""


class _Outcome:
    def __init__(self) -> None:
        self.returncode: Optional[int] = None
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.overflow = False
        self.killed_at_deadline = False
        self.wall_s = 0.0
        self.failure = ""  # why the sandbox could not run the job (it did not start, or died)


class _Sandbox:
    """One warm sandbox: a bwrap process whose pid 1 is the zygote, reached over ``ctl``."""

    def __init__(self, ident: int, proc: subprocess.Popen, ctl: socket.socket):
        self.ident = ident
        self.proc = proc
        self.ctl = ctl
        self.jobs = 0
        self.dead = False  # no further job may go to it
        self.verdict_pending = False  # its last job is answered, the cleanup's verdict not read yet
        self._ctl_bytes = bytearray()  # read from ctl past the last whole line

    def _line(self) -> Optional[bytes]:
        """The next whole line the zygote sent, if it is already here."""
        end = self._ctl_bytes.find(b"\n")
        if end < 0:
            return None
        line = bytes(self._ctl_bytes[:end])
        del self._ctl_bytes[:end + 1]
        return line

    def settle(self, timeout: float) -> str:
        """Wait for the verdict on the cleanup after the last job: "" when the sandbox is clean
        and may take the next job, else why it must be recycled."""
        if not self.verdict_pending:
            return ""
        deadline = time.monotonic() + timeout
        while (line := self._line()) is None:
            try:
                chunk = self.ctl.recv(4096, socket.MSG_DONTWAIT)
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.ctl], [], [], left)[0]:
                    return "late: no cleanup verdict within %g s" % timeout
                continue
            except OSError:
                return "died"
            if not chunk:
                return "died"
            self._ctl_bytes += chunk
        self.verdict_pending = False
        try:
            verdict = json.loads(line)
            clean, reason = verdict["clean"] is True, str(verdict["reason"])
        except (ValueError, KeyError, TypeError):
            return f"died: the runner answered {line[:200]!r}"
        return "" if clean else "unclean: " + (reason or "unclean")

    def kill(self) -> None:
        self.dead = True
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.ctl.close()

    def execute(self, job: bytes, stdin: bytes, deadline_s: float, stdout_cap: int, stderr_cap: int,
                on_line: Optional[Callable[[bytes], bool]] = None) -> _Outcome:
        """Run one job: send its pipes, feed it, collect its output and the zygote's status line
        (the cleanup's verdict follows; see ``settle``). With ``on_line``, stdout is handed over
        line by line instead of kept; a True answer asks the runner to stop. Past the deadline,
        or on overflow, the sandbox is marked dead."""
        out = _Outcome()
        start = time.monotonic()
        deadline = start + deadline_s
        job_r, job_w = os.pipe()
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        open_fds = {job_w, in_w, out_r, err_r}
        _widen(out_r)
        try:
            try:
                self.ctl.sendmsg([b"job"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                             array.array("i", [job_r, in_r, out_w, err_w]))])
            except OSError as err:
                self.dead = True
                out.failure = f"the sandbox is gone: {err}"
                return out
            finally:
                for fd in (job_r, in_r, out_w, err_w):
                    os.close(fd)
            self._drive(out, open_fds, job_w, in_w, out_r, err_r, job, stdin, deadline, stdout_cap, stderr_cap,
                        on_line)
            out.wall_s = time.monotonic() - start
            return out
        finally:
            for fd in open_fds:
                os.close(fd)
            if self.dead and self.proc.poll() is None:
                self.proc.kill()  # stop it now; the pool reaps it

    def _drive(self, out: _Outcome, open_fds: set, job_w: int, in_w: int, out_r: int, err_r: int, job: bytes,
               stdin: bytes, deadline: float, stdout_cap: int, stderr_cap: int, on_line) -> None:
        def close(fd: int) -> None:
            if fd in sel.get_map():
                sel.unregister(fd)
            open_fds.discard(fd)
            os.close(fd)

        sel = selectors.DefaultSelector()
        try:
            writes = {job_w: memoryview(len(job).to_bytes(8, "little") + job)}
            if stdin:
                writes[in_w] = memoryview(stdin)
            else:
                close(in_w)
            for fd in writes:
                os.set_blocking(fd, False)
                sel.register(fd, selectors.EVENT_WRITE)
            ctl = self.ctl.fileno()
            for fd in (out_r, err_r, ctl):
                sel.register(fd, selectors.EVENT_READ)
            lines, scan = bytearray(), 0
            done: Optional[dict] = None
            stop = stop_sent = False
            while out_r in open_fds or err_r in open_fds or (done is None and not out.failure):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if done is None and not out.failure:
                        out.killed_at_deadline = True
                    break
                for key, _ in sel.select(remaining):
                    fd = key.fd
                    if fd in writes:
                        try:
                            writes[fd] = writes[fd][os.write(fd, writes[fd][:1 << 20]):]
                        except BlockingIOError:
                            continue
                        except OSError:  # the reader is gone (a program closed its stdin)
                            writes[fd] = writes[fd][:0]
                        if not writes[fd]:
                            del writes[fd]
                            if fd == job_w:
                                sel.unregister(fd)  # kept open: it is the stop channel
                            else:
                                close(fd)
                    elif fd == ctl:
                        chunk = self.ctl.recv(4096)
                        if not chunk:  # its processes die with it: read what they wrote, then stop
                            out.failure = "the sandbox's runner died"
                            self.dead = True
                            sel.unregister(ctl)
                            deadline = min(deadline, time.monotonic() + DRAIN_S)
                            continue
                        self._ctl_bytes += chunk
                        line = self._line()
                        if line is not None:
                            try:
                                done = json.loads(line)
                                done = {"status": int(done["status"]), "jobs": int(done["jobs"])}
                            except (ValueError, KeyError, TypeError):
                                out.failure = f"the sandbox's runner answered {line[:200]!r}"
                                self.dead = True
                                return
                            self.verdict_pending = True
                            sel.unregister(ctl)
                            deadline = min(deadline, time.monotonic() + DRAIN_S)
                    else:
                        chunk = os.read(fd, 1 << 20)
                        if not chunk:
                            close(fd)
                        elif fd == err_r:
                            out.stderr += chunk
                            out.overflow = out.overflow or len(out.stderr) > stderr_cap
                        elif on_line is None:
                            out.stdout += chunk
                            out.overflow = out.overflow or len(out.stdout) > stdout_cap
                        else:
                            lines += chunk
                            pos = 0
                            while (nl := lines.find(b"\n", scan)) >= 0:
                                stop = on_line(bytes(lines[pos:nl])) or stop
                                pos = scan = nl + 1
                            del lines[:pos]
                            scan = len(lines)
                if out.overflow:
                    break
                if stop and not stop_sent and job_w not in writes:
                    stop_sent = True
                    try:
                        os.write(job_w, b"s")
                    except OSError:
                        pass
            if done is None:
                self.dead = True
                return
            out.returncode = done["status"]
            self.jobs = done["jobs"]
            if out.overflow or out_r in open_fds or err_r in open_fds:
                self.dead = True  # output the job did not finish writing belongs to nobody
        finally:
            sel.close()


def _widen(fd: int) -> None:
    """A 1 MiB pipe buffer: multi-megabyte values then cross in a few reads instead of hundreds."""
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, 1 << 20)
    except OSError:  # above /proc/sys/fs/pipe-max-size for this user
        pass


def _start_sandbox(cfg: SandboxConfig, launch, python: str, runner_code: bytes, ident: int) -> _Sandbox:
    """Start one sandbox and wait until its zygote is ready."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    private = cfg.isolation == "bwrap"
    init = marshal.dumps({"private": private, "nproc": cfg.nproc, "nofile": cfg.nofile, "fsize": cfg.fsize_mb << 20,
                          "wipe": list(TMPFS_DIRS) if private else []}, 4)
    cmd, popen_kw = launch([python, *_SANDBOX_FLAGS, "-c", BOOTSTRAP, str(child.fileno()), str(len(runner_code)),
                            str(len(init))])
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                pass_fds=(child.fileno(),), close_fds=True, cwd="/", **popen_kw)
    except OSError as err:
        parent.close()
        raise SandboxStartError(f"cannot start the sandbox: {err}") from err
    finally:
        child.close()
    problem = ""
    try:
        parent.sendall(runner_code + init)
        ready = bytearray()
        deadline = time.monotonic() + START_TIMEOUT_S
        while b"\n" not in ready:
            parent.settimeout(max(0.0, deadline - time.monotonic()))
            chunk = parent.recv(4096)
            if not chunk:
                problem = "the sandbox exited during start-up"
                break
            ready += chunk
    except socket.timeout:
        problem = f"the sandbox was not ready within {START_TIMEOUT_S:g} s"
    except OSError as err:
        problem = f"the sandbox exited during start-up ({err})"
    if problem:
        if proc.poll() is None:
            proc.kill()
        stderr = proc.stderr.read().decode("utf-8", "replace").strip()
        proc.wait()
        proc.stderr.close()
        parent.close()
        raise SandboxStartError(f"{problem} (exit {proc.returncode}): {stderr[-1000:]}".rstrip(": "))
    parent.settimeout(None)
    proc.stderr.close()  # the zygote points its own stdio at /dev/null once ready
    return _Sandbox(ident, proc, parent)


class _Pool:
    """Warm sandboxes, started and killed by one long-lived thread: bwrap's --die-with-parent
    binds a sandbox to the thread that started it, so a short-lived thread must never do it."""

    def __init__(self, start: Callable[[int], _Sandbox], max_jobs: int):
        self._start = start
        self._max_jobs = max_jobs
        self._cond = threading.Condition()
        self._idle: list[_Sandbox] = []
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._pending = 0  # starts asked of the thread and not finished yet
        self._waiting = 0  # acquire() calls waiting for a sandbox
        self._failures = 0
        self._last_failure = ""
        self._closed = False
        self._ids = itertools.count(1)
        self.started = 0
        self.jobs = 0
        self.recycled: collections.Counter = collections.Counter()
        self._thread = threading.Thread(target=self._work, name="lad-sandbox-pool", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            if isinstance(task, _Sandbox):
                task.kill()
                continue
            try:
                sandbox, failure = self._start(next(self._ids)), ""
            except (SandboxStartError, OSError, ValueError) as err:
                sandbox, failure = None, str(err)
            with self._cond:
                self._pending -= 1
                if sandbox is None:
                    self._failures += 1
                    self._last_failure = failure
                elif self._closed:
                    self._tasks.put(sandbox)
                else:
                    self.started += 1
                    self._idle.append(sandbox)
                self._cond.notify_all()

    def _ask_start(self) -> None:
        self._pending += 1
        self._tasks.put("start")

    def warm(self, count: int) -> None:
        """Start sandboxes in the background until ``count`` are idle or on their way."""
        with self._cond:
            for _ in range(count - len(self._idle) - self._pending):
                self._ask_start()

    def acquire(self) -> _Sandbox:
        """An idle sandbox whose cleanup after its last job is verified. The verdict is read here,
        out of the lock, rather than when the last job ended: the cleanup then runs while that
        job's answer goes back to its client."""
        while True:
            sandbox = self._take()
            problem = sandbox.settle(CLEANUP_TIMEOUT_S)
            if not problem:
                return sandbox
            with self._cond:
                self._discard(sandbox, problem)

    def _take(self) -> _Sandbox:
        with self._cond:
            if self._closed:
                raise SandboxStartError("the sandbox pool is closed")
            seen = self._failures
            self._waiting += 1
            try:
                while True:
                    while not self._idle:
                        if self._failures != seen:
                            raise SandboxStartError(self._last_failure)
                        if self._pending < self._waiting:
                            self._ask_start()
                        self._cond.wait()
                    sandbox = self._idle.pop()
                    if sandbox.proc.poll() is None:
                        return sandbox
                    self._discard(sandbox, "died")  # while idle (the host's OOM killer, say)
            finally:
                self._waiting -= 1

    def release(self, sandbox: _Sandbox, reason: str = "") -> None:
        """Back to the idle list, or (``reason``, dead, or worn out) killed and replaced."""
        if not reason and sandbox.dead:
            reason = "died"
        if not reason and sandbox.jobs >= self._max_jobs:
            reason = "max_jobs"
        with self._cond:
            self.jobs += 1
            if not reason and not self._closed:
                self._idle.append(sandbox)
                self._cond.notify_all()
                return
            self._discard(sandbox, reason)

    def _discard(self, sandbox: _Sandbox, reason: str) -> None:
        """Kill and replace (the caller holds the lock)."""
        sandbox.dead = True
        self.recycled[reason.split(":")[0]] += 1
        self._tasks.put(sandbox)
        if not self._closed:
            self._ask_start()  # the replacement, ready before the next request needs it

    def stats(self) -> dict:
        with self._cond:
            return {"started": self.started, "jobs": self.jobs, "recycled": dict(self.recycled),
                    "start_failures": self._failures, "idle": [(s.ident, s.jobs) for s in self._idle]}

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for sandbox in idle:
            self._tasks.put(sandbox)
        self._tasks.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(30)


class _Lease:
    """One job's hold on a sandbox; ``recycle`` marks it for replacement when returned."""

    def __init__(self, pool: _Pool):
        self.pool = pool
        self.reason = ""
        self.failure = ""
        self.sandbox: Optional[_Sandbox] = None
        try:
            self.sandbox = pool.acquire()
        except SandboxStartError as err:
            self.failure = str(err)

    def recycle(self, reason: str) -> None:
        self.reason = self.reason or reason

    def __enter__(self) -> "_Lease":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if self.sandbox is not None:
            self.pool.release(self.sandbox, self.reason or ("error" if exc_type else ""))


class Executor:
    def __init__(self, config: Optional[SandboxConfig] = None):
        self.config = config or SandboxConfig()
        self.python, launch = make_launcher(self.config)
        code = _compiled_runner(self.python)
        # the pool's thread holds no reference to this executor, so dropping it closes the pool
        self._pool = _Pool(_bind_start(self.config, launch, self.python, code), self.config.max_jobs_per_sandbox)
        self._finalizer = weakref.finalize(self, self._pool.close)

    @property
    def isolation(self) -> str:
        return self.config.isolation

    def warm(self, count: int) -> None:
        """Start ``count`` sandboxes in the background (the service: one per worker)."""
        self._pool.warm(count)

    def stats(self) -> dict:
        """Internal pool counters: sandboxes started, jobs run, recycles by reason, and the idle
        sandboxes as (id, jobs run in it)."""
        return self._pool.stats()

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def self_check(self) -> None:
        """Run one trivial program; raise IsolationError with bwrap's own words when the sandbox
        cannot start here (no user namespaces, a seccomp profile that forbids mounts, ...)."""
        r = self.run(RunRequest(code="print(6 * 7)", timeout_s=min(10.0, self.config.max_timeout_s)))
        if r.status != "ok" or r.stdout != "42\n":
            raise IsolationError(f"the sandbox does not work on this machine ({r.status}, exit {r.exit_code}): "
                                 f"{r.stderr.strip()[-1000:]}")

    # ---- limits -------------------------------------------------------------------------------
    def _limits(self, timeout_s: Optional[float], memory_mb: Optional[int]) -> tuple[float, int]:
        cfg = self.config
        timeout = cfg.default_timeout_s if timeout_s is None else timeout_s
        memory = cfg.default_memory_mb if memory_mb is None else memory_mb
        if timeout > cfg.max_timeout_s:
            raise RequestError("timeout_s", f"{timeout} exceeds this service's maximum of {cfg.max_timeout_s}")
        if memory > cfg.max_memory_mb:
            raise RequestError("memory_mb", f"{memory} exceeds this service's maximum of {cfg.max_memory_mb}")
        return timeout, memory

    def _value_limit(self, value_limit_mb: Optional[int]) -> int:
        cfg = self.config
        if value_limit_mb is None:
            return cfg.value_limit_bytes
        if value_limit_mb << 20 > cfg.max_value_limit_bytes:
            raise RequestError("value_limit_mb", f"{value_limit_mb} exceeds this service's maximum of "
                                                 f"{cfg.max_value_limit_bytes >> 20}")
        return value_limit_mb << 20

    def _job(self, mode: str, code: str, timeout: float, memory_mb: int) -> dict:
        cfg = self.config
        return {"mode": mode, "code": code, "timeout_s": timeout, "cpu_s": timeout + 1,
                "memory_bytes": memory_mb << 20, "output_limit": cfg.output_limit_bytes, "workdir": WORKDIR}

    def _execute(self, lease: _Lease, job: dict, stdin: bytes, deadline_s: float, stdout_cap: int,
                 on_line=None) -> _Outcome:
        if lease.sandbox is None:
            out = _Outcome()
            out.failure = lease.failure
            return out
        workdir = None
        if self.isolation == "none":
            # no private /tmp: a fresh directory per job, owned by the user the programs run as
            workdir = tempfile.mkdtemp(prefix="lad-sandbox-")
            user = host_user(self.config)
            if user:
                os.chown(workdir, user["user"], user["group"])
            job["workdir"] = workdir
        try:
            out = lease.sandbox.execute(marshal.dumps(job, 4), stdin, deadline_s, stdout_cap,
                                        self.config.output_limit_bytes, on_line)
        finally:
            if workdir:
                shutil.rmtree(workdir, ignore_errors=True)
        if out.failure or out.killed_at_deadline:
            lease.recycle("died" if out.failure else "deadline")
        return out

    # ---- API ------------------------------------------------------------------------------------
    def run(self, req: RunRequest) -> RunResult:
        timeout, memory = self._limits(req.timeout_s, req.memory_mb)
        job = self._job("run", req.code, timeout, memory)
        cap = self.config.output_limit_bytes
        with _Lease(self._pool) as lease:
            o = self._execute(lease, job, req.stdin.encode(), timeout + self.config.grace_s, cap)
            stderr = o.stderr.decode("utf-8", "replace")
            truncated = o.overflow or len(o.stdout) > cap or len(o.stderr) > cap
            rc = o.returncode
            if o.failure:
                status, rc, stderr = "sandbox_error", None, o.failure
            elif o.overflow:
                status = "output_limit"
            elif o.killed_at_deadline or rc == runner.TIMEOUT_EXIT:
                status = "timeout"
            elif rc == 128 + 24:  # SIGXCPU: the CPU-seconds limit
                status = "timeout"
            elif rc == runner.MEMORY_EXIT or stderr.rstrip().endswith("MemoryError"):
                status = "memory_limit"
            elif rc == 128 + 25:  # SIGXFSZ
                status = "output_limit"
            elif rc == runner.RUNNER_FAILED:
                status = "sandbox_error"
            elif rc == 0:
                status = "ok"
            else:
                status = "runtime_error"
            if status in RECYCLE_STATUSES:
                lease.recycle(status)
        return RunResult(status=status, exit_code=rc, stdout=o.stdout[:cap].decode("utf-8", "replace"),
                         stderr=stderr[:cap], wall_s=round(o.wall_s, 6), truncated=truncated, isolation=self.isolation)

    def evaluate(self, req: EvaluateRequest) -> EvaluateResult:
        timeout, memory = self._limits(req.timeout_s, req.memory_mb)
        budget = min(self.config.max_request_s, timeout * len(req.tests) + self.config.grace_s)
        job = self._job("evaluate", req.code, timeout, memory)
        job["value_limit"] = self._value_limit(req.value_limit_mb)
        job["budget_s"] = budget
        job["tests"] = [_without_expected(t) for t in req.tests]
        verdicts: list[Optional[Verdict]] = [None] * len(req.tests)
        failed = []  # the first test that did not pass, with stop_on_first_failure

        def on_report(line: bytes) -> bool:
            """Judge one test as soon as its report arrives; True asks the runner to stop."""
            try:
                msg = _parse_report(line)
                i = int(msg["i"])
            except (ValueError, KeyError, TypeError):
                return False
            if not 0 <= i < len(verdicts) or verdicts[i] is not None:
                return False
            if failed:
                verdicts[i] = Verdict(status="skipped", detail=SKIPPED_DETAIL)
                return False
            verdicts[i] = _judge(req.tests[i], msg)
            if req.stop_on_first_failure and verdicts[i].status != "passed":
                failed.append(i)
                return True
            return False

        with _Lease(self._pool) as lease:
            o = self._execute(lease, job, b"", budget + self.config.grace_s, 1 << 62, on_report)
            stderr = o.stderr.decode("utf-8", "replace")
            sandbox_failed = bool(o.failure) and all(v is None for v in verdicts)
            for i, v in enumerate(verdicts):
                if v is not None:
                    continue
                if failed:
                    verdicts[i] = Verdict(status="skipped", detail=SKIPPED_DETAIL)
                elif sandbox_failed:
                    verdicts[i] = Verdict(status="sandbox_error", detail=o.failure)
                elif o.killed_at_deadline:
                    verdicts[i] = Verdict(status="timeout", detail="request time budget exhausted")
                else:
                    verdicts[i] = Verdict(status="runtime_error",
                                          detail=f"the test runner ended early ({o.failure or _ended(o, stderr)}); "
                                                 "a program that kills its own sandbox loses the remaining tests")
            statuses = {v.status for v in verdicts} & RECYCLE_STATUSES
            if statuses:
                lease.recycle(sorted(statuses)[0])
        passed = sum(v.status == "passed" for v in verdicts)
        return EvaluateResult(status="sandbox_error" if sandbox_failed else "ok", passed=passed,
                              total=len(verdicts), verdicts=verdicts, wall_s=round(o.wall_s, 6),
                              isolation=self.isolation)


def _bind_start(cfg: SandboxConfig, launch, python: str, code: bytes) -> Callable[[int], _Sandbox]:
    return lambda ident: _start_sandbox(cfg, launch, python, code, ident)


def _ended(o: _Outcome, stderr: str) -> str:
    tail = stderr.strip()[-500:]
    return f"status {o.returncode}" + (f": {tail}" if tail else "")


def _parse_report(line: bytes):
    """A runner's result line. pydantic-core's parser is about twice as fast as json's on the
    large values HumanEval+ returns; json's takes what it refuses (lone surrogates)."""
    try:
        return pydantic_core.from_json(line)
    except ValueError:
        return json.loads(line)


def _without_expected(test) -> dict:
    """What the sandbox gets to see of a test: never the expected answer."""
    if isinstance(test, StdinTest):
        return {"type": "stdin", "input": test.input}
    if isinstance(test, CallTest):
        return {"type": "call", "entry_point": test.entry_point, "args": test.args}
    return {"type": "assert", "code": test.code}


def _judge(test, msg: dict) -> Verdict:
    status, wall, detail = msg.get("status"), float(msg.get("wall_s", 0.0)), str(msg.get("detail", ""))
    if status != "ok":
        if status not in ("failed", "timeout", "runtime_error", "memory_limit", "output_limit"):
            status, detail = "runtime_error", f"unexpected runner status {status!r}"
        return Verdict(status=status, wall_s=wall, detail=detail)
    if isinstance(test, StdinTest):
        if stdout_matches(msg.get("stdout", ""), test.output, test.atol):
            return Verdict(status="passed", wall_s=wall)
        return Verdict(status="failed", wall_s=wall, detail=_mismatch(msg.get("stdout", ""), test.output))
    if isinstance(test, CallTest):
        if "value" not in msg:
            return Verdict(status="runtime_error", wall_s=wall, detail="no value reported")
        try:
            if "expected" not in test.model_fields_set:
                return Verdict(status="passed", wall_s=wall, output=runner.plain(msg["value"]))
            value = runner.decode(msg["value"])
            expected = runner.decode(test.expected)
            alternatives = [runner.decode(a) for a in test.alternatives]
        except (ValueError, TypeError, KeyError, IndexError, OverflowError) as err:
            return Verdict(status="runtime_error", wall_s=wall, detail=f"undecodable value: {err}")
        if call_matches(value, expected, test.atol, test.compare, alternatives):
            return Verdict(status="passed", wall_s=wall)
        return Verdict(status="failed", wall_s=wall, detail=f"returned {_short(value)}, expected {_short(expected)}")
    return Verdict(status="passed", wall_s=wall)


def _short(value, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _mismatch(actual: str, expected: str) -> str:
    return f"stdout {_short(actual)} != expected {_short(expected)}"
