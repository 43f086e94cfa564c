"""ClusterWorkflow beside a real ProjectWorkflow, in the time-skipping environment, on the Kubernetes double:
per-pod reservations with a queue, the hostfile only after Ready and a worker out of it before its delete,
every runtime call twice, a lost worker re-created, scaling under a concurrent delete, the end time, grace."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes import client as kube
from sqlalchemy import Engine
from sqlmodel import Session
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.clusters import ClusterActivities
from activities.kube import KubernetesRuntime
from activities.runtime import namespace_name
from models.clusters import (
    Cluster,
    ClusterHosts,
    ClusterInput,
    ClusterScale,
    ClusterState,
    ClusterStatus,
    ClusterTimings,
    ClusterType,
)
from models.lifecycle import Quota
from models.workload_lifecycle import WorkloadDelete
from models.workloads import ResourceRequest, WorkloadSpec, WorkloadStatus
from services.kinds import runtime_kinds
from tests.kube_double.double import KubeDouble
from tests.kube_double.fixtures import kube_double  # noqa: F401
from tests.kube_double.pod_exec import PodFolders
from tests.specs import cluster_spec
from tests.workflows.project_harness import workload_worker
from tests.workflows.test_container_workflow import active_project, panel
from workflows.cluster import ClusterWorkflow, workflow_id

POD = ResourceRequest(vcpu=2, ram_gb=4)
TIMINGS = ClusterTimings(
    first_poll=timedelta(seconds=1),
    max_poll=timedelta(seconds=4),
    ready_max_poll=timedelta(seconds=2),
    check_interval=timedelta(seconds=10),
)
# Hours pass in the end-time test: looks as rare as a running cluster's, so skipping them stays cheap.
RARE = TIMINGS.model_copy(update={"check_interval": timedelta(hours=1)})
Handle = WorkflowHandle[Any, Any]


def pods_of(quota_pods: int) -> Quota:
    return Quota(gpu=0, vcpu=POD.vcpu * quota_pods, ram_gb=POD.ram_gb * quota_pods, storage_gb=10)


class Recorder:
    """The runtime as the workflow sees it, with a log of what it did and, optionally, every change twice."""

    def __init__(self, runtime: KubernetesRuntime, double: KubeDouble, twice: bool = False) -> None:
        self.runtime, self.double, self.twice = runtime, double, twice
        self.name = runtime.name
        self.log: list[tuple[str, Any]] = []
        self.published: list[ClusterHosts] = []

    def _again(self, call: Callable[[], Any]) -> Any:
        result = call()
        return call() if self.twice else result

    def ready_pods(self, project_id: str) -> set[str]:
        pods = self.runtime.list_objects("Pod", namespace_name(project_id), {})
        return {
            str(pod["spec"]["hostname"])
            for pod in pods
            if not pod["metadata"].get("deletionTimestamp")
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (pod.get("status") or {}).get("conditions") or []
            )
        }

    def ensure_project(self, environment: Any) -> None:
        self._again(lambda: self.runtime.ensure_project(environment))

    def delete_project(self, project_id: str) -> None:
        self._again(lambda: self.runtime.delete_project(project_id))

    def apply(self, spec: WorkloadSpec) -> WorkloadStatus:
        self.log.append(("apply", spec.cluster.member if spec.cluster else spec.resource_id))
        return self._again(lambda: self.runtime.apply(spec))

    def status(self, project_id: str, kind: str, resource_id: str) -> WorkloadStatus:
        return self.runtime.status(project_id, kind, resource_id)

    def logs(self, project_id: str, kind: str, resource_id: str, tail_lines: int = 200) -> str:
        return self.runtime.logs(project_id, kind, resource_id, tail_lines)

    def events(self, project_id: str, kind: str, resource_id: str) -> list[Any]:
        return self.runtime.events(project_id, kind, resource_id)

    def delete(self, project_id: str, kind: str, resource_id: str) -> None:
        member = resource_id.split("-", 1)[1]
        self.log.append(("delete", member))
        # Scale-in takes a worker out of the hostfile before it goes.
        assert not self.published or member not in self.published[-1].hosts, (member, self.published[-1])
        self._again(lambda: self.runtime.delete(project_id, kind, resource_id))

    def prepare_cluster(self, place: Any) -> str:
        return self._again(lambda: self.runtime.prepare_cluster(place))

    def publish_hosts(self, hosts: ClusterHosts) -> None:
        # Only workers that are Ready are ever published.
        assert set(hosts.hosts) <= self.ready_pods(hosts.project_id), hosts.hosts
        self.log.append(("publish", list(hosts.hosts)))
        self.published.append(hosts)
        self._again(lambda: self.runtime.publish_hosts(hosts))

    def delete_cluster(self, project_id: str, cluster_id: str) -> bool:
        return self._again(lambda: self.runtime.delete_cluster(project_id, cluster_id))


def cluster_worker(
    env: WorkflowEnvironment, engine: Engine, runtime: Any
) -> AbstractAsyncContextManager[str]:
    return workload_worker(
        env.client, engine, runtime, ClusterWorkflow, ClusterActivities(engine, runtime).all()
    )


async def start_cluster(
    env: WorkflowEnvironment,
    task_queue: str,
    project_id: str,
    containers: int,
    end_at: datetime | None = None,
    timings: ClusterTimings = TIMINGS,
) -> Handle:
    cluster_id = "k" + uuid.uuid4().hex[:9]
    request = ClusterInput(
        id=cluster_id,
        project_id=project_id,
        owner_id="bob",
        owner="bob",
        spec=cluster_spec(
            project_id=project_id, cluster_id=cluster_id, workers=containers - 1, resources=POD
        ),
        created_at=await env.get_current_time(),
        type=ClusterType.deepspeed,
        end_at=end_at,
        timings=timings,
    )
    return await env.client.start_workflow(
        ClusterWorkflow.run, request, id=workflow_id(cluster_id), task_queue=task_queue
    )


async def until(
    env: WorkflowEnvironment, handle: Handle, ready: Callable[[ClusterState], bool], attempts: int = 60
) -> ClusterState:
    state: ClusterState = await handle.query(ClusterWorkflow.describe)
    for _ in range(attempts):
        if ready(state):
            return state
        await env.sleep(timedelta(seconds=2))
        state = await handle.query(ClusterWorkflow.describe)
    pods = [(m.name, m.phase.value, m.reason, m.message) for m in state.members]
    raise AssertionError(f"never got there: {state.status} {state.reason} {state.message} {pods}")


def hosts_are(*hosts: str) -> Callable[[ClusterState], bool]:
    return lambda state: state.status == ClusterStatus.running and state.hosts == list(hosts)


def kube_runtime(double: KubeDouble, folders: PodFolders, twice: bool = False) -> Recorder:
    runtime = KubernetesRuntime(
        double.api_client, runtime_kinds(), sleep=lambda seconds: None, pod_exec=folders
    )
    return Recorder(runtime, double, twice)


def world(double: KubeDouble, project_id: str) -> dict[str, list[str]]:
    runtime = KubernetesRuntime(double.api_client, runtime_kinds(), sleep=lambda seconds: None)
    namespace = namespace_name(project_id)
    return {
        kind: sorted(str(item["metadata"]["name"]) for item in runtime.list_objects(kind, namespace, {}))
        for kind in ("Pod", "Secret", "Service", "ConfigMap")
    }


def row(engine: Engine, cluster_id: str) -> Cluster:
    with Session(engine) as session:
        found = session.get(Cluster, cluster_id)
        assert found is not None
        return found


async def delete(handle: Handle) -> ClusterStatus:
    await handle.execute_update(ClusterWorkflow.delete, WorkloadDelete(user_id="bob", username="bob"))
    return ClusterStatus(await handle.result())


async def test_a_worker_beyond_the_quota_waits_and_joins_the_hostfile_when_quota_frees(
    time_skipping_env: WorkflowEnvironment,
    engine: Engine,
    kube_double: KubeDouble,  # noqa: F811
    tmp_path: Path,
) -> None:
    env, runtime = time_skipping_env, kube_runtime(kube_double, PodFolders(tmp_path))
    async with cluster_worker(env, engine, runtime) as tq:
        project, project_id = await active_project(env, tq, quota=pods_of(5))
        other = await start_cluster(env, tq, project_id, containers=2)
        await until(env, other, hosts_are("worker-00"))
        handle = await start_cluster(env, tq, project_id, containers=4)
        state = await until(env, handle, hosts_are("worker-00", "worker-01"))
        queued = next(m for m in state.members if m.name == "worker-02")
        assert (queued.phase.value, queued.queue_position) == ("queued", 1)
        assert (state.launcher_ready, state.workers_ready, state.workers_total) == (1, 2, 3)
        assert "1 worker(s) wait for quota" in state.message
        recorded = row(engine, state.id)
        assert recorded.hosts == ["worker-00", "worker-01"] and recorded.workers_ready == 2
        published = runtime.published[-1]
        assert (published.type, published.slots) == (ClusterType.deepspeed, 1)

        assert await delete(other) == ClusterStatus.deleted
        state = await until(env, handle, hosts_are("worker-00", "worker-01", "worker-02"))
        assert state.hostfile_generation == len([p for p in runtime.published if p.cluster_id == state.id])
        assert (await panel(project)).queue == []

        assert await delete(handle) == ClusterStatus.deleted
        after = await panel(project)
        assert (after.in_use.vcpu, after.in_flight.vcpu) == (0, 0)
        assert world(kube_double, project_id)["Pod"] == []


async def test_every_runtime_call_twice_leaves_the_same_world_and_a_lost_worker_comes_back(
    time_skipping_env: WorkflowEnvironment,
    engine: Engine,
    kube_double: KubeDouble,  # noqa: F811
    tmp_path: Path,
) -> None:
    folders = PodFolders(tmp_path)
    env, runtime = time_skipping_env, kube_runtime(kube_double, folders, twice=True)
    async with cluster_worker(env, engine, runtime) as tq:
        _, project_id = await active_project(env, tq, quota=pods_of(3))
        handle = await start_cluster(env, tq, project_id, containers=3)
        state = await until(env, handle, hosts_are("worker-00", "worker-01"))
        name = f"cluster-{state.id}"
        objects = world(kube_double, project_id)
        assert objects["Pod"] == [f"{name}-launcher", f"{name}-worker-00", f"{name}-worker-01"]
        assert objects["ConfigMap"].count(name) == 1 and objects["Secret"].count(f"{name}-ssh") == 1
        # Each change of the hosts is one generation, written once however often its call is repeated.
        assert state.hostfile_generation == len(runtime.published)
        launcher = folders.folder(namespace_name(project_id), f"{name}-launcher")
        assert (launcher / "generation").read_text() == f"{state.hostfile_generation}\n"
        assert (launcher / "hostfile").read_text() == "worker-00 slots=1\nworker-01 slots=1\n"

        # A worker pod killed behind the platform's back is made again and comes back into the hostfile.
        kube.CoreV1Api(kube_double.api_client).delete_namespaced_pod(
            f"{name}-worker-01", namespace_name(project_id), grace_period_seconds=0
        )

        def recreated(state: ClusterState) -> bool:
            worker = next(m for m in state.members if m.name == "worker-01")
            return worker.restarts == 1 and hosts_are("worker-00", "worker-01")(state)

        back = await until(env, handle, recreated)
        # It left the hostfile while it was gone, and came back once Ready again.
        assert runtime.log.index(("publish", ["worker-00"])) < len(runtime.log) - 1
        assert runtime.log[-1] == ("publish", ["worker-00", "worker-01"])
        assert next(m for m in back.members if m.name == "worker-01").restarts == 1
        assert await delete(handle) == ClusterStatus.deleted
        assert world(kube_double, project_id)["Pod"] == []


async def test_scaling_out_and_in_follows_the_hostfile_rules_and_a_delete_wins(
    time_skipping_env: WorkflowEnvironment,
    engine: Engine,
    kube_double: KubeDouble,  # noqa: F811
    tmp_path: Path,
) -> None:
    env, runtime = time_skipping_env, kube_runtime(kube_double, PodFolders(tmp_path))
    async with cluster_worker(env, engine, runtime) as tq:
        project, project_id = await active_project(env, tq, quota=pods_of(6))
        handle = await start_cluster(env, tq, project_id, containers=2)
        await until(env, handle, hosts_are("worker-00"))
        answer = await handle.execute_update(ClusterWorkflow.scale, ClusterScale(containers=4))
        assert answer.containers == 4
        state = await until(env, handle, hosts_are("worker-00", "worker-01", "worker-02"))
        assert state.containers == 4 and state.workers_total == 3
        # The new workers were applied before they were published, and published only once Ready.
        applied = [entry for entry in runtime.log if entry == ("apply", "worker-02")]
        assert applied and runtime.log.index(applied[0]) < runtime.log.index(
            ("publish", ["worker-00", "worker-01", "worker-02"])
        )

        await handle.execute_update(ClusterWorkflow.scale, ClusterScale(containers=2))
        state = await until(env, handle, hosts_are("worker-00"))
        assert [m.name for m in state.members] == ["launcher", "worker-00"]
        out = runtime.log.index(("publish", ["worker-00"]))
        assert (
            runtime.log.index(("delete", "worker-02")) > out
            and runtime.log.index(("delete", "worker-01")) > out
        )
        assert (await panel(project)).in_use.vcpu + (await panel(project)).in_flight.vcpu == 2 * POD.vcpu

        # Scale out again and delete at once: the delete wins, nothing is left, everything is released.
        scaling = asyncio.create_task(
            handle.execute_update(ClusterWorkflow.scale, ClusterScale(containers=4))
        )
        assert await delete(handle) == ClusterStatus.deleted
        await asyncio.gather(scaling, return_exceptions=True)
        assert world(kube_double, project_id)["Pod"] == []
        after = await panel(project)
        assert (after.in_use.vcpu, after.in_flight.vcpu, after.queue) == (0, 0, [])
        assert row(engine, state.id).status == ClusterStatus.deleted


async def test_the_end_time_and_the_project_grace_period_delete_it(
    time_skipping_env: WorkflowEnvironment,
    engine: Engine,
    kube_double: KubeDouble,  # noqa: F811
    tmp_path: Path,
) -> None:
    env, runtime = time_skipping_env, kube_runtime(kube_double, PodFolders(tmp_path))
    async with cluster_worker(env, engine, runtime) as tq:
        project, project_id = await active_project(env, tq, quota=pods_of(4), days=1)
        ends = await start_cluster(
            env,
            tq,
            project_id,
            containers=2,
            timings=RARE,
            end_at=await env.get_current_time() + timedelta(hours=2),
        )
        lasts = await start_cluster(env, tq, project_id, containers=2, timings=RARE)
        await until(env, lasts, hosts_are("worker-00"))
        await env.sleep(timedelta(hours=2))
        final = await until(env, ends, lambda s: s.status == ClusterStatus.deleted)
        assert final.message == "its end time has come"

        await env.sleep(timedelta(days=1))
        graced = await until(env, lasts, lambda s: s.status == ClusterStatus.deleted)
        assert graced.message == "the project's end date has passed (grace period)"
        assert world(kube_double, project_id)["Pod"] == []
        after = await panel(project)
        assert (after.in_use.vcpu, after.in_flight.vcpu) == (0, 0)
