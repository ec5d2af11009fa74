"""``lad study CONFIG``: the study's command line (heavy imports wait until the command runs)."""

from __future__ import annotations

from pathlib import Path

import typer


def command(config: Path = typer.Argument(..., help="study config YAML (see benchmarks/study_countdown.yaml)")) -> None:
    """A grid of RL runs from one warm start (objective x divergence x kappa x seed), resumable; one table and figures.

    Rerunning the same command redoes nothing that finished: finished runs are kept, killed ones
    resume from their checkpoints, and the table and figures are written again.
    """
    from rich.console import Console
    from rich.markup import escape

    from lad.config import ConfigError
    from lad.study.runner import StudyError, run_study

    console = Console(stderr=True)
    try:
        outcome = run_study(config, notice=lambda m: console.print(escape(m), soft_wrap=True))
    except ConfigError as err:
        console.print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True)
        raise typer.Exit(2)
    except (StudyError, ValueError) as err:
        console.print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"{len(outcome.started)} run(s) trained now, {len(outcome.skipped)} finished before")
    console.print("wrote " + ", ".join(map(str, outcome.report)))
