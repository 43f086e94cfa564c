"""Writes the project read model from the workflow's state."""

from __future__ import annotations

from sqlalchemy import Engine, delete
from sqlmodel import Session, col
from temporalio import activity

from models.base import utcnow
from models.lifecycle import ProjectState
from models.projects import ApplicationRecord, Project, ProjectMember


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
