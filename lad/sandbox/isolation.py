"""How a sandboxed process is launched: the bubblewrap command line, or none (trusted use).

Only the interpreter, its standard library and the shared libraries they load are visible
(read-only, like the rest of the tree), and the few packages the config names (``packages``:
sortedcontainers, which LeetCode's judge offers), each alone under PACKAGES_DIR on the programs'
sys.path; /tmp and /dev/shm are private size-capped tmpfs mounts, the only writable places,
which the runner empties after every job; there is no network, and the user, pid, ipc and uts
namespaces are new. Everything is derived from the interpreter itself at start-up."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from lad.sandbox.config import SandboxConfig

SANDBOX_UID = 1000  # uid/gid inside the user namespace
WORKDIR = "/tmp"
TMPFS_DIRS = (WORKDIR, "/dev/shm")  # the sandbox's writable mounts, emptied after every job
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": WORKDIR, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


PACKAGES_DIR = "/opt/lad-packages"  # inside a bwrap sandbox: the configured packages, on sys.path


def sandbox_env(cfg: SandboxConfig, packages_dir: Optional[str] = None) -> dict[str, str]:
    """The whole environment of a sandbox's runner, and so of every program it forks: the same in
    every sandbox. The hash seed is fixed because a random one per sandbox made programs whose
    output follows set or dict order of strings pass in one worker and fail in another.
    ``packages_dir`` (the configured packages, and nothing else) goes on sys.path through
    PYTHONPATH, which the runner's flags (-s -S, not -E) leave in force."""
    env = {**ENV, "PYTHONHASHSEED": str(cfg.hash_seed)}
    if packages_dir:
        env["PYTHONPATH"] = packages_dir
    return env


class IsolationError(RuntimeError):
    """The sandbox cannot be set up (missing bubblewrap, interpreter, or namespaces)."""


@dataclass(frozen=True)
class Interpreter:
    executable: str  # as called inside the sandbox
    binds: tuple[tuple[str, str], ...]  # (host path, sandbox path), read-only
    masks: tuple[str, ...]  # directories inside the binds hidden behind an empty read-only tmpfs


_PROBE = """
import json, os, sys, sysconfig
paths = sysconfig.get_paths()
print(json.dumps({"executable": os.path.realpath(sys.executable), "stdlib": paths["stdlib"],
                  "platstdlib": paths["platstdlib"], "dynload": sysconfig.get_config_var("DESTSHARED") or "",
                  "site": sorted({paths["purelib"], paths["platlib"]}), "version": list(sys.version_info[:2])}))
"""

_LDD_LINE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x")


