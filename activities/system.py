"""Activities about the platform itself."""

from __future__ import annotations

from dataclasses import dataclass

from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, func
from sqlmodel import Session, select
from temporalio import activity

from models.accounts import User


@dataclass
class DatabaseStatus:
    dialect: str
    schema_revision: str | None
    users: int


class SystemActivities:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @activity.defn
    def check_database(self) -> DatabaseStatus:
        with self._engine.connect() as connection:
            revision = MigrationContext.configure(connection).get_current_revision()
        with Session(self._engine) as session:
            users = session.exec(select(func.count()).select_from(User)).one()
        return DatabaseStatus(dialect=self._engine.dialect.name, schema_revision=revision, users=users)
