"""``lad sft``: the SFT stage's command line (heavy imports wait until the command runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def command(
    config: Path = typer.Argument(..., help="SFT config YAML (see configs/sft/tiny.yaml)"),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", help="override output_dir"),
    model: Optional[str] = typer.Option(None, "--model", help="override model (tiny:1m, a directory, a .gguf file, s3://, smollm2-135m-instruct or hf://org/name)"),
    resume: bool = typer.Option(False, "--resume", help="continue from the latest complete checkpoint, if any"),
) -> None:
    """SFT warm-up: fine-tune on prompt/demonstration pairs; saves an HF model with its card."""
    from rich.console import Console
    from rich.markup import escape

    import torch.distributed as dist

    from lad.train.engine import dist_info
    from lad.train.sft import load_config, train_sft

    console = Console(stderr=True)
    try:
        cfg = load_config(config, output_dir=output_dir, model=model)
        results = train_sft(cfg, resume=resume)
    except (ValueError, FileNotFoundError) as err:
        # escape: messages quote fields like prompt[0], which rich would take for markup
        console.print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True)
        raise typer.Exit(2)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if dist_info()[0] == 0:
        print(json.dumps(results, indent=2, sort_keys=True))
        console.print(f"model saved to {Path(cfg.output_dir) / 'model'}")

