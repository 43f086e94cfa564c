"""The ``mlcp`` command."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console

from config import get_settings

app = typer.Typer(help="mlcp: self-service ML collaboration platform.", no_args_is_help=True)
console = Console()


@app.command()
def dev() -> None:
    """Run the whole platform on embedded defaults: Temporal dev server, migrations, worker and API."""
    from devstack import run_dev

    raise typer.Exit(run_dev(get_settings()))


@app.command()
def migrate(revision: str = typer.Argument("head", help="Alembic revision to reach.")) -> None:
    """Apply database migrations."""
    from models.database import migrate as apply

    settings = get_settings()
    apply(settings.database_url, revision)
    console.print(f"database at revision [bold]{revision}[/bold]")


@app.command()
def api() -> None:
    """Run the API server alone (production: one of several replicas)."""
    import uvicorn

    from api.app import create_app
    from api.request_context import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level)
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_config=None)


@app.command()
def worker() -> None:
    """Run a Temporal worker alone (production: one of several replicas)."""
    from api.request_context import configure_logging
    from worker import run_worker

    settings = get_settings()
    configure_logging(settings.log_level)
    asyncio.run(run_worker(settings))


@app.command()
def check() -> None:
    """Run one workflow through the worker and report what it saw."""
    from uuid import uuid4

    from config import connect_temporal
    from workflows.system_check import SystemCheckWorkflow

    settings = get_settings()

    async def _run() -> None:
        client = await connect_temporal(settings)
        result = await client.execute_workflow(
            SystemCheckWorkflow.run,
            id=f"system-check-{uuid4().hex[:8]}",
            task_queue=settings.temporal_task_queue,
        )
        console.print(result)

    asyncio.run(_run())


if __name__ == "__main__":
    app()
