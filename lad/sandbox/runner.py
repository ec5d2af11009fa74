"""The process that runs inside each sandbox. Standard library only: it is handed to the sandboxed
interpreter (compiled once by that interpreter, handed over marshalled) and must not import lad.

It is a zygote: pid 1 of a long-lived sandbox, with its modules imported and its limits set
once. The executor sends it one job at a time over the control socket (the job's own pipes
arrive with it as SCM_RIGHTS: the job itself, stdin, stdout, stderr) and it runs the job in
this process's children:

- ``run``: fork the program as ``__main__`` with the job's stdin, stdout and stderr.
- ``evaluate``: run a list of tests against the program and write one JSON line per test on
  the job's stdout as soon as it is known. Call and assert tests run in one forked child that
  loads the program once; each stdin test runs in its own forked child. The runner enforces the
  per-test time limit and the output cap and kills every leftover process of a test before the
  next one starts. Anything written to the job pipe after the job asks it to stop early.

After each job the zygote reports the job's status, then restores a clean sandbox: it kills
every other process (as pid 1, kill(-1) reaches all of them), empties the writable tmpfs mounts,
removes SysV IPC objects, clears the per-namespace keyrings, and checks that all of this, its
own resource limits and scheduling included, is as it was at start, and reports that verdict.
The executor sends no further job before the verdict, and recycles the sandbox when the check
failed.

The zygote stays out of the programs' reach: it is pid 1 (the kernel drops the signals a
program sends it, and it installs no handler), non-dumpable (no ptrace, no /proc/1/mem or fd),
and every child closes the control socket. Nothing secret ever enters the sandbox: expected
outputs stay with the executor, which compares the values and stdout reported here. Children
are forked from the zygote and so inherit its memory, which can still hold the earlier jobs'
code and inputs; those are not secret either.
"""

# Only modules that import nothing heavy: json, base64, signal and traceback pull in re and enum,
# which tripled the sandbox's start-up time. The job arrives marshalled (trusted data from the
# executor); results leave as JSON written by _dump (the executor parses them with json).
import _signal
import _socket
import array
import binascii
import gc as _gc
import builtins
import itertools
import marshal
import math
import os
import resource
import select
import sys
import time
from _json import encode_basestring_ascii as _quote
from _json import make_encoder as _c_make_encoder

MEMORY_EXIT = 120  # exit status a child uses to say "MemoryError"
TIMEOUT_EXIT = 124  # the runner's exit status when the program ran out of wall-clock time (as timeout(1))
RUNNER_FAILED = 125  # the job's status when the runner itself failed on it
SIGINT, SIGKILL, SIGXCPU, SIGXFSZ = 2, 9, 24, 25
CTL_FD, NULL_FD = 3, 4  # the zygote's control socket and /dev/null; every fd above is a job's


def _no_default(obj):
    raise TypeError("cannot write %s as JSON" % type(obj).__name__)


# json's own C encoder, without importing json: str keys only, floats finite (encode() tags the
# others), no circular check (encode() returns a tree)
_C_ENCODER = _c_make_encoder(None, _no_default, _quote, None, ":", ",", False, False, True)


def _dump(obj):
    """JSON text of plain data, as encode() returns it."""
    return "".join(_C_ENCODER(obj, 0))


# ---- values crossing the sandbox boundary: JSON with tags for the non-JSON builtins ----------

_NO_TAG = {str, bool, type(None)}


def _plain_scalars(items):
    """True when every item is already its own JSON encoding (checked at C speed: outputs of
    hundreds of MB occur in HumanEval+)."""
    types = set(map(type, items))
    if not types <= _NO_TAG | {int, float}:
        return False
    if int in types or float in types:
        numbers = items if types <= {int, float} else [v for v in items if type(v) is int or type(v) is float]
        try:
            if float in types and not all(map(math.isfinite, numbers)):
                return False
        except OverflowError:  # an int beyond the float range: tagged one by one
            return False
        if int in types and numbers and (max(numbers) >= 2 ** 53 or min(numbers) <= -2 ** 53):
            return False
    return True


F64_MIN_LENGTH = 256  # lists of floats at least this long leave the sandbox as raw doubles
_IS_INT = {int: True, float: False}.__getitem__


