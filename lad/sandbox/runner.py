"""The process that runs inside each sandbox. Standard library only: it is handed to the sandboxed
interpreter as ``python -I -S -B -c <this file>`` and must not import lad.

Two modes, chosen by the job (JSON) the executor writes into the pipe whose fd is argv[1]:

- ``run``: set the resource limits, then execute the program in this very interpreter as
  ``__main__`` (stdin, stdout and stderr are the executor's pipes). One interpreter start.
- ``evaluate``: run a list of tests against the program and write one JSON line per test on
  stdout. Call and assert tests run in one forked child that loads the program once; each stdin
  test runs in its own forked child. The runner enforces the per-test time limit and the output
  cap and kills every leftover process of a test before the next one starts.

Nothing secret ever enters the sandbox: expected outputs stay with the executor, which compares
the values and stdout reported here. A hostile program can kill or confuse this runner, but it
cannot learn what the right answers are.
"""

import base64
import builtins
import json
import math
import os
import resource
import select
import signal
import sys
import time
import traceback

MEMORY_EXIT = 120  # exit status a child uses to say "MemoryError"


# ---- values crossing the sandbox boundary: JSON with tags for the non-JSON builtins ----------

_NO_TAG = {str, bool, type(None)}


def _plain_scalars(items):
    """True when every item is already its own JSON encoding (checked at C speed: outputs of
    hundreds of MB occur in HumanEval+)."""
    types = set(map(type, items))
    if not types <= _NO_TAG | {int, float}:
        return False
    if int in types or float in types:
        numbers = [v for v in items if type(v) is int or type(v) is float] if len(types) > 1 else items
        if float in types and not all(map(math.isfinite, numbers)):
            return False
        if int in types and numbers and (max(numbers) >= 2 ** 53 or min(numbers) <= -2 ** 53):
            return False
    return True


def encode(value, depth=0):
    """Exact builtin types only, so a returned object cannot smuggle a custom __eq__ out."""
    if depth > 100:
        raise ValueError("value nested deeper than 100 levels")
    t = type(value)
    if value is None or t is bool or t is str:
        return value
    if t is int:
        # hex: decimal conversion of huge ints is capped (sys.set_int_max_str_digits), hex is not
        return value if abs(value) < 2 ** 53 else {"__int__": hex(value)}
    if t is float:
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if t is list:
        if _plain_scalars(value):
            return value
        return [encode(v, depth + 1) for v in value]
    if t is tuple:
        return {"__tuple__": [encode(v, depth + 1) for v in value]}
    if t is set or t is frozenset:
        return {"__set__": [encode(v, depth + 1) for v in value]}
    if t is dict:
        if all(type(k) is str and not k.startswith("__") for k in value):
            return {k: encode(v, depth + 1) for k, v in value.items()}
        return {"__dict__": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if t is bytes:
        return {"__bytes__": base64.b64encode(value).decode()}
    if t is complex:
        return {"__complex__": [encode(value.real), encode(value.imag)]}
    raise TypeError("cannot report a value of type %s" % t.__name__)


def decode(obj):
    if isinstance(obj, list):
        if not {list, dict} & set(map(type, obj)):
            return obj
        return [decode(v) for v in obj]
    if isinstance(obj, dict):
        if len(obj) == 1:
            (tag, v), = obj.items()
            if tag == "__tuple__":
                return tuple(decode(x) for x in v)
            if tag == "__set__":
                return set(decode(x) for x in v)
            if tag == "__dict__":
                return {decode(k): decode(x) for k, x in v}
            if tag == "__bytes__":
                return base64.b64decode(v)
            if tag == "__complex__":
                return complex(decode(v[0]), decode(v[1]))
            if tag == "__int__":
                return int(v, 16)
            if tag == "__float__":
                return float(v)
        return {k: decode(v) for k, v in obj.items()}
    return obj


# ---- limits ------------------------------------------------------------------------------------

def _limit(which, value):
    try:
        resource.setrlimit(which, (value, value))
    except (ValueError, OSError):
        # a hard limit already below the request (set by the container) stays as it is
        soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY and hard < value:
            resource.setrlimit(which, (hard, hard))


def sandbox_limits(job):
    """Limits for the whole sandbox, set once in the runner and inherited by every child.
    RLIMIT_NPROC counts the processes of this user namespace: the executor starts every sandbox
    as a non-root user on the host, so the kernel enforces it (it would not bind root)."""
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_NPROC, job["nproc"])
    _limit(resource.RLIMIT_NOFILE, job["nofile"])
    _limit(resource.RLIMIT_FSIZE, job["fsize"])


