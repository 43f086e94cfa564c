"""JobWorkflow beside a real ProjectWorkflow, on the Kubernetes double and on the local runtime."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.jobs import JobActivities, last_bytes
from activities.kube import KubernetesRuntime
from activities.local import LocalRuntime
from activities.projects import ProjectActivities
from activities.runtime import WorkloadRuntime, namespace_name
from activities.workloads import WorkloadActivities
from models.jobs import SHELL, Job, JobInput, JobLog, JobState, JobStatus, JobTimings
from models.lifecycle import Decision, ProjectStatus, Quota, QuotaPanel
from models.workload_lifecycle import WorkloadDelete
from models.workloads import ResourceRequest, WorkloadSpec, WorkloadState
from services.kinds import runtime_kinds
from tests.kube_double.double import KubeDouble
from tests.kube_double.fixtures import kube_double  # noqa: F401
from tests.specs import one_role_spec
from tests.workflows.project_harness import (
    MailCatcher,
    ensure_users,
    new_state,
    project_worker,
    start_project,
)
from workflows import search_attributes
from workflows.job import JobWorkflow, workflow_id
from workflows.project import ProjectWorkflow

TIMINGS = JobTimings(first_poll=timedelta(seconds=1), max_poll=timedelta(seconds=4))
# Looks back off to an hour, so days skipped by the test server stay a short history.
PATIENT = TIMINGS.model_copy(update={"max_poll": timedelta(hours=1)})
IMAGE = "registry.example/pytorch:2.3"
QUOTA = Quota(gpu=2, vcpu=16, ram_gb=64, storage_gb=100)
THREE_DAYS = 72 * 3600  # MLCP_JOB_MAX_RUNTIME_HOURS' default, as the API passes it
ProjectHandle = WorkflowHandle[Any, Any]
# Each workflow test starts its own test server; the read model's SQL is the same in every test, so the
# PostgreSQL lane runs only the tests that write every column (success, and the snapshot guard).
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
JobHandle = WorkflowHandle[Any, Any]


def kube_runtime(double: KubeDouble) -> KubernetesRuntime:
    return KubernetesRuntime(double.api_client, runtime_kinds(), sleep=lambda seconds: None)


@asynccontextmanager
async def job_worker(
    env: WorkflowEnvironment, engine: Engine, runtime: WorkloadRuntime
) -> AsyncIterator[str]:
    """ProjectWorkflow and JobWorkflow on one worker, with every activity they call."""
    workloads, jobs = WorkloadActivities(runtime), JobActivities(engine, runtime)
    activities: list[Callable[..., Any]] = [
        jobs.record_job,
        jobs.keep_job_log,
        workloads.apply_workload,
        workloads.workload_status,
        workloads.delete_workload,
    ]
    async with project_worker(
        env.client, engine, MailCatcher(), [JobWorkflow], activities, runtime=runtime
    ) as task_queue:
        yield task_queue


async def active_project(
    env: WorkflowEnvironment, task_queue: str, days: float = 30
) -> tuple[ProjectHandle, str]:
    now = await env.get_current_time()
    state = new_state(start=now - timedelta(minutes=1), end=now + timedelta(days=days), quota=QUOTA)
    handle = await start_project(env.client, task_queue, state)
    await handle.execute_update(
        ProjectWorkflow.decide,
        Decision(application_id=f"a-{state.id}", approve=True, admin_id="root", admin="root"),
    )
    assert (await handle.query(ProjectWorkflow.view)).state.status == ProjectStatus.active
    return handle, state.id


def job_spec(project_id: str, job_id: str, command: str, gpu: int = 1) -> WorkloadSpec:
    return one_role_spec(
        project_id=project_id,
        resource_id=job_id,
        kind="job",
        owner="bob",
        name=f"train{job_id[-3:]}",
        image=IMAGE,
        command=[*SHELL, command],
        env={"EPOCHS": "3"},
        resources=ResourceRequest(gpu=gpu, vcpu=2, ram_gb=8),
        active_deadline_seconds=THREE_DAYS,
    )


async def start_job(
    env: WorkflowEnvironment,
    task_queue: str,
    project_id: str,
    command: str,
    gpu: int = 1,
    timings: JobTimings = TIMINGS,
    max_history_events: int = 10_000,
) -> JobHandle:
    job_id = "j" + uuid.uuid4().hex[:9]
    job = JobInput(
        id=job_id,
        project_id=project_id,
        owner_id="bob",
        owner="bob",
        command=command,
        spec=job_spec(project_id, job_id, command, gpu),
        created_at=await env.get_current_time(),
        timings=timings,
        max_history_events=max_history_events,
    )
    return await env.client.start_workflow(
        JobWorkflow.run, job, id=workflow_id(job_id), task_queue=task_queue
    )


async def until(
    env: WorkflowEnvironment,
    handle: JobHandle,
    ready: Callable[[JobState], bool],
    step: timedelta = timedelta(seconds=2),
    attempts: int = 60,
) -> JobState:
    """Skip time in steps until the job's state satisfies `ready`."""
    state: JobState = await handle.query(JobWorkflow.describe)
    for _ in range(attempts):
        if ready(state):
            return state
        await env.sleep(step)
        state = await handle.query(JobWorkflow.describe)
    raise AssertionError(f"job never got there; last state: {state.status} {state.reason} {state.message}")


