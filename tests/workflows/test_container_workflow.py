"""ContainerWorkflow beside a real ProjectWorkflow, on the local runtime and on the Kubernetes double."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session
from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.containers import ContainerRecords
from activities.gpu import GpuDevice
from activities.kube import KubernetesRuntime
from activities.local import LocalRuntime
from activities.projects import ProjectActivities
from activities.runtime import WorkloadRuntime
from models.containers import (
    Container,
    ContainerInput,
    ContainerState,
    ContainerStatus,
    ContainerTimings,
)
from models.lifecycle import Decision, ProjectStatus, Quota, QuotaPanel
from models.workload_lifecycle import WorkloadDelete
from models.workloads import (
    ResourceRequest,
    ServicePort,
    WorkloadSpec,
    WorkloadState,
)
from services.kinds import runtime_kinds
from tests.kube_double.double import KubeDouble
from tests.kube_double.fixtures import kube_double  # noqa: F401
from tests.specs import one_role_spec
from tests.workflows.project_harness import (
    ensure_users,
    new_state,
    start_project,
    workload_worker,
)
from workflows import search_attributes
from workflows.container import ContainerWorkflow, workflow_id
from workflows.project import ProjectWorkflow

FAKE_GPUS = [GpuDevice(index=i, uuid=f"GPU-fake-{i}", name="Fake A100", memory_mb=81920) for i in range(4)]
TIMINGS = ContainerTimings(first_poll=timedelta(seconds=1), max_poll=timedelta(seconds=4))
IMAGE = "registry.example/pytorch:2.3"
QUOTA = Quota(gpu=2, vcpu=16, ram_gb=64, storage_gb=100)
ProjectHandle = WorkflowHandle[Any, Any]
ContainerHandle = WorkflowHandle[Any, Any]


def local_runtime(tmp_path: Path) -> LocalRuntime:
    return LocalRuntime(
        tmp_path / "home", runtime_kinds(), gpu_devices=lambda: FAKE_GPUS, stop_grace_seconds=2
    )


def container_worker(
    env: WorkflowEnvironment, engine: Engine, runtime: WorkloadRuntime
) -> AbstractAsyncContextManager[str]:
    """ProjectWorkflow and ContainerWorkflow on one worker, with every activity they call."""
    return workload_worker(
        env.client, engine, runtime, ContainerWorkflow, [ContainerRecords(engine).record_container]
    )


async def active_project(
    env: WorkflowEnvironment, task_queue: str, days: float = 30, quota: Quota = QUOTA
) -> tuple[ProjectHandle, str]:
    now = await env.get_current_time()
    state = new_state(start=now - timedelta(minutes=1), end=now + timedelta(days=days), quota=quota)
    handle = await start_project(env.client, task_queue, state)
    await handle.execute_update(
        ProjectWorkflow.decide,
        Decision(application_id=f"a-{state.id}", approve=True, admin_id="root", admin="root"),
    )
    assert (await handle.query(ProjectWorkflow.view)).state.status == ProjectStatus.active
    return handle, state.id


def container_spec(project_id: str, container_id: str, gpu: int, image: str = IMAGE) -> WorkloadSpec:
    return one_role_spec(
        project_id=project_id,
        resource_id=container_id,
        kind="container",
        owner="bob",
        name=f"dev {container_id}",
        image=image,
        resources=ResourceRequest(gpu=gpu, vcpu=2, ram_gb=8),
        ports=[ServicePort(name="ssh", port=22)],  # a real server on the local runtime
    )


async def start_container(
    env: WorkflowEnvironment,
    task_queue: str,
    project_id: str,
    gpu: int = 1,
    start_at: datetime | None = None,
    end_at: datetime | None = None,
    image: str = IMAGE,
    timings: ContainerTimings = TIMINGS,
    max_history_events: int = 10_000,
) -> ContainerHandle:
    container_id = "c" + uuid.uuid4().hex[:9]
    container = ContainerInput(
        id=container_id,
        project_id=project_id,
        owner_id="bob",
        owner="bob",
        spec=container_spec(project_id, container_id, gpu, image),
        start_at=start_at,
        end_at=end_at,
        created_at=await env.get_current_time(),
        timings=timings,
        max_history_events=max_history_events,
    )
    return await env.client.start_workflow(
        ContainerWorkflow.run, container, id=workflow_id(container_id), task_queue=task_queue
    )


async def until(
    env: WorkflowEnvironment,
    handle: ContainerHandle,
    ready: Callable[[ContainerState], bool],
    step: timedelta = timedelta(seconds=2),
    attempts: int = 60,
) -> ContainerState:
    """Skip time in steps until the container's state satisfies `ready`."""
    state: ContainerState = await handle.query(ContainerWorkflow.describe)
    for _ in range(attempts):
        if ready(state):
            return state
        await env.sleep(step)
        # Skipping takes no real time, but the local runtime's servers start in real time: without a
        # pause, the attempts ran out before an SSH server was up on a loaded machine.
        await asyncio.sleep(0.1)
        state = await handle.query(ContainerWorkflow.describe)
    raise AssertionError(
        f"container never got there; last state: {state.status} {state.reason} {state.message}"
    )