def _doubles(value):
    """A long list of floats (ints allowed, when a double holds them exactly) as
    {"__f64__": [base64 of the doubles, positions of the ints]}, or None. Formatting floats as
    text is the slowest part of sending a value (HumanEval+ returns lists of millions); copying
    the doubles is not. NaN and infinities need no tag this way."""
    types = set(map(type, value))
    if float not in types or not types <= {int, float}:
        return None
    ints = list(itertools.compress(range(len(value)), map(_IS_INT, map(type, value)))) if int in types else []
    if any(not -2 ** 53 < value[i] < 2 ** 53 for i in ints):
        return None
    data = array.array("d", value).tobytes()
    return {"__f64__": [binascii.b2a_base64(data, newline=False).decode(), ints]}


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
        if len(value) >= F64_MIN_LENGTH:
            packed = _doubles(value)
            if packed is not None:
                return packed
        if _plain_scalars(value):
            return value
        return [encode(v, depth + 1) for v in value]
    if t is tuple:
        return {"__tuple__": [encode(v, depth + 1) for v in value]}
    if t is set:
        return {"__set__": [encode(v, depth + 1) for v in value]}
    if t is frozenset:  # its own tag: a set of frozensets must decode to something hashable inside
        return {"__frozenset__": [encode(v, depth + 1) for v in value]}
    if t is dict:
        if all(type(k) is str and not k.startswith("__") for k in value):
            return {k: encode(v, depth + 1) for k, v in value.items()}
        return {"__dict__": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if t is bytes:
        return {"__bytes__": binascii.b2a_base64(value, newline=False).decode()}
    if t is complex:
        return {"__complex__": [encode(value.real), encode(value.imag)]}
    if t.__module__ == "re" and t.__name__ == "Match":
        # compared through what it matched: where, and the text
        return {"__match__": [encode(value.start()), encode(value.end()), encode(value.group(), depth + 1)]}
    # Subclasses of the containers (Counter, OrderedDict, defaultdict, namedtuple, ...) compare
    # equal to their base type in the checking code's `out == expected`; they leave as that type,
    # read through the base type's own methods, so no method of the subclass decides what leaves.
    for base, items in _CONTAINERS:
        if isinstance(value, base):
            return encode(base(items(value)), depth)
    raise TypeError("cannot report a value of type %s" % t.__name__)


_CONTAINERS = ((dict, dict.items), (list, list.__iter__), (tuple, tuple.__iter__), (set, set.__iter__),
               (frozenset, frozenset.__iter__))


class Matched:
    """A returned re.Match as it crosses the boundary: equal to another with the same span and text."""

    __slots__ = ("span", "group")

    def __init__(self, span, group):
        self.span, self.group = span, group

    def __eq__(self, other):
        return type(other) is Matched and (self.span, self.group) == (other.span, other.group)

    def __hash__(self):
        return hash((self.span, self.group))

    def __repr__(self):
        return "<re.Match object; span=%r, match=%r>" % (self.span, self.group)


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
            if tag == "__frozenset__":
                return frozenset(decode(x) for x in v)
            if tag == "__match__":
                return Matched((decode(v[0]), decode(v[1])), decode(v[2]))
            if tag == "__dict__":
                return {decode(k): decode(x) for k, x in v}
            if tag == "__bytes__":
                return binascii.a2b_base64(v)
            if tag == "__complex__":
                return complex(decode(v[0]), decode(v[1]))
            if tag == "__int__":
                return int(v, 16)
            if tag == "__float__":
                return float(v)
            if tag == "__f64__":
                return _unpack_doubles(v)
        return {k: decode(v) for k, v in obj.items()}
    return obj


def _unpack_doubles(v):
    data, ints = v
    values = array.array("d", binascii.a2b_base64(data)).tolist()
    for i in ints:
        values[i] = int(values[i])
    return values


def plain(obj):
    """A reported value with its raw doubles (see _doubles) back as a JSON list, every other tag
    kept: what a call test without ``expected`` records."""
    if isinstance(obj, list):
        if not {list, dict} & set(map(type, obj)):
            return obj
        return [plain(v) for v in obj]
    if isinstance(obj, dict):
        if len(obj) == 1 and "__f64__" in obj:
            values = _unpack_doubles(obj["__f64__"])
            if all(map(math.isfinite, values)):
                return values
            return [encode(v) for v in values]  # JSON has no NaN or infinity: their tags
        return {k: plain(v) for k, v in obj.items()}
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


_LIBC = {}


def _c_function(name):
    """A libc function taking and returning C longs (None when there is no such symbol). Called
    through _ctypes directly because importing ctypes costs more than the rest of the start-up."""
    if name not in _LIBC:
        try:
            import _ctypes

            class _Long(_ctypes._SimpleCData):
                _type_ = "l"

            class _Fn(_ctypes.CFuncPtr):
                _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
                _restype_ = _Long

            _LIBC[name] = _Fn(_ctypes.dlsym(_ctypes.dlopen(None), name))
        except (ImportError, OSError, AttributeError):  # not Linux/glibc
            _LIBC[name] = None
    return _LIBC[name]


def _errno():
    import _ctypes
    return _ctypes.get_errno()


def _not_dumpable():
    """prctl(PR_SET_DUMPABLE, 0): the programs run as the same uid as this runner; this stops
    them from ptracing it or reading its /proc/<pid>/{mem,fd,environ}."""
    prctl = _c_function("prctl")
    if prctl is not None:
        prctl(4, 0)  # PR_SET_DUMPABLE = 4


def sandbox_limits(init):
    """Limits for the whole sandbox, set once in the zygote and inherited by every child.
    RLIMIT_NPROC counts the processes of this user namespace: the executor starts every sandbox
    as a non-root user on the host, so the kernel enforces it (it would not bind root). Without a
    sandbox (isolation "none", trusted code only) it would count every process of the host user,
    other sandboxes' included, and fail forks at random: it is left unset there. POSIX
    message queues live in the ipc namespace, where nothing can list them for removal: a zero
    RLIMIT_MSGQUEUE keeps programs from creating any."""
    _not_dumpable()
    _limit(resource.RLIMIT_CORE, 0)
    if init["private"]:
        _limit(resource.RLIMIT_NPROC, init["nproc"])
    _limit(resource.RLIMIT_NOFILE, init["nofile"])
    _limit(resource.RLIMIT_FSIZE, init["fsize"])
    _limit(resource.RLIMIT_MSGQUEUE, 0)


def program_limits(job, cpu_s):
    _limit(resource.RLIMIT_AS, job["memory_bytes"])
    _limit(resource.RLIMIT_CPU, max(1, int(math.ceil(cpu_s))))


def _describe(exc):
    try:
        text = "%s: %s" % (type(exc).__name__, exc) if str(exc) else type(exc).__name__
    except BaseException:  # a hostile __str__
        text = type(exc).__name__
    return text[-2000:]


def _print_traceback():
    import traceback  # only on the error path: it is slow to import
    traceback.print_exc()


_STREAMS = ()  # sys.stdin, stdout and stderr of every child, made once by the zygote


def _std_streams():
    """Text streams over fds 0, 1 and 2. Made once: making them in every child was a third of
    its copy-on-write faults. Made while those fds are a pipe, as every job's are, so that
    they describe one (not seekable); the zygote never uses them, so their buffers are empty
    at every fork, and each child writes only to its own copy."""
    r, w = os.pipe()
    os.dup2(r, 0)
    os.dup2(w, 1)
    os.dup2(w, 2)
    os.close(r)
    os.close(w)
    return (open(0, "r", encoding="utf-8", closefd=False), open(1, "w", encoding="utf-8", closefd=False),
            open(2, "w", encoding="utf-8", closefd=False))


def _fresh_main():
    module = type(sys)("__main__")
    module.__builtins__ = builtins
    sys.modules["__main__"] = module
    return module.__dict__


# ---- mode "run": become the program ------------------------------------------------------------

def _exit_status(status):
    """The runner's own exit code for a child's wait status (128 + signal, as shells do)."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _wait(pid, timeout):
    """Wait status of ``pid``, or None when it is still running after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return status
            left = end - time.monotonic()
            if left <= 0:
                return None
            if fd is not None:
                select.select([fd], [], [], left)
            else:
                time.sleep(min(left, 0.002))
    finally:
        if fd is not None:
            os.close(fd)


def run_mode(job):
    """Fork the program (its stdio are the job's pipes), enforce the wall-clock limit, sweep
    whatever it left running; the job's status is the program's (TIMEOUT_EXIT when it ran out
    of time)."""
    code = job["code"]
    pid = os.fork()
    if pid == 0:
        try:
            os.setpgid(0, 0)
            os.closerange(3, 1 << 20)  # the control socket and the job pipe stay with the zygote
            sys.stdin, sys.stdout, sys.stderr = _STREAMS
            program_limits(job, job["cpu_s"])
            del job
            exec(compile(code, "<program>", "exec"), _fresh_main())
        except MemoryError:
            _flush()
            os.write(2, b"MemoryError\n")
            os._exit(MEMORY_EXIT)
        except SystemExit as exc:
            _flush()
            os._exit(_system_exit_code(exc))
        except BaseException:
            _print_traceback()
            _flush()
            os._exit(1)
        _flush()
        os._exit(0)
    status = _wait(pid, job["timeout_s"])
    _kill_group(pid)  # what the program left in its group, and the program itself on timeout
    if status is None:
        os.waitpid(pid, 0)
    _sweep()
    return TIMEOUT_EXIT if status is None else _exit_status(status)


def _system_exit_code(exc):
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=sys.stderr)
    except BaseException:
        pass
    return 1