def is_(status: JobStatus) -> Callable[[JobState], bool]:
    return lambda state: state.status == status


async def panel(project: ProjectHandle) -> QuotaPanel:
    return await project.query(ProjectWorkflow.quota_panel)


def row(engine: Engine, job_id: str) -> Job:
    with Session(engine) as session:
        found = session.get(Job, job_id)
        assert found is not None, f"job {job_id} was never recorded"
        return found


def stored_log(engine: Engine, job_id: str) -> str:
    with Session(engine) as session:
        found = session.get(JobLog, job_id)
        assert found is not None, f"the log of job {job_id} was never kept"
        return found.text


def gone(runtime: WorkloadRuntime, project_id: str, job_id: str) -> bool:
    return runtime.status(project_id, "job", job_id).state == WorkloadState.gone


async def test_a_job_succeeds_keeps_its_log_and_gives_its_quota_back(
    time_skipping_env: WorkflowEnvironment,
    engine: Engine,
    kube_double: KubeDouble,  # noqa: F811
) -> None:
    env, runtime = time_skipping_env, kube_runtime(kube_double)
    kube_double.knobs.run_seconds = 600
    async with job_worker(env, engine, runtime) as tq:
        project, project_id = await active_project(env, tq)
        handle = await start_job(env, tq, project_id, 'echo "Hello World!" && echo epoch 3 done')
        running = await until(env, handle, is_(JobStatus.running))
        assert row(engine, running.id).status == JobStatus.running
        job = kubernetes.client.BatchV1Api(kube_double.api_client).read_namespaced_job(
            f"job-{running.id}", namespace_name(project_id)
        )
        manifest = kube_double.api_client.sanitize_for_serialization(job)
        assert manifest["spec"]["activeDeadlineSeconds"] == THREE_DAYS
        assert manifest["spec"]["template"]["spec"]["containers"][0]["command"] == [*SHELL, running.command]

        kube_double.clock.advance(600)  # its run ends
        assert await handle.result() == JobStatus.succeeded
        final = await handle.query(JobWorkflow.describe)
        assert (final.exit_code, final.reason, final.cleaned_up) == (0, "Completed", True)
        assert final.finished_at is not None
        recorded = row(engine, final.id)
        assert (recorded.status, recorded.exit_code, recorded.log_kept) == (JobStatus.succeeded, 0, True)
        assert (recorded.command, recorded.env, recorded.max_runtime_seconds) == (
            running.command,
            {"EPOCHS": "3"},
            THREE_DAYS,
        )
        # The Kubernetes Job and its pods are gone; the log outlives them.
        assert gone(runtime, project_id, final.id)
        assert runtime.logs(project_id, "job", final.id) == ""
        assert stored_log(engine, final.id) == "Hello World!\nepoch 3 done\n"
        after = await panel(project)
        assert (after.in_use.gpu, after.in_flight.gpu, after.queue) == (0, 0, [])
        described = await handle.describe()
        assert described.typed_search_attributes.get(search_attributes.KIND) == "job"
        assert described.typed_search_attributes.get(search_attributes.STATUS) == "succeeded"

        replayer = Replayer(workflows=[JobWorkflow], data_converter=pydantic_data_converter)
        await replayer.replay_workflow(await handle.fetch_history())


