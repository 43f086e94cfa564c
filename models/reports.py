"""What the cost analysis (manual 5.10) and GPU usage (manual 5.6) reports answer.

Both are read from running periods (models/usage.py), never from samples: a pod that was never sampled
still ran and still costs. Costs are exact decimals in the currency their period was priced in; amounts in
different currencies are never added together, so every row and every total names its currency.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, Field


class UsageKind(StrEnum):
    """The workload kinds that hold resources while they run."""

    container = "container"
    job = "job"
    cluster = "cluster"


class CostGrouping(StrEnum):
    """One project's cost rows: per workload, per member, per spec and price, or per day."""

    workload = "workload"
    member = "member"
    spec = "spec"
    day = "day"


class PlatformCostGrouping(StrEnum):
    """The platform-wide cost rows: per project instead of per workload."""

    project = "project"
    member = "member"
    spec = "spec"
    day = "day"


class ReportFormat(StrEnum):
    json = "json"
    csv = "csv"


class ReportScope(BaseModel):
    """Whose usage a report covers and over which range, [start, end)."""

    project_id: str | None = Field(description="None: every project on the platform")
    member: str | None = Field(description="The member whose workloads are counted; None: every member")
    start: datetime
    end: datetime


class Spending(BaseModel):
    """Hours run and what they cost, in one currency: a row's figures, or a currency's total."""

    hours: float = Field(description="Pod-hours in the range")
    cost: Decimal = Field(description="Hours × each period's hourly price, frozen when the period opened")
    currency: str


class WorkloadCost(Spending):
    workload_id: str
    kind: str = Field(description="container, job or cluster (a kind added later reports as itself)")
    name: str
    owner: str
    spec: str = Field(description="The spec of the workload's latest period in the range")
    hourly_price: Decimal | None = Field(
        description="The price its periods were frozen at; null when its runs had different prices "
        "(group_by=spec shows each)"
    )
    pods: int = Field(description="Pods that ran in the range: a cluster's launcher and workers; else 1")


class MemberCost(Spending):
    owner_id: str
    owner: str
    workloads: int


class SpecCost(Spending):
    """A spec at one price: a price change in the catalog starts a second row for the periods after it."""

    spec_id: str | None
    spec: str
    hourly_price: Decimal


class DayCost(Spending):
    """One calendar day in the report's time zone; a period spanning midnight counts on both days."""

    day: date


class ProjectCost(Spending):
    project_id: str
    project_name: str | None = Field(description="None when the project's record is gone")
    project_status: str | None
    workloads: int


CostRow = WorkloadCost | MemberCost | SpecCost | DayCost | ProjectCost


class CostReport(ReportScope):
    group_by: str
    tz: str = Field(description="The IANA time zone days are cut in")
    rows: list[CostRow] = Field(description="Most expensive first; by date for group_by=day")
    totals: list[Spending] = Field(description="One per currency")


class GpuUsageRow(BaseModel):
    """One pod of one workload: a container's or job's only pod, or one pod of a training cluster."""

    workload_id: str
    pod: str
    kind: str = Field(description="container, job or cluster")
    name: str = Field(description="The workload's name; a cluster pod's is <cluster name>/<pod>")
    owner: str
    hours: float = Field(description="Hours the pod ran in the range")
    gpu: int = Field(description="GPUs the pod holds (in its latest period in the range)")
    gpu_model: str | None
    gpu_hours: float = Field(description="GPUs × hours, period by period")
    gpu_utilisation: float | None = Field(description="Average GPU utilisation in %, from the samples")
    gpu_utilisation_note: str | None = Field(description="Why there is no average")


class GpuUsageReport(ReportScope):
    kind: UsageKind | None
    range_hours: float = Field(description="The range's length")
    range_days: int
    range_text: str = Field(description="As the manual says it: about 662 hours, i.e. 28 days")
    rows: list[GpuUsageRow] = Field(description="Most GPU hours first")
    hours: float = Field(description="All rows' hours")
    gpu_hours: float = Field(description="All rows' GPU hours")
