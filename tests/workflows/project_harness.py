"""Starts a ProjectWorkflow with a real worker, real record activity and a mail catcher."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from activities.heartbeat import HEARTBEAT_THROTTLE
from activities.local import LocalRuntime
from activities.object_storage import ObjectStorageError, ObjectStore
from activities.projects import ProjectActivities, ProjectCleanup
from activities.runtime import WorkloadRuntime
from activities.schedules import ScheduleActivities
from activities.storage import LocalStorage
from activities.volumes import ObjectStoreFactory, VolumeActivities
from activities.workloads import WorkloadActivities
from config import Settings
from models.accounts import User
from models.database import session_scope
from models.lifecycle import (
    PROJECT_ADMISSION_REQUEST_SIGNAL,
    AdmissionAnswer,
    AdmitRequest,
    Application,
    ApplicationType,
    LifecycleTimings,
    Member,
    MemberRole,
    ProjectDetails,
    ProjectState,
    ProjectWorkflowInput,
    Quota,
)
from models.mail import MailMessage, MailResult, MailStatus, MailTransport
from services.kinds import KINDS, runtime_kinds
from tests.workflows.fake_workload import FakeWorkloadWorkflow
from worker import GRACEFUL_SHUTDOWN
from workflows.project import ProjectWorkflow, workflow_id

TIMINGS = LifecycleTimings(reminder_before=timedelta(days=7), grace_period=timedelta(days=14))


@dataclass
class MailCatcher:
    messages: list[MailMessage] = field(default_factory=list)

    @activity.defn(name="send_mail")
    def send_mail(self, message: MailMessage) -> MailResult:
        if all(m.key != message.key for m in self.messages):
            self.messages.append(message)
        return MailResult(
            key=message.key,
            status=MailStatus.outbox,
            transport=MailTransport.outbox,
            recipients=message.to_user_ids,
            attempts=1,
        )

    def subjects(self) -> list[str]:
        return [m.subject for m in self.messages]


def ensure_users(engine: Engine, *usernames: str) -> None:
    with session_scope(engine) as session:
        for name in usernames:
            if session.get(User, name) is None:
                session.add(User(id=name, username=name, email=f"{name}@example.com", password_hash="x"))


def new_state(
    start: datetime,
    end: datetime,
    quota: Quota | None = None,
    project_id: str | None = None,
) -> ProjectState:
    project_id = project_id or "p" + uuid.uuid4().hex[:9]
    return ProjectState(
        id=project_id,
        owner_id="alice",
        owner="alice",
        delete_code="ABC123",
        details=ProjectDetails(
            name="Vision",
            start_at=start,
            end_at=end,
            members=[
                Member(user_id="alice", username="alice", role=MemberRole.admin),
                Member(user_id="bob", username="bob"),
            ],
        ),
        quota=quota or Quota(gpu=4, vcpu=16, ram_gb=64, storage_gb=100),
        applications=[
            Application(
                id=f"a-{project_id}",
                type=ApplicationType.project,
                applicant_id="alice",
                applicant="alice",
                submitted_at=start - timedelta(days=1),
            )
        ],
    )


def no_object_store() -> ObjectStore:
    raise ObjectStorageError("no object storage in this test", permanent=True)


@asynccontextmanager
async def project_worker(
    client: Client,
    engine: Engine,
    mail: MailCatcher,
    extra_workflows: list[type] | None = None,
    extra_activities: list[Callable[..., Any]] | None = None,
    runtime: WorkloadRuntime | None = None,
    objects: ObjectStoreFactory = no_object_store,
) -> AsyncIterator[str]:
    ensure_users(engine, "alice", "bob")
    task_queue = "tq-" + uuid.uuid4().hex[:8]
    # Projects keep a place in the runtime from activation to deletion: a local one here.
    with tempfile.TemporaryDirectory(prefix="mlcp-projects-") as home:
        environments = WorkloadActivities(runtime or LocalRuntime(Path(home), runtime_kinds()))
        schedules = ScheduleActivities(engine, client, Settings(home=Path(home)))
        cleanup = ProjectCleanup(engine, client, KINDS)
        volumes = VolumeActivities(engine, LocalStorage(Path(home)), objects)
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[ProjectWorkflow, *(extra_workflows or [])],
            activities=[
                ProjectActivities(engine).record_project,
                cleanup.end_project_workflows,
                cleanup.close_workload_records,
                mail.send_mail,
                environments.ensure_project_environment,
                environments.delete_project_environment,
                schedules.stop_project_schedules,
                schedules.resume_project_schedules,
                *volumes.all(),
                *(extra_activities or []),
            ],
            activity_executor=ThreadPoolExecutor(max_workers=8),
            graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
            max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        ):
            yield task_queue


@asynccontextmanager
async def workload_worker(
    client: Client,
    engine: Engine,
    runtime: WorkloadRuntime,
    workflow: type,
    activities: list[Callable[..., Any]],
) -> AsyncIterator[str]:
    """ProjectWorkflow and one workload kind's workflow on one worker: the kind's own activities and the
    runtime calls every workload makes."""
    workloads = WorkloadActivities(runtime)
    runtime_calls: list[Callable[..., Any]] = [
        workloads.apply_workload,
        workloads.workload_status,
        workloads.delete_workload,
    ]
    async with project_worker(
        client,
        engine,
        MailCatcher(),
        extra_workflows=[workflow],
        extra_activities=[*activities, *runtime_calls],
        runtime=runtime,
    ) as task_queue:
        yield task_queue


async def start_project(
    client: Client,
    task_queue: str,
    state: ProjectState,
    timings: LifecycleTimings = TIMINGS,
    max_history_events: int = 10_000,
) -> WorkflowHandle[ProjectWorkflow, object]:
    handle = await client.start_workflow(
        ProjectWorkflow.run,
        ProjectWorkflowInput(state=state, timings=timings, max_history_events=max_history_events),
        id=workflow_id(state.id),
        task_queue=task_queue,
    )
    return handle


async def admit(
    project: WorkflowHandle[Any, Any],
    workload: WorkflowHandle[FakeWorkloadWorkflow, str],
    request: AdmitRequest,
) -> AdmissionAnswer:
    """Ask the project on the workload's behalf, as a workload workflow does, and return its answer."""
    before = len(await workload.query(FakeWorkloadWorkflow.admission_answers))
    await project.signal(PROJECT_ADMISSION_REQUEST_SIGNAL, request)
    for _ in range(100):
        answers = await workload.query(FakeWorkloadWorkflow.admission_answers)
        if len(answers) > before:
            return answers[-1]
        await asyncio.sleep(0.05)
    raise AssertionError(f"the project never answered {request.resource_id}")


async def start_workload(
    client: Client,
    task_queue: str,
    project_id: str,
    resource_id: str,
    gpu: int,
) -> tuple[WorkflowHandle[FakeWorkloadWorkflow, str], AdmitRequest]:
    handle = await client.start_workflow(
        FakeWorkloadWorkflow.run,
        args=[workflow_id(project_id), resource_id],
        id=f"workload-{resource_id}",
        task_queue=task_queue,
    )
    request = AdmitRequest(
        resource_id=resource_id,
        kind="container",
        workflow_id=handle.id,
        owner_id="bob",
        request=Quota(gpu=gpu, vcpu=1, ram_gb=2),
    )
    return handle, request
