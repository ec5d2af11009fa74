"""Per-sample results: an append-only JSONL per benchmark, written as samples are scored.

Each line is one sample: benchmark, problem_id, source_id, sample, response, answer, correct,
reason, tokens, finish_reason. A line is written (and fsync'ed) with its batch, so an
interrupted run keeps every finished batch. On resume a torn last line (a write cut short) is
detected, reported and cut off; a bad line anywhere else is an error naming the file and line,
because it means the file was edited, not interrupted. Next to the JSONL, ``<name>.meta.json``
holds the settings the samples were made with; resuming with other settings is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

from lad.storage import write_atomic

SAMPLE_FIELDS = (
    "benchmark", "problem_id", "source_id", "sample", "response", "answer", "correct", "reason", "tokens", "finish_reason",
)


class ResultsError(RuntimeError):
    """Existing results cannot be resumed; the message names the file and what is wrong."""


def read_samples(path: Path) -> tuple[list[dict], int, bool]:
    """(rows, bytes of complete lines, whether a torn last line follows them)."""
    data = path.read_bytes() if path.exists() else b""
    end = data.rfind(b"\n") + 1  # everything after the last newline is an unfinished write
    rows = []
    for number, line in enumerate(data[:end].split(b"\n")[:-1], start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ResultsError(f"{path}, line {number}: not valid JSON ({err.msg}); the file was modified, not interrupted") from None
        missing = [f for f in SAMPLE_FIELDS if not isinstance(row, dict) or f not in row]
        if missing:
            raise ResultsError(f"{path}, line {number}: missing field(s) {missing}")
        rows.append(row)
    return rows, end, end < len(data)


def model_fingerprint(model: str) -> str:
    """Identity of a checkpoint: its reference, plus name, size and mtime of each file of a local folder."""
    h = hashlib.sha256(model.encode())
    path = Path(model)
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            st = f.stat()
            h.update(f"{f.relative_to(path)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()


class SampleLog:
    """The results file of one benchmark: finished samples in, new samples appended."""

    def __init__(self, path: Path, meta: dict[str, Any]):
        self.path = path
        self.meta_path = path.with_name(path.stem + ".meta.json")
        self.meta = meta
        self.dropped_torn_line = False
        self.rows: list[dict] = []

    def open(self) -> "SampleLog":
        """Check the settings, load what is there (cutting a torn last line) and open for appending."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.meta_path.exists():
            old = json.loads(self.meta_path.read_text())
            if old != self.meta:
                changed = sorted(k for k in set(old) | set(self.meta) if old.get(k) != self.meta.get(k))
                raise ResultsError(
                    f"{self.path}: these results were made with other settings (changed: {', '.join(changed)}); "
                    "evaluate into another output folder, or pass --restart to discard them"
                )
        elif self.path.exists() and self.path.stat().st_size:
            raise ResultsError(f"{self.path}: results without {self.meta_path.name}; cannot tell what made them")
        else:
            write_atomic(self.meta_path, json.dumps(self.meta, indent=2, sort_keys=True))
        self.rows, end, torn = read_samples(self.path)
        if torn:
            with self.path.open("r+b") as f:
                f.truncate(end)
            self.dropped_torn_line = True
        self._fh = self.path.open("ab")
        return self

    def done(self) -> set[tuple[int, int]]:
        return {(r["problem_id"], r["sample"]) for r in self.rows}

    def append(self, rows: list[dict]) -> None:
        """Write rows as whole lines and make them durable before returning."""
        self._fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.rows.extend(rows)

    def close(self) -> None:
        fh: Optional[Any] = getattr(self, "_fh", None)
        if fh is not None:
            fh.close()

    def __enter__(self) -> "SampleLog":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()


def discard(path: Path) -> None:
    """Remove a benchmark's results and their settings (for --restart)."""
    for p in (path, path.with_name(path.stem + ".meta.json")):
        p.unlink(missing_ok=True)
