"""``lad images build``: the project's images through the docker SDK."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(help="Container images: base (Dockerfile), trainer (images/trainer), sandbox (images/sandbox).",
                         no_args_is_help=True)
console = Console(stderr=True)


@app.command("build")
def build_cmd(
    names: Optional[list[str]] = typer.Argument(None, help="base, trainer, sandbox (default: all)"),
    push: Optional[str] = typer.Option(None, "--push", metavar="REGISTRY", help="tag for REGISTRY and push there, "
                                       "e.g. ghcr.io/acme/lad; then compile with: lad pipeline compile --registry REGISTRY "
                                       "(without --push: tagged lad.local/..., for lad pipeline run --local --runner docker)"),
    root: Path = typer.Option(Path("."), "--root", help="the project root (the build context)"),
) -> None:
    """Build the images with the local Docker engine, tagged with lad's version and the commit (and
    push them, recording their digests in build/images.json). Says so when there is no engine."""
    from lad.images import ImagesError, build

    try:
        refs = build(root, names, registry=push, log=console.print)
    except ImagesError as err:
        console.print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True)
        raise typer.Exit(1)
    for ref in refs:
        typer.echo(f"{'pushed' if push else 'built'} {ref}")
