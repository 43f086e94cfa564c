"""Schedule rows and their Temporal Schedules, kept in step.

Every change goes to Temporal first and to the database second; when the second step fails the first is
undone, so a schedule never exists on one side only. Deleting goes the same way round: the Temporal schedule
first (a repeated delete finds it gone and carries on), then the row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from temporalio import client as temporal
from temporalio.client import Client, ScheduleDescription, ScheduleHandle
from temporalio.service import RPCError, RPCStatusCode

from models.accounts import User
from models.base import utcnow
from models.database import release_connection
from models.job_templates import JobTemplate
from models.lifecycle import ProjectStatus
from models.projects import Project
from models.schedules import (
    Schedule,
    ScheduleCreate,
    SchedulePublic,
    ScheduleRun,
    ScheduleRunPublic,
    ScheduleUpdate,
    UpcomingJob,
)
from services.access import members_of, sees_everything_in
from services.errors import DomainError, conflict, invalid
from services.schedule_specs import (
    parse_trigger,
    schedule_id,
    schedule_search_attributes,
    temporal_schedule,
)

RECENT_RUNS = 10
SCHEDULE_ROW_PREFIX = "schedule-"  # job IDs never contain a dash


def require_active(project: Project, action: str) -> None:
    if project.status != ProjectStatus.active:
        raise conflict(f"project {project.id} is {project.status}; {action} needs an active project")


def template_in(session: Session, project_id: str, template_id: str, field: str) -> JobTemplate:
    template = session.get(JobTemplate, template_id)
    if template is None or template.project_id != project_id:
        raise invalid(field, f"no job template {template_id!r} in this project")
    return template


def _name_taken(session: Session, project_id: str, name: str) -> bool:
    found = session.exec(select(Schedule.id).where(Schedule.project_id == project_id, Schedule.name == name))
    return found.first() is not None


def _taken(name: str) -> DomainError:
    return conflict(f"the project has a schedule named {name!r} already", field="name")


def handle_of(client: Client, row: Schedule) -> ScheduleHandle:
    return client.get_schedule_handle(schedule_id(row.id))


async def create_schedule(
    session: Session, client: Client, task_queue: str, project: Project, owner: User, body: ScheduleCreate
) -> Schedule:
    require_active(project, "a schedule")
    if body.start_at is not None and body.end_at is not None and body.end_at <= body.start_at:
        raise invalid("end_at", "must come after start_at")
    if body.end_at is not None and body.end_at <= utcnow():
        raise invalid("end_at", "must be in the future")
    if body.template_id is not None:
        template_in(session, project.id, body.template_id, "template_id")
    if _name_taken(session, project.id, body.name):
        raise _taken(body.name)
    row = Schedule(
        project_id=project.id,
        owner_id=owner.id,
        owner=owner.username,
        name=body.name,
        description=body.description,
        time_zone=body.time_zone,
        start_at=body.start_at,
        end_at=body.end_at,
        trigger=body.trigger.model_dump(mode="json"),
        template_id=body.template_id,
        concurrency=body.concurrency,
    )
    release_connection(session)
    handle = await client.create_schedule(
        schedule_id(row.id),
        temporal_schedule(row, task_queue),
        search_attributes=schedule_search_attributes(row),
    )
    try:
        session.add(row)
        session.commit()
    except BaseException as exc:
        session.rollback()
        await _delete_temporal(handle)
        if isinstance(exc, IntegrityError):  # the same name, created a moment ago by someone else
            raise _taken(body.name) from exc
        raise
    return row


def _changed(row: Schedule, body: ScheduleUpdate, session: Session) -> dict[str, Any]:
    """The new column values; checked before anything is written."""
    given = body.model_fields_set
    values: dict[str, Any] = {}
    for field in ("description", "time_zone", "concurrency"):
        if field in given and getattr(body, field) is not None:
            values[field] = getattr(body, field)
    for field in ("start_at", "end_at"):  # an explicit null clears them
        if field in given:
            values[field] = getattr(body, field)
    if "trigger" in given:
        if body.trigger is None:
            raise invalid("trigger", "a schedule needs a trigger")
        values["trigger"] = body.trigger.model_dump(mode="json")
    if "template_id" in given:
        if body.template_id is not None:
            template_in(session, row.project_id, body.template_id, "template_id")
        values["template_id"] = body.template_id
    start_at, end_at = values.get("start_at", row.start_at), values.get("end_at", row.end_at)
    if start_at is not None and end_at is not None and end_at <= start_at:
        raise invalid("end_at", "must come after start_at")
    return values


async def _apply(
    session: Session, client: Client, task_queue: str, row: Schedule, values: dict[str, Any]
) -> Schedule:
    """Write ``values`` to Temporal, then to the row; put Temporal back if the row cannot be written."""
    current = {name: getattr(row, name) for name in Schedule.model_fields}
    before, after = Schedule(**current), Schedule(**(current | values))
    handle = handle_of(client, row)
    release_connection(session)
    await _replace(handle, temporal_schedule(after, task_queue))
    try:
        for field, value in values.items():
            setattr(row, field, value)
        row.updated_at = utcnow()
        session.add(row)
        session.commit()
    except BaseException:
        session.rollback()
        await _replace(handle, temporal_schedule(before, task_queue))
        raise
    return row


async def update_schedule(
    session: Session, client: Client, task_queue: str, row: Schedule, body: ScheduleUpdate
) -> Schedule:
    return await _apply(session, client, task_queue, row, _changed(row, body, session))


async def set_paused(
    session: Session, client: Client, task_queue: str, row: Schedule, paused: bool, note: str
) -> Schedule:
    return await _apply(session, client, task_queue, row, {"paused": paused, "pause_note": note[:500]})


async def delete_schedule(session: Session, client: Client, row: Schedule) -> None:
    release_connection(session)
    await _delete_temporal(handle_of(client, row))
    session.delete(row)
    session.commit()


async def _replace(handle: ScheduleHandle, schedule: temporal.Schedule) -> None:
    def updater(_: temporal.ScheduleUpdateInput) -> temporal.ScheduleUpdate:
        return temporal.ScheduleUpdate(schedule=schedule)

    try:
        await handle.update(updater)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise conflict(f"{handle.id} is gone from the workflow engine; delete the schedule") from exc
        raise


async def _delete_temporal(handle: ScheduleHandle) -> None:
    try:
        await handle.delete()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise


# ---- reading ------------------------------------------------------------------------------------


async def describe(
    session: Session, client: Client, rows: Sequence[Schedule]
) -> dict[str, ScheduleDescription | None]:
    """Temporal's view of each schedule: pause state, next and recent runs; None where it has none."""

    async def one(row: Schedule) -> ScheduleDescription | None:
        try:
            return await handle_of(client, row).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return None
            raise

    release_connection(session)
    found = await asyncio.gather(*(one(row) for row in rows))
    return {row.id: description for row, description in zip(rows, found, strict=True)}