# ---- mode "evaluate" ---------------------------------------------------------------------------

def _report(i, r):
    """One result line for the executor. Parts a test child produced arrive as JSON text and are
    passed through unparsed (detail_json, value_json)."""
    parts = ['"i":%d' % i, '"status":' + _quote(r["status"]), '"wall_s":' + float.__repr__(float(r["wall_s"])),
             '"detail":' + (r["detail_json"] if "detail_json" in r else _quote(r.get("detail", "")))]
    if r.get("value_json"):
        parts.append('"value":' + r["value_json"])
    if "stdout" in r:
        parts.append('"stdout":' + _quote(r["stdout"]))
    _REPORTS.append("{" + ",".join(parts) + "}\n")


_REPORTS = []  # result lines not yet written: flushed whenever the runner is about to wait
_PRIVATE_PIDS = False  # set at start: True only inside the sandbox's own pid namespace
_JOB_FD = -1  # the job's pipe: after the job itself, any byte (or EOF) asks the runner to stop
_STOP = False


def _flush_reports():
    """Write the pending result lines to the job's stdout, so the executor judges each test
    while the next ones run. A reader that went away only loses them."""
    if not _REPORTS:
        return
    data = "".join(_REPORTS).encode()
    del _REPORTS[:]
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(1, view):]
    except OSError:
        pass


