"""``lad sandbox ...`` commands."""

from __future__ import annotations

from typing import Optional

import typer
from pydantic import ValidationError
from rich.console import Console

app = typer.Typer(help="Sandboxed code execution service.", no_args_is_help=True)
console = Console(stderr=True)


@app.callback()
def _group() -> None:
    """Sandboxed code execution service."""


@app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8080, help="TCP port"),
    workers: int = typer.Option(2, help="programs executed at once (one warm sandbox each)"),
    queue: int = typer.Option(64, help="requests allowed to wait for a worker before 429"),
    isolation: str = typer.Option("bwrap", help="bwrap, or none for trusted local use (reported in every response)"),
    python: Optional[str] = typer.Option(None, help="interpreter inside the sandbox (default /usr/local/bin/python3 "
                                                      "or /usr/bin/python3)"),
    max_body_mb: int = typer.Option(64, help="larger request bodies are answered 413"),
    max_timeout_s: float = typer.Option(60.0, help="largest timeout_s a request may ask for"),
    max_memory_mb: int = typer.Option(4096, help="largest memory_mb a request may ask for"),
    max_jobs_per_sandbox: int = typer.Option(200, help="jobs a warm sandbox runs before a fresh one replaces it"),
    hash_seed: int = typer.Option(0, help="PYTHONHASHSEED of every sandbox (the same in all, so set and dict order "
                                          "of strings is too)"),
    value_limit_mb: int = typer.Option(16, help="cap on one returned value of a call test, unless a request asks "
                                                "for another"),
    max_value_limit_mb: int = typer.Option(256, help="largest value_limit_mb a request may ask for"),
    package: Optional[list[str]] = typer.Option(None, help="a pure-Python package of lad's environment that programs "
                                                           "may import (repeat it; given, it replaces the default, "
                                                           "sortedcontainers)"),
    log_level: str = typer.Option("warning", help="uvicorn log level"),
) -> None:
    """Serve POST /v1/run, POST /v1/evaluate, GET /healthz and GET /metrics.

    When $LAD_SANDBOX_TOKEN is set, every request but /healthz needs it as a bearer token."""
    import uvicorn

    from lad.sandbox.config import SandboxConfig
    from lad.sandbox.isolation import IsolationError
    from lad.sandbox.service import ServiceConfig, create_app

    try:
        cfg = ServiceConfig(sandbox=SandboxConfig(isolation=isolation, python=python, max_timeout_s=max_timeout_s,
                                                  max_memory_mb=max_memory_mb, max_jobs_per_sandbox=max_jobs_per_sandbox,
                                                  hash_seed=hash_seed, value_limit_bytes=value_limit_mb << 20,
                                                  max_value_limit_bytes=max_value_limit_mb << 20,
                                                  **({"packages": package} if package else {})),
                            workers=workers, queue=queue, max_body_bytes=max_body_mb << 20)
    except ValidationError as err:
        for e in err.errors():
            console.print(f"[red]error:[/red] option {'.'.join(map(str, e['loc']))}: {e['msg']}")
        raise typer.Exit(2)
    try:
        service = create_app(cfg)
        service.state.executor.self_check()
    except IsolationError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2)
    if cfg.sandbox.isolation == "none":
        console.print("[yellow]warning:[/yellow] isolation none: programs run unsandboxed; trusted code only")
    console.print(f"lad sandbox: http://{host}:{port} ({workers} workers, isolation {cfg.sandbox.isolation})")
    uvicorn.run(service, host=host, port=port, log_level=log_level)
