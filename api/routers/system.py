"""Operator checks on the platform itself."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from uuid import uuid4

from fastapi import APIRouter
from pydantic import BaseModel
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import TimeoutError as WorkflowTimeoutError
from temporalio.service import RPCError

from activities.system import DatabaseStatus
from api.deps import AdminUser, SettingsDep, TemporalDep
from api.errors import ApiError
from workflows.system_check import SystemCheckWorkflow

router = APIRouter(prefix="/api/v1/system", tags=["system"])

# A healthy worker answers in well under a second; past this the caller learns nobody is polling.
SYSTEM_CHECK_TIMEOUT = timedelta(seconds=15)


class SystemCheckReport(BaseModel):
    workflow_id: str
    task_queue: str
    started_at: str
    database: DatabaseStatus


@router.post(
    "/check",
    response_model=SystemCheckReport,
    description="Run one workflow through the worker and back: proves the worker polls and reaches the "
    "database. Answers 503 when no worker picks it up in time.",
)
async def run_system_check(_: AdminUser, client: TemporalDep, settings: SettingsDep) -> SystemCheckReport:
    workflow_id = f"system-check-{uuid4().hex}"
    queue = settings.temporal_task_queue
    no_worker = ApiError(
        503,
        "unavailable",
        f"no worker completed the system check within {SYSTEM_CHECK_TIMEOUT.total_seconds():.0f} s on "
        f"task queue {queue!r}; is `mlcp worker` running? (workflow {workflow_id})",
    )
    try:
        # The server-side timeout ends the workflow; the local one covers a server that stops answering.
        result = await asyncio.wait_for(
            client.execute_workflow(
                SystemCheckWorkflow.run,
                id=workflow_id,
                task_queue=queue,
                execution_timeout=SYSTEM_CHECK_TIMEOUT,
            ),
            timeout=SYSTEM_CHECK_TIMEOUT.total_seconds() + 5,
        )
    except TimeoutError as exc:
        raise no_worker from exc
    except WorkflowFailureError as exc:
        if isinstance(exc.cause, WorkflowTimeoutError):
            raise no_worker from exc
        raise ApiError(
            503, "unavailable", f"the system check failed: {exc.cause or exc} (workflow {workflow_id})"
        ) from exc
    except RPCError as exc:
        raise ApiError(503, "unavailable", f"the workflow engine refused the system check: {exc}") from exc
    return SystemCheckReport(
        workflow_id=workflow_id, task_queue=queue, started_at=result.started_at, database=result.database
    )
