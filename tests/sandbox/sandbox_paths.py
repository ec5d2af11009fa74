"""Paths and data shared by the sandbox tests (a module name of its own: `conftest` can be
shadowed by another directory's conftest)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT.parent / "shared" / "benchmarks"
LAD = Path(sys.executable).parent / "lad"


def read_jsonl(name: str) -> list[dict]:
    with open(BENCH / name) as f:
        return [json.loads(line) for line in f]