def program_limits(job, cpu_s):
    _limit(resource.RLIMIT_AS, job["memory_bytes"])
    _limit(resource.RLIMIT_CPU, max(1, int(math.ceil(cpu_s))))


def _describe(exc):
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()[-2000:]


def _fresh_main():
    import types
    module = types.ModuleType("__main__")
    module.__builtins__ = builtins
    sys.modules["__main__"] = module
    return module.__dict__


# ---- mode "run": become the program ------------------------------------------------------------

def run_mode(job):
    sandbox_limits(job)
    program_limits(job, job["cpu_s"])
    code = job["code"]
    del job
    try:
        compiled = compile(code, "<program>", "exec")
        exec(compiled, _fresh_main())
    except MemoryError:
        _flush()
        os.write(2, b"MemoryError\n")
        os._exit(MEMORY_EXIT)
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        _flush()
        os._exit(1)


# ---- mode "evaluate" ---------------------------------------------------------------------------

def _send(msg):
    sys.stdout.write(json.dumps(msg, allow_nan=True) + "\n")
    sys.stdout.flush()


def _sweep():
    """Kill every process of this sandbox except pid 1 (bwrap's init) and this runner, so nothing
    a test started in the background survives into the next test."""
    me = os.getpid()
    for _ in range(50):
        others = []
        try:
            names = os.listdir("/proc")
        except OSError:
            return
        for name in names:
            if name.isdigit() and int(name) not in (1, me):
                others.append(int(name))
        if not others:
            return
        for pid in others:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        _reap()
        time.sleep(0.002)


