"""Projects (manual 5.2-5.3): apply, list, detail with the quota panel, edit, delete, change applications."""

from __future__ import annotations

import hashlib
import secrets
import string
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from sqlalchemy import func
from sqlmodel import col, select
from temporalio.client import WithStartWorkflowOperation
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.service import RPCError

from api.deps import CurrentUser, Limit, Offset, PathId, SessionDep, SettingsDep, TemporalDep
from models.accounts import PlatformRole
from models.base import Page, new_id, utcnow
from models.catalog import Purpose
from models.database import release_connection
from models.lifecycle import (
    Application,
    ApplicationType,
    DeleteRequest,
    Member,
    MemberRole,
    ProjectDetails,
    ProjectEdit,
    ProjectState,
    ProjectStatus,
    ProjectWorkflowInput,
)
from models.projects import (
    ApplicationPublic,
    ExtensionCreate,
    MemberIn,
    Project,
    ProjectCreate,
    ProjectDetail,
    ProjectMember,
    ProjectPublic,
    ProjectUpdate,
    QuotaApplicationCreate,
)
from services.access import (
    members_of,
    require_member,
    require_project_admin,
    resolve_users,
    visible_project,
)
from services.access import project_public as to_public
from services.errors import invalid
from services.projects import ended, lifecycle_timings, project_handle
from services.workloads import run_update
from workflows import search_attributes
from workflows.project import ProjectWorkflow, workflow_id

router = APIRouter(prefix="/api/v1/projects", tags=["projects"])

HIDDEN_BY_DEFAULT = (ProjectStatus.deleted, ProjectStatus.withdrawn)


def _project_id(user_id: PathId, idempotency_key: str | None) -> str:
    """A retried create with the same Idempotency-Key reaches the same project, never a second one."""
    if not idempotency_key:
        return new_id()
    return "p" + hashlib.sha256(f"{user_id}:{idempotency_key}".encode()).hexdigest()[:9]


def _members(
    session: SessionDep,
    wanted: list[MemberIn],
    field: str,
    always_admin: str | None = None,
) -> list[Member]:
    names = [m.username for m in wanted]
    if len(set(names)) != len(names):
        raise invalid(field, "a user is listed twice")
    users = resolve_users(session, names, field)
    members = [Member(user_id=users[m.username].id, username=m.username, role=m.role) for m in wanted]
    if always_admin is not None:
        members = [m for m in members if m.user_id != always_admin]
    return members


@router.post(
    "",
    response_model=ProjectPublic,
    status_code=201,
    description="Apply for a project (專案申請). It stays pending until a platform admin decides. "
    "Send an Idempotency-Key header to make retries safe.",
)
async def apply_for_project(
    body: ProjectCreate,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    client: TemporalDep,
    idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
) -> ProjectPublic:
    if body.end_at <= utcnow():
        raise invalid("end_at", "must be in the future")
    if body.purpose_id is not None and session.get(Purpose, body.purpose_id) is None:
        raise invalid("purpose_id", f"no purpose {body.purpose_id!r}")
    members = [
        Member(user_id=user.id, username=user.username, role=MemberRole.admin),
        *_members(session, body.members, "members", always_admin=user.id),
    ]
    project_id = _project_id(user.id, idempotency_key)
    state = ProjectState(
        id=project_id,
        owner_id=user.id,
        owner=user.username,
        delete_code="".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(6)),
        details=ProjectDetails(
            name=body.name,
            description=body.description,
            purpose_id=body.purpose_id,
            start_at=body.start_at,
            end_at=body.end_at,
            members=members,
        ),
        quota=body.quota.as_quota(),
        applications=[
            Application(
                id=new_id(),
                type=ApplicationType.project,
                applicant_id=user.id,
                applicant=user.username,
                submitted_at=utcnow(),
                reason=body.reason,
            )
        ],
    )
    start = WithStartWorkflowOperation(
        ProjectWorkflow.run,
        ProjectWorkflowInput(state=state, timings=lifecycle_timings(settings)),
        id=workflow_id(project_id),
        task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(search_attributes.PROJECT, project_id),
                SearchAttributePair(search_attributes.OWNER, user.username),
                SearchAttributePair(search_attributes.KIND, "project"),
                SearchAttributePair(search_attributes.STATUS, ProjectStatus.pending.value),
            ]
        ),
        static_summary=f"Project “{body.name}” applied for by {user.username}",
    )
    # Answers once the workflow has written the read model, so the project is listed at once.
    release_connection(session)
    await client.execute_update_with_start_workflow(ProjectWorkflow.synced, start_workflow_operation=start)
    project, project_members = visible_project(session, project_id, user)
    return to_public(project, project_members, user)


