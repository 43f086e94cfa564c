"""Jobs (manual 5.5.1): the shared workload routes, the whole log as text, and each visible schedule's
next run shown in the list."""

from __future__ import annotations

from typing import Any

from fastapi.responses import PlainTextResponse
from sqlmodel import Session

from activities.jobs import LOG_TAIL_LINES, last_bytes
from api.deps import CurrentUser, PathId, RuntimeDep, SessionDep
from api.workload_routes import CreateContext, KindRoutes, ListContext, workload_router
from models.jobs import Job, JobCreate, JobLog
from models.schedules import JobListPage
from services.access import readable, sees_everything_in
from services.jobs import start_job
from services.kinds import JOB
from services.schedules import refuse_schedule_row, upcoming_jobs
from services.workloads import Owner


async def _start(context: CreateContext, body: JobCreate) -> Job:
    owner = Owner(id=context.user.id, username=context.user.username)
    return await start_job(
        context.session,
        context.client,
        context.settings,
        context.project,
        owner,
        body,
        context.idempotency_key,
    )


def _kept_log(session: Session, row: Job, lines: int) -> str:
    stored = session.get(JobLog, row.id)
    if stored is None:
        return ""
    return "".join(stored.text.splitlines(keepends=True)[-lines:])


async def _upcoming(context: ListContext) -> dict[str, Any]:
    """On the first page without a status filter, each visible schedule's next run (manual 5.5.2)."""
    if context.filtered:
        return {"upcoming": []}
    mine = None if sees_everything_in(context.members, context.user) else context.user.id
    upcoming = await upcoming_jobs(
        context.session, context.client, context.project_id, owner_id=mine, owner=context.owner
    )
    return {"upcoming": upcoming}


ROUTES = KindRoutes(
    kind=JOB,
    create_body=JobCreate,
    start=_start,
    create_description="Create a job (建立任務) in an active project you are a member of: a shell command "
    "run in an image with a catalog spec's resources, stopped after MLCP_JOB_MAX_RUNTIME_HOURS. Send an "
    "Idempotency-Key header to make retries safe.",
    runtime_holds=lambda row: not row.log_kept,
    kept_log=_kept_log,
    page=JobListPage,
    page_extras=_upcoming,
    before_delete=refuse_schedule_row,
    list_description="Project admins see every member's jobs, members their own; newest first. Finished "
    "jobs stay with their final status; deleted ones are hidden unless status asks for them. The first page "
    "without a status filter also lists each visible schedule's next run under `upcoming`.",
    detail_description="Status, exit code, reason and times; the runtime's events while it holds the job, "
    "and the last 200 lines of the log (live while it runs, the kept copy once it has finished).",
)
router = workload_router(ROUTES)


@router.get(
    "/{resource_id}/log",
    response_class=PlainTextResponse,
    description="The whole log as text: live while the job runs, afterwards the kept copy (its last MiB).",
)
async def read_job_log(
    project_id: PathId, resource_id: PathId, user: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> PlainTextResponse:
    row, _ = readable(session, Job, JOB.name, project_id, resource_id, user)
    text = await ROUTES.log_tail(session, runtime, row, LOG_TAIL_LINES)
    return PlainTextResponse(last_bytes(text)[0])