@SQLITE_ONLY
async def test_a_failing_command_reports_its_exit_code(
    time_skipping_env: WorkflowEnvironment,
    engine: Engine,
    kube_double: KubeDouble,  # noqa: F811
) -> None:
    env, runtime = time_skipping_env, kube_runtime(kube_double)
    async with job_worker(env, engine, runtime) as tq:
        project, project_id = await active_project(env, tq)
        handle = await start_job(env, tq, project_id, "echo loading data; exit 3")
        assert await handle.result() == JobStatus.failed
        final = await handle.query(JobWorkflow.describe)
        assert (final.exit_code, final.reason) == (3, "Error")
        assert "3" in final.message
        recorded = row(engine, final.id)
        assert (recorded.status, recorded.exit_code, recorded.reason) == (JobStatus.failed, 3, "Error")
        assert stored_log(engine, final.id) == "loading data\n"
        assert gone(runtime, project_id, final.id)
        assert (await panel(project)).remaining.gpu == 2


@SQLITE_ONLY
async def test_the_three_day_deadline_fails_a_job_that_runs_on(
    time_skipping_env: WorkflowEnvironment,
    engine: Engine,
    kube_double: KubeDouble,  # noqa: F811
) -> None:
    env, runtime = time_skipping_env, kube_runtime(kube_double)
    kube_double.knobs.run_seconds = 30 * 24 * 3600  # it would run a month
    async with job_worker(env, engine, runtime) as tq:
        _, project_id = await active_project(env, tq)
        handle = await start_job(env, tq, project_id, "echo training forever", timings=PATIENT)
        running = await until(env, handle, is_(JobStatus.running))
        assert running.started_at is not None
        assert row(engine, running.id).status == JobStatus.running

        # Both clocks move to just before the deadline: the workflow copies the log a little ahead of it.
        kube_double.clock.advance(THREE_DAYS - 60)
        await env.sleep(timedelta(seconds=THREE_DAYS - 60))
        before = await handle.query(JobWorkflow.describe)
        assert (before.status, before.log_snapshot_taken) == (JobStatus.running, True)  # not before 3 days
        kube_double.clock.advance(120)  # Kubernetes fails it and deletes its pod
        assert await handle.result() == JobStatus.failed
        final = await handle.query(JobWorkflow.describe)
        assert final.reason == "DeadlineExceeded"
        assert row(engine, final.id).reason == "DeadlineExceeded"
        assert stored_log(engine, final.id) == "training forever\n"
        assert gone(runtime, project_id, final.id)


@SQLITE_ONLY
async def test_the_project_grace_period_stops_its_running_jobs(
    time_skipping_env: WorkflowEnvironment,
    engine: Engine,
    kube_double: KubeDouble,  # noqa: F811
) -> None:
    env, runtime = time_skipping_env, kube_runtime(kube_double)
    kube_double.knobs.run_seconds = 30 * 24 * 3600
    async with job_worker(env, engine, runtime) as tq:
        project, project_id = await active_project(env, tq, days=1)
        handle = await start_job(env, tq, project_id, "echo step 1", timings=PATIENT)
        running = await until(env, handle, is_(JobStatus.running))

        # Hour by hour to the project's end, not beyond: the project stays in its grace period.
        final = await until(env, handle, lambda state: state.cleaned_up, step=timedelta(hours=1), attempts=30)
        assert final.status == JobStatus.failed
        assert (final.reason, final.message) == (
            "ProjectShutdown",
            "stopped: the project's end date has passed (grace period)",
        )
        assert (await project.query(ProjectWorkflow.view)).state.status == ProjectStatus.grace
        recorded = row(engine, running.id)
        assert (recorded.status, recorded.reason) == (JobStatus.failed, "ProjectShutdown")
        assert stored_log(engine, running.id) == "step 1\n"
        assert gone(runtime, project_id, running.id)
        quota = await panel(project)
        assert quota.in_flight.gpu + quota.in_use.gpu == 0


