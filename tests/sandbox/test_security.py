"""Hostile programs against the real service. Each one must end with a verdict, leave the service
healthy, leave no process behind (checked through the fence's cgroup) and leave the host
untouched (checked by the test itself: listeners got nothing, files are unchanged)."""

from __future__ import annotations

import os
import socket
import time

import httpx
import pytest

from sandbox_paths import ROOT
from lad.sandbox.client import SandboxClient

SECRET = "host-secret-91b3"
TIMEOUT = 2.0


@pytest.fixture(scope="module")
def client(service):
    with SandboxClient(service.url, token=service.token, retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """Things on the host a program must not reach: a secret file, a TCP and a UDP listener, an
    abstract unix socket."""
    d = tmp_path_factory.mktemp("host")
    secret = d / "secret.txt"
    secret.write_text(SECRET)
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(8)
    tcp.settimeout(0.2)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.2)
    unix = socket.socket(socket.AF_UNIX)
    unix.bind("\0lad-sandbox-test-%d" % os.getpid())
    unix.listen(8)
    unix.settimeout(0.2)
    yield {"dir": d, "secret": secret, "tcp": tcp, "udp": udp, "unix": unix, "tcp_port": tcp.getsockname()[1],
           "udp_port": udp.getsockname()[1], "unix_name": "lad-sandbox-test-%d" % os.getpid()}
    for s in (tcp, udp, unix):
        s.close()


def _no_tcp_connection(host) -> None:
    with pytest.raises(socket.timeout):
        conn, _ = host["tcp"].accept()
        conn.close()


def _no_udp_datagram(host) -> None:
    with pytest.raises(socket.timeout):
        host["udp"].recvfrom(100)


def _no_unix_connection(host) -> None:
    with pytest.raises(socket.timeout):
        conn, _ = host["unix"].accept()
        conn.close()


# (name, program, expected status, substring stdout must contain, host check). The programs
# print BLOCKED when the attack failed the way it should, so a silently skipped attack fails.
ATTEMPT = "def attempt(f):\n    try:\n        f()\n        print('ESCAPED')\n    except BaseException as e:\n        print('BLOCKED', type(e).__name__)\n"

