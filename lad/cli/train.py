"""``lad train``: the RL stage's command line (heavy imports wait until the command runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lad.cli.stage import MODEL, OUTPUT_DIR, RESUME, run_stage


def command(
    config: Path = typer.Argument(..., help="RL config YAML (see configs/train/)"),
    output_dir: Optional[str] = OUTPUT_DIR,
    model: Optional[str] = MODEL,
    objective: Optional[str] = typer.Option(None, "--objective", help="override algorithm.objective (lad, grpo, dr_grpo, dapo)"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="override train.max_steps"),
    seed: Optional[int] = typer.Option(None, "--seed", help="override train.seed"),
    resume: bool = RESUME,
) -> None:
    """RL with verifiable rewards (LAD by default, or GRPO / Dr. GRPO / DAPO); saves an HF model."""
    from lad.train.rl import load_config, train_rl

    overrides = {"algorithm.objective": objective, "train.max_steps": max_steps, "train.seed": seed}
    run_stage(lambda: load_config(config, output_dir=output_dir, model=model, **overrides),
              lambda cfg: train_rl(cfg, resume=resume))