def _check_stop(readable):
    global _STOP
    if _JOB_FD in readable:
        _STOP = True


def _kill_group(pid):
    """SIGKILL a child's process group (each child leads its own), or the child alone."""
    try:
        os.killpg(pid, SIGKILL)
    except OSError:
        try:
            os.kill(pid, SIGKILL)
        except OSError:
            pass


def _kill_everything():
    """As pid 1 of the sandbox's pid namespace, kill(-1) reaches every other process in it.
    Every process of the namespace descends from pid 1 (orphans are re-parented to it), so
    once it has no children left there are no other processes."""
    end = time.monotonic() + 2.0
    while True:
        try:
            os.kill(-1, SIGKILL)
        except OSError:
            pass
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return True
            if pid == 0:
                break
        if time.monotonic() > end:
            return False
        time.sleep(0.0005)


def _sweep():
    """Kill every process of this sandbox except this runner, so nothing a test or program
    started in the background survives into the next one. Without a private pid namespace
    (isolation none) kill(-1) would reach the host user's processes: then only reap."""
    if _PRIVATE_PIDS:
        _kill_everything()
    else:
        _reap()


def _reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _widen(fd):
    """A 1 MiB pipe buffer for the results: multi-megabyte values cross in a few reads."""
    try:
        import fcntl
        fcntl.fcntl(fd, 1031, 1 << 20)  # F_SETPIPE_SZ
    except (ImportError, OSError):
        pass


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
        if res_r is not None:
            _widen(res_r)
        pid = os.fork()
        if pid == 0:
            try:
                os.setpgid(0, 0)
                os.close(in_w)
                os.close(out_r)
                os.close(err_r)
                if res_r is not None:
                    os.close(res_r)
                    os.dup2(res_w, 3)
                _child_stdio(in_r, out_w, err_w, 4 if res_r is not None else 3)
                sys.stdin, sys.stdout, sys.stderr = _STREAMS
                target()
            except MemoryError:
                _flush()
                os._exit(MEMORY_EXIT)
            except SystemExit as exc:
                _flush()
                os._exit(_system_exit_code(exc))
            except BaseException:
                try:
                    _print_traceback()
                except BaseException:
                    pass
                _flush()
                os._exit(1)
            _flush()
            os._exit(0)
        self.pid = pid
        try:  # readable once the child exits: a wait for its output also wakes on its end
            self.pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self.pidfd = None
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
        """Move bytes for up to ``timeout`` seconds; returns when something arrived, the executor
        asked to stop, or time is up."""
        _flush_reports()
        wlist = [self.in_w] if self.in_w is not None else []
        rlist = list(self.open)
        if not rlist and not wlist and self.pidfd is None:
            time.sleep(min(timeout, 0.001))  # output closed, the child not reaped yet: poll
            return
        if self.pidfd is not None and self.status is None:
            rlist.append(self.pidfd)
        if _JOB_FD >= 0 and not _STOP:
            rlist.append(_JOB_FD)
        try:
            r, w, _ = select.select(rlist, wlist, [], max(0.0, timeout))
        except InterruptedError:
            return
        _check_stop(r)
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
            if fd == _JOB_FD or fd == self.pidfd:
                continue
            chunk = os.read(fd, 1 << 20)
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
        _kill_group(self.pid)
        if self.status is None:
            _, self.status = os.waitpid(self.pid, 0)
        self.close()

    def close(self):
        _kill_group(self.pid)  # background processes the test left in its group
        extra = [fd for fd in (self.in_w, self.pidfd) if fd is not None]
        self.pidfd = None
        for fd in list(self.bufs) + extra:
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
        if sig == SIGXCPU:
            return "timeout", "CPU time limit exceeded"
        if sig == SIGXFSZ:
            return "output_limit", "file size limit exceeded"
        return "runtime_error", "killed by signal %d" % sig
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
    """Child body: load the program once, then run each call/assert test. One line per test:
    ``i<TAB>status<TAB>detail as JSON<TAB>value as JSON (or empty)``."""
    tests = job["tests"]
    code = job["code"]
    out = os.fdopen(3, "w")
    del job
    namespace = {"__name__": "__sandbox__", "__builtins__": builtins}
    exec(compile(code, "<program>", "exec"), namespace)
    out.write("ready\n")
    out.flush()
    for i in indices:
        test = tests[i]
        status, detail, value = "ok", "", ""
        try:
            if test["type"] == "call":
                fn = namespace.get(test["entry_point"])
                if fn is None:
                    raise NameError("the program defines no %r" % test["entry_point"])
                value = _dump(encode(fn(*decode(test["args"]))))
            else:
                exec(compile(test["code"], "<test>", "exec"), dict(namespace))
        except MemoryError:
            status, detail, value = "memory_limit", "MemoryError", ""
        except AssertionError as exc:
            status, detail = "failed", _describe(exc)
        except BaseException as exc:
            status, detail, value = "runtime_error", _describe(exc), ""
        out.write("%d\t%s\t%s\t%s\n" % (i, status, _quote(detail), value))
        out.flush()