def _reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _child_stdio(stdin_fd, out_w, err_w, first_free):
    os.dup2(stdin_fd, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.closerange(first_free, 1 << 20)


def _flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass


class Child:
    """A forked child with captured stdout/stderr (capped) and an optional result pipe."""

    def __init__(self, target, stdin_bytes, cap, with_results, result_cap=0):
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        res_r, res_w = os.pipe() if with_results else (None, None)
        pid = os.fork()
        if pid == 0:
            try:
                os.close(in_w)
                os.close(out_r)
                os.close(err_r)
                if res_r is not None:
                    os.close(res_r)
                    os.dup2(res_w, 3)
                _child_stdio(in_r, out_w, err_w, 4 if res_r is not None else 3)
                sys.stdin = open(0, "r", encoding="utf-8", closefd=False)
                sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
                sys.stderr = open(2, "w", encoding="utf-8", closefd=False)
                target()
            except MemoryError:
                _flush()
                os._exit(MEMORY_EXIT)
            except SystemExit as exc:
                code = exc.code
                if code is not None and not isinstance(code, int):
                    print(code, file=sys.stderr)
                    code = 1
                _flush()
                os._exit((code or 0) & 0xFF)
            except BaseException:
                try:
                    traceback.print_exc()
                except BaseException:
                    pass
                _flush()
                os._exit(1)
            _flush()
            os._exit(0)
        self.pid = pid
        os.close(in_r)
        os.close(out_w)
        os.close(err_w)
        if res_w is not None:
            os.close(res_w)
        self.cap = cap
        self.result_cap = result_cap
        self.stdin = stdin_bytes
        self.in_w = in_w
        os.set_blocking(in_w, False)
        if not stdin_bytes:
            os.close(in_w)
            self.in_w = None
        self.bufs = {out_r: bytearray(), err_r: bytearray()}
        self.out_r, self.err_r, self.res_r = out_r, err_r, res_r
        if res_r is not None:
            self.bufs[res_r] = bytearray()
        self.open = set(self.bufs)
        self.overflow = False
        self.status = None

    def pump(self, timeout):
        """Move bytes for up to ``timeout`` seconds; returns when something arrived or time is up."""
        wlist = [self.in_w] if self.in_w is not None else []
        if not self.open and not wlist:
            time.sleep(min(timeout, 0.001))
            return
        try:
            r, w, _ = select.select(list(self.open), wlist, [], max(0.0, timeout))
        except InterruptedError:
            return
        if w:
            try:
                n = os.write(self.in_w, self.stdin[:65536])
                self.stdin = self.stdin[n:]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:  # the program closed its stdin
                self.stdin = b""
            if not self.stdin:
                os.close(self.in_w)
                self.in_w = None
        for fd in r:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                self.open.discard(fd)
                continue
            buf = self.bufs[fd]
            buf += chunk
            limit = self.result_cap if fd == self.res_r else self.cap
            if len(buf) > limit:
                self.overflow = True

    def take_lines(self):
        buf = self.bufs[self.res_r]
        lines = []
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                return lines
            lines.append(bytes(buf[:nl]))
            del buf[:nl + 1]

    def finished(self):
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.status = status
        return self.status is not None and not self.open

    def kill(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
        except OSError:
            pass
        if self.status is None:
            _, self.status = os.waitpid(self.pid, 0)
        self.close()

    def close(self):
        for fd in list(self.bufs) + ([self.in_w] if self.in_w is not None else []):
            try:
                os.close(fd)
            except OSError:
                pass
        self.in_w = None
        self.open = set()

    def text(self, fd):
        return bytes(self.bufs[fd][:self.cap]).decode("utf-8", "replace")


def _exit_verdict(status, stderr_text):
    """(status, detail) for a child that ended on its own."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU:
            return "timeout", "CPU time limit exceeded"
        if sig == signal.SIGXFSZ:
            return "output_limit", "file size limit exceeded"
        return "runtime_error", "killed by signal %s" % signal.Signals(sig).name
    code = os.WEXITSTATUS(status)
    if code == MEMORY_EXIT or stderr_text.rstrip().endswith("MemoryError"):
        return "memory_limit", "MemoryError"
    if code != 0:
        tail = stderr_text.strip().splitlines()[-1:] or [""]
        return "runtime_error", ("exit status %d: %s" % (code, tail[0]))[:2000]
    return "ok", ""


def _stdin_test(job, test):
    def target():
        program_limits(job, job["timeout_s"] + 1)
        compiled = compile(job["code"], "<program>", "exec")
        exec(compiled, _fresh_main())
        sys.stdout.flush()

    start = time.monotonic()
    child = Child(target, test.get("input", "").encode(), job["output_limit"], False)
    deadline = min(start + job["timeout_s"], job["_budget_end"])
    verdict = None
    while not child.finished():
        now = time.monotonic()
        if child.overflow:
            verdict = ("output_limit", "output exceeded %d bytes" % job["output_limit"])
            break
        if now >= deadline:
            verdict = ("timeout", "exceeded %.3g s" % job["timeout_s"] if now < job["_budget_end"]
                       else "request time budget exhausted")
            break
        child.pump(deadline - now)
    wall = time.monotonic() - start
    if verdict is None and child.overflow:
        verdict = ("output_limit", "output exceeded %d bytes" % job["output_limit"])
    if verdict is not None:
        child.kill()
        status, detail = verdict
    else:
        stderr_text = child.text(child.err_r)
        status, detail = _exit_verdict(child.status, stderr_text)
    msg = {"status": status, "wall_s": round(wall, 6), "detail": detail,
           "stdout": child.text(child.out_r) if status == "ok" else ""}
    child.close()
    _sweep()
    return msg


def _function_worker(job, indices):
    """Child body: load the program once, then run each call/assert test, one JSON line each."""
    tests = job["tests"]
    code = job["code"]
    out = os.fdopen(3, "w")
    del job
    namespace = {"__name__": "__sandbox__", "__builtins__": builtins}
    exec(compile(code, "<program>", "exec"), namespace)
    out.write('{"ready": true}\n')
    out.flush()
    for i in indices:
        test = tests[i]
        msg = {"i": i}
        try:
            if test["type"] == "call":
                fn = namespace.get(test["entry_point"])
                if fn is None:
                    raise NameError("the program defines no %r" % test["entry_point"])
                msg["value"] = encode(fn(*decode(test["args"])))
            else:
                exec(compile(test["code"], "<test>", "exec"), dict(namespace))
            msg["status"] = "ok"
        except MemoryError:
            msg["status"] = "memory_limit"
            msg["detail"] = "MemoryError"
        except AssertionError as exc:
            msg["status"] = "failed"
            msg["detail"] = _describe(exc)
        except BaseException as exc:
            msg["status"] = "runtime_error"
            msg["detail"] = _describe(exc)
        try:
            line = json.dumps(msg, allow_nan=True)
        except (TypeError, ValueError) as exc:
            line = json.dumps({"i": i, "status": "runtime_error", "detail": _describe(exc)})
        out.write(line + "\n")
        out.flush()


def _function_tests(job, indices, results):
    """Run call/assert tests batched in one child; restart it after a timeout or a crash."""
    pending = list(indices)
    while pending:
        if time.monotonic() >= job["_budget_end"]:
            for i in pending:
                results[i] = {"status": "timeout", "wall_s": 0.0, "detail": "request time budget exhausted"}
            return
        batch = list(pending)
        child = Child(lambda: (program_limits(job, job["timeout_s"] * len(batch) + 1),
                               _function_worker(job, batch)),
                      b"", job["output_limit"], True, job["value_limit"])
        loaded = False
        started = time.monotonic()
        deadline = min(started + job["timeout_s"], job["_budget_end"])
        failure = None
        while True:
            for line in child.take_lines():
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                now = time.monotonic()
                if msg.get("ready") is True and not loaded:
                    loaded = True
                elif loaded and pending and msg.get("i") == pending[0]:
                    i = pending.pop(0)
                    entry = {"status": msg.get("status", "runtime_error"), "wall_s": round(now - started, 6),
                             "detail": str(msg.get("detail", ""))[:2000]}
                    if "value" in msg:
                        entry["value"] = msg["value"]
                    results[i] = entry
                else:
                    continue
                started = now
                deadline = min(now + job["timeout_s"], job["_budget_end"])
            if not pending:
                break
            if child.finished():
                break
            now = time.monotonic()
            if child.overflow:
                failure = ("output_limit", "output or returned value exceeded %d / %d bytes"
                           % (job["output_limit"], job["value_limit"]))
                break
            if now >= deadline:
                failure = ("timeout", "exceeded %.3g s" % job["timeout_s"] if now < job["_budget_end"]
                           else "request time budget exhausted")
                break
            child.pump(deadline - now)
        if failure is None and pending:
            if child.status is None:
                child.kill()
            failure = _exit_verdict(child.status, child.text(child.err_r))
            if failure[0] == "ok":
                failure = ("runtime_error", "the program ended the test process")
        else:
            child.kill()
        child.close()
        _sweep()
        if failure is None or not pending:
            continue
        wall = round(time.monotonic() - started, 6)
        if not loaded:
            # the program itself fails to load: every remaining test would fail the same way
            for i in pending:
                results[i] = {"status": failure[0], "wall_s": wall, "detail": "while loading the program: " + failure[1]}
            return
        results[pending.pop(0)] = {"status": failure[0], "wall_s": wall, "detail": failure[1]}


def evaluate_mode(job):
    sandbox_limits(job)
    job["_budget_end"] = time.monotonic() + job["budget_s"]
    tests = job["tests"]
    results = [None] * len(tests)
    function_idx = [i for i, t in enumerate(tests) if t["type"] in ("call", "assert")]
    if function_idx:
        _function_tests(job, function_idx, results)
    for i, test in enumerate(tests):
        if test["type"] == "stdin":
            if time.monotonic() >= job["_budget_end"]:
                results[i] = {"status": "timeout", "wall_s": 0.0, "detail": "request time budget exhausted"}
            else:
                results[i] = _stdin_test(job, test)
    for i, r in enumerate(results):
        r["i"] = i
        _send(r)


def main():
    with os.fdopen(int(sys.argv[1]), "rb") as f:  # the job pipe's fd, passed by the executor
        job = json.loads(f.read())
    os.chdir(job.get("workdir", "/tmp"))
    if job["mode"] == "run":
        run_mode(job)
    else:
        evaluate_mode(job)


if __name__ == "__main__":
    main()
