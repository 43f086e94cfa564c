"""Records the histories that test_replay.py replays: run it again after an intended workflow change.

A project's whole life with an extension and a workload; a container that waits in line, is admitted,
runs and is deleted; a job that runs to success. The workloads run on the Kubernetes API double.

.venv/bin/python -m tests.workflows.record_history            # project, container, job
.venv/bin/python -m tests.workflows.record_history volume     # a volume's life, with its project
.venv/bin/python -m tests.workflows.record_history image      # a custom image's life, with its project
.venv/bin/python -m tests.workflows.record_history cluster    # a training cluster scaled 2 -> 3 -> 2, deleted
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.kube import KubernetesRuntime
from config import register_search_attributes
from models.containers import ContainerStatus
from models.database import make_engine, migrate
from models.jobs import JobStatus
from models.lifecycle import Application, ApplicationType, Decision, WorkloadEvent
from models.workload_lifecycle import WorkloadDelete
from services.kinds import runtime_kinds
from tests.kube_double.double import KubeDouble
from tests.workflows.fake_workload import FakeWorkloadWorkflow
from tests.workflows.project_harness import (
    MailCatcher,
    admit,
    new_state,
    project_worker,
    start_project,
    start_workload,
)
from workflows.container import ContainerWorkflow
from workflows.project import ProjectWorkflow

HISTORIES = Path(__file__).parent / "histories"
HISTORY = HISTORIES / "project_whole_life.json"
CONTAINER_HISTORY = HISTORIES / "container_queued_to_deleted.json"
JOB_HISTORY = HISTORIES / "job_success.json"
VOLUME_HISTORY = HISTORIES / "volume_with_its_project.json"
IMAGE_HISTORY = HISTORIES / "image_commit_with_its_project.json"
CLUSTER_HISTORY = HISTORIES / "cluster_scaled_and_deleted.json"


async def recording_environment() -> WorkflowEnvironment:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=str(Path(sysconfig.get_path("scripts")) / "temporal-test-server"),
    )
    await register_search_attributes(env.client, "default")
    return env


@contextlib.contextmanager
def recording_database() -> Iterator[Engine]:
    """A migrated SQLite database for the read models the recorded workflows write."""
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/history.db"
        migrate(url)
        engine = make_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


async def record() -> None:
    env = await recording_environment()
    with recording_database() as engine:
        now = await env.get_current_time()
        state = new_state(start=now + timedelta(days=1), end=now + timedelta(days=10), project_id="replay1")
        async with project_worker(env.client, engine, MailCatcher(), [FakeWorkloadWorkflow]) as tq:
            handle = await start_project(env.client, tq, state)
            await handle.execute_update(ProjectWorkflow.synced)
            admin = {"admin_id": "root", "admin": "root"}
            await handle.execute_update(
                ProjectWorkflow.decide, Decision(application_id="a-replay1", approve=True, **admin)
            )
            await env.sleep(timedelta(days=2))
            workload, request = await start_workload(env.client, tq, state.id, "r1", gpu=1)
            await admit(handle, workload, request)
            await handle.signal(ProjectWorkflow.workload_running, WorkloadEvent(resource_id="r1"))
            extension = Application(
                id="ext-r",
                type=ApplicationType.extension,
                applicant_id="alice",
                applicant="alice",
                submitted_at=await env.get_current_time(),
                extension_days=5,
            )
            await handle.execute_update(ProjectWorkflow.apply, extension)
            await handle.execute_update(
                ProjectWorkflow.decide, Decision(application_id="ext-r", approve=True, **admin)
            )
            await handle.result()
            history = await handle.fetch_history()
        HISTORY.write_text(history.to_json())
        await record_workloads(env, engine)
    await env.shutdown()


async def record_workloads(env: WorkflowEnvironment, engine: Engine) -> None:
    # Imported here: the test modules' helpers are for recording only, not for replaying.
    from tests.workflows import test_container_workflow as containers
    from tests.workflows import test_job_workflow as jobs

    with KubeDouble() as double:
        runtime = KubernetesRuntime(double.api_client, runtime_kinds(), sleep=lambda seconds: None)
        async with containers.container_worker(env, engine, runtime) as tq:
            _, project_id = await containers.active_project(env, tq)
            first = await containers.start_container(env, tq, project_id, gpu=2)
            await containers.until(env, first, containers.is_(ContainerStatus.running))
            second = await containers.start_container(env, tq, project_id, gpu=1)
            await containers.until(env, second, containers.queued)
            delete = WorkloadDelete(user_id="bob", username="bob")
            await first.execute_update(ContainerWorkflow.delete, delete)
            await containers.until(env, second, containers.is_(ContainerStatus.running))
            await second.execute_update(ContainerWorkflow.delete, delete)
            await second.result()
            CONTAINER_HISTORY.write_text((await second.fetch_history()).to_json())
        double.knobs.run_seconds = 60
        async with jobs.job_worker(env, engine, runtime) as tq:
            _, project_id = await jobs.active_project(env, tq)
            job = await jobs.start_job(env, tq, project_id, 'echo "Hello World!"')
            await jobs.until(env, job, jobs.is_(JobStatus.running))
            double.clock.advance(60)
            await job.result()
            JOB_HISTORY.write_text((await job.fetch_history()).to_json())


async def record_volume() -> None:
    """A volume made, sampled, refused an expand, and deleted with its project (recorded on its own, so the
    older histories stay as they were recorded)."""
    from models.lifecycle import AdmitRequest, Quota
    from models.volumes import VolumeInput, VolumeResize, VolumeTimings
    from tests.workflows.test_project_workflow import approve
    from tests.workflows.test_volume_workflow import volume_state
    from workflows.volume import VolumeWorkflow, volume_workflow_id

    env = await recording_environment()
    with recording_database() as engine:
        now = await env.get_current_time()
        state = new_state(start=now - timedelta(minutes=1), end=now + timedelta(days=3), project_id="replay2")
        async with project_worker(env.client, engine, MailCatcher(), [VolumeWorkflow]) as tq:
            project = await start_project(env.client, tq, state)
            await approve(project, "a-replay2")
            volume = volume_state(state.id, "data")
            hold = AdmitRequest(
                resource_id=volume.id,
                kind="volume",
                workflow_id=volume_workflow_id(volume.id),
                owner_id="alice",
                request=Quota(),
            )
            await project.execute_update(ProjectWorkflow.hold_storage, hold)
            handle = await env.client.start_workflow(
                VolumeWorkflow.run,
                VolumeInput(state=volume, timings=VolumeTimings(usage_interval=timedelta(days=1))),
                id=volume_workflow_id(volume.id),
                task_queue=tq,
            )
            await handle.execute_update(VolumeWorkflow.recorded)
            await env.sleep(timedelta(days=1, hours=1))
            with contextlib.suppress(Exception):  # an nfs volume has no capacity: refused
                await handle.execute_update(
                    VolumeWorkflow.expand, VolumeResize(capacity_gb=5, requested_by="a")
                )
            await project.result()
            await handle.result()
            VOLUME_HISTORY.write_text((await handle.fetch_history()).to_json())
    await env.shutdown()


async def record_image() -> None:
    """A custom image committed, published and waiting, then deleted with its project."""
    from activities.image_commits import ImageCommitActivities
    from models.lifecycle import AdmitRequest, Quota
    from tests.workflows.test_image_commit_workflow import RecordingCommitter, new_input
    from tests.workflows.test_project_workflow import approve
    from workflows.image_commit import ImageCommitWorkflow

    env = await recording_environment()
    with recording_database() as engine:
        now = await env.get_current_time()
        state = new_state(start=now - timedelta(minutes=1), end=now + timedelta(days=3), project_id="replay3")
        activities = ImageCommitActivities(engine, RecordingCommitter()).all()
        async with project_worker(env.client, engine, MailCatcher(), [ImageCommitWorkflow], activities) as tq:
            project = await start_project(env.client, tq, state)
            await approve(project, "a-replay3")
            start = new_input()
            start.state.project_id = start.state.source.project_id = state.id
            workflow_id = f"image-commit-{start.state.id}"
            hold = AdmitRequest(
                resource_id=start.state.id,
                kind="image-commit",
                workflow_id=workflow_id,
                owner_id="a",
                request=Quota(),
            )
            await project.execute_update(ProjectWorkflow.hold_storage, hold)
            handle = await env.client.start_workflow(
                ImageCommitWorkflow.run, start, id=workflow_id, task_queue=tq
            )
            await handle.execute_update(ImageCommitWorkflow.recorded)
            await project.result()  # its end, grace and deletion, which deletes the image
            await handle.result()
            IMAGE_HISTORY.write_text((await handle.fetch_history()).to_json())
    await env.shutdown()


async def record_cluster() -> None:
    """A DeepSpeed cluster of two on the Kubernetes double: running, scaled to three and back, deleted."""
    from models.clusters import ClusterScale, ClusterStatus
    from tests.kube_double.pod_exec import PodFolders
    from tests.workflows.test_cluster_workflow import (
        cluster_worker,
        hosts_are,
        pods_of,
        start_cluster,
        until,
    )
    from tests.workflows.test_container_workflow import active_project
    from workflows.cluster import ClusterWorkflow

    env = await recording_environment()
    with recording_database() as engine, KubeDouble() as double, tempfile.TemporaryDirectory() as pods:
        runtime = KubernetesRuntime(
            double.api_client, runtime_kinds(), sleep=lambda seconds: None, pod_exec=PodFolders(Path(pods))
        )
        async with cluster_worker(env, engine, runtime) as tq:
            _, project_id = await active_project(env, tq, quota=pods_of(3))
            handle = await start_cluster(env, tq, project_id, containers=2)
            await until(env, handle, hosts_are("worker-00"))
            await handle.execute_update(ClusterWorkflow.scale, ClusterScale(containers=3))
            await until(env, handle, hosts_are("worker-00", "worker-01"))
            await handle.execute_update(ClusterWorkflow.scale, ClusterScale(containers=2))
            await until(env, handle, hosts_are("worker-00"))
            await handle.execute_update(ClusterWorkflow.delete, WorkloadDelete(user_id="bob", username="bob"))
            assert await handle.result() == ClusterStatus.deleted
            CLUSTER_HISTORY.write_text((await handle.fetch_history()).to_json())
    await env.shutdown()


RECORDINGS = {"volume": record_volume, "image": record_image, "cluster": record_cluster}

if __name__ == "__main__":
    chosen = sys.argv[1:]
    asyncio.run(RECORDINGS[chosen[0]]() if chosen else record())