def is_(status: ContainerStatus) -> Callable[[ContainerState], bool]:
    return lambda state: state.status == status


def queued(state: ContainerState) -> bool:
    """In line with its place known (before the project answers, a waiting container is 'Admitting')."""
    return state.status == ContainerStatus.waiting and state.reason == "Queued"


async def panel(project: ProjectHandle) -> QuotaPanel:
    return await project.query(ProjectWorkflow.quota_panel)


def row(engine: Engine, container_id: str) -> Container:
    with Session(engine) as session:
        found = session.get(Container, container_id)
        assert found is not None, f"container {container_id} was never recorded"
        return found


async def test_scheduled_start_then_deleted_at_its_end_time(
    time_skipping_env: WorkflowEnvironment, engine: Engine, tmp_path: Path
) -> None:
    env, runtime = time_skipping_env, local_runtime(tmp_path)
    async with container_worker(env, engine, runtime) as tq:
        project, project_id = await active_project(env, tq)
        now = await env.get_current_time()
        start_at, end_at = now + timedelta(hours=2), now + timedelta(hours=8)
        handle = await start_container(env, tq, project_id, start_at=start_at, end_at=end_at)
        scheduled = await until(env, handle, lambda state: state.version > 0)
        assert scheduled.status == ContainerStatus.scheduled and "starts at" in scheduled.message
        assert row(engine, scheduled.id).status == ContainerStatus.scheduled
        assert (await panel(project)).in_flight.gpu == 0  # nothing reserved before the start time

        await env.sleep(timedelta(hours=2))
        running = await until(env, handle, is_(ContainerStatus.running))
        assert await env.get_current_time() >= start_at
        assert [(e.name, e.port, e.host) for e in running.endpoints] == [("ssh", 22, "127.0.0.1")]
        assert row(engine, running.id).status == ContainerStatus.running
        assert (await panel(project)).in_use.gpu == 1  # the project heard it is running
        described = await handle.describe()
        assert described.typed_search_attributes.get(search_attributes.KIND) == "container"
        assert described.typed_search_attributes.get(search_attributes.PROJECT) == project_id

        assert await handle.result() == ContainerStatus.deleted  # time skips to the end time
        assert await env.get_current_time() >= end_at
        final = await handle.query(ContainerWorkflow.describe)
        assert final.message == "its end time has come" and final.endpoints == []
        assert row(engine, running.id).status == ContainerStatus.deleted
        after = await panel(project)
        assert (after.in_use.gpu, after.in_flight.gpu, after.queue) == (0, 0, [])
        gone = runtime.status(project_id, "container", running.id)
        assert gone.state == WorkloadState.gone


