"""``lad train``: the RL stage's command line (heavy imports wait until the command runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def command(
    config: Path = typer.Argument(..., help="RL config YAML (see configs/train/)"),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", help="override output_dir"),
    model: Optional[str] = typer.Option(None, "--model", help="override model (tiny:1m, a directory, a .gguf file, s3://, smollm2-135m-instruct or hf://org/name)"),
    objective: Optional[str] = typer.Option(None, "--objective", help="override algorithm.objective (lad, grpo, dr_grpo, dapo)"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="override train.max_steps"),
    seed: Optional[int] = typer.Option(None, "--seed", help="override train.seed"),
    resume: bool = typer.Option(False, "--resume", help="continue from the latest complete checkpoint, if any"),
) -> None:
    """RL with verifiable rewards (LAD by default, or GRPO / Dr. GRPO / DAPO); saves an HF model."""
    from rich.console import Console

    from lad.train.engine import dist_info
    from lad.train.rl import load_config, train_rl

    console = Console(stderr=True)
    try:
        cfg = load_config(config, output_dir=output_dir, model=model, **{"algorithm.objective": objective,
                                                                          "train.max_steps": max_steps, "train.seed": seed})
        results = train_rl(cfg, resume=resume)
    except (ValueError, FileNotFoundError) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2)
    if dist_info()[0] == 0:
        print(json.dumps(results, indent=2, sort_keys=True))
        console.print(f"model saved to {Path(cfg.output_dir) / 'model'}")

