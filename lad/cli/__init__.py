"""The ``lad`` command line: this app, its own ``lad bandit``, and a module per other command."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="LAD post-training: objectives, experiments and pipeline stages.", no_args_is_help=True)
console = Console()

# One module per command, named after it: lad/cli/<command>.py holds its app (a group of
# commands) or its command; each defers heavy imports until it runs.
from lad.cli import data, eval, images, models, pipeline, sandbox, sft, study, train  # noqa: E402

for group in (data, sandbox, models, eval, pipeline, images):
    app.add_typer(group.app, name=group.__name__.rsplit(".", 1)[1])
app.command("sft")(sft.command)
app.command("train")(train.command)
app.command("study")(study.command)


@app.callback()
def main() -> None:
    """LAD post-training: objectives, experiments and pipeline stages."""


@app.command()
def bandit(
    json_path: Optional[Path] = typer.Option(None, "--json", help="write the results as JSON here"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="write a PNG of final policies vs the target here"),
    kappa: float = typer.Option(4.0, help="1/eta; the target is softmax(kappa * A)"),
    steps: int = typer.Option(4000, help="Adam steps per method"),
    lr: float = typer.Option(5e-3, help="Adam learning rate"),
    seed: int = typer.Option(0, help="random seed"),
    estimator: str = typer.Option("exact", help="LAD estimator: exact (all arms) or sampled (G draws)"),
    group_size: int = typer.Option(8, help="G, arms sampled per step"),
) -> None:
    """The paper's controlled bandit: LAD under every divergence vs GRPO and policy gradient."""
    from pydantic import ValidationError

    from lad.bandit import BanditConfig, method_names, plot_bandit, run_bandit

    try:
        cfg = BanditConfig(kappa=kappa, steps=steps, lr=lr, seed=seed, lad_estimator=estimator, group_size=group_size)
    except ValidationError as err:
        for e in err.errors():
            console.print(f"[red]error:[/red] option {'.'.join(map(str, e['loc']))}: {e['msg']}")
        raise typer.Exit(2)

    names = method_names(cfg)
    with console.status("") as status:
        done = []

        def progress(name: str) -> None:
            done.append(name)
            status.update(f"bandit: {len(done)}/{len(names)} methods done (last: {name})")

        status.update(f"bandit: 0/{len(names)} methods")
        result = run_bandit(cfg, progress=progress)

    table = Table(title=f"Controlled bandit: {cfg.arms} arms, kappa {cfg.kappa}, {cfg.steps} steps, LAD {cfg.lad_estimator}")
    for col in ("method", "TV", "KL(target||pi)", "entropy", "max prob", "modes"):
        table.add_column(col, justify="right" if col != "method" else "left")
    target_entropy = sum(-p * math.log(p) for p in result["target"] if p > 0)
    for name, m in result["methods"].items():
        table.add_row(
            name, f"{m['tv']:.4f}", f"{m['kl']:.4f}", f"{m['entropy']:.3f}", f"{m['max_prob']:.3f}",
            f"{m['modes_recovered']}/{len(cfg.bumps)}",
        )
    table.caption = f"target: entropy {target_entropy:.3f}, max prob {max(result['target']):.3f}"
    console.print(table)
    if json_path:
        from lad.storage import write_atomic

        write_atomic(json_path, json.dumps(result, indent=2))
        console.print(f"wrote {json_path}")
    if plot:
        plot_bandit(result, str(plot))
        console.print(f"wrote {plot}")

