"""Starting a user's setup (manual 4, 開通服務): on creation, on a platform admin's retry, and for accounts
made before the workflow engine was reachable (the bootstrap admin)."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import Session, col, select
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from config import Settings
from models.accounts import User
from models.base import utcnow
from models.user_setup import SetupStatus, UserSetup, UserSetupInput
from services.errors import conflict
from workflows.user_setup import UserSetupWorkflow, setup_workflow_id


async def start_setup(client: Client, settings: Settings, user_id: str, username: str, attempt: int) -> None:
    try:
        await client.start_workflow(
            UserSetupWorkflow.run,
            UserSetupInput(user_id=user_id, username=username, attempt=attempt),
            id=setup_workflow_id(user_id),
            task_queue=settings.temporal_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            static_summary=f"setup of user {username} (attempt {attempt})",
        )
    except WorkflowAlreadyStartedError as exc:
        raise conflict(f"the setup of {username} is running already") from exc


def record_unstarted(session: Session, user: User, reason: str) -> None:
    """A setup that could not start: failed with why, for an admin to retry."""
    row = session.get(UserSetup, user.id) or UserSetup(user_id=user.id, username=user.username)
    row.status, row.reason, row.message, row.updated_at = SetupStatus.failed, "Unavailable", reason, utcnow()
    session.add(row)
    session.commit()


def setup_of(session: Session, user: User) -> UserSetup:
    """The user's setup; an account made before setups existed has none yet, and says so."""
    row = session.get(UserSetup, user.id)
    if row is None:
        return UserSetup(
            user_id=user.id,
            username=user.username,
            status=SetupStatus.failed,
            reason="NotSetUp",
            message="this account has no setup yet; a platform admin can start it",
            attempt=0,
        )
    return row


async def retry_setup(client: Client, session: Session, settings: Settings, user: User) -> UserSetup:
    row = session.get(UserSetup, user.id)
    if row is not None and row.status == SetupStatus.ready:
        raise conflict(f"the setup of {user.username} is ready already")
    attempt = (row.attempt + 1) if row is not None else 1
    await start_setup(client, settings, user.id, user.username, attempt)
    row = row or UserSetup(user_id=user.id, username=user.username)
    row.status, row.reason, row.message = SetupStatus.provisioning, "", "provisioning the home storage"
    row.attempt, row.updated_at = attempt, utcnow()
    session.add(row)
    session.commit()
    session.refresh(row)
    return row


async def set_up_everyone(client: Client, engine: Engine, settings: Settings) -> int:
    """Start the setup of every active user who has none yet; how many were started."""
    with Session(engine) as session:
        known = select(UserSetup.user_id)
        users = session.exec(select(User).where(col(User.is_active), col(User.id).not_in(known))).all()
    for user in users:
        try:
            await start_setup(client, settings, user.id, user.username, 1)
        except Exception:  # a duplicate start or a blip: the admin's retry covers it
            continue
    return len(users)