def to_public(session: Session, row: Schedule, description: ScheduleDescription | None) -> SchedulePublic:
    template = session.get(JobTemplate, row.template_id) if row.template_id else None
    info = description.info if description else None
    actions = list(reversed(info.recent_actions))[:RECENT_RUNS] if info else []
    ids = [getattr(action.action, "workflow_id", "") for action in actions]
    recorded = {run.id: run for run in session.exec(select(ScheduleRun).where(col(ScheduleRun.id).in_(ids)))}
    recent = []
    for action, workflow_id in zip(actions, ids, strict=True):
        run = recorded.get(workflow_id)
        recent.append(
            ScheduleRunPublic(
                scheduled_at=action.scheduled_at,
                started_at=action.started_at,
                workflow_id=workflow_id,
                job_id=run.job_id if run else None,
                job_name=run.job_name if run else None,
                outcome=run.outcome if run else None,
                message=run.message if run else "",
            )
        )
    paused = description.schedule.state.paused if description else row.paused
    return SchedulePublic(
        id=row.id,
        project_id=row.project_id,
        owner=row.owner,
        name=row.name,
        description=row.description,
        time_zone=row.time_zone,
        start_at=row.start_at,
        end_at=row.end_at,
        trigger=parse_trigger(row.trigger).model_dump(mode="json"),
        template_id=row.template_id,
        template_name=template.name if template else None,
        concurrency=row.concurrency,
        paused=paused,
        pause_note=(description.schedule.state.note or "") if description else row.pause_note,
        next_runs=list(info.next_action_times) if info and not paused else [],
        recent_runs=recent,
        running=len(info.running_actions) if info else 0,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def public(session: Session, client: Client, row: Schedule) -> SchedulePublic:
    return to_public(session, row, (await describe(session, client, [row]))[row.id])


async def upcoming_jobs(
    session: Session,
    client: Client | None,
    project_id: str,
    *,
    owner_id: str | None = None,
    owner: str | None = None,
) -> list[UpcomingJob]:
    """Each schedule's next run as a job-list row (manual 5.5.2), soonest first; ``owner_id`` limits them to
    one person's schedules (members see their own), ``owner`` is the list's owner filter (a username)."""
    if client is None:
        return []
    statement = select(Schedule).where(Schedule.project_id == project_id)
    if owner_id is not None:
        statement = statement.where(Schedule.owner_id == owner_id)
    if owner is not None:
        statement = statement.where(Schedule.owner == owner)
    rows = session.exec(statement.order_by(col(Schedule.name))).all()
    descriptions = await describe(session, client, rows)
    upcoming = []
    for row in rows:
        description = descriptions[row.id]
        if description is None or description.schedule.state.paused:
            continue
        next_times = description.info.next_action_times
        if not next_times:
            continue
        upcoming.append(
            UpcomingJob(
                id=f"{SCHEDULE_ROW_PREFIX}{row.id}",
                project_id=row.project_id,
                owner=row.owner,
                name=row.name,
                schedule_id=row.id,
                schedule_name=row.name,
                template_id=row.template_id,
                next_run_at=next_times[0],
            )
        )
    return sorted(upcoming, key=lambda job: job.next_run_at)


def refuse_schedule_row(session: Session, project_id: str, job_id: str, user: User) -> None:
    """A schedule's upcoming row in the job list cannot be deleted on its own: its schedule must go."""
    if not job_id.startswith(SCHEDULE_ROW_PREFIX):
        return
    row = session.get(Schedule, job_id.removeprefix(SCHEDULE_ROW_PREFIX))
    if row is None or row.project_id != project_id:
        return  # the jobs router answers 404 as for any unknown job
    members = members_of(session, [project_id])[project_id]
    if row.owner_id == user.id or sees_everything_in(members, user):
        raise conflict(
            f"this row is the next run of schedule {row.name!r} ({row.id}); it goes away only with the "
            "schedule: delete the schedule"
        )
