"""Job templates (manual 5.9.1): a saved job recipe a member runs at once or a schedule runs later.

A template holds what a job needs except its name: spec, image, command (one shell command line, as jobs
take it), environment and shared memory. Every member of the project sees its templates; the owner and the
project's admins change or delete them.
"""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import JSON, Text, UniqueConstraint
from sqlmodel import Field as SQLField
from sqlmodel import Session, SQLModel, col, select

from models.base import UTCDateTime, new_id, utcnow
from models.jobs import ENV_NAME_PATTERN, Job
from models.schedules import ScheduleRun

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
    image: str = SQLField(max_length=512)
    command: str = SQLField(sa_type=Text)
    env: dict[str, str] = SQLField(default_factory=dict, sa_type=JSON)
    shm_gb: float | None = None
    created_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)


# ---- API schemas ---------------------------------------------------------------------------------


def _command_not_blank(command: str | None) -> str | None:
    if command is not None and not command.strip():
        raise ValueError("must not be blank")
    return command


def _env_names(env: dict[str, str] | None) -> dict[str, str] | None:
    """The rules jobs apply (models/jobs.py), so a template never holds what a job would refuse."""
    for name, value in (env or {}).items():
        if not re.match(ENV_NAME_PATTERN, name):
            raise ValueError(
                f"{name!r} is not a variable name (letters, digits, _; not starting with a digit)"
            )
        if len(value) > 4096:
            raise ValueError(f"the value of {name} is longer than 4096 characters")
    return env


class JobTemplateCreate(BaseModel):
    name: str = Field(
        pattern=NAME_PATTERN, description=f"Lowercase letters and digits, 1-{TEMPLATE_NAME_MAX}"
    )
    spec_id: str = Field(max_length=32, description="A catalog spec: GPU model and count, vCPU, RAM")
    image: str = Field(min_length=1, max_length=512, pattern=r"^\S+$")
    command: str = Field(
        min_length=1, max_length=16_384, description="One shell command line, run as /bin/sh -c"
    )
    env: dict[str, str] = Field(default_factory=dict, max_length=100, description="Environment variables")
    shm_gb: float | None = Field(None, gt=0, le=1024)

    _command = field_validator("command")(_command_not_blank)
    _env = field_validator("env")(_env_names)


class JobTemplateUpdate(BaseModel):
    """Fields left out stay as they are; the name is the template's identity and stays too."""

    spec_id: str | None = Field(None, max_length=32)
    image: str | None = Field(None, min_length=1, max_length=512, pattern=r"^\S+$")
    command: str | None = Field(None, min_length=1, max_length=16_384)
    env: dict[str, str] | None = Field(None, max_length=100)
    shm_gb: float | None = Field(None, gt=0, le=1024)

    _command = field_validator("command")(_command_not_blank)
    _env = field_validator("env")(_env_names)


class JobTemplatePublic(BaseModel):
    id: str
    project_id: str
    owner: str
    name: str
    spec_id: str
    image: str
    command: str
    env: dict[str, str]
    shm_gb: float | None
    created_at: datetime
    updated_at: datetime


class TemplateRun(BaseModel):
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