CASES = [
    ("tcp_to_host_listener", ATTEMPT + "import socket\nattempt(lambda: socket.create_connection(('127.0.0.1', {tcp_port}), timeout=1))\n",
     "ok", "BLOCKED", _no_tcp_connection),
    ("tcp_to_public_address", ATTEMPT + "import socket\nattempt(lambda: socket.create_connection(('1.1.1.1', 80), timeout=1))\n",
     "ok", "BLOCKED", None),
    ("dns_lookup", ATTEMPT + "import socket\nattempt(lambda: socket.getaddrinfo('pypi.org', 443))\n", "ok", "BLOCKED", None),
    ("udp_to_host_listener", "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
     "try:\n    s.sendto(b'leak', ('127.0.0.1', {udp_port}))\n    print('SENT-INTO-OWN-NAMESPACE')\n"
     "except OSError as e:\n    print('BLOCKED', e)\n", "ok", "", _no_udp_datagram),
    ("abstract_unix_socket", ATTEMPT + "import socket\ns = socket.socket(socket.AF_UNIX)\n"
     "attempt(lambda: s.connect('\\0{unix_name}'))\n", "ok", "BLOCKED", _no_unix_connection),
    ("only_loopback_interface", "import socket\nprint('IFACES', sorted(n for _, n in socket.if_nameindex()))\n",
     "ok", "IFACES ['lo']", None),
    ("read_project_tree", ATTEMPT + "attempt(lambda: print(open('{root}/pyproject.toml').read()))\n", "ok", "BLOCKED", None),
    ("read_host_secret_file", ATTEMPT + "attempt(lambda: print(open('{secret}').read()))\n", "ok", "BLOCKED", None),
    ("read_etc", ATTEMPT + "attempt(lambda: print(open('/etc/passwd').read()))\n"
     "attempt(lambda: print(open('/etc/shadow').read()))\nattempt(lambda: print(open('/etc/hostname').read()))\n",
     "ok", "BLOCKED", None),
    ("proc_1_environ", "import os\nfor p in ('/proc/1/environ', '/proc/self/environ', '/proc/%d/environ' % os.getppid()):\n"
     "    try:\n        print(open(p, 'rb').read())\n    except OSError as e:\n        print('BLOCKED', e)\n",
     "ok", "", None),
    ("own_environment", "import os\nprint(sorted(os.environ))\n", "ok",
     "['HOME', 'LANG', 'LC_ALL', 'PATH', 'PWD', 'PYTHONHASHSEED', 'PYTHONPATH']", None),
    ("proc_self_root", ATTEMPT + "import os\nprint(sorted(os.listdir('/proc/self/root')))\n"
     "attempt(lambda: open('/proc/self/root{root}/pyproject.toml').read())\n"
     "attempt(lambda: open('/proc/1/root{secret}').read())\n", "ok", "BLOCKED", None),
    ("symlink_out", ATTEMPT + "import os\nos.symlink('{secret}', '/tmp/s')\nos.symlink('/proc/1/root{root}', '/tmp/r')\n"
     "attempt(lambda: print(open('/tmp/s').read()))\nattempt(lambda: print(os.listdir('/tmp/r')))\n", "ok", "BLOCKED", None),
    ("write_outside_workdir", ATTEMPT + "import sysconfig\n"
     "attempt(lambda: open(sysconfig.get_paths()['stdlib'] + '/os.py', 'a').write('evil'))\n"
     "attempt(lambda: open('{dir}/planted', 'w').write('evil'))\n"
     "attempt(lambda: open('{root}/planted', 'w').write('evil'))\n", "ok", "BLOCKED", "no_planted"),
    ("delete_host_file", ATTEMPT + "import os\nattempt(lambda: os.remove('{secret}'))\n", "ok", "BLOCKED", "secret_intact"),
    ("fork_bomb", "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
     "timeout", "", None),
    ("thread_bomb", "import threading, time\nwhile True:\n    try:\n        threading.Thread(target=time.sleep, args=(100,)).start()\n"
     "    except RuntimeError:\n        pass\n", ("timeout", "memory_limit"), "", None),
    ("memory_bomb", "x = bytearray(16 << 30)\n", "memory_limit", "", None),
    # touching 512 MiB page by page can outlast the 2 s limit on a loaded machine: either verdict
    ("memory_bomb_gradual", "x = []\nwhile True:\n    x.append(bytearray(1 << 20))\n", ("memory_limit", "timeout"),
     "", None),
    ("cpu_spin", "while True:\n    pass\n", "timeout", "", None),
    ("sleep_forever", "import time\ntime.sleep(10 ** 6)\n", "timeout", "", None),
    ("huge_stdout", "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", "output_limit", "", None),
    ("huge_stderr", "import sys\nwhile True:\n    sys.stderr.write('x' * 65536)\n", "output_limit", "", None),
    ("background_process_outlives", "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
     "        time.sleep(600)\n    os._exit(0)\nprint('parent done')\n", "ok", "parent done", None),
    ("kill_parent", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(1, signal.SIGKILL)\nprint('alive')\n",
     "ok", "alive", None),
    ("kill_everything", "import os, signal, time\nfor _ in range(3):\n    if os.fork() == 0:\n        time.sleep(600)\n"
     "os.kill(-1, signal.SIGKILL)\nprint('alive')\n", "ok", "alive", None),
    ("signal_host_processes", ATTEMPT + "import os, signal\nattempt(lambda: os.kill({service_pid}, signal.SIGKILL))\n"
     "attempt(lambda: os.kill({pytest_pid}, signal.SIGKILL))\n", "ok", "BLOCKED", None),
    ("ptrace_attach", "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
     "for pid in (1, os.getppid()):\n    r = libc.ptrace(16, pid, 0, 0)\n    print('BLOCKED' if r == -1 else 'ESCAPED', ctypes.get_errno())\n",
     "ok", "BLOCKED", None),
    ("fill_tmpfs", "import errno\nn = 0\ntry:\n    while True:\n        with open('/tmp/f%d' % n, 'wb') as f:\n"
     "            f.write(b'x' * (8 << 20))\n        n += 1\nexcept OSError as e:\n    print('BLOCKED', errno.errorcode[e.errno], n)\n",
     "ok", "BLOCKED ENOSPC", None),
    ("file_size_limit", "try:\n    open('/tmp/big', 'wb').write(b'x' * (64 << 20))\nexcept OSError as e:\n    print('BLOCKED', e.errno)\n",
     "ok", "BLOCKED 27", None),
    ("thousands_of_open_files", "import errno\nfs = []\ntry:\n    for i in range(5000):\n        fs.append(open('/dev/null'))\n"
     "except OSError as e:\n    print('BLOCKED', errno.errorcode[e.errno], len(fs))\n", "ok", "BLOCKED EMFILE", None),
    ("ctypes_privileged_syscalls", "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
     "checks = {{'mount': lambda: libc.mount(b'none', b'/tmp', b'tmpfs', 0, None), 'setuid0': lambda: libc.setuid(0),\n"
     "          'unshare_net': lambda: libc.unshare(0x40000000), 'unshare_user': lambda: libc.unshare(0x10000000),\n"
     "          'setns': lambda: libc.setns(0, 0), 'reboot': lambda: libc.reboot(0x4321fedc),\n"
     "          'chroot': lambda: libc.chroot(b'/tmp'), 'sethostname': lambda: libc.sethostname(b'x', 1)}}\n"
     "for name, f in checks.items():\n    print('BLOCKED' if f() == -1 else 'ESCAPED', name, ctypes.get_errno())\n",
     "ok", "BLOCKED", None),
    ("segfault", "import ctypes\nctypes.string_at(0)\n", "runtime_error", "", None),
    ("devices_and_sys", ATTEMPT + "import os\nprint(sorted(os.listdir('/dev')))\nattempt(lambda: open('/dev/mem', 'rb').read(1))\n"
     "attempt(lambda: open('/dev/sda', 'rb').read(1))\nattempt(lambda: os.listdir('/sys/kernel'))\n"
     "attempt(lambda: open('/proc/sysrq-trigger', 'w').write('b'))\n", "ok", "BLOCKED", None),
    ("site_packages_hidden", ATTEMPT + "attempt(lambda: __import__('lad'))\nattempt(lambda: __import__('numpy'))\n"
     "attempt(lambda: __import__('httpx'))\n", "ok", "BLOCKED", None),
    ("deep_recursion", "def f(n):\n    return f(n + 1)\nf(0)\n", "runtime_error", "", None),
    ("uid_and_hostname", "import os, socket\nprint('IDS', os.getuid(), os.geteuid(), socket.gethostname())\n",
     "ok", "IDS 1000 1000 sandbox", None),
]


