"""Writes the project read model from the workflow's state, and what a project's deletion does last."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, cast

from pydantic import BaseModel
from sqlalchemy import CursorResult, Engine, delete, update
from sqlmodel import Session, col
from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from activities.heartbeat import heartbeating_async
from activities.usage import close_project_usage
from models.base import utcnow
from models.lifecycle import ProjectState
from models.projects import ApplicationRecord, Project, ProjectMember
from models.workload_lifecycle import WorkloadRecord
from workflows import search_attributes


class ProjectActivities:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @activity.defn
    def record_project(self, state: ProjectState) -> None:
        """Upsert the project, its members and applications; an older snapshot never wins."""
        with Session(self._engine) as session:
            project = session.get(Project, state.id, with_for_update=True)
            if project is not None and project.version > state.version:
                return
            details, quota = state.details, state.quota
            project = project or Project(
                id=state.id,
                owner_id=state.owner_id,
                delete_code=state.delete_code,
                name=details.name,
                status=state.status,
                start_at=details.start_at,
                end_at=details.end_at,
            )
            project.name, project.description = details.name, details.description
            project.purpose_id, project.status = details.purpose_id, state.status
            project.start_at, project.end_at, project.grace_ends_at = (
                details.start_at,
                details.end_at,
                state.grace_ends_at,
            )
            project.quota_gpu, project.quota_vcpu = quota.gpu, quota.vcpu
            project.quota_ram_gb, project.quota_storage_gb = quota.ram_gb, quota.storage_gb
            project.version, project.updated_at = state.version, utcnow()
            session.add(project)
            session.flush()

            session.execute(delete(ProjectMember).where(col(ProjectMember.project_id) == state.id))
            for member in details.members:
                session.add(
                    ProjectMember(
                        project_id=state.id,
                        user_id=member.user_id,
                        username=member.username,
                        role=member.role,
                    )
                )
            for application in state.applications:
                record = session.get(ApplicationRecord, application.id) or ApplicationRecord(
                    id=application.id,
                    project_id=state.id,
                    project_name=details.name,
                    type=application.type,
                    status=application.status,
                    applicant_id=application.applicant_id,
                    applicant=application.applicant,
                    submitted_at=application.submitted_at,
                )
                record.project_name, record.status = details.name, application.status
                record.reason, record.extension_days = application.reason, application.extension_days
                record.quota_delta = application.quota_delta.model_dump() if application.quota_delta else None
                record.decided_by, record.decided_at = application.decided_by, application.decided_at
                record.decision_reason = application.decision_reason
                session.add(record)
            session.commit()


class RecordKind(Protocol):
    """What closing a project's rows needs of a workload kind (the registry's descriptors fit)."""

    @property
    def table(self) -> type[WorkloadRecord]: ...

    @property
    def final_statuses(self) -> frozenset[str]: ...


class ProjectSweep(BaseModel):
    project_id: str
    workflow_ids: list[str]  # registered workloads that did not stop in time
    keep: str  # the project's own workflow
    reason: str


CLOSED_STATUS = "deleted"
CLOSED_MESSAGE = "removed with its project"


class ProjectCleanup:
    """What a project's deletion does last, so that nothing of it outlives it."""

    def __init__(self, engine: Engine, client: Client, kinds: Iterable[RecordKind]) -> None:
        self._engine = engine
        self._client = client
        self._kinds = list(kinds)

    @activity.defn
    async def end_project_workflows(self, sweep: ProjectSweep) -> list[str]:
        """Terminate the given workflows and every other running workflow of the project; the IDs ended."""
        async with heartbeating_async():
            wanted = set(sweep.workflow_ids)
            query = f'{search_attributes.PROJECT.name} = "{sweep.project_id}" AND ExecutionStatus = "Running"'
            try:
                async for found in self._client.list_workflows(query):
                    wanted.add(found.id)
            except RPCError as exc:
                # A server without visibility queries (the time-skipping test server): the list given is
                # what there is to end.
                if exc.status not in (RPCStatusCode.UNIMPLEMENTED, RPCStatusCode.INVALID_ARGUMENT):
                    raise
            wanted.discard(sweep.keep)
            ended = []
            for workflow_id in sorted(wanted):
                try:
                    await self._client.get_workflow_handle(workflow_id).terminate(reason=sweep.reason)
                except RPCError as exc:
                    if exc.status != RPCStatusCode.NOT_FOUND:
                        raise
                    continue  # it ended by itself meanwhile
                ended.append(workflow_id)
            if ended:
                activity.logger.warning("project %s: terminated %s", sweep.project_id, ended)
            return ended

    @activity.defn
    def close_workload_records(self, project_id: str) -> int:
        """Rows whose workflow ended before it could write its final status say they went with the
        project; how many there were. Idempotent."""
        closed = 0
        with Session(self._engine) as session:
            for kind in self._kinds:
                table: Any = kind.table
                statement = (
                    update(table)
                    .where(table.project_id == project_id, col(table.status).not_in(kind.final_statuses))
                    .values(
                        status=CLOSED_STATUS, message=CLOSED_MESSAGE, queue_position=None, updated_at=utcnow()
                    )
                )
                result = cast(CursorResult[Any], session.execute(statement))
                closed += result.rowcount or 0
            close_project_usage(session, project_id, utcnow())
            session.commit()
        return closed