_CHILD_STATUSES = {"ok", "failed", "runtime_error", "memory_limit"}


def _parse_result(line):
    """(i, status, detail JSON, value JSON) from a child's line, or None. The JSON parts stay text:
    the executor parses them, so a malformed one only costs the program its test."""
    parts = line.decode("utf-8", "replace").split("\t", 3)
    if len(parts) != 4 or not parts[0].isdigit() or parts[1] not in _CHILD_STATUSES:
        return None
    return int(parts[0]), parts[1], parts[2], parts[3]


def _function_tests(job, indices):
    """Run call/assert tests batched in one child; restart it after a timeout or a crash."""
    pending = list(indices)
    while pending:
        if time.monotonic() >= job["_budget_end"]:
            for i in pending:
                _report(i, {"status": "timeout", "wall_s": 0.0, "detail": "request time budget exhausted"})
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
                now = time.monotonic()
                if line == b"ready" and not loaded:
                    loaded = True
                else:
                    msg = _parse_result(line) if loaded else None
                    if msg is None or msg[0] != pending[0]:
                        continue
                    i, status, detail_json, value_json = msg
                    pending.pop(0)
                    _report(i, {"status": status, "wall_s": round(now - started, 6), "detail_json": detail_json,
                                "value_json": value_json})
                started = now
                deadline = min(now + job["timeout_s"], job["_budget_end"])
            if not pending or _STOP:
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
        if failure is None and pending and not _STOP:
            if child.status is None:
                child.kill()
            failure = _exit_verdict(child.status, child.text(child.err_r))
            if failure[0] == "ok":
                failure = ("runtime_error", "the program ended the test process")
        else:
            child.kill()
        child.close()
        _sweep()
        if _STOP:
            return
        if failure is None or not pending:
            continue
        wall = round(time.monotonic() - started, 6)
        if not loaded:
            # the program itself fails to load: every remaining test would fail the same way
            for i in pending:
                _report(i, {"status": failure[0], "wall_s": wall, "detail": "while loading the program: " + failure[1]})
            return
        _report(pending.pop(0), {"status": failure[0], "wall_s": wall, "detail": failure[1]})


