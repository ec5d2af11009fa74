"""The study's two evaluation sets, drawn once and written as canonical records (JSONL).

Both come from the synthetic generator's held-out buckets (never in the training split, see
lad.data.synthetic); the validation set is drawn under its own split name and seed and skips
every test problem, so choosing settings on it never looks at the test problems.
"""

from __future__ import annotations

import json
from pathlib import Path

from lad.study.config import Splits
from lad.storage import write_atomic


def draw_splits(splits: Splits) -> tuple[list[dict], list[dict]]:
    """(validation records, test records)."""
    from lad.data.synthetic import generate

    test = generate(splits.task, splits.test.n, seed=splits.test.seed, difficulty=splits.difficulty, split="test")
    taken = {json.dumps(r["prompt"]) for r in test}
    # drawn with room for every test problem to be skipped: the first n that are not test problems
    pool = generate(splits.task, splits.validation.n + splits.test.n, seed=splits.validation.seed,
                    difficulty=splits.difficulty, split="validation")
    validation = [r for r in pool if json.dumps(r["prompt"]) not in taken][: splits.validation.n]
    return validation, test


def write_splits(splits: Splits, folder: Path) -> tuple[Path, Path]:
    """validation.jsonl and test.jsonl under ``folder`` (kept if present: a study's sets never change)."""
    paths = folder / "validation.jsonl", folder / "test.jsonl"
    if not all(p.is_file() for p in paths):
        for path, records in zip(paths, draw_splits(splits)):
            write_atomic(path, "".join(json.dumps(r) + "\n" for r in records))
    return paths
