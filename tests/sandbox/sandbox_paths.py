"""Paths shared by the sandbox tests (a module name of its own: `conftest` can be shadowed by
another directory's conftest)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAD = Path(sys.executable).parent / "lad"
