"""Runs programs and test batches in sandboxes: one sandbox start per request, whatever the
number of tests. Thread-safe; the service runs several requests at once through it."""

from __future__ import annotations

import json
import marshal
import os
import selectors
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

from lad.sandbox import runner
from lad.sandbox.compare import stdout_matches, values_match
from lad.sandbox.config import SandboxConfig
from lad.sandbox.isolation import WORKDIR, host_user, make_launcher
from lad.sandbox.models import (CallTest, EvaluateRequest, EvaluateResult, RunRequest, RunResult, StdinTest,
                                Verdict)

RUNNER_SOURCE = Path(runner.__file__).read_text()
_PY_FLAGS = ["-I", "-S", "-B"]  # isolated, no site-packages, no .pyc writes
# Reads the pipe: the runner's code object (argv[2] bytes, marshalled by the same interpreter),
# then the job; runs the runner as __main__ with the job's bytes in _JOB.
BOOTSTRAP = ("import marshal, os, sys\n"
             "with os.fdopen(int(sys.argv[1]), 'rb') as f:\n    d = f.read()\n"
             "n = int(sys.argv[2])\n"
             "exec(marshal.loads(d[:n]), {'__name__': '__main__', '__builtins__': __builtins__, '_JOB': d[n:]})\n")
_COMPILE = ("import marshal, sys\n"
            "sys.stdout.buffer.write(marshal.dumps(compile(sys.stdin.read(), 'lad-sandbox-runner', 'exec')))\n")


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


class _Outcome:
    def __init__(self) -> None:
        self.returncode: Optional[int] = None
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.overflow = False
        self.killed_at_deadline = False
        self.wall_s = 0.0


