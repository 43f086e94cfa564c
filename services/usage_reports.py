"""Cost analysis (manual 5.10) from running periods, and its CSV.

A period's cost is its hours in the range times the hourly price frozen when it opened, so a later catalog
price change never rewrites history. A period still open counts up to now. Amounts in different currencies
are never added together: every group and every total is per currency.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel import Session, col, select

from models.catalog import display_price
from models.projects import Project
from models.reports import (
    CostGrouping,
    CostReport,
    CostRow,
    DayCost,
    MemberCost,
    PlatformCostGrouping,
    ProjectCost,
    SpecCost,
    Spending,
    WorkloadCost,
)
from services.usage_periods import HOUR, PeriodRow, ReportRange, Run, as_hours, runs_in
from services.workloads import Owner

COST_QUANTUM = Decimal("0.0001")  # prices keep four places, so costs may need them too
# Spreadsheets run a cell starting with one of these as a formula; names are user input.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def as_money(exact: Decimal) -> Decimal:
    return display_price(exact.quantize(COST_QUANTUM, rounding=ROUND_HALF_UP))


def _exact_cost(microseconds: int, hourly_price: Decimal) -> Decimal:
    return Decimal(microseconds) * hourly_price / Decimal(HOUR // timedelta(microseconds=1))


# ---- cost analysis --------------------------------------------------------------------------------


@dataclass
class _Group:
    """One row's running sums; its latest period names it (a renamed workload shows its newest name)."""

    latest: PeriodRow
    microseconds: int = 0
    cost: Decimal = Decimal(0)
    parts: set[str] = field(default_factory=set)  # the pods or workloads it counts
    prices: set[Decimal] = field(default_factory=set)  # the hourly prices its periods were frozen at


GroupKey = tuple[Any, ...]
# Per grouping: what a piece of a run is grouped by (always with its currency) and what a group counts.
_KEYS: dict[str, Callable[[PeriodRow], GroupKey]] = {
    "workload": lambda p: (p.workload_id, p.currency),
    "member": lambda p: (p.owner_id, p.currency),
    "spec": lambda p: (p.spec_id, p.spec_name, p.hourly_price, p.currency),
    "project": lambda p: (p.project_id, p.currency),
}
_PARTS: dict[str, Callable[[PeriodRow], str]] = {
    "workload": lambda p: p.pod,
    "member": lambda p: p.workload_id,
    "project": lambda p: p.workload_id,
}


def _pieces(run: Run, group_by: str, tz: ZoneInfo) -> Iterator[tuple[GroupKey, int]]:
    """The run's microseconds under each group key; by day, the run is cut at each midnight in `tz`."""
    period = run.period
    if group_by != "day":
        yield _KEYS[group_by](period), run.microseconds
        return
    start = run.start
    while start < run.end:
        day = start.astimezone(tz).date()
        midnight = datetime.combine(day + timedelta(days=1), time(), tzinfo=tz)
        end = min(midnight, run.end)
        yield (day, period.currency), (end - start) // timedelta(microseconds=1)
        start = end


def _spending(group: _Group) -> dict[str, Any]:
    return {
        "hours": as_hours(group.microseconds),
        "cost": as_money(group.cost),
        "currency": group.latest.currency,
    }


def _row(group_by: str, key: GroupKey, group: _Group, projects: dict[str, Project]) -> CostRow:
    period, spent = group.latest, _spending(group)
    if group_by == "workload":
        return WorkloadCost(
            workload_id=period.workload_id,
            kind=period.kind,
            name=period.name,
            owner=period.owner,
            spec=period.spec_name,
            hourly_price=next(iter(group.prices)) if len(group.prices) == 1 else None,
            pods=len(group.parts),
            **spent,
        )
    if group_by == "member":
        return MemberCost(owner_id=period.owner_id, owner=period.owner, workloads=len(group.parts), **spent)
    if group_by == "spec":
        return SpecCost(
            spec_id=period.spec_id, spec=period.spec_name, hourly_price=period.hourly_price, **spent
        )
    if group_by == "day":
        day: date = key[0]
        return DayCost(day=day, **spent)
    project = projects.get(period.project_id)
    return ProjectCost(
        project_id=period.project_id,
        project_name=project.name if project else None,
        project_status=project.status if project else None,
        workloads=len(group.parts),
        **spent,
    )


def cost_report(
    session: Session,
    window: ReportRange,
    now: datetime,
    group_by: CostGrouping | PlatformCostGrouping,
    tz: ZoneInfo,
    *,
    project_id: str | None,
    owner: Owner | None,
) -> CostReport:
    """One project's costs (or, with project_id None, the whole platform's, deleted projects included)."""
    grouping = group_by.value
    runs = runs_in(session, window, now, project_id=project_id, owner_id=owner.id if owner else None)
    groups: dict[GroupKey, _Group] = {}
    totals: dict[str, _Group] = {}
    part_of = _PARTS.get(grouping)
    for run in runs:
        period = run.period
        for key, microseconds in _pieces(run, grouping, tz):
            cost = _exact_cost(microseconds, period.hourly_price)
            group = groups.get(key) or groups.setdefault(key, _Group(period))
            total = totals.get(period.currency) or totals.setdefault(period.currency, _Group(period))
            for counted in (group, total):
                counted.microseconds += microseconds
                counted.cost += cost
                counted.prices.add(period.hourly_price)
                if period.started_at >= counted.latest.started_at:
                    counted.latest = period
            if part_of is not None:
                group.parts.add(part_of(period))
    projects: dict[str, Project] = {}
    if grouping == "project" and groups:
        ids = {group.latest.project_id for group in groups.values()}
        projects = {p.id: p for p in session.exec(select(Project).where(col(Project.id).in_(ids)))}
    rows = [_row(grouping, key, group, projects) for key, group in groups.items()]
    if grouping == "day":
        rows.sort(key=lambda row: (row.day if isinstance(row, DayCost) else date.min, row.currency))
    else:
        rows.sort(key=lambda row: (-row.cost, -row.hours, row.currency))
    return CostReport(
        project_id=project_id,
        member=owner.username if owner else None,
        start=window.start,
        end=window.end,
        group_by=grouping,
        tz=tz.key,
        rows=rows,
        totals=[Spending(**_spending(totals[currency])) for currency in sorted(totals)],
    )


# ---- CSV ------------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, date | datetime):
        return value.isoformat()
    text = str(value)
    if isinstance(value, str) and text.startswith(FORMULA_STARTS):
        return "'" + text  # shown as text, never run as a formula
    return text


def csv_bytes(columns: list[str], rows: Iterable[dict[str, Any]]) -> bytes:
    """A header row, then one row per dict; UTF-8 with a byte-order mark so Excel reads it as UTF-8."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(column)) for column in columns])
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")


def cost_csv(report: CostReport) -> bytes:
    """The report's rows, then a totals row per currency; the label columns come first."""
    row_model = _ROW_MODELS[report.group_by]
    figures = list(Spending.model_fields)
    labels = [name for name in row_model.model_fields if name not in figures]
    totals = [{labels[0]: "total"} | total.model_dump() for total in report.totals]
    return csv_bytes(labels + figures, [*(row.model_dump() for row in report.rows), *totals])


_ROW_MODELS: dict[str, type[Spending]] = {
    "workload": WorkloadCost,
    "member": MemberCost,
    "spec": SpecCost,
    "day": DayCost,
    "project": ProjectCost,
}
