"""Applications (專案審核列表, manual 5.1): project, extension and quota applications and their review."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import func
from sqlmodel import Session, col, select

from api.deps import AdminUser, CurrentUser, Limit, Offset, PathId, SessionDep, TemporalDep
from models.accounts import PlatformRole, User
from models.base import Page
from models.database import release_connection
from models.lifecycle import ApplicationStatus, ApplicationType, Decision, Withdrawal
from models.projects import ApplicationPublic, ApplicationRecord, Approval, Project, Rejection
from services.errors import not_found
from services.projects import ended, project_handle
from services.workloads import run_update
from workflows.project import ProjectWorkflow

router = APIRouter(prefix="/api/v1/applications", tags=["applications"])


def _public(record: ApplicationRecord) -> ApplicationPublic:
    return ApplicationPublic.model_validate(record, from_attributes=True)


def _visible(session: Session, application_id: PathId, user: User) -> ApplicationRecord:
    record = session.get(ApplicationRecord, application_id)
    if record is None or (user.role != PlatformRole.admin and record.applicant_id != user.id):
        raise not_found("application", application_id)
    return record


@router.get(
    "",
    response_model=Page[ApplicationPublic],
    description="Your own applications of all three types; platform admins may pass all=true to review "
    "everyone's (e.g. all=true&status=pending).",
)
def list_applications(
    user: CurrentUser,
    session: SessionDep,
    type: ApplicationType | None = None,
    status: ApplicationStatus | None = None,
    project_id: Annotated[str | None, Query(max_length=64)] = None,
    everyone: Annotated[bool, Query(alias="all")] = False,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[ApplicationPublic]:
    statement = select(ApplicationRecord)
    if not (everyone and user.role == PlatformRole.admin):
        statement = statement.where(ApplicationRecord.applicant_id == user.id)
    if type is not None:
        statement = statement.where(ApplicationRecord.type == type)
    if status is not None:
        statement = statement.where(ApplicationRecord.status == status)
    if project_id is not None:
        statement = statement.where(ApplicationRecord.project_id == project_id)
    total = session.exec(select(func.count()).select_from(statement.subquery())).one()
    order = col(ApplicationRecord.submitted_at).desc()
    rows = session.exec(statement.order_by(order).offset(offset).limit(limit)).all()
    return Page(items=[_public(r) for r in rows], total=total, limit=limit, offset=offset)


@router.get("/{application_id}", response_model=ApplicationPublic)
def read_application(application_id: PathId, user: CurrentUser, session: SessionDep) -> ApplicationPublic:
    return _public(_visible(session, application_id, user))


async def _refresh(session: Session, application_id: PathId) -> ApplicationPublic:
    session.expire_all()
    record = session.get(ApplicationRecord, application_id)
    assert record is not None  # updates answer only after the read model holds them
    return _public(record)


def _ended(session: Session, record: ApplicationRecord) -> str:
    project = session.get(Project, record.project_id)
    return ended(project) if project else f"project {record.project_id} no longer exists"


@router.post(
    "/{application_id}/withdraw",
    response_model=ApplicationPublic,
    description="撤回: the applicant withdraws a pending application.",
)
async def withdraw(
    application_id: PathId, user: CurrentUser, session: SessionDep, client: TemporalDep
) -> ApplicationPublic:
    record = _visible(session, application_id, user)
    withdrawal = Withdrawal(application_id=application_id, user_id=user.id)
    ended = _ended(session, record)
    release_connection(session)
    await run_update(
        project_handle(client, record.project_id), ProjectWorkflow.withdraw, withdrawal, ended=ended
    )
    return await _refresh(session, application_id)


async def _decide(
    application_id: PathId, admin: User, session: Session, client: TemporalDep, approve: bool, reason: str
) -> ApplicationPublic:
    record = _visible(session, application_id, admin)
    decision = Decision(
        application_id=application_id, approve=approve, admin_id=admin.id, admin=admin.username, reason=reason
    )
    ended = _ended(session, record)
    release_connection(session)
    await run_update(project_handle(client, record.project_id), ProjectWorkflow.decide, decision, ended=ended)
    return await _refresh(session, application_id)


@router.post(
    "/{application_id}/approve",
    response_model=ApplicationPublic,
    description="Platform admins approve; the applicant is mailed the result.",
)
async def approve(
    application_id: PathId,
    admin: AdminUser,
    session: SessionDep,
    client: TemporalDep,
    body: Approval | None = None,
) -> ApplicationPublic:
    return await _decide(application_id, admin, session, client, True, body.reason if body else "")


@router.post(
    "/{application_id}/reject",
    response_model=ApplicationPublic,
    description="Platform admins reject with a reason; the applicant is mailed it.",
)
async def reject(
    application_id: PathId, body: Rejection, admin: AdminUser, session: SessionDep, client: TemporalDep
) -> ApplicationPublic:
    return await _decide(application_id, admin, session, client, False, body.reason)
