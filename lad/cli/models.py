"""``lad models``: the model registry from the command line (list, show, promote)."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from lad.tracking.registry import GATE

app = typer.Typer(help="Registered models: versions, metrics, aliases, promotion.", no_args_is_help=True)


def console() -> Console:
    # Made per call so the width follows the terminal (and $COLUMNS) at the time of the command.
    return Console()

TRACKING_URI = typer.Option(
    None, "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db)"
)


def _tracker(tracking_uri: Optional[str]):
    from lad.tracking import Tracker, TrackingConfig

    return Tracker(TrackingConfig(tracking_uri=tracking_uri))


def _fail(message: str) -> None:
    console().print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(2)


@contextmanager
def _clear_errors(what: str):
    """Registry errors (unknown model, unreachable server) as one line, not a traceback."""
    from mlflow.exceptions import MlflowException

    from lad.tracking import TrackingError

    try:
        yield
    except TrackingError as err:
        _fail(str(err))
    except MlflowException as err:
        _fail(f"{what}: {err.message}")


def _metrics_text(mv) -> str:
    from lad.tracking import version_score

    return ", ".join(f"{k}={v:.6g}" for k, v in sorted(version_score(mv).metrics.items())) or "-"


def _when(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if ms else "-"


@app.command("list")
def list_versions(
    name: Optional[str] = typer.Argument(None, help="registered model name (default: every model)"),
    tracking_uri: Optional[str] = TRACKING_URI,
) -> None:
    """Versions with their aliases, metrics and last promotion decision."""
    from lad.tracking import TAG_BENCHMARKS, TAG_DECISION

    with _clear_errors(f"list {name or 'models'}"):
        versions = _tracker(tracking_uri).list_versions(name)
    if not versions:
        console().print(f"no registered versions{f' of {name!r}' if name else ''}")
        return
    table = Table(title=f"Model versions{f' of {name}' if name else ''}")
    for col in ("model", "version", "aliases", "metrics", "benchmarks", "promotion", "created"):
        table.add_column(col)
    for mv in versions:
        table.add_row(
            mv.name, str(mv.version), ", ".join(sorted(mv.aliases)) or "-", _metrics_text(mv),
            mv.tags.get(TAG_BENCHMARKS) or "-", mv.tags.get(TAG_DECISION, "-"), _when(mv.creation_timestamp),
        )  # fmt: skip
    console().print(table)


@app.command("show")
def show(
    name: str = typer.Argument(..., help="registered model name"),
    version: str = typer.Argument("champion", help="version number or alias"),
    tracking_uri: Optional[str] = TRACKING_URI,
) -> None:
    """One version: source, run, aliases and every tag."""
    with _clear_errors(f"show {name} {version}"):
        mv = _tracker(tracking_uri).get_version(name, version)
    table = Table(title=f"{name} v{mv.version}", show_header=False)
    table.add_column("field")
    table.add_column("value")
    table.add_row("aliases", ", ".join(sorted(mv.aliases)) or "-")
    table.add_row("source", mv.source)
    table.add_row("run", mv.run_id or "-")
    table.add_row("status", mv.status)
    table.add_row("created", _when(mv.creation_timestamp))
    for key in sorted(mv.tags):
        table.add_row(key, mv.tags[key])
    console().print(table)


@app.command("promote")
def promote_cmd(
    name: str = typer.Argument(..., help="registered model name"),
    version: str = typer.Argument(..., help="version number (or alias, e.g. challenger) to promote"),
    metric: str = typer.Option(..., "--metric", help="metric compared with the champion's, as tagged "
                               "on the version (metric.<name>; e.g. all/avg_k, synthetic_countdown/avg_k)"),
    margin: float = typer.Option(GATE.margin, "--margin", min=0.0, help="required improvement over the champion "
                                 "(a tie is never promoted)"),
    min_score: Optional[float] = typer.Option(None, "--min-score", min=0.0, help="the floor: a version below it is "
                                              f"never promoted (default {GATE.min_score:g}; with --lower-is-better: "
                                              "the highest acceptable value, default none)"),
    lower_is_better: bool = typer.Option(False, "--lower-is-better", help="the metric is a loss or an error rate"),
    tracking_uri: Optional[str] = TRACKING_URI,
) -> None:
    """Make a version the champion if it reaches the floor and beats the current one by the margin.

    Exit status: 0 promoted, 1 refused (the reason is printed and tagged on the version), 2 a bad input (an
    unknown model, version or metric: nothing is written).
    """
    with _clear_errors(f"promote {name} {version}"):
        result = _tracker(tracking_uri).promote(name, version, metric, margin, min_score=min_score,
                                                higher_is_better=not lower_is_better)
    colour = "green" if result.promoted else "yellow"
    console().print(f"[{colour}]{name} v{result.version}: {result.reason}[/{colour}]", soft_wrap=True)
    console().print(f"champion: v{result.champion}" if result.champion else "champion: none")
    if not result.promoted:
        raise typer.Exit(1)
