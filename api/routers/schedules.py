"""Job schedules (manual 5.5.2): create, list with next and recent runs, detail, edit, pause, resume,
run now, delete. Each schedule is a Temporal Schedule whose runs start jobs from its job template.

Authorisation follows containers: members create; the owner and the project's admins change a schedule;
project admins see every schedule of the project, members their own.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy import func
from sqlmodel import Session, col, select
from temporalio.service import RPCError, RPCStatusCode

from api.deps import CurrentUser, Limit, Offset, PathId, SessionDep, SettingsDep, TemporalDep
from models.accounts import User
from models.base import Page
from models.database import release_connection
from models.projects import ProjectMember
from models.schedules import (
    PauseRequest,
    Schedule,
    ScheduleCreate,
    SchedulePublic,
    ScheduleUpdate,
)
from services.access import changeable, readable, require_member, sees_everything_in, visible_project
from services.errors import conflict
from services.schedules import (
    create_schedule,
    delete_schedule,
    describe,
    handle_of,
    public,
    require_active,
    set_paused,
    to_public,
    update_schedule,
)

router = APIRouter(prefix="/api/v1/projects/{project_id}/schedules", tags=["schedules"])


def _readable(
    session: Session, project_id: PathId, schedule_id: PathId, user: User
) -> tuple[Schedule, list[ProjectMember]]:
    """Owners and project admins see a schedule; to other members it does not exist."""
    return readable(session, Schedule, "schedule", project_id, schedule_id, user)


def changeable_schedule(session: Session, project_id: PathId, schedule_id: PathId, user: User) -> Schedule:
    return changeable(session, Schedule, "schedule", project_id, schedule_id, user)


@router.post(
    "",
    response_model=SchedulePublic,
    status_code=201,
    description="Create a schedule (建立排程) in an active project. Give template_id now, or attach a job "
    "template later with PATCH; until then the schedule waits, paused.",
)
async def create(
    project_id: PathId,
    body: ScheduleCreate,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
) -> SchedulePublic:
    project, members = visible_project(session, project_id, user)
    require_member(members, user, "create schedules")
    row = await create_schedule(session, client, settings.temporal_task_queue, project, user, body)
    return await public(session, client, row)


@router.get(
    "",
    response_model=Page[SchedulePublic],
    description="Project admins see every schedule, members their own; each with its next run times and "
    "recent runs.",
)
async def list_schedules(
    project_id: PathId,
    user: CurrentUser,
    session: SessionDep,
    client: TemporalDep,
    owner: Annotated[str | None, Query(max_length=64, description="Owner's username")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[SchedulePublic]:
    _, members = visible_project(session, project_id, user)
    statement = select(Schedule).where(Schedule.project_id == project_id)
    if not sees_everything_in(members, user):
        statement = statement.where(Schedule.owner_id == user.id)
    if owner:
        statement = statement.where(Schedule.owner == owner)
    total = session.exec(select(func.count()).select_from(statement.subquery())).one()
    rows = session.exec(
        statement.order_by(col(Schedule.created_at).desc(), col(Schedule.id)).offset(offset).limit(limit)
    ).all()
    descriptions = await describe(session, client, rows)
    items = [to_public(session, row, descriptions[row.id]) for row in rows]
    return Page(items=items, total=total, limit=limit, offset=offset)


@router.get("/{schedule_id}", response_model=SchedulePublic)
async def read_schedule(
    project_id: PathId, schedule_id: PathId, user: CurrentUser, session: SessionDep, client: TemporalDep
) -> SchedulePublic:
    row, _ = _readable(session, project_id, schedule_id, user)
    return await public(session, client, row)


@router.patch(
    "/{schedule_id}",
    response_model=SchedulePublic,
    description="Change a schedule or attach its job template (owner or project admin). The name cannot "
    "change; an explicit null clears start_at, end_at or template_id.",
)
async def edit_schedule(
    project_id: PathId,
    schedule_id: PathId,
    body: ScheduleUpdate,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
) -> SchedulePublic:
    row = changeable_schedule(session, project_id, schedule_id, user)
    row = await update_schedule(session, client, settings.temporal_task_queue, row, body)
    return await public(session, client, row)


@router.post("/{schedule_id}/pause", response_model=SchedulePublic)
async def pause_schedule(
    project_id: PathId,
    schedule_id: PathId,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    body: PauseRequest | None = None,
) -> SchedulePublic:
    row = changeable_schedule(session, project_id, schedule_id, user)
    note = (body.note if body else "") or f"paused by {user.username}"
    row = await set_paused(session, client, settings.temporal_task_queue, row, True, note)
    return await public(session, client, row)


@router.post(
    "/{schedule_id}/resume",
    response_model=SchedulePublic,
    description="Resume a paused schedule; it needs an active project and a job template.",
)
async def resume_schedule(
    project_id: PathId,
    schedule_id: PathId,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
) -> SchedulePublic:
    project, _ = visible_project(session, project_id, user)
    row = changeable_schedule(session, project_id, schedule_id, user)
    require_active(project, "resuming a schedule")
    if row.template_id is None:
        raise conflict("attach a job template first (PATCH template_id)", field="template_id")
    row = await set_paused(session, client, settings.temporal_task_queue, row, False, "")
    return await public(session, client, row)


@router.post(
    "/{schedule_id}/trigger",
    response_model=SchedulePublic,
    status_code=202,
    description="Run the schedule now, once. A single-line schedule still waits for its running job.",
)
async def trigger_schedule(
    project_id: PathId, schedule_id: PathId, user: CurrentUser, session: SessionDep, client: TemporalDep
) -> SchedulePublic:
    project, _ = visible_project(session, project_id, user)
    row = changeable_schedule(session, project_id, schedule_id, user)
    require_active(project, "running a schedule")
    if row.template_id is None:
        raise conflict("attach a job template first (PATCH template_id)", field="template_id")
    release_connection(session)
    try:
        await handle_of(client, row).trigger()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise conflict(f"schedule {row.id} is gone from the workflow engine; delete it") from exc
        raise
    return await public(session, client, row)


@router.delete(
    "/{schedule_id}",
    status_code=204,
    description="Delete a schedule and its upcoming run (owner or project admin). Jobs it already "
    "started keep running and stay in the job list.",
)
async def remove_schedule(
    project_id: PathId, schedule_id: PathId, user: CurrentUser, session: SessionDep, client: TemporalDep
) -> Response:
    row = changeable_schedule(session, project_id, schedule_id, user)
    await delete_schedule(session, client, row)
    return Response(status_code=204)
