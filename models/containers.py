"""Containers (manual 5.4): the read-model table and what crosses the ContainerWorkflow boundary."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel
from sqlalchemy import JSON, String
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from models.base import UTCDateTime, utcnow
from models.workloads import Endpoint, WorkloadSpec


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


class ContainerTimings(BaseModel):
    """How often the workflow looks at the runtime; tests shorten them."""

    first_poll: timedelta = timedelta(seconds=2)
    max_poll: timedelta = timedelta(seconds=30)  # while creating, polls back off up to this
    check_interval: timedelta = timedelta(hours=1)  # once running or failed: rare looks keep history small
    apply_timeout: timedelta = timedelta(minutes=2)
    delete_timeout: timedelta = timedelta(minutes=2)


class ContainerState(BaseModel):
    """Everything the workflow owns; carried through continue-as-new."""

    id: str
    project_id: str
    owner_id: str
    owner: str
    name: str
    spec_id: str | None = None  # the catalog spec it was created from, if any
    spec: WorkloadSpec
    start_at: datetime | None = None
    end_at: datetime | None = None
    created_at: datetime
    status: ContainerStatus = ContainerStatus.scheduled
    reason: str = ""
    message: str = ""
    queue_position: int | None = None
    endpoints: list[Endpoint] = []
    registered: bool = False  # the project's ledger holds its request (queued or reserved)
    admitted: bool = False
    applied: bool = False  # the runtime may hold a workload for it
    running_reported: bool = False
    delete_requested_by: str | None = None
    shutdown_reason: str | None = None
    version: int = 0


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
