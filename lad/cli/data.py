"""``lad data ...``: the data prep stage on the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(help="Data preparation: raw math and code sets -> canonical train/eval parquet.", no_args_is_help=True)
console = Console(stderr=True)


@app.command("prep")
def prep(
    config: Path = typer.Argument(..., help="YAML prep config (see configs/data/)"),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="output folder or s3:// URI (overrides the config)"),
    on_bad_row: Optional[str] = typer.Option(None, help="fail or skip (overrides the config)"),
    jsonl: Optional[bool] = typer.Option(None, "--jsonl/--no-jsonl", help="also write JSONL (overrides the config)"),
    report: Optional[Path] = typer.Option(None, "--report", help="also write the report JSON here, on failure too"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="render every prompt with this model's chat template "
                                        "(any model reference, e.g. smollm2-135m-instruct; overrides the config)"),
    max_prompt_tokens: Optional[int] = typer.Option(None, help="with a model: longer rendered prompts are bad rows (overrides the config)"),
) -> None:
    """Turn the configured sources into train.parquet, eval parquet(s) and report.json."""
    from pydantic import ValidationError

    from lad.data.config import ConfigError, PrepConfig, format_validation, load_config
    from lad.data.prep import PrepError, run_prep
    from lad.storage import put_bytes

    try:
        cfg = load_config(config)
        overrides = {k: v for k, v in {"output": output, "on_bad_row": on_bad_row, "jsonl": jsonl, "model": model,
                                       "max_prompt_tokens": max_prompt_tokens}.items() if v is not None}
        if overrides:
            cfg = PrepConfig.model_validate(cfg.model_dump() | overrides)
    except ConfigError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2)
    except ValidationError as err:
        console.print(f"[red]error:[/red] option {format_validation(err)}")
        raise typer.Exit(2)

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("reading", total=None)
        try:
            result = run_prep(cfg, progress=lambda name, n: bar.update(task, description=f"{name}: {n} rows"))
        except PrepError as err:
            bar.stop()
            if report and err.report is not None:
                put_bytes(json.dumps(err.report, indent=2, ensure_ascii=False).encode(), report)
                console.print(f"wrote {report}")
            console.print(f"[red]error:[/red] {err}")
            raise typer.Exit(1)

    table = Table(title=f"data prep -> {cfg.output}")
    columns = ("read", "kept", "rejected", "duplicate", "contaminated")
    for col in ("source", "role", *columns):
        table.add_column(col, justify="left" if col in ("source", "role") else "right")
    for name, s in result["sources"].items():
        table.add_row(name, s["role"], *(str(s[c]) for c in columns))
    table.add_row("total", "", *(str(result["totals"][c]) for c in columns), style="bold")
    console.print(table)
    if result["model_prompts"]:
        longest = max((s["prompt_tokens"]["max"] or 0 for s in result["sources"].values()), default=0)
        console.print(f"prompts rendered with the chat template of {result['model_prompts']['model']}: longest {longest} tokens")
    for name, rows in result["outputs"].items():
        console.print(f"wrote {name}: {rows} rows")
    if result["errors_total"]:
        console.print(f"[yellow]{result['errors_total']} bad row(s) quarantined[/yellow]; first: {result['errors'][0]['message']}")
    if report:
        put_bytes(json.dumps(result, indent=2, ensure_ascii=False).encode(), report)
