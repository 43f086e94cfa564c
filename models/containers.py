"""Containers (manual 5.4): the read-model table and what crosses the ContainerWorkflow boundary."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, BaseModel, Field, field_validator
from sqlalchemy import JSON, String
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from models.base import UTCDateTime, utcnow
from models.workload_lifecycle import WorkloadLifecycleState, WorkloadTimings
from models.workloads import STANDARD_PORTS, Endpoint, RuntimeEvent, WorkloadSpec


class ContainerStatus(StrEnum):
    scheduled = "scheduled"  # waiting for its start time
    waiting = "waiting"  # queued in the project's quota ledger
    creating = "creating"  # admitted; the runtime is scheduling, pulling or starting it
    running = "running"
    failed = "failed"  # refused at admission, or the runtime reports a failure (reservation kept)
    deleting = "deleting"
    deleted = "deleted"


class Container(SQLModel, table=True):
    id: str = SQLField(primary_key=True, max_length=32)
    project_id: str = SQLField(foreign_key="project.id", index=True, ondelete="CASCADE")
    owner_id: str = SQLField(foreign_key="user.id", index=True)
    owner: str = SQLField(max_length=32)
    name: str = SQLField(max_length=128, index=True)
    spec_id: str | None = SQLField(default=None, foreign_key="spec.id", ondelete="RESTRICT", index=True)
    image: str = SQLField(max_length=512)
    gpu: int = 0
    gpu_model: str | None = SQLField(default=None, max_length=128)
    vcpu: float
    ram_gb: float
    shm_gb: float | None = None
    ports: list[dict[str, Any]] = SQLField(default_factory=list, sa_type=JSON)
    # Plain strings, not database enums: a new status needs no type migration.
    status: ContainerStatus = SQLField(sa_type=String(24), index=True)
    reason: str = SQLField(default="", max_length=128)
    message: str = SQLField(default="", max_length=2000)
    queue_position: int | None = None
    endpoints: list[dict[str, Any]] = SQLField(default_factory=list, sa_type=JSON)
    start_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime)
    end_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime)
    version: int = 0  # the workflow's state version; older snapshots never overwrite newer ones
    created_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)


class ContainerTimings(WorkloadTimings):
    check_interval: timedelta = timedelta(hours=1)  # once running or failed: rare looks keep history small


class ContainerState(WorkloadLifecycleState):
    """Everything the workflow owns; carried through continue-as-new."""

    status: ContainerStatus = ContainerStatus.scheduled
    start_at: datetime | None = None
    end_at: datetime | None = None
    endpoints: list[Endpoint] = []


class ContainerInput(BaseModel):
    id: str
    project_id: str
    owner_id: str
    owner: str
    spec: WorkloadSpec
    spec_id: str | None = None
    start_at: datetime | None = None  # None: now
    end_at: datetime | None = None  # None: runs until deleted or the project shuts it down
    created_at: datetime
    timings: ContainerTimings = ContainerTimings()
    max_history_events: int = 10_000
    resume: ContainerState | None = None  # set by continue-as-new


class ContainerDelete(BaseModel):
    user_id: str
    username: str


# ---- API schemas (manual 5.4.1-5.4.3) ------------------------------------------------------------

SSH_KEY_PATTERN = (
    r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)"
    r" [A-Za-z0-9+/]+={0,3}( [^\r\n]*)?$"
)


class ContainerCreate(BaseModel):
    name: str = Field(pattern=r"^[a-z0-9]{1,40}$", description="Lowercase letters and digits, 1-40")
    spec_id: str = Field(max_length=32, description="A catalog spec: GPU model and count, vCPU, RAM")
    image: str = Field(min_length=1, max_length=512, pattern=r"^\S+$")
    password: str | None = Field(
        None, min_length=8, max_length=128, description="Root password; only its SHA-512 crypt hash is kept"
    )
    ssh_public_key: str | None = Field(None, max_length=16_384, pattern=SSH_KEY_PATTERN)
    services: list[str] = Field(default_factory=lambda: ["ssh", "jupyter"], max_length=len(STANDARD_PORTS))
    shm_gb: float | None = Field(None, gt=0, le=1024)
    start_at: AwareDatetime | None = Field(None, description="Later start; None: now")
    end_at: AwareDatetime | None = Field(None, description="When it is deleted; or give hours")
    hours: float | None = Field(None, gt=0, le=24 * 366)

    @field_validator("services")
    @classmethod
    def _known_services(cls, services: list[str]) -> list[str]:
        unknown = [name for name in services if name not in STANDARD_PORTS]
        if unknown:
            raise ValueError(f"unknown service {unknown[0]!r}; choose from {', '.join(STANDARD_PORTS)}")
        if len(set(services)) != len(services):
            raise ValueError("a service is listed twice")
        return services


class ContainerBatchCreate(ContainerCreate):
    members: list[str] = Field(min_length=1, max_length=100, description="Usernames; each owns theirs")
    count_per_member: int = Field(1, ge=1, le=20)


class EndpointPublic(BaseModel):
    name: str
    host: str
    port: int  # where a user connects
    connect: str  # ready to copy: `ssh root@HOST -p PORT`, or a URL


class ContainerPublic(BaseModel):
    id: str
    project_id: str
    owner: str
    name: str
    spec_id: str | None
    image: str
    gpu: int
    gpu_model: str | None
    vcpu: float
    ram_gb: float
    shm_gb: float | None
    services: list[str]
    status: ContainerStatus
    reason: str
    message: str
    queue_position: int | None
    endpoints: list[EndpointPublic]
    start_at: datetime | None
    end_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ContainerDetail(ContainerPublic):
    events: list[RuntimeEvent]
    log_tail: str


class ContainerIds(BaseModel):
    ids: list[str] = Field(min_length=1, max_length=200)


class ContainerDeleteResult(BaseModel):
    id: str
    ok: bool
    status: ContainerStatus | None = None
    error: str | None = None  # the error code, e.g. not_found, forbidden, conflict
    message: str = ""


class ContainerDeleteResults(BaseModel):
    results: list[ContainerDeleteResult]
