"""Lifecycles on a Kubernetes API that answers one request in ten with a 5xx, and every one of them late."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Engine
from temporalio.testing import WorkflowEnvironment

from activities.kube import KubernetesRuntime
from models.containers import ContainerStatus
from models.jobs import JobStatus
from models.workload_lifecycle import WorkloadDelete
from models.workloads import WorkloadState
from services.kinds import runtime_kinds
from tests.kube_double.double import KubeDouble
from tests.kube_double.fixtures import kube_double  # noqa: F401
from tests.workflows import test_container_workflow as containers
from tests.workflows import test_job_workflow as jobs
from workflows.container import ContainerWorkflow

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
LIFECYCLES = 4  # of each kind


@SQLITE_ONLY
async def test_lifecycles_complete_through_injected_errors_and_latency(
    dev_server_env: WorkflowEnvironment,
    engine: Engine,
    kube_double: KubeDouble,  # noqa: F811
) -> None:
    env = dev_server_env
    kube_double.knobs.error_rate, kube_double.knobs.latency_seconds = 0.1, 0.01
    kube_double.reseed(7)
    runtime = KubernetesRuntime(kube_double.api_client, runtime_kinds(), sleep=lambda seconds: None)
    async with containers.container_worker(env, engine, runtime) as tq:
        _, project_id = await containers.active_project(env, tq)
        handles = [await containers.start_container(env, tq, project_id, gpu=0) for _ in range(LIFECYCLES)]
        for handle in handles:
            await containers.until(env, handle, containers.is_(ContainerStatus.running))
        delete = WorkloadDelete(user_id="bob", username="bob")
        for handle in handles:
            await handle.execute_update(ContainerWorkflow.delete, delete)
        assert await asyncio.gather(*(h.result() for h in handles)) == [ContainerStatus.deleted] * LIFECYCLES
        for handle in handles:
            assert runtime.status(project_id, "container", handle.id.removeprefix("container-")).state == (
                WorkloadState.gone
            )
    async with jobs.job_worker(env, engine, runtime) as tq:
        project, project_id = await jobs.active_project(env, tq)
        started = [await jobs.start_job(env, tq, project_id, "echo done", gpu=0) for _ in range(LIFECYCLES)]
        assert await asyncio.gather(*(h.result() for h in started)) == [JobStatus.succeeded] * LIFECYCLES
        after = await jobs.panel(project)
        assert (after.in_use.vcpu, after.in_flight.vcpu, after.queue) == (0, 0, [])
    stats = kube_double.stats  # the faults really happened, about one in ten
    assert sum(stats.injected_errors.values()) > 0.05 * sum(stats.by_verb.values()) > 5
