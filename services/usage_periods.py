"""What every usage report shares (manual 5.6, 5.10): the range asked for, whose usage the caller may
see, and each running period clipped to the range (a period still open counts up to now)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Row, Table
from sqlmodel import Session, or_, select

from models.accounts import User
from models.inputs import EARLIEST, LATEST, zone
from models.projects import ProjectMember
from models.reports import UsageKind
from models.usage import UsagePeriod
from services.access import sees_everything_in
from services.errors import Forbidden, invalid
from services.workloads import Owner

DEFAULT_RANGE = timedelta(days=30)
MAX_RANGE = timedelta(days=400)
HOUR = timedelta(hours=1)
HOURS_PLACES = 4  # 0.36 s: finer than any period's start or stop is known


@dataclass(frozen=True)
class ReportRange:
    start: datetime
    end: datetime

    @property
    def hours(self) -> float:
        return (self.end - self.start) / HOUR


def report_range(start: datetime | None, end: datetime | None, now: datetime) -> ReportRange:
    """[from, to): to defaults to now, from to 30 days before to; both must carry a time zone."""
    for name, value in (("from", start), ("to", end)):
        if value is None:
            continue
        if value.tzinfo is None or value.utcoffset() is None:
            raise invalid(name, "must include a time zone, e.g. 2026-08-01T00:00:00+08:00 or ...Z")
        if not EARLIEST <= value < LATEST:
            raise invalid(name, f"must be between {EARLIEST:%Y} and {LATEST:%Y}")
    end = end or now
    start = start or max(end - DEFAULT_RANGE, EARLIEST)
    if start >= end:
        raise invalid("from", "must be before to")
    if end - start > MAX_RANGE:
        raise invalid("from", f"must be at most {MAX_RANGE.days} days before to")
    return ReportRange(start, end)


def time_zone(name: str) -> ZoneInfo:
    """The `tz` a report or chart asked for; a 422 naming it otherwise."""
    try:
        return zone(name)
    except ValueError as exc:
        raise invalid("tz", str(exc)) from exc


def report_owner(
    session: Session, project_id: str, members: list[ProjectMember], user: User, member: str | None
) -> Owner | None:
    """Whose workloads the caller's report counts; None: everyone's.

    As with containers (manual 5.3), project admins and platform admins see every member's usage, members
    only their own. A former member still has usage in the project, so their username is accepted too.
    """
    if not sees_everything_in(members, user):
        if member is not None and member != user.username:
            raise Forbidden(
                "member: members see only their own usage; only the project's admins may ask for another "
                "member's",
                "member",
            )
        return Owner(user.id, user.username)
    if member is None:
        return None
    found = next((m for m in members if m.username == member), None)
    if found is not None:
        return Owner(found.user_id, found.username)
    former = session.exec(
        select(UsagePeriod.owner_id).where(UsagePeriod.project_id == project_id, UsagePeriod.owner == member)
    ).first()
    if former is not None:
        return Owner(former, member)
    raise invalid("member", f"{member!r} is not a member of this project and has no usage in it")


# Usage rows are read as plain rows (their columns by name): building ORM objects took most of a
# platform-wide report's time.
PERIODS: Table = UsagePeriod.__table__  # type: ignore[attr-defined]
PeriodRow = Row[Any]


@dataclass(frozen=True)
class Run:
    """A period clipped to the report's range: an open one ends at now."""

    period: PeriodRow
    start: datetime
    end: datetime

    @property
    def microseconds(self) -> int:
        return (self.end - self.start) // timedelta(microseconds=1)


def runs_in(
    session: Session,
    window: ReportRange,
    now: datetime,
    *,
    project_id: str | None = None,
    owner_id: str | None = None,
    kind: UsageKind | None = None,
) -> list[Run]:
    columns = PERIODS.c
    statement = PERIODS.select().where(
        columns.started_at < window.end,
        or_(columns.stopped_at.is_(None), columns.stopped_at > window.start),
    )
    if project_id is not None:
        statement = statement.where(columns.project_id == project_id)
    if owner_id is not None:
        statement = statement.where(columns.owner_id == owner_id)
    if kind is not None:
        statement = statement.where(columns.kind == kind.value)
    runs = []
    for period in session.connection().execute(statement.order_by(columns.started_at)):
        start = max(period.started_at, window.start)
        end = min(period.stopped_at or now, window.end, now)
        if end > start:
            runs.append(Run(period, start, end))
    return runs


def as_hours(microseconds: int | float) -> float:
    return round(microseconds / (HOUR / timedelta(microseconds=1)), HOURS_PLACES)
