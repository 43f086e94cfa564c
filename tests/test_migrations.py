"""Migrations from an empty database, on SQLite and on PostgreSQL: they build exactly the models' schema."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlmodel import SQLModel

import models.tables  # noqa: F401
from models.database import alembic_config, make_engine, migrate
from tests.conftest import POSTGRES_SKIP_REASON, POSTGRES_URL, _postgres_database


def fresh_urls(tmp_path_factory: pytest.TempPathFactory, lane: str) -> Iterator[str]:
    if lane == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('migrations') / 'empty.db'}"
        return
    if not POSTGRES_URL:
        pytest.skip(f"PostgreSQL lane skipped: {POSTGRES_SKIP_REASON}")
    yield from _postgres_database(POSTGRES_URL)


@pytest.mark.parametrize("lane", ["sqlite", "postgres"])
def test_upgrade_from_empty_matches_the_models_and_downgrades_cleanly(
    lane: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    for url in fresh_urls(tmp_path_factory, lane):
        head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
        migrate(url)
        engine = make_engine(url)
        with engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_revision() == head
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, SQLModel.metadata) == []
        command.downgrade(alembic_config(url), "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        migrate(url)  # and up again: every downgrade undid its upgrade
        assert set(SQLModel.metadata.tables) <= set(inspect(engine).get_table_names())
        engine.dispose()
