"""Who may see and change a project and what is in it, read from the project read model.

The rules every route shares: platform admins see everything; a project's members see the project; project
admins see and change every member's workloads, members only their own; to anyone else a thing does not
exist (404, not 403), so its existence is not given away.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from sqlmodel import Session, col, select

from models.accounts import PlatformRole, User
from models.lifecycle import MemberRole
from models.projects import MemberPublic, Project, ProjectMember, ProjectPublic
from services.errors import Invalid, forbidden, not_found


def members_of(session: Session, project_ids: list[str]) -> dict[str, list[ProjectMember]]:
    grouped: dict[str, list[ProjectMember]] = {pid: [] for pid in project_ids}
    if project_ids:
        rows = session.exec(select(ProjectMember).where(col(ProjectMember.project_id).in_(project_ids)))
        for member in rows:
            grouped[member.project_id].append(member)
    return grouped


def role_in(members: list[ProjectMember], user: User) -> MemberRole | None:
    return next((m.role for m in members if m.user_id == user.id), None)


def sees_everything_in(members: list[ProjectMember], user: User) -> bool:
    """Project admins (and platform admins) see every member's things; members only their own."""
    return user.role == PlatformRole.admin or role_in(members, user) == MemberRole.admin


def changes_everything_in(members: list[ProjectMember], user: User) -> bool:
    """Project admins change every member's things (platform admins see them, but change only their own)."""
    return role_in(members, user) == MemberRole.admin


class OwnedRow(Protocol):
    """A row a member owns inside a project: a container, a job, a schedule."""

    id: str
    project_id: str
    owner_id: str


Row = TypeVar("Row", bound=OwnedRow)


def readable(
    session: Session, model: type[Row], noun: str, project_id: str, row_id: str, user: User
) -> tuple[Row, list[ProjectMember]]:
    """Owners and project admins see a member's row; to other members it does not exist."""
    _, members = visible_project(session, project_id, user)
    row = session.get(model, row_id)
    if row is None or row.project_id != project_id:
        raise not_found(noun, row_id)
    if row.owner_id != user.id and not sees_everything_in(members, user):
        raise not_found(noun, row_id)
    return row, members


def changeable(
    session: Session, model: type[Row], noun: str, project_id: str, row_id: str, user: User
) -> Row:
    row, members = readable(session, model, noun, project_id, row_id, user)
    if row.owner_id != user.id and not changes_everything_in(members, user):
        raise forbidden(f"only the {noun}'s owner and the project's admins may change it")
    return row


def visible_project(session: Session, project_id: str, user: User) -> tuple[Project, list[ProjectMember]]:
    """The project and its members, if ``user`` may see it; others get the same 404 as a missing one."""
    project = session.get(Project, project_id)
    members = members_of(session, [project_id])[project_id] if project else []
    if project is None or (user.role != PlatformRole.admin and role_in(members, user) is None):
        raise not_found("project", project_id)
    return project, members


def require_project_admin(members: list[ProjectMember], user: User, action: str) -> None:
    if role_in(members, user) != MemberRole.admin:
        raise forbidden(f"only the project's admins may {action}")


def require_member(members: list[ProjectMember], user: User, action: str) -> None:
    if role_in(members, user) is None:
        raise forbidden(f"only the project's members may {action}")


def project_public(project: Project, members: list[ProjectMember], user: User) -> ProjectPublic:
    return ProjectPublic(
        id=project.id,
        name=project.name,
        description=project.description,
        owner_id=project.owner_id,
        purpose_id=project.purpose_id,
        status=project.status,
        start_at=project.start_at,
        end_at=project.end_at,
        grace_ends_at=project.grace_ends_at,
        quota=project.quota,
        members=[MemberPublic(user_id=m.user_id, username=m.username, role=m.role) for m in members],
        my_role=role_in(members, user),
        created_at=project.created_at,
        updated_at=project.updated_at,
    )


def resolve_users(session: Session, usernames: list[str], field: str) -> dict[str, User]:
    found = {u.username: u for u in session.exec(select(User).where(col(User.username).in_(usernames)))}
    for index, name in enumerate(usernames):
        user = found.get(name)
        if user is None or not user.is_active:
            path = f"{field}[{index}].username"
            raise Invalid(f"{path}: no active user {name!r}", path)
    return found