@SQLITE_ONLY
async def test_a_second_job_waits_in_line_until_the_first_finishes(
    time_skipping_env: WorkflowEnvironment,
    engine: Engine,
    kube_double: KubeDouble,  # noqa: F811
) -> None:
    env, runtime = time_skipping_env, kube_runtime(kube_double)
    kube_double.knobs.run_seconds = 600
    async with job_worker(env, engine, runtime) as tq:
        project, project_id = await active_project(env, tq)
        first = await start_job(env, tq, project_id, "echo first", gpu=2)
        await until(env, first, is_(JobStatus.running))

        second = await start_job(env, tq, project_id, "echo second", gpu=1)
        waiting = await until(env, second, lambda state: state.queue_position is not None)
        assert waiting.status == JobStatus.waiting
        assert (waiting.queue_position, waiting.message) == (
            1,
            "waiting for resources: 1 GPU short, position 1",
        )
        recorded = row(engine, waiting.id)
        assert (recorded.status, recorded.queue_position) == (JobStatus.waiting, 1)

        # Deleting a queued job drops its request from the line; it never ran, so it kept no log.
        third = await start_job(env, tq, project_id, "echo third", gpu=1)
        behind = await until(env, third, lambda state: state.queue_position == 2)
        await third.execute_update(JobWorkflow.delete, WorkloadDelete(user_id="bob", username="bob"))
        assert await third.result() == JobStatus.deleted
        assert (row(engine, behind.id).status, row(engine, behind.id).log_kept) == (JobStatus.deleted, False)

        # A job beyond the whole quota could never run: refused at once, with nothing reserved.
        too_big = await start_job(env, tq, project_id, "echo never", gpu=3)
        assert await too_big.result() == JobStatus.failed
        refused = await too_big.query(JobWorkflow.describe)
        assert (refused.reason, refused.registered) == ("QuotaExceeded", False)
        assert [e.resource_id for e in (await panel(project)).queue] == [waiting.id]

        kube_double.clock.advance(600)  # the first one's run ends
        assert await first.result() == JobStatus.succeeded
        started = await until(
            env, second, lambda state: state.status in (JobStatus.running, JobStatus.succeeded)
        )
        assert started.queue_position is None
        kube_double.clock.advance(600)
        assert await second.result() == JobStatus.succeeded
        assert stored_log(engine, started.id) == "second\n"
        after = await panel(project)
        assert (after.in_use.gpu, after.in_flight.gpu, after.queue) == (0, 0, [])

        replayer = Replayer(workflows=[JobWorkflow], data_converter=pydantic_data_converter)
        await replayer.replay_workflow(await second.fetch_history())


@SQLITE_ONLY
async def test_deleting_a_running_job_stops_it_keeps_its_log_and_releases_the_quota(
    time_skipping_env: WorkflowEnvironment,
    engine: Engine,
    kube_double: KubeDouble,  # noqa: F811
) -> None:
    env, runtime = time_skipping_env, kube_runtime(kube_double)
    kube_double.knobs.run_seconds = 600
    async with job_worker(env, engine, runtime) as tq:
        project, project_id = await active_project(env, tq)
        handle = await start_job(env, tq, project_id, "echo half way")
        running = await until(env, handle, is_(JobStatus.running))
        answer = await handle.execute_update(
            JobWorkflow.delete, WorkloadDelete(user_id="bob", username="bob")
        )
        assert answer.status in (JobStatus.deleting, JobStatus.deleted)
        assert await handle.result() == JobStatus.deleted
        recorded = row(engine, running.id)
        assert (recorded.status, recorded.message) == (JobStatus.deleted, "deleted by bob")
        assert stored_log(engine, running.id) == "half way\n"
        assert gone(runtime, project_id, running.id)
        assert (await panel(project)).remaining.gpu == 2


