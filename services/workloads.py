"""Starting and deleting any kind's workload through its workflow; what every kind's routes call.

Starting is update-with-start on the workflow's `recorded` update, so a caller learns of a workload only once
its row exists; a retry with the same ID (the same Idempotency-Key) joins the workflow that runs already.
Deleting is the workflow's `delete` update; a workload whose workflow has ended is finished, so the row is all
there is to mark.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from datetime import timedelta
from typing import Any, NamedTuple

from pydantic import BaseModel
from sqlmodel import Session
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from models.accounts import User
from models.base import new_id, utcnow
from models.catalog import GpuModel, Spec
from models.database import release_connection
from models.workload_lifecycle import WorkloadDelete, WorkloadDeleteResult
from models.workloads import ResourceRequest
from services.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    QuotaExceeded,
    Unavailable,
    conflict,
    invalid,
    not_found,
)
from services.kinds import DataKind, WorkloadKind
from workflows import search_attributes
from workflows.workload import DeleteAnswer, WorkloadLifecycle

# A workload's workflow records its row first; longer than this means the worker or database is down.
RECORD_WAIT = timedelta(seconds=30)

_REFUSALS: dict[str, type[DomainError]] = {
    "Conflict": Conflict,
    "QuotaExceeded": QuotaExceeded,
    "Invalid": Invalid,
    "Forbidden": Forbidden,
    "NotFound": NotFound,
}


class Owner(NamedTuple):
    id: str
    username: str


def resource_id(
    kind: WorkloadKind | DataKind, user_id: str, project_id: str, idempotency_key: str | None
) -> str:
    """A retried create with the same Idempotency-Key reaches the same workload, never a second one."""
    if not idempotency_key:
        return new_id()
    digest = hashlib.sha256(f"{user_id}:{project_id}:{idempotency_key}".encode()).hexdigest()
    return kind.id_letter + digest[:9]


def catalog_resources(session: Session, spec_id: str, shm_gb: float | None) -> ResourceRequest:
    """A catalog spec's resources (422 naming spec_id when it is missing or retired)."""
    spec = session.get(Spec, spec_id)
    if spec is None:
        raise invalid("spec_id", f"no spec {spec_id!r}")
    if not spec.is_active:
        raise invalid("spec_id", f"spec {spec.name!r} is retired")
    gpu_model = session.get(GpuModel, spec.gpu_model_id) if spec.gpu_model_id else None
    return ResourceRequest(
        gpu=spec.gpu_count,
        gpu_model=gpu_model.name if gpu_model else None,
        vcpu=spec.vcpu,
        ram_gb=spec.ram_gb,
        shm_gb=shm_gb,
    )


def refusal_of(exc: WorkflowUpdateFailedError) -> DomainError:
    """A workflow refusing an update becomes the matching domain error, with the workflow's own message."""
    cause = exc.cause
    if isinstance(cause, ApplicationError) and cause.type in _REFUSALS:
        message = cause.message
        field = message.split(":", 1)[0] if cause.type == "Invalid" and ":" in message else None
        return _REFUSALS[cause.type](message, field)
    raise exc  # anything else is a bug and must surface as one


async def run_update(handle: WorkflowHandle[Any, Any], update: Any, arg: Any, *, ended: str) -> Any:
    """Execute an update, mapping refusals to domain errors; ``ended`` explains a finished lifecycle."""
    try:
        return await handle.execute_update(update, arg)
    except WorkflowUpdateFailedError as exc:
        raise refusal_of(exc) from exc
    except RPCError as exc:
        if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            raise conflict(ended) from exc
        raise


async def start_recorded(
    client: Client,
    kind: WorkloadKind | DataKind,
    input: BaseModel,
    *,
    resource_id: str,
    task_queue: str,
    project_id: str,
    owner: str,
    status: str,
    summary: str,
    recorded: Any = WorkloadLifecycle.recorded,
) -> None:
    """Start a kind's workflow and return once its row is recorded (its `recorded` update answers).
    Unavailable (503) if the row is not there within RECORD_WAIT: it still starts; it shows in the list
    later."""
    workflow_id = kind.workflow_id(resource_id)
    start = WithStartWorkflowOperation(
        kind.workflow.run,  # type: ignore[attr-defined]
        input,
        id=workflow_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(search_attributes.PROJECT, project_id),
                SearchAttributePair(search_attributes.OWNER, owner),
                SearchAttributePair(search_attributes.KIND, kind.name),
                SearchAttributePair(search_attributes.STATUS, status),
            ]
        ),
        static_summary=summary,
    )
    try:
        async with asyncio.timeout(RECORD_WAIT.total_seconds()):
            await client.execute_update_with_start_workflow(recorded, start_workflow_operation=start)
    except WorkflowAlreadyStartedError:
        # Finished long ago, so recorded. Collect the operation's own copy of the error too.
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await start.workflow_handle()
    except TimeoutError as exc:
        raise Unavailable(f"{workflow_id} was accepted but is not recorded yet; list it later") from exc


def recorded_row(session: Session, kind: WorkloadKind, resource_id: str) -> Any:
    session.expire_all()
    row = session.get(kind.table, resource_id)
    if row is None:  # the workflow records before it answers: only a lost row gets here
        raise RuntimeError(f"{kind.name} {resource_id} started but has no record")
    return row


async def delete(
    client: Client, session: Session, kind: WorkloadKind, row: Any, user: User
) -> WorkloadDeleteResult:
    """Ask the workload's workflow to delete it; a finished one whose workflow has ended is marked here."""
    if row.status == "deleted":
        raise conflict(f"{kind.name} {row.id} is already deleted")
    handle: WorkflowHandle[Any, Any] = client.get_workflow_handle(kind.workflow_id(row.id))
    release_connection(session)
    request = WorkloadDelete(user_id=user.id, username=user.username)
    try:
        answer: DeleteAnswer = await handle.execute_update(WorkloadLifecycle.delete, request)
    except WorkflowUpdateFailedError as exc:
        raise refusal_of(exc) from exc
    except RPCError as exc:
        if exc.status not in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            raise
        return _mark_deleted(session, kind, row, user)
    return WorkloadDeleteResult(id=row.id, ok=True, status=answer.status, message=answer.message)


def _mark_deleted(session: Session, kind: WorkloadKind, row: Any, user: User) -> WorkloadDeleteResult:
    """A finished workload's workflow has ended: the row is all there is to change."""
    resource = row.id
    row = session.get(kind.table, resource, populate_existing=True)
    if row is None:
        raise not_found(kind.name, resource)
    if row.status == "deleted":
        raise conflict(f"{kind.name} {row.id} is already deleted")
    if row.status not in kind.final_statuses and row.status != "failed":
        raise conflict(f"{kind.name} {row.id} is {row.status} but its lifecycle has ended")
    row.status, row.message = "deleted", f"deleted by {user.username}"
    row.version, row.updated_at = row.version + 1, utcnow()
    session.add(row)
    session.commit()
    return WorkloadDeleteResult(id=row.id, ok=True, status=row.status, message=row.message)
