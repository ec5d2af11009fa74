"""The run logger of a training stage: its MLflow run, its files and the progress bar, in one object.

Everything is written by rank 0; on the other ranks every call does nothing, so a training loop
calls the logger unconditionally. Files go under the stage's output folder: the step log
(``steps.jsonl``, one line appended per step, cut back to the checkpoint's step on resume) and
whole files written atomically (``lad.storage.write_atomic``), optionally logged as MLflow
artifacts.

    with RunLogger(tracker, out_dir, name="lad-run", stage="rl", config=cfg, total=100, ...) as log:
        log.metrics(eval_metrics, 0)
        for step in ...:
            log.step(step, metrics, postfix={"reward": "0.41"}, last=step == 100)
        log.write_json("metrics.json", results, artifact_dir="")
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Mapping, Optional

STEPS_FILE = "steps.jsonl"


class RunLogger:
    """MLflow (when ``tracker`` is given), the step log and the progress bar of one stage run.

    The MLflow run is the one ``run_id`` names when resuming; else the stage ``name`` under
    ``parent_run_id`` (a pipeline run), else a new run tagged with ``stage``. ``log_every``: steps
    between metric logs to MLflow (the last step is always logged); the step log gets every step
    when ``step_log`` is set.
    """

    def __init__(self, tracker, out_dir: str | Path, *, name: str, stage: str, config, rank: int, total: int,
                 initial: int = 0, desc: str, run_id: Optional[str] = None, parent_run_id: Optional[str] = None,
                 log_every: int = 1, step_log: bool = True):
        self.tracker = tracker if rank == 0 else None
        self.out_dir = Path(out_dir)
        self.name, self.stage, self.config = name, stage, config
        self.rank, self.total, self.initial, self.desc = rank, total, initial, desc
        self.resumed_run_id, self.parent_run_id = run_id, parent_run_id
        self.log_every, self.step_log = log_every, step_log
        self.run = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "RunLogger":
        from tqdm import tqdm

        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if self.step_log and self.initial:
                self._truncate_steps(self.initial)
        if self.tracker is not None:
            self.run = self._stack.enter_context(self._open_run())
        self.bar = self._stack.enter_context(
            tqdm(total=self.total, initial=self.initial, desc=self.desc, disable=self.rank != 0, dynamic_ncols=True))
        return self

    def __exit__(self, *exc) -> Optional[bool]:
        return self._stack.__exit__(*exc)

    def _open_run(self):
        import torch

        from lad.tracking import TAG_STAGE

        # GPU stages record the machine's use (GPU utilisation and memory, CPU, host memory) beside their metrics.
        system = torch.cuda.is_available()
        if self.resumed_run_id is not None:
            return self.tracker.run(self.name, run_id=self.resumed_run_id, system_metrics=system)
        if self.parent_run_id is not None:
            return self.tracker.stage(self.name, config=self.config, parent_run_id=self.parent_run_id, system_metrics=system)
        return self.tracker.run(self.name, config=self.config, tags={TAG_STAGE: self.stage}, system_metrics=system)

    @property
    def run_id(self) -> Optional[str]:
        """The MLflow run's id (None without one): what a checkpoint keeps so a resume logs to the same run."""
        return self.run.run_id if self.run is not None else None

    @property
    def fresh(self) -> bool:
        """Whether this is the run's first process (not a resume of an earlier one's MLflow run)."""
        return self.resumed_run_id is None

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.run is not None:
            self.run.set_tags(tags)

    def log_dataset(self, path: str, **kwargs) -> None:
        if self.run is not None:
            self.run.log_dataset(path, **kwargs)

    def log_records(self, records: list[dict], **kwargs) -> None:
        if self.run is not None:
            self.run.log_records(records, **kwargs)

    def log_prompts(self, source, records: list[dict], *, name: str, context: str) -> None:
        """The dataset input of a prompt source (lad.train.rl.PromptSource): its files, with their
        content hashes, or the records a synthetic spec made."""
        if source.synthetic is not None:
            self.log_records(records, name=name, context=context, source={"synthetic": source.synthetic.model_dump()})
            return
        paths = [source.path] if isinstance(source.path, str) else source.path
        for i, path in enumerate(paths):
            self.log_dataset(path, name=name if len(paths) == 1 else f"{name}-{i}", context=context)

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        if self.run is not None:
            self.run.log_dict(obj, artifact_file)

    def metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """To MLflow only (e.g. an evaluation before the first step)."""
        if self.run is not None:
            self.run.log_metrics(metrics, step)

    def step(self, step: int, metrics: Mapping[str, float], *, postfix: Mapping[str, str], last: bool) -> None:
        """One finished step: the bar advances (showing ``postfix``), MLflow every ``log_every``
        steps and at the last, the step log always."""
        self.bar.update(1)
        self.bar.set_postfix(**postfix)
        if step % self.log_every == 0 or last:
            self.metrics(metrics, step)
        if self.rank == 0 and self.step_log:
            with (self.out_dir / STEPS_FILE).open("a") as f:
                f.write(json.dumps({"step": step, **metrics}) + "\n")

    def note(self, message: str) -> None:
        """A line on the console (rank 0), above the progress bar."""
        if self.rank == 0:
            self.bar.write(message)

    def write_json(self, rel: str, obj: Any, *, artifact_dir: Optional[str] = None) -> None:
        """``obj`` as indented JSON at ``out_dir/rel``; logged as an artifact under ``artifact_dir``
        ("" for the run's root) when that is given."""
        self._write(rel, json.dumps(obj, indent=2, sort_keys=True), artifact_dir)

    def write_jsonl(self, rel: str, rows: list[dict], *, artifact_dir: Optional[str] = None) -> None:
        """``rows`` as JSON lines at ``out_dir/rel`` (see :meth:`write_json`)."""
        self._write(rel, "".join(json.dumps(r) + "\n" for r in rows), artifact_dir)

    def _write(self, rel: str, text: str, artifact_dir: Optional[str]) -> None:
        from lad.storage import write_atomic

        if self.rank != 0:
            return
        path = write_atomic(self.out_dir / rel, text)
        if self.run is not None and artifact_dir is not None:
            self.run.log_artifact(path, artifact_dir or None)

    def _truncate_steps(self, last_step: int) -> None:
        """Drop the step lines a killed run wrote after its last checkpoint (the resume redoes those steps)."""
        from lad.storage import write_atomic

        path = self.out_dir / STEPS_FILE
        if path.is_file():
            lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= last_step]
            write_atomic(path, "".join(line + "\n" for line in lines))