def default_python() -> str:
    for candidate in ("/usr/local/bin/python3", "/usr/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    raise IsolationError("no python3 in /usr/local/bin or /usr/bin; set the sandbox's python explicitly")


def _shared_libraries(files: list[str]) -> set[str]:
    ldd = shutil.which("ldd")
    if ldd is None:
        raise IsolationError("ldd is missing (Debian package libc-bin); it lists the interpreter's shared libraries")
    libs: set[str] = set()
    for start in range(0, len(files), 64):
        out = subprocess.run([ldd, *files[start:start + 64]], capture_output=True, text=True).stdout
        libs.update(m.group(1) for m in _LDD_LINE.finditer(out))
    return libs


@functools.lru_cache(maxsize=8)
def discover_interpreter(python: str) -> Interpreter:
    """Ask the (trusted) interpreter where its standard library and libraries live."""
    if not os.access(python, os.X_OK):
        raise IsolationError(f"sandbox interpreter {python!r} is not an executable file")
    try:
        info = json.loads(subprocess.run([python, "-I", "-S", "-c", _PROBE], capture_output=True, text=True,
                                         check=True, timeout=30).stdout)
    except (subprocess.SubprocessError, ValueError) as err:
        raise IsolationError(f"cannot query the sandbox interpreter {python!r}: {err}") from err
    if tuple(info["version"]) < (3, 8):
        raise IsolationError(f"sandbox interpreter {python!r} is Python {info['version']}; 3.8 or newer is required")
    exe = info["executable"]
    dirs = [d for d in dict.fromkeys([info["stdlib"], info["platstdlib"], info["dynload"]]) if d and os.path.isdir(d)]
    extensions = [str(p) for p in Path(info["dynload"]).glob("*.so")] if info["dynload"] else []
    binds: dict[str, str] = {exe: exe}
    for lib in sorted(_shared_libraries([exe, *extensions])):
        binds[lib] = lib  # where the loader looks (ld.so.cache paths, the ELF interpreter path)
    if os.path.exists("/etc/ld.so.cache"):
        binds["/etc/ld.so.cache"] = "/etc/ld.so.cache"
    for d in dirs:
        if not any(d.startswith(parent + "/") for parent in dirs if parent != d):
            binds[d] = d
    masks = tuple(s for s in info["site"] if os.path.isdir(s) and any(s.startswith(d + "/") for d in dirs))
    return Interpreter(executable=exe, binds=tuple((os.path.realpath(h), s) for h, s in binds.items()), masks=masks)


@functools.lru_cache(maxsize=8)
def find_packages(names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """(host path, its name on sys.path) of each package programs may import: the folder of a
    package, or the file of a one-module package, wherever lad's own interpreter imports it from.
    They must be pure Python: the sandbox's interpreter may be another build than lad's."""
    found = []
    for name in names:
        spec = importlib.util.find_spec(name)
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if spec is None or (not locations and not spec.origin) or len(locations) > 1:
            raise IsolationError(f"sandbox package {name!r} is not installed where lad runs ({sys.executable}): "
                                 f"pip install {name}, or leave it out of the sandbox's packages")
        path = locations[0] if locations else spec.origin
        if not locations and not path.endswith(".py"):
            raise IsolationError(f"sandbox package {name!r} is {path}, not pure Python; the sandbox takes pure-Python "
                                 "packages only")
        found.append((os.path.realpath(path), os.path.basename(path)))
    return tuple(found)


def bwrap_command(cfg: SandboxConfig, interp: Interpreter, argv: list[str]) -> list[str]:
    bwrap = shutil.which(cfg.bwrap)
    if bwrap is None:
        raise IsolationError(f"bubblewrap ({cfg.bwrap!r}) is not installed: apt-get install bubblewrap, "
                             "or start with --isolation none for trusted local use only")
    cmd = [bwrap, "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
           "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
           "--disable-userns",
           "--hostname", "sandbox", "--die-with-parent", "--new-session", "--clearenv",
           # the runner is pid 1 of the sandbox: the kernel then ignores SIGKILL/SIGSTOP that the
           # program sends it, and (non-dumpable) it cannot be ptraced, unlike bwrap's own init
           "--as-pid-1"]
    packages = find_packages(tuple(cfg.packages))
    for key, value in sandbox_env(cfg, PACKAGES_DIR if packages else None).items():
        cmd += ["--setenv", key, value]
    for host, inside in interp.binds:
        cmd += ["--ro-bind", host, inside]
    for host, entry in packages:
        cmd += ["--ro-bind", host, f"{PACKAGES_DIR}/{entry}"]
    for mask in interp.masks:
        cmd += ["--tmpfs", mask, "--remount-ro", mask]
    cmd += ["--proc", "/proc", "--dev", "/dev"]
    for d in TMPFS_DIRS:
        cmd += ["--size", str(cfg.tmpfs_mb << 20), "--tmpfs", d]
    # bwrap's root and /dev are tmpfs mounts the sandbox user could write to: read-only, nothing
    # a job writes can outlive it outside the tmpfs mounts the runner empties
    cmd += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", WORKDIR, "--"]
    return cmd + argv


def host_user(cfg: SandboxConfig) -> dict:
    """Popen arguments that drop root to ``host_uid`` so the kernel enforces RLIMIT_NPROC."""
    if os.geteuid() != 0:
        return {}
    return {"user": cfg.host_uid, "group": cfg.host_uid, "extra_groups": []}


Launcher = Callable[[list[str]], tuple[list[str], dict]]


def _linked_packages(packages: tuple[tuple[str, str], ...]) -> str:
    """Without bwrap: a folder that holds links to the packages and nothing else, so that programs
    import exactly what they would in a sandbox (lad's own site-packages hold much more)."""
    folder = tempfile.mkdtemp(prefix="lad-sandbox-packages-")
    os.chmod(folder, 0o755)  # the programs may run as another user (host_uid)
    for host, entry in packages:
        os.symlink(host, os.path.join(folder, entry))
    return folder


def make_launcher(cfg: SandboxConfig) -> tuple[str, Launcher]:
    """(interpreter inside, launcher); the launcher turns interpreter argv into a command plus
    Popen arguments. Raises IsolationError when the configured isolation is unavailable."""
    python = cfg.python or default_python()
    if cfg.isolation == "none":
        packages = find_packages(tuple(cfg.packages))
        linked = _linked_packages(packages) if packages else None
        env = sandbox_env(cfg, linked)

        def plain(argv: list[str]) -> tuple[list[str], dict]:
            return argv, {"env": env, **host_user(cfg)}
        if linked:
            weakref.finalize(plain, shutil.rmtree, linked, True)
        return python, plain
    interp = discover_interpreter(python)
    bwrap_command(cfg, interp, [])  # fail now, not per request, when bwrap is missing

    def sandboxed(argv: list[str]) -> tuple[list[str], dict]:
        return bwrap_command(cfg, interp, argv), {"env": {}, **host_user(cfg)}
    return interp.executable, sandboxed
