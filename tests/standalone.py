"""A copy of the project in a temporary folder with no sibling ``shared`` folder, as a user's clone
is: tests run the product from it (``PYTHONPATH`` puts the copy's ``lad``, and with it the copy's
Kubeflow layer, ahead of the editable install) from a working directory outside it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = {".git", ".venv", "out", "__pycache__", ".pytest_cache", "mlruns"}


def project_files() -> list[str]:
    """The files a clone has: git's tracked and not-ignored files, or the tree without build outputs."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                                capture_output=True, check=True).stdout.decode()
        return [f for f in listed.split("\0") if f and (ROOT / f).is_file()]
    except (OSError, subprocess.CalledProcessError):
        return [str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
                if p.is_file() and not SKIP.intersection(p.relative_to(ROOT).parts)]


def make_copy(base: Path) -> Path:
    """The project copied to ``base/<name>``; ``base`` holds nothing else."""
    copy = base / ROOT.name
    for rel in project_files():
        dest = copy / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest)
    assert not (base / "shared").exists()
    return copy


def env_for(copy: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(copy)}
    env.pop("LAD_DATA_DIR", None)
    return env


def imported_from(copy: Path, env: dict[str, str], cwd: Path) -> Path:
    """Where ``lad`` is imported from under ``env``: the proof that a run used the copy."""
    done = subprocess.run([sys.executable, "-c", "import lad; print(lad.__file__)"], env=env, cwd=cwd,
                          capture_output=True, text=True, check=True)
    return Path(done.stdout.strip())