@SQLITE_ONLY
async def test_a_job_running_for_days_continues_as_new_and_keeps_its_state(
    time_skipping_env: WorkflowEnvironment,
    engine: Engine,
    kube_double: KubeDouble,  # noqa: F811
) -> None:
    env, runtime = time_skipping_env, kube_runtime(kube_double)
    kube_double.knobs.run_seconds = 2 * 24 * 3600
    async with job_worker(env, engine, runtime) as tq:
        project, project_id = await active_project(env, tq)
        handle = await start_job(
            env, tq, project_id, "echo long haul", timings=PATIENT, max_history_events=60
        )
        running = await until(env, handle, is_(JobStatus.running))
        await env.sleep(timedelta(days=1))
        latest = env.client.get_workflow_handle(handle.id)
        assert (await latest.describe()).run_id != handle.first_execution_run_id
        carried = await latest.query(JobWorkflow.describe)
        assert (carried.status, carried.registered, carried.applied, carried.running_reported) == (
            JobStatus.running,
            True,
            True,
            True,
        )
        assert (carried.started_at, carried.applied_at) == (running.started_at, running.applied_at)
        assert carried.poll_delay is not None and carried.poll_delay > TIMINGS.first_poll  # back-off kept
        assert (await panel(project)).in_use.gpu == 1

        kube_double.clock.advance(2 * 24 * 3600)
        assert await handle.result() == JobStatus.succeeded
        assert stored_log(engine, running.id) == "long haul\n"
        assert (await panel(project)).remaining.gpu == 2


@SQLITE_ONLY
async def test_echo_hello_world_on_the_local_runtime_keeps_the_line(
    time_skipping_env: WorkflowEnvironment, engine: Engine, tmp_path: Path
) -> None:
    env, runtime = (
        time_skipping_env,
        LocalRuntime(tmp_path / "home", runtime_kinds(), gpu_devices=list, stop_grace_seconds=2),
    )
    async with job_worker(env, engine, runtime) as tq:
        _, project_id = await active_project(env, tq)
        handle = await start_job(env, tq, project_id, 'echo "Hello World!"', gpu=0)
        assert await handle.result() == JobStatus.succeeded
        final = await handle.query(JobWorkflow.describe)
        assert final.exit_code == 0
        assert "Hello World!" in stored_log(engine, final.id).splitlines()
        assert gone(runtime, project_id, final.id)


def test_the_kept_log_is_the_end_of_the_output_within_the_limit() -> None:
    text = "".join(f"line {n}\n" for n in range(1000))
    kept, truncated = last_bytes(text, limit=100)
    assert truncated and kept.endswith("line 999\n") and kept.startswith("line ")
    assert len(kept.encode()) <= 100
    assert last_bytes("short\n", limit=100) == ("short\n", False)


def test_an_older_snapshot_never_overwrites_the_read_model(engine: Engine, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    project = new_state(start=now, end=now + timedelta(days=1))
    ensure_users(engine, "alice", "bob")
    ProjectActivities(engine).record_project(project)
    spec = job_spec(project.id, "j0ld", "echo hi")
    newer = JobState(
        id="j0ld",
        project_id=project.id,
        owner_id="bob",
        owner="bob",
        name=spec.name,
        command="echo hi",
        spec=spec,
        created_at=now,
        status=JobStatus.succeeded,
        exit_code=0,
        version=5,
    )
    records = JobActivities(engine, LocalRuntime(tmp_path / "home", runtime_kinds()))
    records.record_job(newer)
    records.record_job(
        newer.model_copy(update={"status": JobStatus.running, "exit_code": None, "version": 4})
    )
    kept = row(engine, "j0ld")
    assert (kept.status, kept.exit_code, kept.version, kept.gpu) == (JobStatus.succeeded, 0, 5, 1)
