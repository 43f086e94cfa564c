"""Starting a job: the one place that turns a checked JobCreate into a running JobWorkflow.

The jobs API, job templates and schedules all start jobs through `start_job`, so every job gets the same
checks (active project, active catalog spec), the platform's maximum run time and the same read-model row.
Callers decide who may start a job and whom it belongs to; `owner` must be a member of the project.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from sqlmodel import Session
from temporalio.client import Client

from api.deps import release_connection
from api.errors import ApiError, conflict, invalid
from api.temporal import start_workload
from config import Settings
from models.base import new_id, utcnow
from models.catalog import GpuModel, Spec
from models.jobs import SHELL, Job, JobCreate, JobInput, JobStatus
from models.lifecycle import ProjectStatus
from models.projects import Project
from models.workloads import ResourceRequest, WorkloadKind, WorkloadSpec
from workflows.job import JobWorkflow, workflow_id

# The workflow writes the row as its first step; a busy worker may take a moment.


class JobOwner(NamedTuple):
    id: str
    username: str


def job_id_for(owner_id: str, project_id: str, idempotency_key: str | None) -> str:
    """A retried start with the same key reaches the same job, never a second one."""
    if not idempotency_key:
        return new_id()
    return "j" + hashlib.sha256(f"{owner_id}:{project_id}:{idempotency_key}".encode()).hexdigest()[:9]


def job_resources(session: Session, spec_id: str, shm_gb: float | None) -> ResourceRequest:
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


def job_input(
    session: Session, settings: Settings, project: Project, owner: JobOwner, body: JobCreate, job_id: str
) -> JobInput:
    """Check the request and build what the workflow receives; raises ApiError (409, 422) when refused."""
    if project.status != ProjectStatus.active:
        raise conflict(f"project {project.id} is {project.status}; jobs need an active project")
    workload = WorkloadSpec(
        project_id=project.id,
        resource_id=job_id,
        kind=WorkloadKind.job,
        owner=owner.username,
        name=body.name,
        image=body.image,
        command=[*SHELL, body.command],
        env=body.env,
        resources=job_resources(session, body.spec_id, body.shm_gb),
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
    owner: JobOwner,
    body: JobCreate,
    idempotency_key: str | None = None,
) -> Job:
    """Start a job's workflow and answer with its recorded row.

    With an idempotency key a repeated call answers with the job the first call started. Raises ApiError:
    409 for a project that is not active, 422 for an unknown or retired spec, 503 if the worker has not
    recorded the job within RECORD_WAIT (it still runs; list it later).
    """
    job_id = job_id_for(owner.id, project.id, idempotency_key)
    request = job_input(session, settings, project, owner, body, job_id)
    release_connection(session)
    await start_workload(
        client,
        JobWorkflow.run,
        request,
        workflow_id=workflow_id(job_id),
        task_queue=settings.temporal_task_queue,
        project_id=project.id,
        owner=owner.username,
        kind="job",
        status=JobStatus.waiting.value,
        summary=f"Job “{body.name}” of {owner.username} ({body.image})",
    )
    session.expire_all()
    row = session.get(Job, job_id)
    if row is None:  # the workflow records before it answers: only a lost row gets here
        raise ApiError(500, "internal_error", f"job {job_id} started but has no record")
    return row
