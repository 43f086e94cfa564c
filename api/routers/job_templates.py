"""Job templates (manual 5.9.1): create, list, detail, edit, delete; run one now; run one as a schedule.

Every member of the project sees its templates (they are the project's shared recipes, and schedules of
any member may use them); members create them; the owner and the project's admins change or delete them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from api.deps import CurrentUser, Limit, Offset, PathId, SessionDep, SettingsDep, TemporalDep
from api.routers.jobs import ROUTES as JOB_ROUTES
from api.routers.schedules import changeable_schedule
from models.accounts import User
from models.base import Page, utcnow
from models.job_templates import (
    JobTemplate,
    JobTemplateCreate,
    JobTemplatePublic,
    JobTemplateUpdate,
    TemplateRun,
    next_job_name,
)
from models.jobs import Job, JobPublic, JobStatus
from models.projects import ProjectMember
from models.schedules import Schedule, SchedulePublic, ScheduleUpdate, TemplateScheduleRequest
from models.volumes import MountRequest
from services.access import changes_everything_in, require_member, visible_project
from services.errors import conflict, forbidden, invalid, not_found
from services.images import choose_image
from services.jobs import job_id_for, start_job
from services.mounts import resolve_mounts
from services.schedules import create_schedule, public, update_schedule
from services.workloads import Owner, catalog_resources

router = APIRouter(prefix="/api/v1/projects/{project_id}/job-templates", tags=["job templates"])


def to_public(row: JobTemplate) -> JobTemplatePublic:
    return JobTemplatePublic(
        id=row.id,
        project_id=row.project_id,
        owner=row.owner,
        name=row.name,
        spec_id=row.spec_id,
        image=row.image,
        image_id=row.image_id,
        cuda_version=row.cuda_version,
        command=row.command,
        env=row.env,
        shm_gb=row.shm_gb,
        mounts=[MountRequest.model_validate(mount) for mount in row.mounts],
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _readable(
    session: Session, project_id: PathId, template_id: PathId, user: User
) -> tuple[JobTemplate, list[ProjectMember]]:
    _, members = visible_project(session, project_id, user)
    row = session.get(JobTemplate, template_id)
    if row is None or row.project_id != project_id:
        raise not_found("job template", template_id)
    return row, members


def _changeable(session: Session, project_id: PathId, template_id: PathId, user: User) -> JobTemplate:
    row, members = _readable(session, project_id, template_id, user)
    if row.owner_id != user.id and not changes_everything_in(members, user):
        raise forbidden("only the template's owner and the project's admins may change it")
    return row


def _check_recipe(session: Session, project_id: str, owner_id: str, row: JobTemplate) -> None:
    """The spec (422 naming spec_id when missing or retired) and the image, as a run would check them."""
    resources = catalog_resources(session, row.spec_id, None)
    choose_image(
        session,
        project_id,
        owner_id,
        image_id=row.image_id,
        reference=row.image or None,
        cuda_version=row.cuda_version,
        resources=resources,
    )


def _job_name_taken(session: Session, project_id: PathId, name: str) -> bool:
    statement = select(Job.id).where(
        Job.project_id == project_id, Job.name == name, Job.status != JobStatus.deleted
    )
    return session.exec(statement).first() is not None


def _taken(name: str) -> Exception:
    return conflict(f"the project has a job template named {name!r} already", field="name")


@router.post("", response_model=JobTemplatePublic, status_code=201, description="Create a job template.")
def create_template(
    project_id: PathId, body: JobTemplateCreate, user: CurrentUser, session: SessionDep
) -> JobTemplatePublic:
    _, members = visible_project(session, project_id, user)
    require_member(members, user, "create job templates")
    resolve_mounts(session, project_id, user.id, body.mounts)
    row = JobTemplate(
        project_id=project_id,
        owner_id=user.id,
        owner=user.username,
        **{**body.model_dump(), "image": body.image or ""},
    )
    _check_recipe(session, project_id, user.id, row)
    taken = session.exec(
        select(JobTemplate.id).where(JobTemplate.project_id == project_id, JobTemplate.name == body.name)
    ).first()
    if taken is not None:
        raise _taken(body.name)
    session.add(row)
    try:
        session.commit()
    except IntegrityError as exc:  # the same name, created a moment ago by someone else
        session.rollback()
        raise _taken(body.name) from exc
    return to_public(row)


@router.get("", response_model=Page[JobTemplatePublic], description="The project's job templates.")
def list_templates(
    project_id: PathId,
    user: CurrentUser,
    session: SessionDep,
    name: Annotated[str | None, Query(max_length=64, description="Part of the name")] = None,
    owner: Annotated[str | None, Query(max_length=64, description="Owner's username")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[JobTemplatePublic]:
    visible_project(session, project_id, user)
    statement = select(JobTemplate).where(JobTemplate.project_id == project_id)
    if name:
        statement = statement.where(col(JobTemplate.name).contains(name.lower()))
    if owner:
        statement = statement.where(JobTemplate.owner == owner)
    total = session.exec(select(func.count()).select_from(statement.subquery())).one()
    rows = session.exec(
        statement.order_by(col(JobTemplate.created_at).desc(), col(JobTemplate.id))
        .offset(offset)
        .limit(limit)
    ).all()
    return Page(items=[to_public(row) for row in rows], total=total, limit=limit, offset=offset)


@router.get("/{template_id}", response_model=JobTemplatePublic)
def read_template(
    project_id: PathId, template_id: PathId, user: CurrentUser, session: SessionDep
) -> JobTemplatePublic:
    return to_public(_readable(session, project_id, template_id, user)[0])


@router.patch(
    "/{template_id}",
    response_model=JobTemplatePublic,
    description="Change a template (owner or project admin). Schedules use the new content from their next "
    "run on; jobs already started keep what they started with.",
)
def edit_template(
    project_id: PathId, template_id: PathId, body: JobTemplateUpdate, user: CurrentUser, session: SessionDep
) -> JobTemplatePublic:
    row = _changeable(session, project_id, template_id, user)
    given = body.model_fields_set
    if "spec_id" in given and body.spec_id is None:
        raise invalid("spec_id", "a template needs a spec")
    if body.image is not None and body.image_id is not None:
        raise invalid("image_id", "give image_id or image, not both")
    for field, other in (("image", "image_id"), ("image_id", "image")):
        if field in given and getattr(body, field) is None and getattr(body, other) is None:
            raise invalid(field, f"must not be null; give {other} to change what the template runs")
    if body.image is not None:
        row.image, row.image_id = body.image, None
    if body.image_id is not None:
        row.image, row.image_id = "", body.image_id
    if "cuda_version" in given:  # null: the image's newest
        row.cuda_version = body.cuda_version
    for field in ("spec_id", "command", "env"):
        value = getattr(body, field)
        if field in given and value is None:
            raise invalid(field, "must not be null")
        if value is not None:
            setattr(row, field, value)
    if "shm_gb" in given:  # null turns shared memory back to the default
        row.shm_gb = body.shm_gb
    if "mounts" in given:  # null: none
        mounts = body.mounts or []
        resolve_mounts(session, project_id, row.owner_id, mounts)
        row.mounts = [mount.model_dump() for mount in mounts]
    _check_recipe(session, project_id, row.owner_id, row)
    row.updated_at = utcnow()
    session.add(row)
    session.commit()
    return to_public(row)


@router.delete(
    "/{template_id}",
    status_code=204,
    description="Delete a template (owner or project admin); one a schedule uses answers 409 naming it.",
)
def delete_template(
    project_id: PathId, template_id: PathId, user: CurrentUser, session: SessionDep
) -> Response:
    row = _changeable(session, project_id, template_id, user)
    users = session.exec(select(Schedule).where(Schedule.template_id == row.id).order_by(col(Schedule.name)))
    schedule = users.first()
    if schedule is not None:
        raise conflict(
            f"job template {row.name!r} is used by schedule {schedule.name!r} ({schedule.id}); "
            "attach another template to it or delete the schedule first"
        )
    session.delete(row)
    session.commit()
    return Response(status_code=204)


@router.post(
    "/{template_id}/run",
    response_model=JobPublic,
    status_code=201,
    description="Run the template as a job of yours now (執行任務). The job is named after the template plus "
    "the next free number (train1, train2, ...) unless the body gives a name. Idempotency-Key makes retries "
    "safe.",
)
async def run_template(
    project_id: PathId,
    template_id: PathId,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    body: TemplateRun | None = None,
    idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
) -> JobPublic:
    project, members = visible_project(session, project_id, user)
    template, _ = _readable(session, project_id, template_id, user)
    require_member(members, user, "run jobs")
    owner = Owner(id=user.id, username=user.username)
    retried = idempotency_key is not None and (
        session.get(Job, job_id_for(owner.id, project_id, idempotency_key)) is not None
    )
    name = body.name if body and body.name else None
    if name is None:
        name = next_job_name(session, project_id, template.name)
    elif not retried and _job_name_taken(session, project_id, name):
        raise conflict(f"the project has a job named {name!r} already", field="name")
    job = template.job(name)
    return JOB_ROUTES.public(await start_job(session, client, settings, project, owner, job, idempotency_key))


@router.post(
    "/{template_id}/schedule",
    response_model=SchedulePublic,
    description="Run the template as a schedule (執行排程任務): attach it to an existing schedule "
    "(schedule_id, optionally with changes; its name stays) or create a new schedule for it (schedule).",
)
async def schedule_template(
    project_id: PathId,
    template_id: PathId,
    body: TemplateScheduleRequest,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    response: Response,
) -> SchedulePublic:
    project, members = visible_project(session, project_id, user)
    template, _ = _readable(session, project_id, template_id, user)
    if (body.schedule_id is None) == (body.schedule is None):
        raise invalid("schedule_id", "give schedule_id (an existing schedule) or schedule (a new one)")
    queue = settings.temporal_task_queue
    if body.schedule is not None:
        require_member(members, user, "create schedules")
        new = body.schedule.model_copy(update={"template_id": template.id})
        row = await create_schedule(session, client, queue, project, user, new)
        response.status_code = 201
    else:
        assert body.schedule_id is not None
        row = changeable_schedule(session, project_id, body.schedule_id, user)
        changes = body.changes or ScheduleUpdate()
        attach = changes.model_copy(update={"template_id": template.id})
        row = await update_schedule(session, client, queue, row, attach)
    return await public(session, client, row)
