"""Batch jobs (manual 5.5.1): the read-model tables and what crosses the JobWorkflow boundary.

A job's command is one shell command line, as the manual's form takes it (`echo "Hello World!"`); the
runtime runs it as ``/bin/sh -c <command>``, so pipes, `&&` and quoting work as users expect.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import JSON, String, Text
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from models.base import UTCDateTime, utcnow
from models.workload_lifecycle import WorkloadLifecycleState, WorkloadTimings
from models.workloads import RuntimeEvent, WorkloadSpec

# The stored log keeps the end of the output: that is where a failure explains itself.
LOG_KEEP_BYTES = 1024 * 1024
SHELL = ["/bin/sh", "-c"]


class JobStatus(StrEnum):
    waiting = "waiting"  # queued in the project's quota ledger
    creating = "creating"  # admitted; the runtime is scheduling, pulling or starting it
    running = "running"
    succeeded = "succeeded"  # exit code 0
    failed = "failed"  # refused, non-zero exit, deadline, image pull, or stopped by the project's shutdown
    deleting = "deleting"  # a delete stops it; the log is kept first
    deleted = "deleted"  # hidden from the list unless asked for


FINISHED = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.deleted})


class Job(SQLModel, table=True):
    id: str = SQLField(primary_key=True, max_length=32)
    project_id: str = SQLField(foreign_key="project.id", index=True, ondelete="CASCADE")
    owner_id: str = SQLField(foreign_key="user.id", index=True)
    owner: str = SQLField(max_length=32)
    name: str = SQLField(max_length=128, index=True)
    spec_id: str | None = SQLField(default=None, foreign_key="spec.id", ondelete="RESTRICT", index=True)
    image: str = SQLField(max_length=512)
    command: str = SQLField(sa_type=Text)
    env: dict[str, str] = SQLField(default_factory=dict, sa_type=JSON)
    gpu: int = 0
    gpu_model: str | None = SQLField(default=None, max_length=128)
    vcpu: float
    ram_gb: float
    shm_gb: float | None = None
    max_runtime_seconds: int | None = None
    # Plain strings, not database enums: a new status needs no type migration.
    status: JobStatus = SQLField(sa_type=String(24), index=True)
    reason: str = SQLField(default="", max_length=128)
    message: str = SQLField(default="", max_length=2000)
    exit_code: int | None = None
    queue_position: int | None = None
    started_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime)
    log_kept: bool = False  # the log is in job_log: read it there, the runtime holds nothing any more
    version: int = 0  # the workflow's state version; older snapshots never overwrite newer ones
    created_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)


class JobLog(SQLModel, table=True):
    """The end of a job's output, kept when it finishes: its Kubernetes Job and pods are deleted then."""

    __tablename__ = "job_log"

    job_id: str = SQLField(primary_key=True, foreign_key="job.id", ondelete="CASCADE", max_length=32)
    text: str = SQLField(sa_type=Text)
    truncated: bool = False  # older output was dropped to stay within LOG_KEEP_BYTES
    stored_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)


# ---- what crosses the workflow boundary -----------------------------------------------------------


class JobTimings(WorkloadTimings):
    max_poll: timedelta = timedelta(minutes=5)  # jobs run for days: back off to a look every few minutes
    # Kubernetes deletes a job's pods at its deadline, and their log with them: keep a copy shortly before.
    log_before_deadline: timedelta = timedelta(minutes=5)
    log_timeout: timedelta = timedelta(minutes=2)


class JobState(WorkloadLifecycleState):
    """Everything the workflow owns; carried through continue-as-new."""

    status: JobStatus = JobStatus.waiting
    command: str
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    applied_at: datetime | None = None  # workflow time; the runtime's deadline counts from about then
    log_snapshot_taken: bool = False  # the copy taken before the deadline
    log_kept: bool = False
    cleaned_up: bool = False  # workload gone and reservation released: the job is over
    poll_delay: timedelta | None = None  # the back-off reached, so continue-as-new does not restart it


class JobInput(BaseModel):
    id: str
    project_id: str
    owner_id: str
    owner: str
    command: str  # as the user gave it; spec.command is the shell invocation of it
    spec: WorkloadSpec  # kind job, active_deadline_seconds from MLCP_JOB_MAX_RUNTIME_HOURS
    spec_id: str | None = None
    created_at: datetime
    timings: JobTimings = JobTimings()
    max_history_events: int = 10_000
    resume: JobState | None = None  # set by continue-as-new


class JobDelete(BaseModel):
    user_id: str
    username: str


# ---- API schemas (manual 5.5.1) -------------------------------------------------------------------

ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


class JobCreate(BaseModel):
    name: str = Field(pattern=r"^[a-z0-9]{1,40}$", description="Lowercase letters and digits, 1-40")
    spec_id: str = Field(max_length=32, description="A catalog spec: GPU model and count, vCPU, RAM")
    image: str = Field(min_length=1, max_length=512, pattern=r"^\S+$")
    command: str = Field(
        min_length=1,
        max_length=16_384,
        description='One shell command line, run as /bin/sh -c, e.g. echo "Hello World!"',
    )
    env: dict[str, str] = Field(default_factory=dict, max_length=100, description="Environment variables")
    shm_gb: float | None = Field(None, gt=0, le=1024)

    @field_validator("command")
    @classmethod
    def _not_blank(cls, command: str) -> str:
        if not command.strip():
            raise ValueError("must not be blank")
        return command

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for name, value in env.items():
            if not re.match(ENV_NAME_PATTERN, name):
                raise ValueError(
                    f"{name!r} is not a variable name (letters, digits, _; not starting with a digit)"
                )
            if len(value) > 4096:
                raise ValueError(f"the value of {name} is longer than 4096 characters")
        return env


class JobPublic(BaseModel):
    id: str
    project_id: str
    owner: str
    name: str
    spec_id: str | None
    image: str
    command: str
    env: dict[str, str]
    gpu: int
    gpu_model: str | None
    vcpu: float
    ram_gb: float
    shm_gb: float | None
    max_runtime_seconds: int | None
    status: JobStatus
    reason: str
    message: str
    exit_code: int | None
    queue_position: int | None
    started_at: datetime | None
    finished_at: datetime | None
    created_at: datetime
    updated_at: datetime


class JobDetail(JobPublic):
    events: list[RuntimeEvent]  # the runtime's, while it holds the job
    log_tail: str  # live while the job runs; from the stored log once it has finished


class JobIds(BaseModel):
    ids: list[str] = Field(min_length=1, max_length=200)


class JobDeleteResult(BaseModel):
    id: str
    ok: bool
    status: JobStatus | None = None
    error: str | None = None  # the error code, e.g. not_found, forbidden, conflict
    message: str = ""


class JobDeleteResults(BaseModel):
    results: list[JobDeleteResult]
