"""A cgroup fence for tests that run hostile programs.

If the sandbox ever failed to contain a fork bomb, the bomb would exhaust the host's pid space
(pid_max is 32768 on the development machines) and take every process on it down. The test
session therefore moves itself into its own pids + memory cgroup before any hostile program
runs, so an escape is capped at the fence's limits, and kills whatever is left in the group,
by pid, when the session ends. Works with cgroup v2 (unified) and v1 (pids and memory
hierarchies mounted separately).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


class FenceError(RuntimeError):
    pass


def _own_cgroup(controller: str | None) -> str:
    """This process's cgroup path in the v1 hierarchy of ``controller`` (None: the v2 one)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller is None and controllers == "":
            return path
        if controller is not None and controller in controllers.split(","):
            return path
    raise FenceError(f"no cgroup entry for {controller or 'v2'} in /proc/self/cgroup")


def _v2_root() -> Path | None:
    for mount in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
        if (mount / "cgroup.controllers").exists():
            ctrls = (mount / "cgroup.controllers").read_text().split()
            if "pids" in ctrls and "memory" in ctrls:
                return mount
    return None


class Fence:
    """A child cgroup (pids + memory) that processes can be moved into and swept out of."""

    def __init__(self, name: str, pids_max: int, memory_bytes: int, parent: "Fence | None" = None):
        self.name = name
        self.pids_max = pids_max
        self.memory_bytes = memory_bytes
        self.dirs: list[Path] = []  # one per hierarchy (v2: one; v1: pids and memory)
        self._home: list[Path] = []  # where the moved processes came from, per hierarchy
        if parent is not None:
            bases = list(parent.dirs)
        elif (v2 := _v2_root()) is not None:
            bases = [v2 / _own_cgroup(None).lstrip("/")]
        else:
            bases = [CGROUP_ROOT / "pids" / _own_cgroup("pids").lstrip("/"),
                     CGROUP_ROOT / "memory" / _own_cgroup("memory").lstrip("/")]
        self.v2 = len(bases) == 1
        self._bases = bases

    def create(self) -> "Fence":
        try:
            for base in self._bases:
                d = base / self.name
                d.mkdir(exist_ok=True)
                self.dirs.append(d)
                self._home.append(base)
            if self.v2:
                (self._bases[0] / "cgroup.subtree_control").write_text("+pids +memory")
                (self.dirs[0] / "pids.max").write_text(str(self.pids_max))
                (self.dirs[0] / "memory.max").write_text(str(self.memory_bytes))
            else:
                (self.dirs[0] / "pids.max").write_text(str(self.pids_max))
                (self.dirs[1] / "memory.limit_in_bytes").write_text(str(self.memory_bytes))
        except OSError as err:
            self.destroy()
            raise FenceError(f"cannot create the test fence cgroup {self.name!r}: {err} "
                             "(hostile-program tests need root and a writable /sys/fs/cgroup)") from err
        return self

    def add(self, pid: int) -> None:
        for d in self.dirs:
            (d / "cgroup.procs").write_text(str(pid))

    def leave(self, pid: int) -> None:
        for home in self._home:
            (home / "cgroup.procs").write_text(str(pid))

    def pids(self) -> list[int]:
        out: set[int] = set()
        for d in self.dirs:
            try:
                out.update(int(p) for p in (d / "cgroup.procs").read_text().split())
            except FileNotFoundError:
                pass
        return sorted(out)

    def pids_current(self) -> int:
        return int((self.dirs[0] / "pids.current").read_text())

    def kill_all(self, exclude: int | None = None) -> int:
        """SIGKILL every process in the fence (by pid, repeatedly until empty); returns the count."""
        killed = 0
        for _ in range(200):
            left = [p for p in self.pids() if p != exclude]
            if not left:
                return killed
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
        raise FenceError(f"processes still alive in fence {self.name}: {self.pids()}")

    def destroy(self) -> None:
        for d in reversed(self.dirs):
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
        self.dirs = []
        self._home = []
