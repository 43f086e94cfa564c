"""Jobs (manual 5.5.1): create, list, detail with events and log tail, full log, delete one or several."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import PlainTextResponse
from sqlalchemy import func
from sqlmodel import Session, col, select
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from activities.jobs import LOG_TAIL_LINES, last_bytes
from activities.runtime import WorkloadRuntime, runtime_from_settings
from api.deps import CurrentUser, OptionalTemporalDep, SessionDep, SettingsDep, TemporalDep
from api.errors import ApiError, conflict
from api.job_start import JobOwner, start_job
from api.project_access import (
    QueuePlace,
    changeable_workload,
    live_places_for,
    readable_workload,
    require_member,
    sees_every_workload,
    visible_project,
)
from api.schedule_store import refuse_schedule_row, upcoming_jobs
from api.temporal import api_error_from_update
from models.accounts import User
from models.base import utcnow
from models.jobs import (
    Job,
    JobCreate,
    JobDelete,
    JobDeleteResult,
    JobDeleteResults,
    JobDetail,
    JobIds,
    JobLog,
    JobPublic,
    JobStatus,
)
from models.schedules import JobListPage
from models.workloads import RuntimeEvent, WorkloadKind
from workflows.job import JobWorkflow, workflow_id

router = APIRouter(prefix="/api/v1/projects/{project_id}/jobs", tags=["jobs"])

DETAIL_LOG_LINES = 200


def to_public(row: Job, places: dict[str, QueuePlace] | None = None) -> JobPublic:
    """The row as the API shows it; `places` (the project's live queue) corrects a waiting one's place."""
    place = (places or {}).get(row.id) if row.status == JobStatus.waiting else None
    return JobPublic(
        id=row.id,
        project_id=row.project_id,
        owner=row.owner,
        name=row.name,
        spec_id=row.spec_id,
        image=row.image,
        command=row.command,
        env=row.env,
        gpu=row.gpu,
        gpu_model=row.gpu_model,
        vcpu=row.vcpu,
        ram_gb=row.ram_gb,
        shm_gb=row.shm_gb,
        max_runtime_seconds=row.max_runtime_seconds,
        status=row.status,
        reason=row.reason,
        message=place.message if place else row.message,
        exit_code=row.exit_code,
        queue_position=place.position if place else row.queue_position,
        started_at=row.started_at,
        finished_at=row.finished_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def _log(session: Session, runtime: WorkloadRuntime, row: Job, tail_lines: int) -> str:
    """From the runtime while it holds the job; from the kept copy afterwards (or if the runtime lost it)."""
    live = ""
    if not row.log_kept:
        live = await asyncio.to_thread(runtime.logs, row.project_id, WorkloadKind.job, row.id, tail_lines)
    if live:
        return last_bytes(live)[0]
    stored = session.get(JobLog, row.id)
    if stored is None:
        return ""
    return "".join(stored.text.splitlines(keepends=True)[-tail_lines:])


@router.post(
    "",
    response_model=JobPublic,
    status_code=201,
    description="Create a job (建立任務) in an active project you are a member of: a shell command run in an "
    "image with a catalog spec's resources, stopped after MLCP_JOB_MAX_RUNTIME_HOURS. Send an "
    "Idempotency-Key header to make retries safe.",
)
async def create_job(
    project_id: str,
    body: JobCreate,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
) -> JobPublic:
    project, members = visible_project(session, project_id, user)
    require_member(members, user, "create jobs")
    owner = JobOwner(id=user.id, username=user.username)
    row = await start_job(session, client, settings, project, owner, body, idempotency_key)
    return to_public(row)


@router.get(
    "",
    response_model=JobListPage,
    description="Project admins see every member's jobs, members their own; newest first. Finished jobs "
    "stay with their final status; deleted ones are hidden unless status asks for them. The first page "
    "without a status filter also lists each visible schedule's next run under `upcoming`.",
)
async def list_jobs(
    project_id: str,
    user: CurrentUser,
    session: SessionDep,
    client: OptionalTemporalDep,
    status: Annotated[list[JobStatus] | None, Query(description="Repeat to match several")] = None,
    owner: Annotated[str | None, Query(max_length=64, description="Owner's username")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> JobListPage:
    _, members = visible_project(session, project_id, user)
    statement = select(Job).where(Job.project_id == project_id)
    if not sees_every_workload(members, user):
        statement = statement.where(Job.owner_id == user.id)
    if status:
        statement = statement.where(col(Job.status).in_(status))
    else:
        statement = statement.where(Job.status != JobStatus.deleted)
    if owner:
        statement = statement.where(Job.owner == owner)
    total = session.exec(select(func.count()).select_from(statement.subquery())).one()
    rows = session.exec(
        statement.order_by(col(Job.created_at).desc(), col(Job.id)).offset(offset).limit(limit)
    ).all()
    places = await live_places_for(client, session, project_id, rows)
    items = [to_public(row, places) for row in rows]
    mine = None if sees_every_workload(members, user) else user.id
    upcoming = (
        []
        if status or offset
        else await upcoming_jobs(session, client, project_id, owner_id=mine, owner=owner)
    )
    return JobListPage(items=items, total=total, limit=limit, offset=offset, upcoming=upcoming)


@router.get(
    "/{job_id}",
    response_model=JobDetail,
    description="Status, exit code, reason and times; the runtime's events while it holds the job, and the "
    "last 200 lines of the log (live while it runs, the kept copy once it has finished).",
)
async def read_job(
    project_id: str,
    job_id: str,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    client: OptionalTemporalDep,
) -> JobDetail:
    row, _ = readable_workload(session, Job, "job", project_id, job_id, user)
    places = await live_places_for(client, session, project_id, [row])
    runtime = runtime_from_settings(settings)
    events: list[RuntimeEvent] = []
    if not row.log_kept:
        events = await asyncio.to_thread(runtime.events, project_id, WorkloadKind.job, job_id)
    log_tail = await _log(session, runtime, row, DETAIL_LOG_LINES)
    return JobDetail(**to_public(row, places).model_dump(), events=events, log_tail=log_tail)


@router.get(
    "/{job_id}/log",
    response_class=PlainTextResponse,
    description="The whole log as text: live while the job runs, afterwards the kept copy (its last MiB).",
)
async def read_job_log(
    project_id: str, job_id: str, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> PlainTextResponse:
    row, _ = readable_workload(session, Job, "job", project_id, job_id, user)
    text = await _log(session, runtime_from_settings(settings), row, LOG_TAIL_LINES)
    return PlainTextResponse(text)


def _mark_deleted(session: Session, row: Job, user: User) -> Job:
    """A finished job's workflow has ended: the row is all there is to change."""
    session.refresh(row)
    if row.status == JobStatus.deleted:
        raise conflict(f"job {row.id} is already deleted")
    if row.status not in (JobStatus.succeeded, JobStatus.failed):
        raise conflict(f"job {row.id} is {row.status} but its lifecycle has ended")
    row.status, row.message = JobStatus.deleted, f"deleted by {user.username}"
    row.version, row.updated_at = row.version + 1, utcnow()
    session.add(row)
    session.commit()
    return row


async def _delete(client: Client, session: Session, row: Job, user: User) -> JobDeleteResult:
    if row.status == JobStatus.deleted:
        raise conflict(f"job {row.id} is already deleted")
    handle: WorkflowHandle[Any, Any] = client.get_workflow_handle(workflow_id(row.id))
    try:
        state = await handle.execute_update(
            JobWorkflow.delete, JobDelete(user_id=user.id, username=user.username)
        )
    except WorkflowUpdateFailedError as exc:
        raise api_error_from_update(exc) from exc
    except RPCError as exc:
        if exc.status not in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            raise
        marked = _mark_deleted(session, row, user)
        return JobDeleteResult(id=row.id, ok=True, status=marked.status, message=marked.message)
    return JobDeleteResult(id=row.id, ok=True, status=state.status, message=state.message)


@router.delete(
    "/{job_id}",
    response_model=JobDeleteResult,
    status_code=202,
    description="Delete a job (owner or project admin). A queued or running job is stopped (its log is "
    "kept); a finished one is hidden from the list.",
)
async def delete_job(
    project_id: str, job_id: str, user: CurrentUser, session: SessionDep, client: TemporalDep
) -> JobDeleteResult:
    refuse_schedule_row(session, project_id, job_id, user)
    row = changeable_workload(session, Job, "job", project_id, job_id, user)
    return await _delete(client, session, row, user)


@router.post(
    "/delete",
    response_model=JobDeleteResults,
    description="Delete several jobs; each is authorised on its own and reported by id.",
)
async def delete_jobs(
    project_id: str, body: JobIds, user: CurrentUser, session: SessionDep, client: TemporalDep
) -> JobDeleteResults:
    visible_project(session, project_id, user)

    async def one(job_id: str) -> JobDeleteResult:
        try:
            refuse_schedule_row(session, project_id, job_id, user)
            row = changeable_workload(session, Job, "job", project_id, job_id, user)
            return await _delete(client, session, row, user)
        except ApiError as exc:
            return JobDeleteResult(id=job_id, ok=False, error=exc.code, message=exc.message)

    return JobDeleteResults(results=[await one(job_id) for job_id in dict.fromkeys(body.ids)])
