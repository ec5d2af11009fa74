"""Starting a helper server as a child process on this machine: a free port, and the wait for health."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_healthy(proc: subprocess.Popen, url: str, timeout_s: float) -> str | None:
    """Poll ``url`` until it answers 200. None once it does; otherwise why not (the server exited,
    or gave no healthy answer in time), for the caller to put in its own error with the server's log."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited with {proc.returncode}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return None
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return f"did not answer {url} within {timeout_s:g} s"


def stop_process_group(proc: subprocess.Popen | None, grace_s: float = 20) -> None:
    """SIGTERM the process group of a server started with ``start_new_session=True`` (so its
    workers go with it), then SIGKILL what is still there after ``grace_s``."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
