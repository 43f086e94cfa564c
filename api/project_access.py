"""Who may see and change a project, read from the project read model."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import NamedTuple, Protocol, TypeVar

from sqlmodel import Session, col, select
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError

from api.deps import release_connection
from api.errors import ApiError, forbidden, not_found
from config import Settings
from models.accounts import PlatformRole, User
from models.lifecycle import LifecycleTimings, MemberRole
from models.projects import MemberPublic, Project, ProjectMember, ProjectPublic
from workflows.project import ProjectWorkflow, workflow_id


def members_of(session: Session, project_ids: list[str]) -> dict[str, list[ProjectMember]]:
    grouped: dict[str, list[ProjectMember]] = {pid: [] for pid in project_ids}
    if project_ids:
        rows = session.exec(select(ProjectMember).where(col(ProjectMember.project_id).in_(project_ids)))
        for member in rows:
            grouped[member.project_id].append(member)
    return grouped


def role_in(members: list[ProjectMember], user: User) -> MemberRole | None:
    return next((m.role for m in members if m.user_id == user.id), None)


class MembersWorkload(Protocol):
    """A row a member owns inside a project: a container, a job."""

    id: str
    project_id: str
    owner_id: str


WorkloadRow = TypeVar("WorkloadRow", bound=MembersWorkload)


def sees_every_workload(members: list[ProjectMember], user: User) -> bool:
    """Project admins (and platform admins) see every member's workloads; members only their own."""
    return user.role == PlatformRole.admin or role_in(members, user) == MemberRole.admin


def readable_workload(
    session: Session, model: type[WorkloadRow], noun: str, project_id: str, row_id: str, user: User
) -> tuple[WorkloadRow, list[ProjectMember]]:
    """Owners and project admins see a workload; to other members it does not exist (404, not 403)."""
    _, members = visible_project(session, project_id, user)
    row = session.get(model, row_id)
    if row is None or row.project_id != project_id:
        raise not_found(noun, row_id)
    if row.owner_id != user.id and not sees_every_workload(members, user):
        raise not_found(noun, row_id)
    return row, members


def changeable_workload(
    session: Session, model: type[WorkloadRow], noun: str, project_id: str, row_id: str, user: User
) -> WorkloadRow:
    row, members = readable_workload(session, model, noun, project_id, row_id, user)
    if row.owner_id != user.id and role_in(members, user) != MemberRole.admin:
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


def to_public(project: Project, members: list[ProjectMember], user: User) -> ProjectPublic:
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


def project_handle(client: Client, project_id: str) -> WorkflowHandle[ProjectWorkflow, object]:
    return client.get_workflow_handle_for(ProjectWorkflow.run, workflow_id(project_id))


class QueuedWorkload(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def status(self) -> str: ...


async def live_places_for(
    client: Client | None, session: Session, project_id: str, rows: Sequence[QueuedWorkload]
) -> dict[str, QueuePlace]:
    """The live queue places for the waiting rows about to be shown (nothing to ask when none waits)."""
    if client is None or not any(row.status == "waiting" for row in rows):
        return {}
    release_connection(session)
    return await live_queue_places(client, project_id)


class QueuePlace(NamedTuple):
    position: int  # 1-based
    reason: str  # what it waits for, e.g. "waiting for resources: 1 GPU short"

    @property
    def message(self) -> str:
        return f"{self.reason}, position {self.position}"


async def live_queue_places(client: Client, project_id: str) -> dict[str, QueuePlace]:
    """Each queued resource's place in the project's line now.

    A workload's recorded position is the one its project gave when it joined the queue; the line moves as
    others leave it, so pages showing a waiting workload ask the project's workflow. Empty once it ended.
    """
    try:
        panel = await project_handle(client, project_id).query(ProjectWorkflow.quota_panel)
    except RPCError:
        return {}
    return {
        entry.resource_id: QueuePlace(position, entry.reason)
        for position, entry in enumerate(panel.queue, start=1)
    }


def lifecycle_timings(settings: Settings) -> LifecycleTimings:
    return LifecycleTimings(
        reminder_before=timedelta(days=settings.project_reminder_days),
        grace_period=timedelta(days=settings.project_grace_days),
    )


def ended(project: Project) -> str:
    return f"project {project.id} is {project.status}; its lifecycle has ended"


def resolve_users(session: Session, usernames: list[str], field: str) -> dict[str, User]:
    found = {u.username: u for u in session.exec(select(User).where(col(User.username).in_(usernames)))}
    for index, name in enumerate(usernames):
        user = found.get(name)
        if user is None or not user.is_active:
            raise ApiError(
                422,
                "validation_error",
                f"{field}[{index}].username: no active user {name!r}",
                f"{field}[{index}].username",
            )
    return found
