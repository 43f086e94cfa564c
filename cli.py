"""The ``mlcp`` command."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import typer
from rich.console import Console

from config import get_settings

app = typer.Typer(help="mlcp: self-service ML collaboration platform.", no_args_is_help=True)
console = Console()


@app.command("install-tools")
def install_tools() -> None:
    """Install what local containers' services run (Jupyter: JupyterLab, the notebook UI, terminals)."""
    from activities.local_environment import tools_folder
    from activities.local_services import install_jupyter, jupyter_state

    tools = tools_folder(get_settings().tools_dir).resolve()
    if jupyter_state(tools) == "ready":
        typer.echo(f"Jupyter is installed in {tools}")
        return
    typer.echo(f"installing Jupyter into {tools} ...")
    install_jupyter(tools)
    typer.echo("done: new local containers run JupyterLab, the notebook UI and the web terminal")


@app.command()
def dev() -> None:
    """Run the whole platform on embedded defaults: Temporal dev server, migrations, worker and API."""
    from devstack import run_dev

    raise typer.Exit(run_dev(get_settings()))


@app.command()
def migrate(revision: str = typer.Argument("head", help="Alembic revision to reach.")) -> None:
    """Apply database migrations; with MLCP_ADMIN_PASSWORD set, also create the first platform admin."""
    from api.bootstrap import ensure_bootstrap_admin
    from models.database import make_engine
    from models.database import migrate as apply

    settings = get_settings()
    apply(settings.database_url, revision)
    console.print(f"database at revision [bold]{revision}[/bold]")
    if settings.admin_password is None:
        return  # never generate a password into a log nobody reads: use create-admin instead
    engine = make_engine(settings.database_url)
    created = ensure_bootstrap_admin(engine, settings)
    engine.dispose()
    if created:
        console.print(f"platform admin [bold]{created.username}[/bold] created from MLCP_ADMIN_PASSWORD")


@app.command("create-admin")
def create_admin(
    username: str = typer.Argument(..., help="Login name of the new platform admin."),
    email: str = typer.Option("", help="Where platform mail reaches them."),
) -> None:
    """Create a platform admin, asking for the password (production's first admin)."""
    from pydantic import ValidationError
    from sqlmodel import Session, select

    from api.security import hash_password
    from models.accounts import PlatformRole, User, UserCreate
    from models.database import make_engine

    password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        body = UserCreate(username=username, password=password, email=email or None, role=PlatformRole.admin)
    except ValidationError as exc:
        console.print(f"[red]{exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}[/red]")
        raise typer.Exit(2) from exc
    engine = make_engine(get_settings().database_url)
    with Session(engine) as session:
        if session.exec(select(User).where(User.username == username)).first():
            console.print(f"[red]username {username!r} is taken[/red]")
            raise typer.Exit(1)
        session.add(
            User(
                username=body.username,
                display_name=body.username,
                email=str(body.email or ""),
                role=PlatformRole.admin,
                password_hash=hash_password(body.password),
            )
        )
        session.commit()
    engine.dispose()
    console.print(f"platform admin [bold]{username}[/bold] created")


@app.command("setup-temporal")
def setup_temporal() -> None:
    """Register mlcp's search attributes on the Temporal cluster (once per namespace)."""
    from config import connect_temporal, register_search_attributes

    settings = get_settings()

    async def _run() -> list[str]:
        client = await connect_temporal(settings)
        return await register_search_attributes(client, settings.temporal_namespace)

    added = asyncio.run(_run())
    console.print(f"search attributes added: {', '.join(added) or 'none (all present)'}")


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

    async def _run() -> None:
        # SIGTERM (a pod being replaced) drains: running activities finish before the process exits.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await run_worker(settings, stop)

    asyncio.run(_run())


@app.command()
def agent(
    node_name: str = typer.Option(
        ..., envvar="NODE_NAME", help="This node's name (the DaemonSet: the downward API's spec.nodeName)."
    ),
    interval: float = typer.Option(10.0, min=1.0, help="Seconds between rounds."),
    cgroup_root: Path = typer.Option(Path("/sys/fs/cgroup"), help="The host's cgroup v2 hierarchy."),
    proc_root: Path = typer.Option(Path("/proc"), help="The host's /proc (the DaemonSet: /host/proc)."),
) -> None:
    """Sample this node's workload pods into the database (the DaemonSet where no Prometheus is set up)."""
    from activities.node_agent import run_agent
    from api.request_context import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level)
    run_agent(settings.database_url, node_name, settings.kubeconfig, interval, cgroup_root, proc_root)


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