async def test_user_delete_stops_it_and_releases_the_quota(
    time_skipping_env: WorkflowEnvironment, engine: Engine, tmp_path: Path
) -> None:
    env, runtime = time_skipping_env, local_runtime(tmp_path)
    async with container_worker(env, engine, runtime) as tq:
        project, project_id = await active_project(env, tq)
        handle = await start_container(env, tq, project_id, gpu=2)
        running = await until(env, handle, is_(ContainerStatus.running))
        status = runtime.status(project_id, "container", running.id)
        assert (status.state, len(status.gpus)) == (WorkloadState.running, 2)

        answer = await handle.execute_update(
            ContainerWorkflow.delete, WorkloadDelete(user_id="bob", username="bob")
        )
        assert answer.status in (ContainerStatus.deleting, ContainerStatus.deleted)
        assert answer.message == "deleted by bob"
        assert await handle.result() == ContainerStatus.deleted
        assert row(engine, running.id).message == "deleted by bob"
        assert runtime.status(project_id, "container", running.id).state == WorkloadState.gone
        assert (await panel(project)).remaining.gpu == 2


async def test_a_container_beyond_the_free_quota_waits_in_line_and_starts_after_a_delete(
    time_skipping_env: WorkflowEnvironment, engine: Engine, tmp_path: Path
) -> None:
    env, runtime = time_skipping_env, local_runtime(tmp_path)
    async with container_worker(env, engine, runtime) as tq:
        project, project_id = await active_project(env, tq)
        first = await start_container(env, tq, project_id, gpu=2)
        await until(env, first, is_(ContainerStatus.running))

        second = await start_container(env, tq, project_id, gpu=1)
        waiting = await until(env, second, queued)
        assert waiting.queue_position == 1
        assert waiting.message == "waiting for resources: 1 GPU short, position 1"
        third = await start_container(env, tq, project_id, gpu=1)
        behind = await until(env, third, queued)
        assert behind.queue_position == 2
        for _ in range(10):  # the read model follows the workflow's state by one activity
            recorded = row(engine, behind.id)
            if recorded.queue_position is not None:
                break
            await env.sleep(timedelta(seconds=1))
        assert (recorded.status, recorded.queue_position) == (ContainerStatus.waiting, 2)

        # Deleting a queued container drops its request from the line.
        await third.execute_update(ContainerWorkflow.delete, WorkloadDelete(user_id="bob", username="bob"))
        assert await third.result() == ContainerStatus.deleted
        assert [e.resource_id for e in (await panel(project)).queue] == [waiting.id]

        await first.execute_update(ContainerWorkflow.delete, WorkloadDelete(user_id="bob", username="bob"))
        assert await first.result() == ContainerStatus.deleted
        started = await until(env, second, is_(ContainerStatus.running))
        assert started.queue_position is None
        after = await panel(project)
        assert (after.in_use.gpu, after.queue) == (1, [])
        await second.execute_update(ContainerWorkflow.delete, WorkloadDelete(user_id="bob", username="bob"))
        assert await second.result() == ContainerStatus.deleted

        # The richest path (queued, admitted, started, deleted) replays without nondeterminism.
        replayer = Replayer(workflows=[ContainerWorkflow], data_converter=pydantic_data_converter)
        await replayer.replay_workflow(await second.fetch_history())


async def test_a_request_beyond_the_whole_quota_fails_without_a_reservation(
    time_skipping_env: WorkflowEnvironment, engine: Engine, tmp_path: Path
) -> None:
    env = time_skipping_env
    async with container_worker(env, engine, local_runtime(tmp_path)) as tq:
        project, project_id = await active_project(env, tq)
        handle = await start_container(env, tq, project_id, gpu=3)
        assert await handle.result() == ContainerStatus.failed
        state = await handle.query(ContainerWorkflow.describe)
        assert state.reason == "QuotaExceeded" and "1 GPU" in state.message
        assert row(engine, state.id).reason == "QuotaExceeded"
        assert (await panel(project)).queue == []


