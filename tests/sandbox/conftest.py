"""Fixtures of the sandbox tests: the cgroup fence every module runs in, a local executor, and a
real `lad sandbox serve` process on a free port (started inside the fence)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from lad.local_server import free_port

sys.path.insert(0, str(Path(__file__).parent))
from fence import Fence  # noqa: E402
from sandbox_paths import LAD  # noqa: E402

TOKEN = "test-token-5f2c"

# An escaped fork bomb is capped here instead of at the host's pid_max (32768).
FENCE_PIDS = 1024
FENCE_MEMORY = 8 << 30

_PROCESS_COUNT_PROBE = """
import os, time
n = 0
for _ in range(40):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    n += 1
print(n, flush=True)
time.sleep(60)
"""


def _verify(fence: Fence) -> None:
    """A harmless process-count test: a nested group of 10 pids admits exactly 9 children."""
    probe = Fence("probe", 10, 1 << 30, parent=fence).create()
    try:
        rd, wr = os.pipe()
        proc = subprocess.Popen([sys.executable, "-c", _PROCESS_COUNT_PROBE], stdout=wr,
                                preexec_fn=lambda: probe.add(os.getpid()))
        os.close(wr)
        with os.fdopen(rd) as out:
            spawned = int(out.readline())
        probe.kill_all()
        proc.wait()
        if spawned != 9:
            raise RuntimeError(f"the test fence does not limit processes: {spawned} children in a group of 10 pids")
    finally:
        probe.destroy()


@pytest.fixture(scope="session")
def fence():
    f = Fence(f"lad-sandbox-tests-{os.getpid()}", FENCE_PIDS, FENCE_MEMORY).create()
    try:
        _verify(f)
        yield f
    finally:
        if os.getpid() in f.pids():
            f.leave(os.getpid())
        f.kill_all(exclude=os.getpid())
        f.destroy()


@pytest.fixture(autouse=True, scope="module")
def fenced(fence):
    """Every sandbox test module runs with pytest itself inside the fence."""
    fence.add(os.getpid())
    yield fence
    fence.leave(os.getpid())



class Service:
    def __init__(self, proc: subprocess.Popen, url: str, token: str):
        self.proc, self.url, self.token = proc, url, token

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=5).json()["status"] == "ok"
        except httpx.HTTPError:
            return False


@pytest.fixture(scope="session")
def service(fence, tmp_path_factory):
    """`lad sandbox serve` with 2 workers and a token, as a child process inside the fence."""
    port = free_port()
    log = tmp_path_factory.mktemp("service") / "serve.log"
    env = dict(os.environ, LAD_SANDBOX_TOKEN=TOKEN, LAD_SECRET_CANARY="canary-7d1e0b")
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            ["sh", "-c", f'for d in {" ".join(str(d) for d in fence.dirs)}; do echo $$ > "$d/cgroup.procs"; done; '
                         f'exec "$0" "$@"', str(LAD), "sandbox", "serve", "--port", str(port), "--workers", "2"],
            env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    svc = Service(proc, f"http://127.0.0.1:{port}", TOKEN)
    deadline = time.monotonic() + 60
    while not svc.healthy():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"lad sandbox serve did not come up:\n{log.read_text()}")
        time.sleep(0.2)
    yield svc
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
