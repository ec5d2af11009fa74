"""What ``lad sft`` and ``lad train`` share: their common options and how a training stage runs
from the command line (one-line errors, the process group closed, results printed by rank 0)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import typer

OUTPUT_DIR = typer.Option(None, "--output-dir", help="override output_dir")
MODEL = typer.Option(None, "--model", help="override model (tiny:1m, a directory, a .gguf file, s3://, smollm2-135m-instruct or hf://org/name)")
RESUME = typer.Option(False, "--resume", help="continue from the latest complete checkpoint, if any")


def run_stage(load: Callable[[], object], train: Callable[[object], dict]) -> None:
    """``train(load())``; a bad config or input is one red line and exit code 2."""
    from rich.console import Console
    from rich.markup import escape

    import torch.distributed as dist

    from lad.train.engine import dist_info

    console = Console(stderr=True)
    try:
        cfg = load()
        results = train(cfg)
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