def evaluate_mode(job):
    """Tests run in this order: every call and assert test (in one process), then each stdin
    test; results are reported as they come, and the executor may stop the job between them."""
    job["_budget_end"] = time.monotonic() + job["budget_s"]
    tests = job["tests"]
    function_idx = [i for i, t in enumerate(tests) if t["type"] in ("call", "assert")]
    if function_idx:
        _function_tests(job, function_idx)
    for i, test in enumerate(tests):
        if _STOP:
            break
        if test["type"] == "stdin":
            if time.monotonic() >= job["_budget_end"]:
                _report(i, {"status": "timeout", "wall_s": 0.0, "detail": "request time budget exhausted"})
            else:
                _report(i, _stdin_test(job, test))
                _flush_reports()
                _check_stop(select.select([_JOB_FD], [], [], 0)[0] if _JOB_FD >= 0 else ())
    _flush_reports()
    return 0


def main(job):
    """Run one job; its status (run: the program's exit status; evaluate: 0)."""
    os.chdir(job["workdir"])
    if job["mode"] == "run":
        return run_mode(job)
    return evaluate_mode(job)


# ---- the zygote: one sandbox, many jobs ---------------------------------------------------------

IPC_RMID = 0
KEYCTL_CLEAR, KEYCTL_READ = 7, 11
KEY_SPEC_USER_KEYRING, KEY_SPEC_USER_SESSION_KEYRING = -4, -5
KEYCTL_SYSCALL = {"x86_64": 250, "aarch64": 219}  # keyctl(2); glibc has no wrapper
ENOSYS, ENOKEY, EPERM = 38, 126, 1
_SYSV_IPC = (("/proc/sysvipc/shm", "shmctl"), ("/proc/sysvipc/sem", "semctl"), ("/proc/sysvipc/msg", "msgctl"))
WIPE_BUDGET = 10000  # entries a job may leave in the tmpfs mounts; more and the sandbox is recycled instead
# Growth of the runner's address space (a large job's data the allocator kept) that recycles the
# sandbox: every program is forked from the runner and counts its size against RLIMIT_AS.
GROWTH_LIMIT = 64 << 20


def _empty_dir(top):
    """Delete everything under ``top`` (a program may have made directories unwritable)."""
    budget = WIPE_BUDGET
    stack, dirs = [top], []
    while stack:
        with os.scandir(stack.pop()) as it:
            entries = list(it)
        for entry in entries:
            budget -= 1
            if budget < 0:
                return False
            if entry.is_dir(follow_symlinks=False):
                os.chmod(entry.path, 0o700)
                stack.append(entry.path)
                dirs.append(entry.path)
            else:
                os.unlink(entry.path)
    for d in reversed(dirs):
        os.rmdir(d)
    return not os.listdir(top)