@router.get(
    "",
    response_model=Page[ProjectPublic],
    description="Projects you are a member of; platform admins see all (all=false: only their own).",
)
def list_projects(
    user: CurrentUser,
    session: SessionDep,
    status: Annotated[
        list[ProjectStatus] | None,
        Query(max_length=len(ProjectStatus), description="Repeat to match several"),
    ] = None,
    q: Annotated[str | None, Query(max_length=128, description="Substring of the name")] = None,
    everyone: Annotated[bool, Query(alias="all")] = True,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[ProjectPublic]:
    statement = select(Project)
    if not (user.role == PlatformRole.admin and everyone):
        mine = select(ProjectMember.project_id).where(ProjectMember.user_id == user.id)
        statement = statement.where(col(Project.id).in_(mine))
    if status:
        statement = statement.where(col(Project.status).in_(status))
    else:
        statement = statement.where(col(Project.status).not_in(HIDDEN_BY_DEFAULT))
    if q:
        statement = statement.where(func.lower(Project.name).contains(q.lower(), autoescape=True))
    total = session.exec(select(func.count()).select_from(statement.subquery())).one()
    rows = session.exec(statement.order_by(col(Project.created_at).desc()).offset(offset).limit(limit)).all()
    members = members_of(session, [p.id for p in rows])
    return Page(
        items=[to_public(p, members[p.id], user) for p in rows], total=total, limit=limit, offset=offset
    )


@router.get(
    "/{project_id}",
    response_model=ProjectDetail,
    description="With the live quota panel (資源配置); project admins also see the delete code.",
)
async def read_project(
    project_id: PathId, user: CurrentUser, session: SessionDep, client: TemporalDep
) -> ProjectDetail:
    project, members = visible_project(session, project_id, user)
    detail = ProjectDetail(**to_public(project, members, user).model_dump())
    release_connection(session)
    try:
        detail.quota_panel = await project_handle(client, project_id).query(ProjectWorkflow.quota_panel)
    except RPCError:
        detail.quota_panel = None  # the lifecycle has ended: nothing is reserved any more
    if detail.my_role == MemberRole.admin and project.status not in (
        ProjectStatus.deleting,
        ProjectStatus.deleted,
    ):
        detail.delete_code = project.delete_code
    return detail


@router.patch(
    "/{project_id}",
    response_model=ProjectPublic,
    description="Project admins edit the name, description, members and who is admin.",
)
async def edit_project(
    project_id: PathId, body: ProjectUpdate, user: CurrentUser, session: SessionDep, client: TemporalDep
) -> ProjectPublic:
    project, members = visible_project(session, project_id, user)
    require_project_admin(members, user, "edit it")
    new_members = None if body.members is None else _members(session, body.members, "members")
    edit = ProjectEdit(
        name=body.name, description=body.description, members=new_members, edited_by=user.username
    )
    release_connection(session)
    await run_update(project_handle(client, project_id), ProjectWorkflow.edit, edit, ended=ended(project))
    session.expire_all()
    project, members = visible_project(session, project_id, user)
    return to_public(project, members, user)


@router.delete(
    "/{project_id}",
    status_code=202,
    description="Project admins delete the project and everything in it; the confirmation code "
    "is the delete_code shown in the project's detail.",
)
async def delete_project(
    project_id: PathId,
    user: CurrentUser,
    session: SessionDep,
    client: TemporalDep,
    confirmation_code: Annotated[str, Query(min_length=1, max_length=16)],
) -> Response:
    project, members = visible_project(session, project_id, user)
    require_project_admin(members, user, "delete it")
    request = DeleteRequest(
        user_id=user.id, username=user.username, confirmation_code=confirmation_code.upper()
    )
    release_connection(session)
    await run_update(
        project_handle(client, project_id), ProjectWorkflow.request_delete, request, ended=ended(project)
    )
    return Response(status_code=202)


async def _apply(
    project_id: PathId, user: CurrentUser, session: SessionDep, client: TemporalDep, application: Application
) -> ApplicationPublic:
    project, _ = visible_project(session, project_id, user)
    release_connection(session)
    created = await run_update(
        project_handle(client, project_id), ProjectWorkflow.apply, application, ended=ended(project)
    )
    return ApplicationPublic(project_id=project_id, project_name=project.name, **created.model_dump())


@router.post(
    "/{project_id}/extensions",
    response_model=ApplicationPublic,
    status_code=201,
    description="Extension application (展延申請), project admins only.",
)
async def apply_for_extension(
    project_id: PathId, body: ExtensionCreate, user: CurrentUser, session: SessionDep, client: TemporalDep
) -> ApplicationPublic:
    _, members = visible_project(session, project_id, user)
    require_project_admin(members, user, "apply for an extension")
    application = Application(
        id=new_id(),
        type=ApplicationType.extension,
        applicant_id=user.id,
        applicant=user.username,
        submitted_at=utcnow(),
        reason=body.reason,
        extension_days=body.days,
    )
    return await _apply(project_id, user, session, client, application)


@router.post(
    "/{project_id}/quota-requests",
    response_model=ApplicationPublic,
    status_code=201,
    description="Quota application (額度申請): on approval the amounts are added to the quota.",
)
async def apply_for_quota(
    project_id: PathId,
    body: QuotaApplicationCreate,
    user: CurrentUser,
    session: SessionDep,
    client: TemporalDep,
) -> ApplicationPublic:
    _, members = visible_project(session, project_id, user)
    require_member(members, user, "apply for quota")
    application = Application(
        id=new_id(),
        type=ApplicationType.quota,
        applicant_id=user.id,
        applicant=user.username,
        submitted_at=utcnow(),
        reason=body.reason,
        quota_delta=body.as_quota(),
    )
    return await _apply(project_id, user, session, client, application)
