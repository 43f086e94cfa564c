"""What every workload kind (containers, jobs, and the kinds to come) shares, declared once.

The fields a kind's table, public model and workflow state have in common are declared here as SQLModel
bases; each kind adds its status enum and its own fields on top (models/containers.py, models/jobs.py):

- `WorkloadFields`: stored, shown and carried by the workflow: who, where, what it is called, how it stands;
- `WorkloadBookkeeping`: stored and carried, never shown: the owner's ID and the workflow's version
  (`WorkloadRecord` is both: what any kind's row or state has);
- `ResourceColumns`: stored and shown: the main role's image and resources, flattened for filtering;
- `WorkloadLifecycleState`: what the workflow alone keeps (its spec, its place in the ledger, its hold
  on the runtime).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, Field
from sqlalchemy import JSON, String
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from models.base import UTCDateTime, utcnow
from models.inputs import RequestModel
from models.monitoring import MAIN_POD
from models.usage import RunPeriod
from models.workloads import RuntimeEvent, WorkloadSpec

REASON_MAX = 128
MESSAGE_MAX = 2000


class WorkloadFields(SQLModel):
    id: str = SQLField(primary_key=True, max_length=32)
    project_id: str = SQLField(foreign_key="project.id", index=True, ondelete="CASCADE")
    owner: str = SQLField(max_length=32)
    name: str = SQLField(max_length=128, index=True)
    spec_id: str | None = SQLField(default=None, foreign_key="spec.id", ondelete="RESTRICT", index=True)
    # Each kind narrows it to its own status enum. Plain strings in the database, not enums there: a new
    # status needs no type migration.
    status: str = SQLField(sa_type=String(24), index=True)
    reason: str = SQLField(default="", max_length=REASON_MAX)
    message: str = SQLField(default="", max_length=MESSAGE_MAX)
    queue_position: int | None = None
    created_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)


class WorkloadBookkeeping(SQLModel):
    owner_id: str = SQLField(foreign_key="user.id", index=True)
    version: int = 0  # the workflow's state version; older snapshots never overwrite newer ones


class ResourceColumns(SQLModel):
    image: str = SQLField(max_length=512)
    image_id: str | None = SQLField(default=None, max_length=32, index=True)
    cuda_version: str | None = SQLField(default=None, max_length=16)
    image_warning: str = SQLField(default="", max_length=256)
    gpu: int = 0
    gpu_model: str | None = SQLField(default=None, max_length=128)
    vcpu: float
    ram_gb: float
    shm_gb: float | None = None
    volume_ids: list[str] = SQLField(default_factory=list, sa_type=JSON)  # what it mounts

    @staticmethod
    def of(spec: WorkloadSpec) -> dict[str, object]:
        """The columns for a spec: its main role's image and resources."""
        role = spec.main
        resources = role.resources
        return {
            "image": role.image,
            "image_id": spec.image_choice.image_id,
            "cuda_version": spec.image_choice.cuda_version,
            "image_warning": spec.image_choice.warning,
            "gpu": resources.gpu,
            "gpu_model": resources.gpu_model,
            "vcpu": resources.vcpu,
            "ram_gb": resources.ram_gb,
            "shm_gb": resources.shm_gb,
            "volume_ids": sorted({mount.volume_id for mount in spec.mounts}),
        }


class UpdatedAt(SQLModel):
    updated_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)


class WorkloadTimings(BaseModel):
    """How often a workload workflow looks at the runtime and how long it waits for it; tests shorten them."""

    first_poll: timedelta = timedelta(seconds=1)
    max_poll: timedelta = timedelta(seconds=30)  # while starting, polls back off up to this
    gone_max_poll: timedelta = timedelta(seconds=30)  # after a delete: the next in line waits for it
    apply_timeout: timedelta = timedelta(minutes=2)
    delete_timeout: timedelta = timedelta(minutes=2)
    # A runtime that still holds the workload this long after the delete is given up on: the workload ends
    # saying so, its reservation goes back, and the project's deletion removes the rest by its labels.
    removal_timeout: timedelta = timedelta(minutes=5)


class WorkloadRecord(WorkloadBookkeeping, WorkloadFields):
    """Any kind's row or workflow state: what the shared routes, records and cleanups read."""


class WorkloadLifecycleState(WorkloadRecord):
    """Carried through continue-as-new, and recorded to the read model at every change. A kind's state
    class derives from this and from its own fields (which narrow the status to its enum)."""

    spec: WorkloadSpec
    admission_requested: bool = False  # asked the project; its answer comes as a signal
    admission_answered: bool = False
    registered: bool = False  # the project's ledger holds its request (queued or reserved)
    admitted: bool = False
    applied: bool = False  # the runtime may hold a workload for it
    running_reported: bool = False
    delete_requested_by: str | None = None
    shutdown_reason: str | None = None
    cancelled: bool = False  # its workflow was cancelled (an operator, or its project's deletion)
    # When its pod last started and stopped running (workflow time): the period cost is computed from.
    run_started_at: datetime | None = None
    run_stopped_at: datetime | None = None
    as_of: datetime | None = None  # the workflow's time when this snapshot was recorded

    def run_periods(self) -> list[RunPeriod]:
        """The running periods this snapshot knows of (activities/usage.py turns them into rows)."""
        if self.run_started_at is None:
            return []
        resources = self.spec.main.resources
        return [
            RunPeriod(
                pod=MAIN_POD,
                started_at=self.run_started_at,
                stopped_at=self.run_stopped_at,
                gpu=resources.gpu,
                gpu_model=resources.gpu_model,
            )
        ]


class WorkloadInput(BaseModel):
    """What starts a workload's workflow; each kind narrows the timings and the resumed state."""

    id: str
    project_id: str
    owner_id: str
    owner: str
    spec: WorkloadSpec
    spec_id: str | None = None
    created_at: datetime
    timings: WorkloadTimings = WorkloadTimings()
    max_history_events: int = 10_000  # continue-as-new beyond this, well before Temporal's limits
    resume: WorkloadLifecycleState | None = None  # set by continue-as-new


class WorkloadDelete(BaseModel):
    user_id: str
    username: str


# ---- API schemas every kind shares ----------------------------------------------------------------


class WorkloadDetailFields(BaseModel):
    events: list[RuntimeEvent]  # the runtime's, while it holds the workload
    log_tail: str


class WorkloadIds(RequestModel):
    ids: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(min_length=1, max_length=200)


class WorkloadDeleteResult(BaseModel):
    id: str
    ok: bool
    status: str | None = None
    error: str | None = None  # the error code, e.g. not_found, forbidden, conflict
    message: str = ""


class WorkloadDeleteResults(BaseModel):
    results: list[WorkloadDeleteResult]
