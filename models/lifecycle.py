"""What crosses the project workflow boundary: plain pydantic models, never table objects."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, Field


class ProjectStatus(StrEnum):
    pending = "pending"  # 待審核
    approved = "approved"  # 已核准, before the start date
    active = "active"  # 使用中
    rejected = "rejected"  # 已駁回
    withdrawn = "withdrawn"
    grace = "grace"  # 緩衝期
    deleting = "deleting"
    deleted = "deleted"


class ApplicationType(StrEnum):
    project = "project"  # 專案申請
    extension = "extension"  # 展延申請
    quota = "quota"  # 額度申請


class ApplicationStatus(StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"
    withdrawn = "withdrawn"


class MemberRole(StrEnum):
    admin = "admin"
    member = "member"


class Quota(BaseModel):
    gpu: int = Field(0, ge=0)
    vcpu: float = Field(0, ge=0)
    ram_gb: float = Field(0, ge=0)
    storage_gb: float = Field(0, ge=0)

    def __add__(self, other: Quota) -> Quota:
        return Quota(
            gpu=self.gpu + other.gpu,
            vcpu=self.vcpu + other.vcpu,
            ram_gb=self.ram_gb + other.ram_gb,
            storage_gb=self.storage_gb + other.storage_gb,
        )

    def __sub__(self, other: Quota) -> Quota:
        # Intermediate results may be negative (a shortfall), so no field validation here.
        return Quota.model_construct(
            gpu=self.gpu - other.gpu,
            vcpu=self.vcpu - other.vcpu,
            ram_gb=self.ram_gb - other.ram_gb,
            storage_gb=self.storage_gb - other.storage_gb,
        )

    def fits_in(self, available: Quota) -> bool:
        return not self.shortfall(available)

    def shortfall(self, available: Quota) -> list[str]:
        """Human-readable lines for what is missing, e.g. ``["2 GPU"]``."""
        short = []
        for name, unit in (
            ("gpu", "GPU"),
            ("vcpu", "vCPU"),
            ("ram_gb", "GB RAM"),
            ("storage_gb", "GB storage"),
        ):
            missing = getattr(self, name) - getattr(available, name)
            if missing > 1e-9:
                short.append(f"{missing:g} {unit}")
        return short


class Member(BaseModel):
    user_id: str
    username: str
    role: MemberRole = MemberRole.member


class Application(BaseModel):
    id: str
    type: ApplicationType
    applicant_id: str
    applicant: str
    submitted_at: datetime
    reason: str = ""
    extension_days: int | None = None
    quota_delta: Quota | None = None
    status: ApplicationStatus = ApplicationStatus.pending
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_reason: str = ""


class LifecycleTimings(BaseModel):
    """Durations are settings; tests shorten them."""

    reminder_before: timedelta = timedelta(days=7)
    grace_period: timedelta = timedelta(days=14)
    # A project's deletion ends within about two minutes whatever its workloads do: they get this long to
    # delete themselves, then their workflows are cancelled, and terminated if still there after the second.
    workload_shutdown_timeout: timedelta = timedelta(seconds=60)
    workload_cancel_timeout: timedelta = timedelta(seconds=20)


class ProjectDetails(BaseModel):
    name: str
    description: str = ""
    purpose_id: str | None = None
    start_at: datetime
    end_at: datetime
    members: list[Member]


class LedgerEntry(BaseModel):
    resource_id: str
    kind: str
    workflow_id: str
    owner_id: str
    request: Quota
    state: str  # queued | starting | running
    reason: str = ""
    queued_at: datetime | None = None


class ProjectState(BaseModel):
    """Everything the workflow owns; carried through continue-as-new."""

    id: str
    owner_id: str
    owner: str
    details: ProjectDetails
    quota: Quota
    status: ProjectStatus = ProjectStatus.pending
    applications: list[Application] = []
    ledger: list[LedgerEntry] = []
    reminder_sent_for: datetime | None = None
    expiry_notice_for: datetime | None = None
    grace_ends_at: datetime | None = None
    environment_quota: Quota | None = None  # what the runtime's project environment was last given
    delete_requested_by: str | None = None
    delete_code: str
    version: int = 0


class ProjectWorkflowInput(BaseModel):
    state: ProjectState
    timings: LifecycleTimings = LifecycleTimings()
    max_history_events: int = 10_000  # continue-as-new beyond this, well before Temporal's limits


# Updates and signals -----------------------------------------------------------------------------


class Decision(BaseModel):
    application_id: str
    approve: bool
    admin_id: str
    admin: str
    reason: str = ""


class Withdrawal(BaseModel):
    application_id: str
    user_id: str


class ProjectEdit(BaseModel):
    name: str | None = None
    description: str | None = None
    members: list[Member] | None = None
    edited_by: str


class DeleteRequest(BaseModel):
    user_id: str
    username: str
    confirmation_code: str


class AdmitRequest(BaseModel):
    resource_id: str
    kind: str
    workflow_id: str
    owner_id: str
    request: Quota


class AdmitResult(BaseModel):
    admitted: bool
    position: int | None = None  # 1-based place in the queue when not admitted
    reason: str = ""


class AdmissionAnswer(BaseModel):
    """The project's reply to a workload's admission request: admitted, queued, or refused for good."""

    resource_id: str
    admitted: bool
    position: int | None = None  # 1-based place in the queue when queued
    reason: str = ""
    refusal: str | None = None  # Conflict or QuotaExceeded: no reservation was made; reason says why


class WorkloadEvent(BaseModel):
    resource_id: str


class QuotaPanel(BaseModel):
    """The manual's 資源配置 panel."""

    limit: Quota
    in_use: Quota
    in_flight: Quota
    requested: Quota
    remaining: Quota
    queue: list[LedgerEntry] = []


class ProjectView(BaseModel):
    state: ProjectState
    panel: QuotaPanel


# What a workload workflow sends its project: signals, never updates, so that a burst of requests cannot
# be aborted with a workflow task that timed out on a busy worker -------------------------------------

PROJECT_ADMISSION_REQUEST_SIGNAL = "request_admission"  # carries an AdmitRequest


# What a workload workflow receives from its project ------------------------------------------

WORKLOAD_ADMISSION_SIGNAL = "project_admission"  # carries an AdmissionAnswer
WORKLOAD_ADMITTED_SIGNAL = "project_admitted"  # a queued workload's turn has come
WORKLOAD_SHUTDOWN_SIGNAL = "project_shutdown"


class ShutdownNotice(BaseModel):
    project_id: str
    reason: str
