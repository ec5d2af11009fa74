"""``lad eval ...``: the evaluation stage on the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Evaluation: Avg@k, unbiased Pass@k, maj@k and diversity, with reports.", no_args_is_help=True)
console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


@app.command("list")
def list_benchmarks() -> None:
    """The registered benchmarks and their defaults."""
    from lad.evaluation.benchmarks import BENCHMARKS

    table = Table(title="benchmarks")
    for col in ("name", "ability", "k", "temperature", "top_p", "max new tokens", "source"):
        table.add_column(col)
    for b in BENCHMARKS.values():
        s = b.sampling
        table.add_row(b.name, b.ability, str(b.k), str(s.temperature), str(s.top_p), str(s.max_new_tokens),
                      b.file or f"synthetic:{b.task}")
    Console().print(table)


@app.command("run")
def run(
    config: Optional[Path] = typer.Argument(None, help="YAML eval config (see configs/eval/); options below override it"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="checkpoint folder, s3:// URI or hf://org/name"),
    benchmarks: Optional[str] = typer.Option(None, "--benchmarks", "-b", help="comma-separated registered names (lad eval list)"),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="output folder"),
    label: Optional[str] = typer.Option(None, help="the model's name in reports"),
    k: Optional[int] = typer.Option(None, help="samples per problem, for every benchmark"),
    limit: Optional[int] = typer.Option(None, help="first N problems of every benchmark"),
    max_new_tokens: Optional[int] = typer.Option(None, help="response budget, for every benchmark"),
    temperature: Optional[float] = typer.Option(None, help="sampling temperature, for every benchmark; 0: greedy decoding, one response per problem (k 1)"),
    engine: Optional[str] = typer.Option(None, help="rollout engine: hf, native or vllm"),
    seed: Optional[int] = typer.Option(None, help="base sampling seed"),
    restart: bool = typer.Option(False, "--restart", help="discard earlier results in the output folder instead of resuming"),
) -> None:
    """Sample k responses per problem, score them, write samples/*.jsonl, summary.json and the report.

    Rerunning the same command resumes: finished samples are kept, only missing ones are generated.
    """
    from pydantic import ValidationError
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from lad.evaluation.benchmarks import BenchmarkError
    from lad.evaluation.config import ConfigError, EvalConfig, format_validation, load_config
    from lad.evaluation.results import ResultsError
    from lad.rewards.code import ScoringError
    from lad.evaluation.stage import run_eval
    from lad.modeling import ModelError

    top = {key: v for key, v in {"model": model, "output": output, "label": label, "engine": engine, "seed": seed}.items()
           if v is not None}
    per_bench = {key: v for key, v in {"k": k, "limit": limit, "max_new_tokens": max_new_tokens,
                                       "temperature": temperature}.items() if v is not None}
    try:
        if config is not None:
            cfg = load_config(config, top)
            data = cfg.model_dump()
        else:
            data = dict(top)
        if benchmarks is not None:
            data["benchmarks"] = [{"name": name.strip()} for name in benchmarks.split(",") if name.strip()]
        if "benchmarks" not in data or "model" not in data:
            _fail("give a config file, or --model and --benchmarks")
        data["benchmarks"] = [{**b, **per_bench} for b in data["benchmarks"]]
        cfg = EvalConfig.model_validate(data)
    except ConfigError as err:
        _fail(str(err))
    except ValidationError as err:
        _fail(f"option {format_validation(err)}")

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        tasks: dict[str, int] = {}

        def progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done)

        try:
            summary = run_eval(cfg, restart=restart, progress=progress, notice=lambda m: console.print(f"[yellow]{m}[/yellow]"))
        except (BenchmarkError, ConfigError, ModelError, ResultsError, ScoringError, FileNotFoundError, NotADirectoryError) as err:
            bar.stop()
            _fail(str(err), 1)

    _print_summary(summary)
    for name, s in summary["run"].items():
        console.print(f"{name}: {s['generated_samples']} samples generated, {s['reused_samples']} reused")
    console.print(f"wrote {Path(cfg.output) / 'summary.json'}, {Path(cfg.output) / 'report.md'}, {Path(cfg.output) / 'report.html'}")


def _print_summary(summary: dict) -> None:
    """The headline numbers on the terminal (the report has the full table)."""
    from lad.evaluation.report import avg_of, num, pct

    table = Table(title=f"evaluation: {summary['label']} (percent)")
    for col in ("benchmark", "k", "problems", "Avg@k", "95% CI", "Pass@k", "maj@k", "dist-4", "tokens"):
        table.add_column(col, justify="left" if col == "benchmark" else "right")
    for b in summary["benchmarks"].values():
        k = b["k"]
        lo, hi = b[f"avg@{k}_ci95"]
        table.add_row(b["benchmark"], str(k), str(b["problems"]), pct(avg_of(b)), f"{pct(lo)}-{pct(hi)}", pct(b[f"pass@{k}"]),
                      pct(b[f"maj@{k}"]), num(b.get("dist-4")), num(b["response_tokens"]["mean"], 1))
    for group, agg in summary["aggregate"].items():
        table.add_row(f"mean ({group})", "", "", pct(agg["avg@k"]), "", pct(agg["pass@k"]), pct(agg["maj@k"]),
                      num(agg.get("dist-4")), num(agg["response_tokens_mean"], 1), style="bold")
    Console().print(table)


@app.command("report")
def report(
    folder: Path = typer.Argument(..., help="output folder of lad eval run (holding summary.json)"),
) -> None:
    """Render report.md, report.html and the plots again from a run's summary.json."""
    from lad.evaluation.report import write_report
    from lad.evaluation.stage import load_summary

    try:
        summary = load_summary(folder)
    except (FileNotFoundError, ValueError) as err:
        _fail(str(err), 1)
    paths = write_report(summary, folder if folder.is_dir() else folder.parent)
    _print_summary(summary)
    console.print("wrote " + ", ".join(map(str, paths)))


@app.command("compare")
def compare(
    summaries: list[Path] = typer.Argument(..., help="summary.json files (or the folders holding them), in column order"),
    labels: Optional[str] = typer.Option(None, "--labels", help="comma-separated names of the runs (default: their labels)"),
    output: Path = typer.Option(Path("out/eval/compare"), "--output", "-o", help="folder for compare.md/.html/.json and the plot"),
) -> None:
    """Several models or checkpoints side by side (e.g. SFT vs LAD vs GRPO): one table, one figure."""
    from lad.evaluation.report import write_comparison
    from lad.evaluation.stage import load_summary

    try:
        loaded = [load_summary(p) for p in summaries]
    except (FileNotFoundError, ValueError) as err:
        _fail(str(err), 1)
    names = [s["label"] for s in loaded]
    if labels is not None:
        names = [n.strip() for n in labels.split(",")]
        if len(names) != len(loaded):
            _fail(f"--labels has {len(names)} names for {len(loaded)} summaries")
    if len(set(names)) != len(names):
        _fail(f"run labels must be distinct, got {names}; name them with --labels")
    paths = write_comparison(list(zip(names, loaded)), output)
    console.print("wrote " + ", ".join(map(str, paths)))
