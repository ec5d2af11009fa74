"""What ``lad pipeline run --local`` shows: one line per stage as it starts and ends (wall time and
the stage's key figure), a bar while a stage reports progress, and the KFP executor logs in a file.

The steps run in KFP's subprocesses, whose output KFP's local runner prints line by line to this
process's ``sys.stdout``, between its own log lines ("Executing task 'x'", "Task 'x' finished with
status SUCCESS"). :class:`StageConsole` takes the place of ``sys.stdout`` for the run: every line
goes to the log file, and the lines below become the console's: a step calls :func:`progress` and
:func:`figure`, which print a marked line.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import time
from pathlib import Path
from typing import Iterator, Optional, TextIO

PROGRESS_MARK = "lad-progress:"
FIGURE_MARK = "lad-figure:"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([^']+)'")
_END = re.compile(r"Task '([^']+)' finished with status (\w+)")
_PROGRESS = re.compile(re.escape(PROGRESS_MARK) + r" (\d+)/(\d+)")
_ERROR = re.compile(r"^(?:\w+\.)*(\w*Error): (.+)$")


def progress(done: int, total: int) -> None:
    """From a step: ``done`` of ``total`` units of its work are finished."""
    print(f"{PROGRESS_MARK} {done}/{total}", flush=True)


def figure(text: str) -> None:
    """From a step: its key figure, shown on the console line that ends the stage."""
    print(f"{FIGURE_MARK} {text}", flush=True)


class StageConsole(io.TextIOBase):
    """A ``sys.stdout`` for the run: the log file gets everything, ``out`` the stage lines
    (and everything too with ``verbose``). ``stages`` holds each finished stage's wall time."""

    def __init__(self, log: Path, out: TextIO, *, verbose: bool = False, names: Optional[dict[str, str]] = None):
        self.log_path = log
        self._names = names or {}
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = log.open("w", encoding="utf-8")
        self._out, self._verbose = out, verbose
        self._pending = ""
        self.stages: dict[str, dict] = {}
        self._current: Optional[str] = None
        self._figure: Optional[str] = None
        self._error: Optional[str] = None
        self._bar = None

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._log.write(text)
        if self._verbose:
            self._out.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._line(_ANSI.sub("", line).strip())
        return len(text)

    def flush(self) -> None:
        self._log.flush()
        self._out.flush()

    def close(self) -> None:
        self._stop_bar()
        self._log.close()

    # ----------------------------------------------------------------------------------------

    def _say(self, text: str) -> None:
        self._stop_bar()
        self._out.write(text + "\n")
        self._out.flush()

    def _stop_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _line(self, line: str) -> None:
        if m := _START.search(line):
            self._current, self._figure, self._error = self._names.get(m.group(1), m.group(1)), None, None
            self.stages[self._current] = {"started": time.monotonic()}
            self._say(f"▶ {self._current}")
        elif m := _END.search(line):
            name, status = self._names.get(m.group(1), m.group(1)), m.group(2)
            stage = self.stages.setdefault(name, {"started": time.monotonic()})
            stage["wall_s"] = round(time.monotonic() - stage.pop("started"), 1)
            stage["status"] = status
            if status == "SUCCESS":
                stage["figure"] = self._figure
                self._say(f"✓ {name}  {stage['wall_s']:.1f} s" + (f"  {self._figure}" if self._figure else ""))
            else:
                stage["error"] = self._error
                self._say(f"✗ {name} failed after {stage['wall_s']:.1f} s: {self._error or 'see the log'}; log: {self.log_path}")
            self._current = None
        elif line.startswith(FIGURE_MARK):
            self._figure = line[len(FIGURE_MARK):].strip()
        elif m := _PROGRESS.search(line):
            self._advance(int(m.group(1)), int(m.group(2)))
        elif m := _ERROR.match(line):
            self._error = m.group(2)

    def _advance(self, done: int, total: int) -> None:
        if self._verbose or self._current is None or not self._out.isatty():
            return
        from tqdm import tqdm

        if self._bar is None or self._bar.total != total:
            self._stop_bar()
            # redrawn on every progress line: steps report a few times a second at most
            self._bar = tqdm(total=total, desc=f"  {self._current}", file=self._out, leave=False, dynamic_ncols=True,
                             mininterval=0)
        self._bar.update(done - self._bar.n)


def display_names(pipeline) -> dict[str, str]:
    """KFP task name (``evaluate-2``) -> the display name set in the pipeline (``evaluate warm start``)."""
    spec = pipeline.pipeline_spec
    dags = [spec.root.dag] + [c.dag for c in spec.components.values() if c.HasField("dag")]
    return {name: task.task_info.name for dag in dags for name, task in dag.tasks.items()}


@contextlib.contextmanager
def captured(console: StageConsole) -> Iterator[StageConsole]:
    """``sys.stdout`` and ``sys.stderr`` are ``console`` inside the block; it is closed after."""
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = console
    try:
        yield console
    finally:
        sys.stdout, sys.stderr = saved
        console.close()
