"""A Temporal client the API connects lazily, so the API can start before the workflow engine."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WithStartWorkflowOperation, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.errors import ApiError
from config import Settings, connect_temporal
from workflows import search_attributes


class TemporalConnector:
    def __init__(self, settings: Settings, client: Client | None = None) -> None:
        self._settings = settings
        self._client = client
        self._lock = asyncio.Lock()
        self.last_error = "not connected yet"

    async def get(self) -> Client | None:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await asyncio.wait_for(connect_temporal(self._settings), timeout=5)
                except Exception as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        return self._client


_FAILURE_STATUS = {"Conflict": 409, "QuotaExceeded": 409, "Invalid": 422, "Forbidden": 403, "NotFound": 404}


def api_error_from_update(exc: WorkflowUpdateFailedError) -> ApiError:
    """A workflow refusing an update becomes the matching 4xx with the workflow's own message."""
    cause = exc.cause
    if isinstance(cause, ApplicationError) and cause.type in _FAILURE_STATUS:
        status = _FAILURE_STATUS[cause.type]
        message = cause.message
        field = message.split(":", 1)[0] if status == 422 and ":" in message else None
        code = {409: "conflict", 422: "validation_error", 403: "forbidden", 404: "not_found"}[status]
        if cause.type == "QuotaExceeded":
            code = "quota_exceeded"
        return ApiError(status, code, message, field)
    raise exc  # anything else is a bug and must surface as one


async def run_update(handle: WorkflowHandle[Any, Any], update: Any, arg: Any, *, ended: str) -> Any:
    """Execute an update, mapping refusals to 4xx; ``ended`` explains a lifecycle that has finished."""
    try:
        return await handle.execute_update(update, arg)
    except WorkflowUpdateFailedError as exc:
        raise api_error_from_update(exc) from exc
    except RPCError as exc:
        if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            raise ApiError(409, "conflict", ended) from exc
        raise


# A workload's workflow records its row first; longer than this means the worker or database is down.
RECORD_WAIT = timedelta(seconds=30)


async def start_workload(
    client: Client,
    run: Any,
    input: Any,
    *,
    workflow_id: str,
    task_queue: str,
    project_id: str,
    owner: str,
    kind: str,
    status: str,
    summary: str,
) -> None:
    """Start a container's or job's workflow and return once its row is recorded (update-with-start on its
    `recorded` update). A retry with the same ID joins the running workflow; one that has finished was
    recorded long ago. 503 if the row is not there within RECORD_WAIT."""
    start = WithStartWorkflowOperation(
        run,
        input,
        id=workflow_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(search_attributes.PROJECT, project_id),
                SearchAttributePair(search_attributes.OWNER, owner),
                SearchAttributePair(search_attributes.KIND, kind),
                SearchAttributePair(search_attributes.STATUS, status),
            ]
        ),
        static_summary=summary,
    )
    try:
        async with asyncio.timeout(RECORD_WAIT.total_seconds()):
            await client.execute_update_with_start_workflow("recorded", start_workflow_operation=start)
    except WorkflowAlreadyStartedError:
        # Finished long ago, so recorded. Collect the operation's own copy of the error too.
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await start.workflow_handle()
    except TimeoutError as exc:
        raise ApiError(
            503, "unavailable", f"{workflow_id} was accepted but is not recorded yet; list it later"
        ) from exc