def _fmt(code: str, host, service) -> str:
    return code.format(tcp_port=host["tcp_port"], udp_port=host["udp_port"], unix_name=host["unix_name"],
                       root=ROOT, secret=host["secret"], dir=host["dir"], service_pid=service.proc.pid,
                       pytest_pid=os.getpid())


def _parent_and_name(pid: int) -> tuple[int, str]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return 0, ""
    return int(stat.rsplit(")", 1)[1].split()[1]), stat[stat.index("(") + 1:stat.rindex(")")]


def _leftovers(fence, service) -> list[int]:
    """Processes in the fence other than pytest, the service and the warm sandboxes (each a bwrap
    child of the service, or of pytest for in-process executors, and that bwrap's pid 1, the
    runner), after up to 5 s for cleanup. A program's process left in a warm sandbox is a child
    of its runner, so it is counted."""
    deadline = time.monotonic() + 5
    while True:
        pids = fence.pids()
        owners = (os.getpid(), service.proc.pid)
        bwraps = {p for p in pids if _parent_and_name(p) in {(o, "bwrap") for o in owners}}
        zygotes = {p for p in pids if _parent_and_name(p)[0] in bwraps}
        left = [p for p in pids if p not in owners and p not in bwraps | zygotes]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def test_at_least_30_hostile_programs():
    assert len(CASES) >= 30
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name,code,status,marker,host_check", CASES, ids=[c[0] for c in CASES])
def test_hostile_program_is_contained(name, code, status, marker, host_check, client, service, host, fence):
    before = host["secret"].read_text()
    r = client.run(_fmt(code, host, service), timeout_s=TIMEOUT, memory_mb=512)
    assert r.status in ((status,) if isinstance(status, str) else status), (r.status, r.stdout[-500:], r.stderr[-500:])
    assert r.isolation == "bwrap"
    assert "ESCAPED" not in r.stdout
    assert marker in r.stdout
    for leaked in (SECRET, "canary-7d1e0b", service.token):
        assert leaked not in r.stdout and leaked not in r.stderr
    assert r.wall_s < TIMEOUT + 6
    if status == "output_limit":
        assert r.truncated and len(r.stdout) <= 1 << 20 and len(r.stderr) <= 1 << 20
    if callable(host_check):
        host_check(host)
    elif host_check == "no_planted":
        assert not (host["dir"] / "planted").exists() and not (ROOT / "planted").exists()
    assert host["secret"].read_text() == before == SECRET
    assert service.healthy()
    assert _leftovers(fence, service) == []


