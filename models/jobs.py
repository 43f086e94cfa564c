"""Batch jobs (manual 5.5.1): the read-model tables and what crosses the JobWorkflow boundary.

A job's command is one shell command line, as the manual's form takes it (`echo "Hello World!"`); the
runtime runs it as ``/bin/sh -c <command>``, so pipes, `&&` and quoting work as users expect.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, field_validator
from sqlalchemy import JSON, String, Text
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from models.base import UTCDateTime, utcnow
from models.images import CUDA_VERSION_PATTERN
from models.inputs import ImageReference, Multiline, RequestModel
from models.monitoring import MAIN_POD
from models.usage import RunPeriod
from models.volumes import Mounts, check_mounts
from models.workload_lifecycle import (
    ResourceColumns,
    UpdatedAt,
    WorkloadDetailFields,
    WorkloadFields,
    WorkloadInput,
    WorkloadLifecycleState,
    WorkloadRecord,
    WorkloadTimings,
)

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


class JobFields(WorkloadFields):
    status: JobStatus = SQLField(default=JobStatus.waiting, sa_type=String(24), index=True)
    command: str = SQLField(sa_type=Text)  # as the user gave it; the spec holds the shell invocation of it
    exit_code: int | None = None
    started_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime)
    log_kept: bool = False  # the log is in job_log: read it there, the runtime holds nothing any more


class JobRunColumns(SQLModel):
    env: dict[str, str] = SQLField(default_factory=dict, sa_type=JSON)
    max_runtime_seconds: int | None = None


class Job(ResourceColumns, JobRunColumns, UpdatedAt, WorkloadRecord, JobFields, table=True):
    pass


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


class JobState(WorkloadLifecycleState, JobFields):
    """Everything the workflow owns; carried through continue-as-new."""

    applied_at: datetime | None = None  # workflow time; the runtime's deadline counts from about then
    log_snapshot_taken: bool = False  # the copy taken before the deadline
    cleaned_up: bool = False  # workload gone and reservation released: the job is over
    poll_delay: timedelta | None = None  # the back-off reached, so continue-as-new does not restart it

    def run_periods(self) -> list[RunPeriod]:
        """A job's run is the runtime's own start and finish, also for one that ended between two looks."""
        if self.started_at is None:
            return super().run_periods()
        resources = self.spec.main.resources
        return [
            RunPeriod(
                pod=MAIN_POD,
                started_at=self.started_at,
                stopped_at=self.finished_at,
                gpu=resources.gpu,
                gpu_model=resources.gpu_model,
            )
        ]

    def record(self) -> dict[str, Any]:
        """The read model's columns for this state."""
        return {
            **ResourceColumns.of(self.spec),
            "env": dict(self.spec.main.env),
            "max_runtime_seconds": self.spec.active_deadline_seconds,
        }


class JobInput(WorkloadInput):
    """The spec's active deadline is MLCP_JOB_MAX_RUNTIME_HOURS, decided when the job was created."""

    command: str  # as the user gave it; the spec's command is the shell invocation of it
    timings: JobTimings = JobTimings()
    resume: JobState | None = None


# ---- API schemas (manual 5.5.1) -------------------------------------------------------------------

ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
ENV_VALUE_MAX = 4096
COMMAND_MAX = 16_384


def check_command(command: str | None) -> str | None:
    if command is not None and not command.strip():
        raise ValueError("must not be blank")
    return command


def check_env(env: dict[str, str] | None) -> dict[str, str] | None:
    for name, value in (env or {}).items():
        if not re.match(ENV_NAME_PATTERN, name):
            raise ValueError(
                f"{name!r} is not a variable name (letters, digits, _; not starting with a digit)"
            )
        if len(value) > ENV_VALUE_MAX:
            raise ValueError(f"the value of {name} is longer than {ENV_VALUE_MAX} characters")
    return env


# A command line may span lines (a script), as may an environment value (a certificate, say).
Command = Annotated[
    str,
    Multiline,
    Field(
        min_length=1,
        max_length=COMMAND_MAX,
        description='One shell command line, run as /bin/sh -c, e.g. echo "Hello World!"',
    ),
]
Environment = Annotated[
    dict[Annotated[str, Field(max_length=128)], Annotated[str, Field(max_length=ENV_VALUE_MAX)]],
    Multiline,
    Field(max_length=100, description="Environment variables"),
]


class JobRecipe(RequestModel):
    """What a job runs: the fields a job and a job template share."""

    spec_id: str = Field(max_length=32, description="A catalog spec: GPU model and count, vCPU, RAM")
    image: ImageReference | None = Field(None, description="A raw image reference; or give image_id")
    image_id: str | None = Field(None, max_length=32, description="A public or custom image (/images)")
    cuda_version: str | None = Field(None, pattern=CUDA_VERSION_PATTERN, description="One the image offers")
    command: Command
    env: Environment = Field(default_factory=dict)
    shm_gb: float | None = Field(None, gt=0, le=1024)
    mounts: Mounts = Field(default_factory=list, description="Project volumes to mount")

    _command = field_validator("command")(check_command)
    _env = field_validator("env")(check_env)
    _mounts = field_validator("mounts")(check_mounts)


class JobCreate(JobRecipe):
    name: str = Field(pattern=r"^[a-z0-9]{1,40}$", description="Lowercase letters and digits, 1-40")


class JobPublic(ResourceColumns, JobRunColumns, UpdatedAt, JobFields):
    pass


class JobDetail(JobPublic, WorkloadDetailFields):
    """Events are the runtime's while it holds the job; the log tail is live while the job runs and the
    kept copy once it has finished."""
