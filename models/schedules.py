"""Job schedules (manual 5.5.2): the table, its trigger kinds and what crosses the workflow boundary.

A schedule is one Temporal Schedule (`schedule-<id>`) whose action starts a `ScheduledJobWorkflow`; that
workflow reads the schedule's job template when it fires and runs one job. The table is what the API lists
and edits; Temporal holds the timing, the pause state and the recent and next runs.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import JSON, String, UniqueConstraint
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from models.base import Page, UTCDateTime, new_id, utcnow
from models.inputs import Multiline, RequestModel, check_time_zone
from models.jobs import JobInput, JobPublic

# Job names are at most 40 characters; a schedule's name leaves room for the run number.
SCHEDULE_NAME_MAX = 32
NAME_PATTERN = rf"^[a-z0-9]{{1,{SCHEDULE_NAME_MAX}}}$"
TIME_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class Concurrency(StrEnum):
    single = "single"  # 單線: each run waits until the previous run's job has finished
    multi = "multi"  # 多線: runs start on time, overlapping freely


class RunOutcome(StrEnum):
    started = "started"  # its job is running (or queued for quota)
    succeeded = "succeeded"
    failed = "failed"
    deleted = "deleted"  # its job was deleted before it finished
    skipped = "skipped"  # no job started: the project was not active, no template, the owner left...


class Schedule(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_schedule_project_name"),)

    id: str = SQLField(default_factory=new_id, primary_key=True, max_length=32)
    project_id: str = SQLField(foreign_key="project.id", index=True, ondelete="CASCADE")
    owner_id: str = SQLField(foreign_key="user.id", index=True)
    owner: str = SQLField(max_length=32)
    name: str = SQLField(max_length=SCHEDULE_NAME_MAX)
    description: str = SQLField(default="", max_length=2000)
    time_zone: str = SQLField(max_length=64)
    start_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime)
    end_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime)
    trigger: dict[str, Any] = SQLField(sa_type=JSON)
    # A template in use cannot be deleted (the API answers 409 naming the schedule).
    template_id: str | None = SQLField(default=None, foreign_key="job_template.id", index=True)
    concurrency: Concurrency = SQLField(sa_type=String(16))
    paused: bool = False  # paused by a person; a schedule without a template also waits, unpaused
    pause_note: str = SQLField(default="", max_length=500)
    created_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = SQLField(default_factory=utcnow, sa_type=UTCDateTime)


class ScheduleRun(SQLModel, table=True):
    """One firing of a schedule: the job it started, or why it started none."""

    __tablename__ = "schedule_run"
    __table_args__ = (UniqueConstraint("project_id", "job_name", name="uq_schedule_run_job_name"),)

    id: str = SQLField(primary_key=True, max_length=200)  # the ScheduledJobWorkflow's workflow ID
    schedule_id: str = SQLField(foreign_key="schedule.id", index=True, ondelete="CASCADE")
    project_id: str = SQLField(foreign_key="project.id", index=True, ondelete="CASCADE")
    fired_at: datetime = SQLField(sa_type=UTCDateTime, index=True)
    job_id: str | None = SQLField(default=None, max_length=32)
    job_name: str | None = SQLField(default=None, max_length=40)
    outcome: RunOutcome = SQLField(sa_type=String(16))
    message: str = SQLField(default="", max_length=2000)
    started_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime)
    ended_at: datetime | None = SQLField(default=None, sa_type=UTCDateTime)


# ---- triggers (觸發時間) -------------------------------------------------------------------------


class Weekday(StrEnum):
    sunday = "sunday"
    monday = "monday"
    tuesday = "tuesday"
    wednesday = "wednesday"
    thursday = "thursday"
    friday = "friday"
    saturday = "saturday"


class MonthlyTrigger(RequestModel):
    kind: Literal["monthly"]
    day: int = Field(ge=1, le=31, description="Day of the month; months without it are skipped")
    at: str = Field(pattern=TIME_PATTERN, description="HH:MM in the schedule's time zone")


class WeeklyTrigger(RequestModel):
    kind: Literal["weekly"]
    weekday: Weekday
    at: str = Field(pattern=TIME_PATTERN, description="HH:MM in the schedule's time zone")


class DailyTrigger(RequestModel):
    kind: Literal["daily"]
    at: str = Field(pattern=TIME_PATTERN, description="HH:MM in the schedule's time zone")


class HoursTrigger(RequestModel):
    kind: Literal["every_hours"]
    every: int = Field(ge=1, le=24 * 366, description="Hours between runs, counted from start_at")


class MinutesTrigger(RequestModel):
    kind: Literal["every_minutes"]
    every: int = Field(ge=1, le=60 * 24 * 366, description="Minutes between runs, counted from start_at")


# A cron field: `*`, numbers, names, ranges, lists and steps (`*/15`, `1-5`, `mon,wed`).
_CRON_FIELD = re.compile(r"^(\*|[0-9a-z]+(-[0-9a-z]+)?)(/[0-9]+)?(,(\*|[0-9a-z]+(-[0-9a-z]+)?)(/[0-9]+)?)*$")
_CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_CRON_NAMES: tuple[dict[str, int], ...] = (
    {},
    {},
    {},
    {month: number + 1 for number, month in enumerate(_MONTHS)},
    {day: number for number, day in enumerate(_DAYS)},
)
_CRON_LABELS = ("minute", "hour", "day of month", "month", "day of week")


class CronTrigger(RequestModel):
    kind: Literal["cron"]
    expression: str = Field(
        max_length=200, description="Five fields: minute hour day-of-month month day-of-week"
    )

    @field_validator("expression")
    @classmethod
    def _five_fields(cls, expression: str) -> str:
        fields = expression.lower().split()
        if len(fields) != 5:
            raise ValueError("give five fields: minute hour day-of-month month day-of-week")
        for text, (low, high), names, label in zip(
            fields, _CRON_RANGES, _CRON_NAMES, _CRON_LABELS, strict=True
        ):
            if not _CRON_FIELD.match(text):
                raise ValueError(f"{label} field {text!r} is not a cron field")
            for token in re.split(r"[,/-]", text):
                if token == "*":
                    continue
                number = names.get(token) if not token.isdigit() else int(token)
                if number is None or not low <= number <= high:
                    raise ValueError(f"{label} field {text!r}: {token!r} is outside {low}-{high}")
        return " ".join(fields)


Trigger = Annotated[
    MonthlyTrigger | WeeklyTrigger | DailyTrigger | HoursTrigger | MinutesTrigger | CronTrigger,
    Field(discriminator="kind"),
]


# ---- API schemas ---------------------------------------------------------------------------------


class ScheduleCreate(RequestModel):
    name: str = Field(
        pattern=NAME_PATTERN, description=f"Lowercase letters and digits, 1-{SCHEDULE_NAME_MAX}"
    )
    description: Annotated[str, Multiline] = Field("", max_length=2000)
    time_zone: str = Field("Asia/Taipei", max_length=64, description="IANA name; triggers use its clock")
    start_at: AwareDatetime | None = Field(None, description="No run before this; None: from now")
    end_at: AwareDatetime | None = Field(None, description="No run after this; None: until deleted")
    trigger: Trigger
    template_id: str | None = Field(None, max_length=32, description="Or attach one later with PATCH")
    concurrency: Concurrency = Concurrency.single

    _zone = field_validator("time_zone")(check_time_zone)


class ScheduleUpdate(RequestModel):
    """Fields left out stay as they are; an explicit null clears start_at, end_at or template_id.
    The name cannot change (manual 5.5.2), so sending one is refused."""

    model_config = ConfigDict(extra="forbid")

    description: Annotated[str, Multiline] | None = Field(None, max_length=2000)
    time_zone: str | None = Field(None, max_length=64)
    start_at: AwareDatetime | None = None
    end_at: AwareDatetime | None = None
    trigger: Trigger | None = None
    template_id: str | None = Field(None, max_length=32)
    concurrency: Concurrency | None = None

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, name: str | None) -> str | None:
        return None if name is None else check_time_zone(name)


class PauseRequest(RequestModel):
    note: Annotated[str, Multiline] = Field("", max_length=500)


class TemplateScheduleRequest(RequestModel):
    """Run a template as a schedule: attach it to an existing schedule, or make a new one for it."""

    schedule_id: str | None = Field(None, max_length=32, description="An existing schedule to attach to")
    changes: ScheduleUpdate | None = Field(None, description="With schedule_id: settings to change too")
    schedule: ScheduleCreate | None = Field(None, description="A new schedule; its template_id is ignored")


class ScheduleRunPublic(BaseModel):
    scheduled_at: datetime
    started_at: datetime | None
    workflow_id: str
    job_id: str | None = None
    job_name: str | None = None
    outcome: RunOutcome | None = None  # None: the run has not recorded anything yet
    message: str = ""


class SchedulePublic(BaseModel):
    id: str
    project_id: str
    owner: str
    name: str
    description: str
    time_zone: str
    start_at: datetime | None
    end_at: datetime | None
    trigger: dict[str, Any]
    template_id: str | None
    template_name: str | None
    concurrency: Concurrency
    paused: bool
    pause_note: str
    next_runs: list[datetime]  # from the Temporal schedule; empty while paused
    recent_runs: list[ScheduleRunPublic]
    running: int  # runs whose job has not finished
    created_at: datetime
    updated_at: datetime


class UpcomingJob(BaseModel):
    """A schedule's next run as a row of the job list (manual 5.5.2); it goes away only with its schedule."""

    id: str  # `schedule-<schedule id>`: never a job's ID
    project_id: str
    owner: str
    name: str
    status: Literal["scheduled"] = "scheduled"
    schedule_id: str
    schedule_name: str
    template_id: str | None
    next_run_at: datetime
    deletable: bool = False


class JobListPage(Page[JobPublic]):
    """The job list: a page of jobs, and on its first page the upcoming runs of the visible schedules."""

    upcoming: list[UpcomingJob] = []


# ---- what crosses the ScheduledJobWorkflow boundary -------------------------------------------------


class ScheduledJobInput(BaseModel):
    schedule_id: str
    project_id: str


class StopAction(StrEnum):
    none = "none"
    pause = "pause"  # the project left active, the owner left it, the spec was retired
    remove = "remove"  # the project is deleted: its Temporal schedule goes too


class RunPlan(BaseModel):
    """What the fire-time activity decided: the job to run, or why there is none."""

    run_id: str
    job_input: JobInput | None = None  # set when a job is to run
    job_id: str | None = None
    job_name: str | None = None
    skipped: str = ""  # why no job runs
    stop: StopAction = StopAction.none


class RunEnd(BaseModel):
    run_id: str
    outcome: RunOutcome
    message: str = ""