def _read_proc(path):
    """A /proc file's bytes, without the io stack: the cleanup runs after every job, and each
    page of the zygote it writes costs a copy-on-write fault after the next fork."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def _ipc_ids(path):
    try:
        lines = _read_proc(path).splitlines()[1:]
    except FileNotFoundError:  # a kernel without SysV IPC
        return []
    return [int(line.split()[1]) for line in lines if line.strip()]


def _remove_sysv_ipc():
    for path, name in _SYSV_IPC:
        ids = _ipc_ids(path)
        fn = _c_function(name) if ids else None
        for ident in ids:
            if fn is None:
                return False
            if name == "semctl":
                fn(ident, 0, IPC_RMID)
            else:
                fn(ident, IPC_RMID, 0)
    return not any(_ipc_ids(path) for path, _ in _SYSV_IPC)


def _clear_keyrings():
    """The user and user-session keyrings belong to the sandbox's user namespace, so they outlive
    every process: empty them. True when both are empty (or keys are unavailable here)."""
    number = KEYCTL_SYSCALL.get(os.uname().machine)
    syscall = _c_function("syscall")
    if number is None or syscall is None:
        return False
    for ring in (KEY_SPEC_USER_KEYRING, KEY_SPEC_USER_SESSION_KEYRING):
        syscall(number, KEYCTL_CLEAR, ring)
        size = syscall(number, KEYCTL_READ, ring, 0, 0)
        if size > 0 or (size < 0 and _errno() not in (ENOKEY, ENOSYS, EPERM)):
            return False
    return True


_RLIMITS = tuple(getattr(resource, n) for n in sorted(dir(resource)) if n.startswith("RLIMIT_"))


def _own_state(init):
    """What a program could change about the zygote from outside (prlimit(2), setpriority(2),
    sched_setaffinity(2) work across processes of one uid) and the tmpfs mount points' modes."""
    limits = tuple(map(resource.getrlimit, _RLIMITS))
    affinity = tuple(sorted(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else ()
    modes = tuple((st.st_mode, st.st_uid) for st in map(os.stat, init["wipe"]))
    return limits, os.getpriority(os.PRIO_PROCESS, 0), affinity, modes


def _address_space():
    return int(_read_proc("/proc/self/statm").split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _cleanup(init, baseline, size):
    """Restore the state the sandbox started in; (clean, what was not). Outside a private pid
    namespace (isolation none) there is nothing shared to restore: only reap."""
    if not _PRIVATE_PIDS:
        _reap()
    grown = _address_space() - size
    if grown > GROWTH_LIMIT:
        return False, "the runner's address space grew by %d MiB" % (grown >> 20)
    if not _PRIVATE_PIDS:
        return True, ""
    if not _kill_everything():
        return False, "processes survived kill(-1)"
    for d, (mode, _uid) in zip(init["wipe"], baseline[3]):
        try:
            os.chmod(d, mode & 0o7777)
            if not _empty_dir(d):
                return False, "%s holds more than %d entries" % (d, WIPE_BUDGET)
        except OSError as exc:
            return False, "cannot empty %s: %s" % (d, _describe(exc))
    if not _remove_sysv_ipc():
        return False, "SysV IPC objects left"
    if not _clear_keyrings():
        return False, "keys left in the user keyrings"
    if any(n.isdigit() and n != "1" for n in os.listdir("/proc")):
        return False, "processes left in /proc"
    if _own_state(init) != baseline:
        return False, "the zygote's limits, priority or affinity changed"
    return True, ""


def _recv_job(sock):
    """Wait for the next job: its four pipes (job, stdin, stdout, stderr), or None at EOF."""
    while True:
        try:
            data, anc, _, _ = sock.recvmsg(16, _socket.CMSG_SPACE(4 * 4))
        except InterruptedError:
            continue
        except OSError:
            return None
        fds = []
        for level, kind, payload in anc:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                fds += [int.from_bytes(payload[k:k + 4], sys.byteorder, signed=True)
                        for k in range(0, len(payload) - len(payload) % 4, 4)]
        if not data:
            return None
        if data == b"job" and len(fds) == 4:
            return fds
        for fd in fds:
            os.close(fd)
        return None


def _read_job(fd):
    """The job's bytes: an 8-byte length, then the marshalled job."""
    head = b""
    while len(head) < 8:
        chunk = os.read(fd, 8 - len(head))
        if not chunk:
            raise EOFError("the job pipe closed early")
        head += chunk
    size = int.from_bytes(head, "little")
    parts, got = [], 0
    while got < size:
        chunk = os.read(fd, min(size - got, 1 << 20))
        if not chunk:
            raise EOFError("the job pipe closed early")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _one_job(fds):
    global _JOB_FD, _STOP
    job_fd, in_fd, out_fd, err_fd = fds
    status = RUNNER_FAILED
    try:
        job = marshal.loads(_read_job(job_fd))
        for fd, std in ((in_fd, 0), (out_fd, 1), (err_fd, 2)):
            os.dup2(fd, std)
            os.close(fd)
        _JOB_FD, _STOP = job_fd, False
        status = main(job)
    except BaseException as exc:
        del _REPORTS[:]
        try:
            os.write(2, ("lad sandbox runner failed: %s\n" % _describe(exc)).encode())
        except OSError:
            pass
    finally:
        _JOB_FD = -1
        del _REPORTS[:]
        for std in (0, 1, 2):
            os.dup2(NULL_FD, std)
        os.closerange(NULL_FD + 1, 1 << 20)  # every pipe of the job, whatever path it ended on
        os.chdir("/")  # out of the work dir: it is emptied (bwrap) or deleted (isolation none) next
    return status


def _send(sock, line):
    try:
        sock.sendall(line)
    except OSError:  # the executor went away
        os._exit(0)


def serve(ctl, init_bytes):
    """The zygote's loop: one job at a time. After each, two lines on the control socket: the
    job's status ({"status", "jobs"}) as soon as the job is over, so the executor can answer the
    request while the sandbox restores itself, then the cleanup's verdict ({"clean", "reason"}),
    which the executor reads before it sends the next job."""
    global _PRIVATE_PIDS, _STREAMS
    init = marshal.loads(init_bytes)
    _PRIVATE_PIDS = bool(init["private"])
    if ctl != CTL_FD:
        os.dup2(ctl, CTL_FD)
        os.close(ctl)
    null = os.open(os.devnull, os.O_RDWR)  # after the move: it must not land on CTL_FD
    if null != NULL_FD:
        os.dup2(null, NULL_FD)
        os.close(null)
    _STREAMS = _std_streams()
    for std in (0, 1, 2):
        os.dup2(NULL_FD, std)  # bwrap's pipes: only its own start-up errors belong there
    os.closerange(NULL_FD + 1, 1 << 20)
    sandbox_limits(init)
    _signal.signal(SIGINT, _signal.SIG_DFL)  # no handler: as pid 1 the kernel then drops SIGINT
    sock = _socket.socket(fileno=CTL_FD)
    baseline = _own_state(init)
    size = _address_space()
    jobs = 0
    # Every object the zygote holds now lives forever: out of the collector's sight, a forked
    # child's collections no longer touch (and copy) the pages they share with the zygote.
    _gc.freeze()
    _send(sock, b'{"ready":true,"pid":%d}\n' % os.getpid())
    while True:
        fds = _recv_job(sock)
        if fds is None:
            os._exit(0)
        status = _one_job(fds)
        jobs += 1
        _send(sock, b'{"status":%d,"jobs":%d}\n' % (status, jobs))
        try:
            clean, reason = _cleanup(init, baseline, size)
        except BaseException as exc:
            clean, reason = False, "cleanup failed: " + _describe(exc)
        _send(sock, ('{"clean":%s,"reason":%s}\n' % ("true" if clean else "false", _quote(reason))).encode())


if __name__ == "__main__":
    # Started by BOOTSTRAP in lad/sandbox/executor.py, which hands over the control socket's fd
    # in _CTL and the sandbox's settings in _INIT.
    serve(_CTL, _INIT)  # noqa: F821
