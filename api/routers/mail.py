"""Platform mail for admins: what was sent, what waits in the outbox, what the server rejected."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import func
from sqlmodel import col, select

from api.deps import AdminUser, Limit, Offset, PathId, SessionDep
from models.base import Page
from models.mail import MailPublic, MailRecord, MailStatus
from services.errors import not_found

router = APIRouter(prefix="/api/v1/admin/outbox", tags=["mail"])


@router.get("", response_model=Page[MailPublic], description="Every platform mail, newest first.")
def list_mail(
    _: AdminUser,
    session: SessionDep,
    status: MailStatus | None = None,
    recipient: Annotated[
        str | None, Query(min_length=1, max_length=254, description="Substring of a recipient address")
    ] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[MailPublic]:
    statement = select(MailRecord)
    if status is not None:
        statement = statement.where(MailRecord.status == status)
    if recipient:
        # Escaped, so a '%' or '_' in the search is matched literally.
        escaped = recipient.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        statement = statement.where(func.lower(MailRecord.recipients).like(f"%{escaped}%", escape="\\"))
    total = session.exec(select(func.count()).select_from(statement.subquery())).one()
    rows = session.exec(
        statement.order_by(col(MailRecord.created_at).desc(), col(MailRecord.key)).offset(offset).limit(limit)
    ).all()
    return Page(items=[MailPublic.of(r) for r in rows], total=total, limit=limit, offset=offset)


# Keys hold slashes ("project-abc123/approved"), so the parameter takes the rest of the path.
@router.get("/{key:path}", response_model=MailPublic)
def read_mail(key: PathId, _: AdminUser, session: SessionDep) -> MailPublic:
    record = session.get(MailRecord, key)
    if record is None:
        raise not_found("mail", key)
    return MailPublic.of(record)