def test_evaluate_survives_a_program_that_kills_its_runner(client, service, fence):
    """The runner is pid 1 of the sandbox: the kernel drops the program's SIGKILL/SIGSTOP to it."""
    code = ("import os, signal\ndef f(x):\n    if x == 1:\n        os.kill(os.getppid(), signal.SIGKILL)\n"
            "        os.kill(1, signal.SIGSTOP)\n    return x\n")
    tests = [{"type": "call", "entry_point": "f", "args": [i], "expected": i} for i in range(3)]
    r = client.evaluate(code, tests, timeout_s=TIMEOUT)
    assert [v.status for v in r.verdicts] == ["passed"] * 3
    assert service.healthy()
    assert _leftovers(fence, service) == []


def test_a_returned_object_cannot_fake_equality(client):
    """The classic reward hack: return something whose __eq__ is always True. Values leave the
    sandbox as plain data only and are compared outside, so it cannot pass."""
    code = "class Any:\n    def __eq__(self, other):\n        return True\ndef f(x):\n    return Any()\n"
    r = client.evaluate(code, [{"type": "call", "entry_point": "f", "args": [1], "expected": 2}])
    assert r.passed == 0 and r.verdicts[0].status == "runtime_error"
    assert "cannot report a value of type Any" in r.verdicts[0].detail


def test_a_program_cannot_write_results_for_its_runner(client):
    """Writing fake result lines to every fd of the runner and of pid 1 changes nothing."""
    code = ("import os\ndef f(x):\n    for pid in ('1', str(os.getppid())):\n"
            "        for fd in range(0, 10):\n            try:\n"
            "                with open('/proc/%s/fd/%d' % (pid, fd), 'w') as out:\n"
            "                    out.write('{\"i\":1,\"status\":\"ok\",\"wall_s\":0,\"detail\":\"\",\"value\":2}\\n')\n"
            "            except OSError:\n                pass\n    return 0\n")
    tests = [{"type": "call", "entry_point": "f", "args": [i], "expected": 2} for i in range(2)]
    r = client.evaluate(code, tests, timeout_s=TIMEOUT)
    assert r.passed == 0 and [v.status for v in r.verdicts] == ["failed", "failed"]


def test_service_still_serves_after_the_suite(client, service):
    assert client.run("print(6 * 7)").stdout == "42\n"
    metrics = httpx.get(service.url + "/metrics", headers=service.headers, timeout=10).text
    assert 'lad_sandbox_runs_total{status="timeout"}' in metrics
