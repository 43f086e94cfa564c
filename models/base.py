"""Helpers shared by every table: identifiers, timestamps, paging."""

from __future__ import annotations

import secrets
import string
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy import DateTime, Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field

_ALPHABET = string.ascii_lowercase + string.digits
T = TypeVar("T")


def new_id(length: int = 10) -> str:
    """A random resource ID that is also a valid Kubernetes name fragment (starts with a letter)."""
    return secrets.choice(string.ascii_lowercase) + "".join(
        secrets.choice(_ALPHABET) for _ in range(length - 1)
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; everything we store is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC, returns timezone-aware UTC on every backend (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where UTC is required")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


def utc_column(*, nullable: bool = False, index: bool = False) -> Any:
    """A column definition for ``Field(sa_type=...)``-less SQLModel fields holding UTC times."""
    return Field(default=None if nullable else ..., sa_type=UTCDateTime, nullable=nullable, index=index)
