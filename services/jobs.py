"""Starting a job: the one place that turns a checked JobCreate into a running JobWorkflow.

The jobs API, job templates and schedules all start jobs through here, so every job gets the same checks
(active project, active catalog spec), the platform's maximum run time and the same read-model row.
Callers decide who may start a job and whom it belongs to; `owner` must be a member of the project.
"""

from __future__ import annotations

from sqlmodel import Session
from temporalio.client import Client

from config import Settings
from models.base import utcnow
from models.database import release_connection
from models.jobs import SHELL, Job, JobCreate, JobInput, JobStatus
from models.lifecycle import ProjectStatus
from models.projects import Project
from models.workloads import WorkloadRole, WorkloadSpec
from services.errors import conflict
from services.images import choose_image
from services.kinds import JOB
from services.mounts import resolve_mounts, s3_environment
from services.workloads import Owner, catalog_resources, recorded_row, resource_id, start_recorded


def job_id_for(owner_id: str, project_id: str, idempotency_key: str | None) -> str:
    return resource_id(JOB, owner_id, project_id, idempotency_key)


def job_input(
    session: Session, settings: Settings, project: Project, owner: Owner, body: JobCreate, job_id: str
) -> JobInput:
    """Check the request and build what the workflow receives; raises Conflict or Invalid when refused."""
    if project.status != ProjectStatus.active:
        raise conflict(f"project {project.id} is {project.status}; jobs need an active project")
    mounts = resolve_mounts(session, project.id, owner.id, body.mounts)
    resources = catalog_resources(session, body.spec_id, body.shm_gb)
    image = choose_image(
        session,
        project.id,
        owner.id,
        image_id=body.image_id,
        reference=body.image,
        cuda_version=body.cuda_version,
        resources=resources,
    )
    workload = WorkloadSpec(
        project_id=project.id,
        resource_id=job_id,
        kind=JOB.name,
        owner=owner.username,
        name=body.name,
        roles=[
            WorkloadRole(
                image=image.reference,
                command=[*SHELL, body.command],
                env={**s3_environment(settings, project.id, mounts), **image.env, **body.env},
                resources=resources,
            )
        ],
        mounts=mounts,
        image_choice=image.choice,
        # Decided here, not in the workflow, so the workflow's history alone says what it ran with.
        active_deadline_seconds=settings.job_max_runtime_hours * 3600,
    )
    return JobInput(
        id=job_id,
        project_id=project.id,
        owner_id=owner.id,
        owner=owner.username,
        command=body.command,
        spec=workload,
        spec_id=body.spec_id,
        created_at=utcnow(),
    )


async def start_job(
    session: Session,
    client: Client,
    settings: Settings,
    project: Project,
    owner: Owner,
    body: JobCreate,
    idempotency_key: str | None = None,
) -> Job:
    """Start a job's workflow and answer with its recorded row; a repeated call with the same idempotency
    key answers with the job the first call started."""
    job_id = job_id_for(owner.id, project.id, idempotency_key)
    request = job_input(session, settings, project, owner, body, job_id)
    release_connection(session)
    await start_recorded(
        client,
        JOB,
        request,
        resource_id=job_id,
        task_queue=settings.temporal_task_queue,
        project_id=project.id,
        owner=owner.username,
        status=JobStatus.waiting.value,
        summary=f"Job “{body.name}” of {owner.username} ({request.spec.main.image})",
    )
    row: Job = recorded_row(session, JOB, job_id)
    return row
