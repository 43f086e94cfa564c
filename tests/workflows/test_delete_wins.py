"""A delete always wins: over a runtime call that hangs, a status read stuck where no cancellation reaches,
a failure no retry fixes, a cancelled workflow, and a workload that will not stop when its project is
deleted."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import CancelledError
from temporalio.testing import WorkflowEnvironment

from activities.kube import KubernetesRuntime
from models.jobs import JobStatus
from models.lifecycle import DeleteRequest, ProjectStatus
from models.workload_lifecycle import WorkloadDelete
from models.workloads import WorkloadSpec, WorkloadState, WorkloadStatus
from tests.api.test_projects import eventually
from tests.kube_double.double import KubeDouble
from tests.kube_double.fixtures import kube_double  # noqa: F401
from tests.workflows.fake_workload import StubbornWorkload
from tests.workflows.project_harness import MailCatcher, project_worker
from tests.workflows.test_job_workflow import (
    active_project,
    is_,
    job_worker,
    kube_runtime,
    panel,
    row,
    start_job,
    until,
)
from workflows.job import JobWorkflow
from workflows.project import ProjectWorkflow

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


class HangingApply:
    """The Kubernetes runtime, except that apply never returns until its activity is cancelled."""

    def __init__(self, runtime: KubernetesRuntime) -> None:
        self._runtime = runtime
        self.name = runtime.name
        self.entered = threading.Event()
        self.interrupted = threading.Event()

    def apply(self, spec: WorkloadSpec) -> WorkloadStatus:
        self.entered.set()
        try:
            while True:
                time.sleep(0.05)
        except BaseException:
            self.interrupted.set()
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runtime, name)


class StuckRead:
    """The Kubernetes runtime, except that its first status read blocks where no cancellation reaches it,
    as a read on a dead connection does, until the test lets it go."""

    def __init__(self, runtime: KubernetesRuntime) -> None:
        self._runtime = runtime
        self.name = runtime.name
        self.stuck = threading.Event()
        self.release = threading.Event()

    def status(self, project_id: str, kind: str, resource_id: str) -> WorkloadStatus:
        if not self.stuck.is_set():
            self.stuck.set()
            self.release.wait()  # a blocking C call: the SDK's cancellation, raised in the thread, waits
        return self._runtime.status(project_id, kind, resource_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runtime, name)


class RefusingApply(HangingApply):
    """Apply fails the same way every time, as the NUL byte in a command did."""

    def __init__(self, runtime: KubernetesRuntime) -> None:
        super().__init__(runtime)
        self.attempts = 0

    def apply(self, spec: WorkloadSpec) -> WorkloadStatus:
        self.attempts += 1
        raise ValueError("embedded null byte")


@SQLITE_ONLY
async def test_a_delete_interrupts_an_apply_that_hangs(
    dev_server_env: WorkflowEnvironment,
    engine: Engine,
    kube_double: KubeDouble,  # noqa: F811
) -> None:
    env, runtime = dev_server_env, HangingApply(kube_runtime(kube_double))
    async with job_worker(env, engine, runtime) as tq:
        project, project_id = await active_project(env, tq)
        handle = await start_job(env, tq, project_id, "sleep 600", gpu=0)
        assert await asyncio.to_thread(runtime.entered.wait, 30)

        answer = await handle.execute_update(
            JobWorkflow.delete, WorkloadDelete(user_id="bob", username="bob")
        )
        assert answer.status in (JobStatus.deleting, JobStatus.deleted)
        assert await asyncio.wait_for(handle.result(), timeout=60) == JobStatus.deleted
        assert runtime.interrupted.is_set()  # the activity was cancelled, not left to run on
        final = await handle.query(JobWorkflow.describe)
        assert (final.message, final.registered) == ("deleted by bob", False)
        assert row(engine, final.id).status == JobStatus.deleted
        assert runtime.status(project_id, "job", final.id).state == WorkloadState.gone
        assert (await panel(project)).in_flight.vcpu == 0


@SQLITE_ONLY
async def test_a_delete_leaves_a_stuck_status_read_behind(
    dev_server_env: WorkflowEnvironment,
    engine: Engine,
    kube_double: KubeDouble,  # noqa: F811
) -> None:
    env, runtime = dev_server_env, StuckRead(kube_runtime(kube_double))
    kube_double.knobs.run_seconds = 3600
    async with job_worker(env, engine, runtime) as tq:
        project, project_id = await active_project(env, tq)
        handle = await start_job(env, tq, project_id, "sleep 3600", gpu=0)
        try:
            assert await asyncio.to_thread(runtime.stuck.wait, 30)

            async def delete() -> str:
                await handle.execute_update(JobWorkflow.delete, WorkloadDelete(user_id="bob", username="bob"))
                return str(await handle.result())

            # Waiting for the read's cancellation would take its whole two-minute timeout.
            assert await asyncio.wait_for(delete(), timeout=60) == JobStatus.deleted
        finally:
            runtime.release.set()
        final = await handle.query(JobWorkflow.describe)
        assert runtime.status(project_id, "job", final.id).state == WorkloadState.gone
        assert (await panel(project)).in_flight.vcpu == 0


@SQLITE_ONLY
async def test_a_failure_no_retry_fixes_ends_the_job_failed_with_its_reason(
    time_skipping_env: WorkflowEnvironment,
    engine: Engine,
    kube_double: KubeDouble,  # noqa: F811
) -> None:
    env, runtime = time_skipping_env, RefusingApply(kube_runtime(kube_double))
    async with job_worker(env, engine, runtime) as tq:
        project, project_id = await active_project(env, tq)
        handle = await start_job(env, tq, project_id, "echo hi", gpu=0)
        assert await handle.result() == JobStatus.failed
        final = await handle.query(JobWorkflow.describe)
        assert (final.reason, final.message) == ("ValueError", "embedded null byte")
        assert 1 < runtime.attempts <= 6  # retried, a bounded number of times
        assert row(engine, final.id).reason == "ValueError"
        assert (await panel(project)).remaining.vcpu == 16  # its reservation is back


@SQLITE_ONLY
async def test_a_cancelled_workflow_removes_its_workload_and_gives_its_quota_back(
    time_skipping_env: WorkflowEnvironment,
    engine: Engine,
    kube_double: KubeDouble,  # noqa: F811
) -> None:
    env, runtime = time_skipping_env, kube_runtime(kube_double)
    kube_double.knobs.run_seconds = 3600
    async with job_worker(env, engine, runtime) as tq:
        project, project_id = await active_project(env, tq)
        handle = await start_job(env, tq, project_id, "sleep 3600", gpu=1)
        running = await until(env, handle, is_(JobStatus.running))
        assert (await panel(project)).in_use.gpu == 1

        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as ended:
            await handle.result()
        assert isinstance(ended.value.cause, CancelledError)
        assert runtime.status(project_id, "job", running.id).state == WorkloadState.gone
        recorded = row(engine, running.id)
        assert (recorded.status, recorded.reason) == (JobStatus.failed, "Cancelled")
        after = await panel(project)
        assert (after.in_use.gpu, after.in_flight.gpu) == (0, 0)


@SQLITE_ONLY
async def test_a_project_is_deleted_within_two_minutes_whatever_its_workloads_do(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    env = time_skipping_env
    async with project_worker(env.client, engine, MailCatcher(), [StubbornWorkload]) as tq:
        project, project_id = await active_project(env, tq)
        stubborn = await env.client.start_workflow(
            StubbornWorkload.run,
            args=[project.id, "r" + uuid.uuid4().hex[:8]],
            id=f"job-stubborn-{project_id}",
            task_queue=tq,
        )

        async def reserved() -> bool:
            return (await panel(project)).in_flight.vcpu == 1

        await eventually(reserved, seconds=60)  # real time: a busy machine may take a while
        await project.execute_update(
            ProjectWorkflow.request_delete,
            DeleteRequest(user_id="alice", username="alice", confirmation_code="ABC123"),
        )
        # Skip time only once the deletion has begun: until then the project's timer for its end date (weeks
        # away) may still be set, and the test server would skip to it.

        async def deleting() -> bool:
            return (await project.query(ProjectWorkflow.view)).state.status == ProjectStatus.deleting

        await eventually(deleting, seconds=60)
        assert await project.result() == ProjectStatus.deleted
        events = (await project.fetch_history()).events
        asked = next(
            e
            for e in events
            if e.HasField("workflow_execution_update_accepted_event_attributes")
            and e.workflow_execution_update_accepted_event_attributes.accepted_request.input.name
            == "request_delete"
        )
        took = events[-1].event_time.ToDatetime() - asked.event_time.ToDatetime()
        assert timedelta(seconds=60) < took < timedelta(minutes=2), took  # waited, cancelled, terminated
        assert (await stubborn.describe()).status == WorkflowExecutionStatus.TERMINATED
