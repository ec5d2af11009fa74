"""``lad sft``: the SFT stage's command line (heavy imports wait until the command runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lad.cli.stage import MODEL, OUTPUT_DIR, RESUME, run_stage


def command(
    config: Path = typer.Argument(..., help="SFT config YAML (see configs/sft/tiny.yaml)"),
    output_dir: Optional[str] = OUTPUT_DIR,
    model: Optional[str] = MODEL,
    resume: bool = RESUME,
) -> None:
    """SFT warm-up: fine-tune on prompt/demonstration pairs; saves an HF model with its card."""
    from lad.train.sft import load_config, train_sft

    run_stage(lambda: load_config(config, output_dir=output_dir, model=model), lambda cfg: train_sft(cfg, resume=resume))