class Executor:
    def __init__(self, config: Optional[SandboxConfig] = None):
        self.config = config or SandboxConfig()
        self.python, self._launch = make_launcher(self.config)
        self._runner_code = _compiled_runner(self.python)

    @property
    def isolation(self) -> str:
        return self.config.isolation

    def self_check(self) -> None:
        """Run one trivial program; raise IsolationError with bwrap's own words when the sandbox
        cannot start here (no user namespaces, a seccomp profile that forbids mounts, ...)."""
        from lad.sandbox.isolation import IsolationError

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

    def _job(self, mode: str, code: str, timeout: float, memory_mb: int, workdir: str) -> dict:
        cfg = self.config
        return {"mode": mode, "code": code, "timeout_s": timeout, "cpu_s": timeout + 1,
                "memory_bytes": memory_mb << 20, "output_limit": cfg.output_limit_bytes,
                "value_limit": cfg.value_limit_bytes, "nproc": cfg.nproc,
                "nofile": cfg.nofile, "fsize": cfg.fsize_mb << 20, "workdir": workdir,
                "private_pids": self.isolation == "bwrap"}

    # ---- one sandbox ----------------------------------------------------------------------------
    def _execute(self, job: dict, stdin: bytes, deadline_s: float, stdout_cap: int) -> _Outcome:
        """Start one sandbox running the runner, feed it, collect its output until it ends or the
        deadline passes (then the whole sandbox is killed: bwrap's pid namespace dies with it)."""
        workdir = None
        if self.isolation == "none":
            workdir = tempfile.mkdtemp(prefix="lad-sandbox-")
            user = host_user(self.config)
            if user:
                os.chown(workdir, user["user"], user["group"])
            job["workdir"] = workdir
        job_r, job_w = os.pipe()
        try:
            cmd, popen_kw = self._launch([self.python, *_PY_FLAGS, "-c", BOOTSTRAP, str(job_r),
                                          str(len(self._runner_code))])
            out = _Outcome()
            start = time.monotonic()
            try:
                proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        pass_fds=(job_r,), close_fds=True, cwd=workdir or "/", **popen_kw)
            except OSError as err:
                out.returncode = -1
                out.stderr += f"cannot start the sandbox: {err}".encode()
                return out
            os.close(job_r)
            job_r = -1
            job_file = os.fdopen(job_w, "wb")
            job_w = -1  # owned by job_file now
            self._drive(proc, [(job_file, self._runner_code + marshal.dumps(job, 4)), (proc.stdin, stdin)],
                        start + deadline_s, stdout_cap, out)
            out.wall_s = time.monotonic() - start
            return out
        finally:
            for fd in (job_r, job_w):
                if fd >= 0:
                    os.close(fd)
            if workdir:
                shutil.rmtree(workdir, ignore_errors=True)

    def _drive(self, proc: subprocess.Popen, writes: list, deadline: float, stdout_cap: int,
               out: _Outcome) -> None:
        """Feed ``writes`` [(file, bytes)] and collect stdout/stderr until EOF or the deadline.
        Every file is closed through its object (a raw close here once closed another thread's
        freshly numbered pipe)."""
        sel = selectors.DefaultSelector()
        pending, files = {}, {}
        for f, data in writes:
            fd = f.fileno()
            os.set_blocking(fd, False)
            if data:
                pending[fd] = memoryview(data)
                files[fd] = f
                sel.register(fd, selectors.EVENT_WRITE)
            else:
                f.close()
        reads = {proc.stdout.fileno(): (out.stdout, stdout_cap), proc.stderr.fileno(): (out.stderr, self.config.output_limit_bytes)}
        for fd in reads:
            sel.register(fd, selectors.EVENT_READ)
        try:
            while sel.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    out.killed_at_deadline = True
                    break
                for key, _ in sel.select(remaining):
                    fd = key.fd
                    if fd in pending:
                        try:
                            n = os.write(fd, pending[fd][:1 << 16])
                            pending[fd] = pending[fd][n:]
                        except BlockingIOError:
                            continue
                        except OSError:  # the program closed its end
                            pending[fd] = pending[fd][:0]
                        if not len(pending[fd]):
                            sel.unregister(fd)
                            del pending[fd]
                            files.pop(fd).close()
                        continue
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:
                        sel.unregister(fd)
                        continue
                    buf, cap = reads[fd]
                    buf += chunk
                    if len(buf) > cap:
                        out.overflow = True
                if out.overflow:
                    break
        finally:
            for fd in list(pending):
                sel.unregister(fd)
            sel.close()
            if proc.poll() is None:
                proc.kill()
            out.returncode = proc.wait()
            for f in (*files.values(), proc.stdout, proc.stderr):
                try:
                    f.close()
                except OSError:  # BrokenPipeError flushing a buffered writer
                    pass

    # ---- API ------------------------------------------------------------------------------------
    def run(self, req: RunRequest) -> RunResult:
        timeout, memory = self._limits(req.timeout_s, req.memory_mb)
        job = self._job("run", req.code, timeout, memory, WORKDIR)
        cap = self.config.output_limit_bytes
        o = self._execute(job, req.stdin.encode(), timeout + self.config.grace_s, cap)
        stderr = o.stderr.decode("utf-8", "replace")
        truncated = o.overflow or len(o.stdout) > cap or len(o.stderr) > cap
        rc = o.returncode
        if o.overflow:
            status = "output_limit"
        elif o.killed_at_deadline or rc == runner.TIMEOUT_EXIT:
            status = "timeout"
        elif rc == 128 + 24:  # SIGXCPU: the CPU-seconds limit
            status = "timeout"
        elif rc == runner.MEMORY_EXIT or stderr.rstrip().endswith("MemoryError"):
            status = "memory_limit"
        elif rc == 128 + 25:  # SIGXFSZ
            status = "output_limit"
        elif rc == 1 and stderr.startswith("bwrap:") or rc is not None and rc < 0:
            status = "sandbox_error"
        elif rc == 0:
            status = "ok"
        else:
            status = "runtime_error"
        return RunResult(status=status, exit_code=rc, stdout=o.stdout[:cap].decode("utf-8", "replace"),
                         stderr=stderr[:cap], wall_s=round(o.wall_s, 6), truncated=truncated, isolation=self.isolation)

    def evaluate(self, req: EvaluateRequest) -> EvaluateResult:
        timeout, memory = self._limits(req.timeout_s, req.memory_mb)
        budget = min(self.config.max_request_s, timeout * len(req.tests) + self.config.grace_s)
        job = self._job("evaluate", req.code, timeout, memory, WORKDIR)
        job["budget_s"] = budget
        job["tests"] = [_without_expected(t) for t in req.tests]
        o = self._execute(job, b"", budget + self.config.grace_s, 1 << 62)
        reports: dict[int, dict] = {}
        for line in o.stdout.splitlines():
            try:
                msg = json.loads(line)
                reports[int(msg["i"])] = msg
            except (ValueError, KeyError, TypeError):
                continue
        stderr = o.stderr.decode("utf-8", "replace")
        sandbox_failed = not reports and (stderr.startswith("bwrap:") or (o.returncode or 0) < 0)
        verdicts = []
        for i, test in enumerate(req.tests):
            msg = reports.get(i)
            if msg is None:
                if sandbox_failed:
                    verdicts.append(Verdict(status="sandbox_error", detail=_sandbox_failure(o.returncode, stderr)))
                elif o.killed_at_deadline:
                    verdicts.append(Verdict(status="timeout", detail="request time budget exhausted"))
                else:
                    verdicts.append(Verdict(status="runtime_error",
                                            detail=f"the test runner ended early (exit {o.returncode}); "
                                                   "a program that kills its own sandbox loses the remaining tests"))
                continue
            verdicts.append(_judge(test, msg))
        passed = sum(v.status == "passed" for v in verdicts)
        return EvaluateResult(status="sandbox_error" if sandbox_failed else "ok", passed=passed,
                              total=len(verdicts), verdicts=verdicts, wall_s=round(o.wall_s, 6),
                              isolation=self.isolation)


def _sandbox_failure(returncode: Optional[int], stderr: str) -> str:
    if returncode is not None and returncode < 0:
        return (f"the sandbox was killed by signal {-returncode} before it reported "
                f"(out of memory on the host?) {stderr.strip()[-1000:]}").strip()
    return stderr.strip()[-2000:]


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
        if "expected" not in test.model_fields_set:
            return Verdict(status="passed", wall_s=wall, output=msg["value"])
        try:
            value = runner.decode(msg["value"])
            expected = runner.decode(test.expected)
        except (ValueError, TypeError, KeyError) as err:
            return Verdict(status="runtime_error", wall_s=wall, detail=f"undecodable value: {err}")
        if values_match(value, expected, test.atol):
            return Verdict(status="passed", wall_s=wall)
        return Verdict(status="failed", wall_s=wall, detail=f"returned {_short(value)}, expected {_short(expected)}")
    return Verdict(status="passed", wall_s=wall)


def _short(value, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _mismatch(actual: str, expected: str) -> str:
    return f"stdout {_short(actual)} != expected {_short(expected)}"
