"""Running a study: the warm start once, the evaluation sets once, then every run not yet finished,
up to ``max_parallel`` child processes at a time (one thread each), then the report.

    OUTPUT/warm_start/           the SFT warm start (when warm_start.sft), model/ + metrics.json
    OUTPUT/warm_start_test/      the warm start's own test evaluation (the table's baseline row)
    OUTPUT/data/                 validation.jsonl, test.jsonl
    OUTPUT/runs/ARM/seedN/       train.yaml, run.json, the trainer's files, test/, result.json, log
    OUTPUT/study.md, study.json, pass_at_k.png, validation_curve.png

A run with a result.json is finished and never started again; any other is (re)started, and its
trainer resumes from its latest checkpoint. Child processes are plain ``python -m`` modules of this
package, so a killed study leaves nothing that the next invocation cannot pick up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import yaml

from lad.config import ConfigError, apply_overrides, read_yaml_mapping
from lad.study.config import StudyConfig, load_study_config
from lad.study.grid import Arm, Run, expand, rl_run_config, runs_of
from lad.storage import write_atomic
from lad.study.splits import write_splits
from lad.study.worker import RESULT, WARM_START_ARM, WARM_START_TEST

Notice = Callable[[str], None]


class StudyError(RuntimeError):
    """A run or the warm start failed; the message names its log."""


@dataclass
class StudyOutcome:
    arms: list[Arm]
    started: list[str] = field(default_factory=list)  # runs launched by this invocation
    skipped: list[str] = field(default_factory=list)  # runs already finished before it
    report: list[Path] = field(default_factory=list)


def child_env(threads: int = 1) -> dict[str, str]:
    """The environment of a training child: one BLAS/OpenMP pool of ``threads``, no distributed
    rendezvous inherited (each child is a world of one)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def launch(args: list[str], log: Path, *, threads: int = 1, cwd: Optional[Path] = None) -> subprocess.Popen:
    """``python -m ARGS`` in a child process with ``threads`` threads, its output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        return subprocess.Popen([sys.executable, "-m", *args], stdout=out, stderr=subprocess.STDOUT, env=child_env(threads), cwd=cwd)


def _read_yaml(path: Path, what: str) -> dict:
    try:
        return read_yaml_mapping(path)
    except ConfigError as err:
        raise ConfigError(f"{what}: {err}") from None


def _failure(what: str, log: Path) -> StudyError:
    tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:] if log.is_file() else []
    return StudyError(f"{what} failed; see {log}" + (f" (last line: {tail[0].strip()})" if tail else ""))


def warm_start(cfg: StudyConfig, out: Path, notice: Notice) -> str:
    """The model every arm starts from; trains the SFT warm start first if the study names one."""
    if cfg.warm_start.model is not None:
        return cfg.warm_start.model
    folder = out / "warm_start"
    if not (folder / "metrics.json").is_file():  # the SFT trainer writes it after the model
        raw = apply_overrides(_read_yaml(Path(cfg.warm_start.sft), "warm_start.sft"), cfg.warm_start.sft_overrides)
        raw["output_dir"] = str(folder)
        raw["tracking"] = {"enabled": False}
        config = out / "warm_start.yaml"
        write_atomic(config, yaml.safe_dump(raw))
        notice(f"warm start: SFT ({cfg.warm_start.sft}) into {folder}")
        # alone on the machine: it gets the threads the runs will share
        proc = launch(["lad.cli", "sft", str(config), "--resume"], out / "warm_start.log", threads=cfg.max_parallel)
        if proc.wait():
            raise _failure("the SFT warm start", out / "warm_start.log")
    return str(folder / "model")


def test_config(cfg: StudyConfig, model: str, folder: Path, label: str, test: Path, max_new_tokens: int) -> dict:
    """The test evaluation of ``model`` into ``folder``/test: the same for every run and the warm start."""
    ev = cfg.evaluation
    return {
        "model": model, "output": str(folder / "test"), "label": label, "engine": ev.engine,
        "seed": ev.seed, "verifier_workers": 1,
        "benchmarks": [{"name": f"synthetic_{cfg.splits.task}", "records": True, "uri": str(test), "k": ev.k,
                        "temperature": ev.temperature, "top_p": ev.top_p, "max_new_tokens": max_new_tokens}],
    }


def test_tokens(cfg: StudyConfig, base: dict) -> int:
    """The test evaluation's new-token budget, one for every arm: evaluation.max_new_tokens, else the
    rollout's of the base with the study's overrides (an arm's own overrides never change it)."""
    from lad.train.rl import RolloutConfig

    if cfg.evaluation.max_new_tokens is not None:
        return cfg.evaluation.max_new_tokens
    raw = rl_run_config(base, model="tiny:1m", output_dir="x", objective="grpo", seed=0, overrides=cfg.overrides)
    return RolloutConfig.model_validate(raw.get("rollout", {})).max_new_tokens


def prepare_run(run: Run, cfg: StudyConfig, base: dict, model: str, validation: Path, test: Path, out: Path) -> Path:
    """The run's folder with its train.yaml and run.json (rewritten identically on every invocation)."""
    folder = out / "runs" / run.arm.name / f"seed{run.seed}"
    ev = cfg.evaluation
    raw = rl_run_config(base, model=model, output_dir=folder, objective=run.arm.objective, seed=run.seed,
                        loss_params=run.arm.loss_params, overrides={**cfg.overrides, **run.arm.overrides})
    raw.setdefault("data", {})["eval"] = {"path": str(validation)}
    raw["eval"] = {"every_steps": ev.every_steps, "at_start": True, "k": ev.validation_k, "temperature": ev.temperature,
                   "top_p": ev.top_p, "max_new_tokens": ev.max_new_tokens}
    test_cfg = test_config(cfg, str(folder / "model"), folder, run.name, test, test_tokens(cfg, base))
    write_atomic(folder / "train.yaml", yaml.safe_dump(raw, sort_keys=False))
    write_atomic(folder / "run.json", json.dumps({"arm": run.arm.name, "seed": run.seed, "test": test_cfg}, indent=2))
    return folder


def prepare_warm_start_test(cfg: StudyConfig, base: dict, model: str, test: Path, out: Path) -> Path:
    """OUTPUT/warm_start_test/run.json: the warm start evaluated on the test set as every run is,
    without training (the baseline every arm's gain is read from)."""
    folder = out / WARM_START_TEST
    test_cfg = test_config(cfg, model, folder, WARM_START_ARM, test, test_tokens(cfg, base))
    write_atomic(folder / "run.json", json.dumps({"arm": WARM_START_ARM, "seed": None, "train": False, "test": test_cfg}, indent=2))
    return folder


def check_runs(cfg: StudyConfig, base: dict, arms: list[Arm], where: str) -> None:
    """Every run's RL config validates before anything trains; errors name the arm and the field."""
    from pydantic import ValidationError

    from lad.config import format_validation
    from lad.train.rl import RLConfig

    for run in runs_of(arms):
        raw = rl_run_config(base, model="tiny:1m", output_dir="x", objective=run.arm.objective, seed=run.seed,
                            loss_params=run.arm.loss_params, overrides={**cfg.overrides, **run.arm.overrides})
        try:
            RLConfig.model_validate(raw)
        except ValidationError as err:
            raise ConfigError(f"{where}: base {cfg.base} with overrides, arm {run.arm.name}: {format_validation(err)}") from None


def run_study(config_path: Path, *, notice: Notice = lambda m: None, poll_s: float = 1.0) -> StudyOutcome:
    """Run (or resume) the study of ``config_path``; returns what this invocation started and skipped."""
    from lad.study.report import write_report

    cfg = load_study_config(config_path)
    base = _read_yaml(Path(cfg.base), "base")
    arms = expand(cfg, base, str(config_path))
    check_runs(cfg, base, arms, str(config_path))
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = warm_start(cfg, out, notice)
    validation, test = write_splits(cfg.splits, out / "data")
    outcome = StudyOutcome(arms)
    runs: list[tuple[str, Path]] = []  # (name, folder) of each run still to train
    for run in runs_of(arms):
        folder = prepare_run(run, cfg, base, model, validation, test, out)
        if (folder / RESULT).is_file():
            outcome.skipped.append(run.name)
        else:
            runs.append((run.name, folder))
    notice(f"{len(outcome.skipped)} of {len(outcome.skipped) + len(runs)} runs finished before; {len(runs)} to run, "
           f"{cfg.max_parallel} at a time")
    warm_test = prepare_warm_start_test(cfg, base, model, test, out)
    todo = ([] if (warm_test / RESULT).is_file() else [(WARM_START_ARM, warm_test)]) + runs
    running: list[tuple[str, Path, subprocess.Popen]] = []
    failures: list[StudyError] = []
    while todo or running:
        while todo and len(running) < cfg.max_parallel:
            name, folder = todo.pop(0)
            running.append((name, folder, launch(["lad.study.worker", str(folder)], folder / "log")))
            if folder != warm_test:
                outcome.started.append(name)
            notice(f"started {name}")
        time.sleep(poll_s)
        for entry in [e for e in running if e[2].poll() is not None]:
            running.remove(entry)
            name, folder, proc = entry
            if proc.returncode == 0 and (folder / RESULT).is_file():
                notice(f"finished {name}")
            else:
                failures.append(_failure(f"run {name}", folder / "log"))
                notice(str(failures[-1]))
    if failures:
        raise StudyError(f"{len(failures)} run(s) failed: " + "; ".join(map(str, failures)))
    outcome.report = write_report(cfg, arms, out)
    return outcome
