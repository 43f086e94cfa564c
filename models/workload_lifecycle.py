"""What every workload workflow (containers, jobs) keeps the same way: its place in the project's ledger,
its hold on the runtime and its read-model version. Subclasses add their status and their own fields."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel

from models.workloads import WorkloadSpec


class WorkloadTimings(BaseModel):
    """How often a workload workflow looks at the runtime; tests shorten them."""

    first_poll: timedelta = timedelta(seconds=1)
    max_poll: timedelta = timedelta(seconds=30)  # while starting, polls back off up to this
    gone_max_poll: timedelta = timedelta(seconds=30)  # after a delete: the next in line waits for it
    apply_timeout: timedelta = timedelta(minutes=2)
    delete_timeout: timedelta = timedelta(minutes=2)


class WorkloadLifecycleState(BaseModel):
    """Carried through continue-as-new, and recorded to the read model at every change."""

    id: str
    project_id: str
    owner_id: str
    owner: str
    name: str
    spec_id: str | None = None  # the catalog spec it was created from, if any
    spec: WorkloadSpec
    created_at: datetime
    status: StrEnum
    reason: str = ""
    message: str = ""
    queue_position: int | None = None
    admission_requested: bool = False  # asked the project; its answer comes as a signal
    admission_answered: bool = False
    registered: bool = False  # the project's ledger holds its request (queued or reserved)
    admitted: bool = False
    applied: bool = False  # the runtime may hold a workload for it
    running_reported: bool = False
    delete_requested_by: str | None = None
    shutdown_reason: str | None = None
    version: int = 0
