"""Job templates (manual 5.9.1): a saved job recipe a member runs at once or a schedule runs later.

A template holds what a job needs except its name: spec, image, command (one shell command line, as jobs
take it), environment and shared memory. Every member of the project sees its templates; the owner and the
project's admins change or delete them.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import JSON, Text, UniqueConstraint
from sqlmodel import Field as SQLField
from sqlmodel import Session, SQLModel, col, select

from models.base import UTCDateTime, new_id, utcnow
from models.images import CUDA_VERSION_PATTERN
from models.inputs import ImageReference, RequestModel
from models.jobs import Command, Environment, Job, JobCreate, JobRecipe, check_command, check_env
from models.schedules import ScheduleRun
from models.volumes import MountRequest, Mounts, check_mounts

# Job names are at most 40 characters; a template's name leaves room for the sequence number runs add.
TEMPLATE_NAME_MAX = 32
NAME_PATTERN = rf"^[a-z0-9]{{1,{TEMPLATE_NAME_MAX}}}$"


class JobTemplate(SQLModel, table=True):
    __tablename__ = "job_template"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_job_template_project_name"),)

    id: str = SQLField(default_factory=new_id, primary_key=True, max_length=32)
    project_id: str = SQLField(foreign_key="project.id", index=True, ondelete="CASCADE")
    owner_id: str = SQLField(foreign_key="user.id", index=True)
    owner: str = SQLField(max_length=32)
    name: str = SQLField(max_length=TEMPLATE_NAME_MAX)
    spec_id: str = SQLField(foreign_key="spec.id", ondelete="RESTRICT", index=True)
    image: str = SQLField(default="", max_length=512)  # a raw reference; empty with image_id
    image_id: str | None = SQLField(default=None, max_length=32, index=True)
    cuda_version: str | None = SQLField(default=None, max_length=16)
    command: str = SQLField(sa_type=Text)
    env: dict[str, str] = SQLField(default_factory=dict, sa_type=JSON)
    shm_gb: float | None = None
    mounts: list[dict[str, Any]] = SQLField(default_factory=list, sa_type=JSON)
    created_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)

    def job(self, name: str) -> JobCreate:
        """The job a run of this template starts: run now or by a schedule alike."""
        return JobCreate(
            name=name,
            spec_id=self.spec_id,
            image=self.image or None,
            image_id=self.image_id,
            cuda_version=self.cuda_version,
            command=self.command,
            env=self.env,
            shm_gb=self.shm_gb,
            mounts=[MountRequest.model_validate(mount) for mount in self.mounts],
        )


# ---- API schemas ---------------------------------------------------------------------------------


class JobTemplateCreate(JobRecipe):
    name: str = Field(
        pattern=NAME_PATTERN, description=f"Lowercase letters and digits, 1-{TEMPLATE_NAME_MAX}"
    )


class JobTemplateUpdate(RequestModel):
    """Fields left out stay as they are; the name is the template's identity and stays too."""

    spec_id: str | None = Field(None, max_length=32)
    image: ImageReference | None = Field(None, description="A raw reference; replaces image_id")
    image_id: str | None = Field(None, max_length=32, description="A public or custom image; replaces image")
    cuda_version: str | None = Field(None, pattern=CUDA_VERSION_PATTERN)
    command: Command | None = None
    env: Environment | None = None
    shm_gb: float | None = Field(None, gt=0, le=1024)
    mounts: Mounts | None = None

    _command = field_validator("command")(check_command)
    _env = field_validator("env")(check_env)
    _mounts = field_validator("mounts")(lambda mounts: None if mounts is None else check_mounts(mounts))


class JobTemplatePublic(BaseModel):
    id: str
    project_id: str
    owner: str
    name: str
    spec_id: str
    image: str
    image_id: str | None
    cuda_version: str | None
    command: str
    env: dict[str, str]
    shm_gb: float | None
    mounts: list[MountRequest]
    created_at: datetime
    updated_at: datetime


class TemplateRun(RequestModel):
    """Run a template now; the job's name defaults to the template's name plus the next free number."""

    name: str | None = Field(None, pattern=r"^[a-z0-9]{1,40}$", description="Lowercase letters and digits")


def next_job_name(session: Session, project_id: str, base: str) -> str:
    """``base`` plus the next number no job (nor schedule run) of the project has used: train1, train2..."""
    pattern = re.compile(rf"^{re.escape(base)}([0-9]+)$")
    used = session.exec(
        select(Job.name).where(Job.project_id == project_id, col(Job.name).startswith(base))
    ).all()
    reserved = session.exec(
        select(ScheduleRun.job_name).where(
            ScheduleRun.project_id == project_id, col(ScheduleRun.job_name).startswith(base)
        )
    ).all()
    numbers = [int(match.group(1)) for name in [*used, *reserved] if name and (match := pattern.match(name))]
    return f"{base}{max(numbers, default=0) + 1}"
