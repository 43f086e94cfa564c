"""The project read model (written by activities as lifecycles move) and the API's schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator
from sqlalchemy import JSON, String
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from models.base import UTCDateTime, utcnow
from models.inputs import Multiline, RequestModel
from models.lifecycle import (
    ApplicationStatus,
    ApplicationType,
    MemberRole,
    ProjectStatus,
    Quota,
    QuotaPanel,
)


class Project(SQLModel, table=True):
    id: str = SQLField(primary_key=True, max_length=32)
    name: str = SQLField(max_length=128, index=True)
    description: str = SQLField(default="", max_length=2000)
    owner_id: str = SQLField(foreign_key="user.id", index=True)
    purpose_id: str | None = SQLField(default=None, foreign_key="purpose.id", ondelete="RESTRICT", index=True)
    # Plain strings, not database enums: a new status needs no type migration.
    status: ProjectStatus = SQLField(sa_type=String(16), index=True)
    start_at: datetime = SQLField(sa_type=UTCDateTime)
    end_at: datetime = SQLField(sa_type=UTCDateTime)
    grace_ends_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime)
    quota_gpu: int = 0
    quota_vcpu: float = 0
    quota_ram_gb: float = 0
    quota_storage_gb: float = 0
    delete_code: str = SQLField(max_length=16)
    version: int = 0  # the workflow's state version; older snapshots never overwrite newer ones
    created_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)

    @property
    def quota(self) -> Quota:
        return Quota(
            gpu=self.quota_gpu,
            vcpu=self.quota_vcpu,
            ram_gb=self.quota_ram_gb,
            storage_gb=self.quota_storage_gb,
        )


class ProjectMember(SQLModel, table=True):
    __tablename__ = "project_member"

    project_id: str = SQLField(foreign_key="project.id", primary_key=True, ondelete="CASCADE")
    user_id: str = SQLField(foreign_key="user.id", primary_key=True, index=True)
    username: str = SQLField(max_length=32)
    role: MemberRole = SQLField(sa_type=String(16))


class ApplicationRecord(SQLModel, table=True):
    __tablename__ = "application"

    id: str = SQLField(primary_key=True, max_length=32)
    project_id: str = SQLField(foreign_key="project.id", index=True, ondelete="CASCADE")
    project_name: str = SQLField(max_length=128)
    type: ApplicationType = SQLField(sa_type=String(16), index=True)
    status: ApplicationStatus = SQLField(sa_type=String(16), index=True)
    applicant_id: str = SQLField(foreign_key="user.id", index=True)
    applicant: str = SQLField(max_length=32)
    reason: str = SQLField(default="", max_length=2000)
    extension_days: int | None = None
    quota_delta: dict[str, Any] | None = SQLField(default=None, sa_type=JSON)
    submitted_at: datetime = SQLField(sa_type=UTCDateTime, index=True)
    decided_by: str | None = SQLField(default=None, max_length=32)
    decided_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime)
    decision_reason: str = SQLField(default="", max_length=2000)


# ---- API schemas ------------------------------------------------------------------------------


class QuotaRequest(RequestModel):
    gpu: int = Field(0, ge=0, le=1024)
    vcpu: float = Field(0, ge=0, le=100_000)
    ram_gb: float = Field(0, ge=0, le=1_000_000)
    storage_gb: float = Field(0, ge=0, le=1_000_000_000)

    def as_quota(self) -> Quota:
        return Quota(**self.model_dump(include={"gpu", "vcpu", "ram_gb", "storage_gb"}))


class MemberIn(RequestModel):
    username: str = Field(min_length=1, max_length=32)
    role: MemberRole = MemberRole.member


class ProjectCreate(RequestModel):
    name: str = Field(min_length=1, max_length=128)
    description: Annotated[str, Multiline] = Field("", max_length=2000)
    start_at: datetime
    end_at: datetime
    purpose_id: str | None = Field(None, max_length=32)
    members: list[MemberIn] = Field(
        min_length=1, max_length=500, description="At least one; the applicant is always a project admin."
    )
    quota: QuotaRequest
    reason: Annotated[str, Multiline] = Field("", max_length=2000)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    @field_validator("start_at", "end_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must include a time zone, e.g. 2027-01-01T00:00:00Z")
        return value

    @field_validator("end_at")
    @classmethod
    def _after_start(cls, value: datetime, info: ValidationInfo) -> datetime:
        start = info.data.get("start_at")
        if start is not None and value <= start:
            raise ValueError("must be after start_at")
        return value


class ProjectUpdate(RequestModel):
    name: str | None = Field(None, min_length=1, max_length=128)
    description: Annotated[str, Multiline] | None = Field(None, max_length=2000)
    members: list[MemberIn] | None = Field(None, min_length=1, max_length=500)


class ExtensionCreate(RequestModel):
    days: int = Field(ge=1, le=3650)
    reason: Annotated[str, Multiline] = Field("", max_length=2000)


class QuotaApplicationCreate(QuotaRequest):
    reason: Annotated[str, Multiline] = Field("", max_length=2000)

    @model_validator(mode="after")
    def _something(self) -> QuotaApplicationCreate:
        if not (self.gpu or self.vcpu or self.ram_gb or self.storage_gb):
            raise ValueError("ask for at least one of gpu, vcpu, ram_gb, storage_gb")
        return self


class Rejection(RequestModel):
    reason: Annotated[str, Multiline] = Field(min_length=1, max_length=2000)

    @field_validator("reason")
    @classmethod
    def _reason(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()


class Approval(RequestModel):
    reason: Annotated[str, Multiline] = Field("", max_length=2000)


class MemberPublic(BaseModel):
    user_id: str
    username: str
    role: MemberRole


class ProjectPublic(BaseModel):
    id: str
    name: str
    description: str
    owner_id: str
    purpose_id: str | None
    status: ProjectStatus
    start_at: datetime
    end_at: datetime
    grace_ends_at: datetime | None
    quota: Quota
    members: list[MemberPublic]
    my_role: MemberRole | None
    created_at: datetime
    updated_at: datetime


class ProjectDetail(ProjectPublic):
    quota_panel: QuotaPanel | None = Field(None, description="Live from the project workflow.")
    delete_code: str | None = Field(None, description="Shown to project admins: type it to delete.")


class ApplicationPublic(BaseModel):
    id: str
    project_id: str
    project_name: str
    type: ApplicationType
    status: ApplicationStatus
    applicant_id: str
    applicant: str
    reason: str
    extension_days: int | None
    quota_delta: Quota | None
    submitted_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    decision_reason: str
