"""The project workflow as the other services see it: its handle, its timings and its live queue."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import timedelta
from typing import NamedTuple, Protocol

from sqlmodel import Session
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError

from config import Settings
from models.database import release_connection
from models.lifecycle import AdmitRequest, LifecycleTimings, WorkloadEvent
from models.projects import Project
from services.workloads import run_update
from workflows.project import ProjectWorkflow, workflow_id


def project_handle(client: Client, project_id: str) -> WorkflowHandle[ProjectWorkflow, object]:
    return client.get_workflow_handle_for(ProjectWorkflow.run, workflow_id(project_id))


async def hold_storage(client: Client, project_id: str, request: AdmitRequest) -> None:
    """Hold storage in the project's ledger at once, or refuse naming the numbers. Data kinds hold even
    nothing (0 GB) so the project's deletion finds them in its ledger and tells them to go."""
    await run_update(
        project_handle(client, project_id),
        ProjectWorkflow.hold_storage,
        request,
        ended=f"project {project_id}'s lifecycle has ended",
    )


async def release_hold(client: Client, project_id: str, resource_id: str) -> None:
    with contextlib.suppress(RPCError):
        await project_handle(client, project_id).signal(
            ProjectWorkflow.release, WorkloadEvent(resource_id=resource_id)
        )


def lifecycle_timings(settings: Settings) -> LifecycleTimings:
    return LifecycleTimings(
        reminder_before=timedelta(days=settings.project_reminder_days),
        grace_period=timedelta(days=settings.project_grace_days),
    )


def ended(project: Project) -> str:
    return f"project {project.id} is {project.status}; its lifecycle has ended"


class QueuePlace(NamedTuple):
    position: int  # 1-based
    reason: str  # what it waits for, e.g. "waiting for resources: 1 GPU short"

    @property
    def message(self) -> str:
        return f"{self.reason}, position {self.position}"


class QueuedRow(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def status(self) -> str: ...


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


async def live_places_for(
    client: Client | None, session: Session, project_id: str, rows: Sequence[QueuedRow]
) -> dict[str, QueuePlace]:
    """The live queue places for the waiting rows about to be shown (nothing to ask when none waits)."""
    if client is None or not any(row.status == "waiting" for row in rows):
        return {}
    release_connection(session)
    return await live_queue_places(client, project_id)
