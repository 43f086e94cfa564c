"""Usage reports: GPU usage (manual 5.6) and cost analysis (manual 5.10) per project, and the platform's
costs for its admins.

Who sees what follows the manual's rule for a project's containers (5.3): project admins (and platform
admins) see every member's usage, members only their own. The manual puts cost analysis in every member's
menu (進階設定 > 成本分析) without restricting it, so members see their own costs there too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Header, Query, Response

from api.deps import AdminUser, CurrentUser, PathId, SessionDep, SettingsDep
from models.base import utcnow
from models.reports import (
    CostGrouping,
    CostReport,
    GpuUsageReport,
    PlatformCostGrouping,
    ReportFormat,
    UsageKind,
)
from services.access import visible_project
from services.gpu_usage import gpu_usage_report
from services.usage_periods import report_owner, report_range, time_zone
from services.usage_reports import cost_csv, cost_report

router = APIRouter(prefix="/api/v1", tags=["reports"])

From = Annotated[
    datetime | None,
    Query(
        alias="from",
        description="Start of the range, with a time zone (send + as %2B); default: 30 days before `to`",
    ),
]
To = Annotated[
    datetime | None,
    Query(alias="to", description="End of the range (exclusive), with a time zone; default: now"),
]
Member = Annotated[
    str | None,
    Query(
        max_length=32, description="A member's username; members may ask only for themselves (the default)"
    ),
]
TimeZone = Annotated[
    str | None,
    Query(
        max_length=64,
        description="IANA time zone days are cut in; default: yours (PATCH /users/me), else the platform's",
    ),
]
Format = Annotated[
    ReportFormat | None,
    Query(alias="format", description="json or csv; without it, the Accept header decides (text/csv → csv)"),
]
Accept = Annotated[str | None, Header(max_length=1024)]
CSV_ANSWER: dict[int | str, dict[str, Any]] = {200: {"content": {"text/csv": {"schema": {"type": "string"}}}}}


def _quality(accept: str, media_types: set[str]) -> float:
    """The highest q the Accept header gives any of `media_types`; 0 when it names none of them."""
    best = 0.0
    for item in accept.split(","):
        media_type, *parameters = (part.strip() for part in item.split(";"))
        if media_type.lower() not in media_types:
            continue
        q = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        best = max(best, q)
    return best


def wants_csv(format_: ReportFormat | None, accept: str | None) -> bool:
    if format_ is not None:
        return format_ == ReportFormat.csv
    if not accept:
        return False
    return _quality(accept, {"text/csv"}) > _quality(accept, {"application/json", "application/*", "*/*"})


def _costs_answer(report: CostReport, csv: bool, subject: str, zone: ZoneInfo) -> CostReport | Response:
    if not csv:
        return report
    first, last = (moment.astimezone(zone).date().isoformat() for moment in (report.start, report.end))
    filename = f"costs-{subject}-{first}-{last}.csv"
    return Response(
        cost_csv(report),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get(
    "/projects/{project_id}/gpu-usage",
    response_model=GpuUsageReport,
    description="GPU usage (GPU 使用率): per workload pod (a cluster's pods each on their own row, named "
    "<cluster>/<pod>), its hours in the range, the GPUs it holds, GPU hours and the average GPU utilisation "
    "of its samples. Project admins see every member's workloads (all by default), members their own.",
)
def read_gpu_usage(
    project_id: PathId,
    user: CurrentUser,
    session: SessionDep,
    start: From = None,
    end: To = None,
    member: Member = None,
    kind: Annotated[UsageKind | None, Query(description="Only this kind of workload")] = None,
) -> GpuUsageReport:
    _, members = visible_project(session, project_id, user)
    now = utcnow()
    window = report_range(start, end, now)
    owner = report_owner(session, project_id, members, user, member)
    return gpu_usage_report(session, window, now, project_id, owner, kind)


@router.get(
    "/projects/{project_id}/costs",
    response_model=CostReport,
    responses=CSV_ANSWER,
    description="Cost analysis (成本分析): each running period's hours in the range times the hourly price "
    "frozen when it opened, grouped by workload, member, spec (at each price) or day (cut at midnight in "
    "`tz`), with a total per currency. Project admins see every member's costs, members their own. "
    "`format=csv` (or `Accept: text/csv`) answers the same rows as a CSV download.",
)
def read_project_costs(
    project_id: PathId,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    start: From = None,
    end: To = None,
    group_by: Annotated[CostGrouping, Query(description="How rows are grouped")] = CostGrouping.workload,
    member: Member = None,
    tz: TimeZone = None,
    format_: Format = None,
    accept: Accept = None,
) -> CostReport | Response:
    _, members = visible_project(session, project_id, user)
    now = utcnow()
    window, zone = (
        report_range(start, end, now),
        time_zone(tz or user.time_zone or settings.display_time_zone),
    )
    owner = report_owner(session, project_id, members, user, member)
    report = cost_report(session, window, now, group_by, zone, project_id=project_id, owner=owner)
    return _costs_answer(report, wants_csv(format_, accept), project_id, zone)


@router.get(
    "/admin/costs",
    response_model=CostReport,
    responses=CSV_ANSWER,
    description="The platform's costs (platform admins): every project's, deleted ones included, grouped by "
    "project, member, spec or day, with a total per currency; CSV as for a project's costs.",
)
def read_platform_costs(
    admin: AdminUser,
    session: SessionDep,
    settings: SettingsDep,
    start: From = None,
    end: To = None,
    group_by: Annotated[
        PlatformCostGrouping, Query(description="How rows are grouped")
    ] = PlatformCostGrouping.project,
    tz: TimeZone = None,
    format_: Format = None,
    accept: Accept = None,
) -> CostReport | Response:
    now = utcnow()
    window, zone = (
        report_range(start, end, now),
        time_zone(tz or admin.time_zone or settings.display_time_zone),
    )
    report = cost_report(session, window, now, group_by, zone, project_id=None, owner=None)
    return _costs_answer(report, wants_csv(format_, accept), "all", zone)