async def test_the_project_grace_period_deletes_its_containers_through_their_workflows(
    time_skipping_env: WorkflowEnvironment, engine: Engine, tmp_path: Path
) -> None:
    env, runtime = time_skipping_env, local_runtime(tmp_path)
    async with container_worker(env, engine, runtime) as tq:
        project, project_id = await active_project(env, tq, days=1)
        handle = await start_container(env, tq, project_id)
        running = await until(env, handle, is_(ContainerStatus.running))

        # Skipping exactly to the end: awaiting the result would let the server skip past grace too.
        await env.sleep(timedelta(days=1))
        final = await until(env, handle, is_(ContainerStatus.deleted))
        assert final.message == "the project's end date has passed (grace period)"
        assert (await project.query(ProjectWorkflow.view)).state.status == ProjectStatus.grace
        assert (await panel(project)).in_flight.gpu + (await panel(project)).in_use.gpu == 0
        assert runtime.status(project_id, "container", running.id).state == WorkloadState.gone


async def test_a_failed_image_on_kubernetes_surfaces_and_keeps_the_reservation_until_deleted(
    time_skipping_env: WorkflowEnvironment,
    engine: Engine,
    kube_double: KubeDouble,  # noqa: F811
) -> None:
    env = time_skipping_env
    kube_double.knobs.image_pull_failures = ["registry.example/broken*"]
    runtime = KubernetesRuntime(kube_double.api_client, runtime_kinds(), sleep=lambda seconds: None)
    async with container_worker(env, engine, runtime) as tq:
        project, project_id = await active_project(env, tq)
        handle = await start_container(env, tq, project_id, image="registry.example/broken:1")
        failed = await until(env, handle, is_(ContainerStatus.failed))
        assert failed.reason in {"ErrImagePull", "ImagePullBackOff"}
        assert failed.message
        assert row(engine, failed.id).reason == failed.reason
        assert (await panel(project)).in_flight.gpu == 1  # kept until the user deletes it

        await handle.execute_update(ContainerWorkflow.delete, WorkloadDelete(user_id="bob", username="bob"))
        assert await handle.result() == ContainerStatus.deleted
        assert runtime.status(project_id, "container", failed.id).state == WorkloadState.gone
        assert (await panel(project)).remaining.gpu == 2


async def test_a_long_life_continues_as_new_and_keeps_its_state(
    time_skipping_env: WorkflowEnvironment, engine: Engine, tmp_path: Path
) -> None:
    env, runtime = time_skipping_env, local_runtime(tmp_path)
    async with container_worker(env, engine, runtime) as tq:
        project, project_id = await active_project(env, tq)
        end_at = await env.get_current_time() + timedelta(hours=6)
        frequent = TIMINGS.model_copy(update={"check_interval": timedelta(minutes=10)})
        handle = await start_container(
            env, tq, project_id, end_at=end_at, timings=frequent, max_history_events=60
        )
        running = await until(env, handle, is_(ContainerStatus.running))
        await env.sleep(timedelta(hours=3))
        latest = env.client.get_workflow_handle(handle.id)
        assert (await latest.describe()).run_id != handle.first_execution_run_id
        carried = await latest.query(ContainerWorkflow.describe)
        assert (carried.status, carried.registered, carried.running_reported) == (
            ContainerStatus.running,
            True,
            True,
        )
        assert carried.endpoints == running.endpoints
        assert (await panel(project)).in_use.gpu == 1

        assert await handle.result() == ContainerStatus.deleted
        assert row(engine, running.id).status == ContainerStatus.deleted
        assert (await panel(project)).remaining.gpu == 2


def test_an_older_snapshot_never_overwrites_the_read_model(engine: Engine) -> None:
    now = datetime.now(UTC)
    project = new_state(start=now, end=now + timedelta(days=1))
    ensure_users(engine, "alice", "bob")
    ProjectActivities(engine).record_project(project)
    spec = container_spec(project.id, "c0ld", gpu=1)
    newer = ContainerState(
        id="c0ld",
        project_id=project.id,
        owner_id="bob",
        owner="bob",
        name=spec.name,
        spec=spec,
        created_at=now,
        status=ContainerStatus.running,
        version=3,
    )
    records = ContainerRecords(engine)
    records.record_container(newer)
    records.record_container(newer.model_copy(update={"status": ContainerStatus.creating, "version": 2}))
    kept = row(engine, "c0ld")
    assert (kept.status, kept.version, kept.gpu, kept.ports) == (
        ContainerStatus.running,
        3,
        1,
        [{"name": "ssh", "port": 22}],
    )
