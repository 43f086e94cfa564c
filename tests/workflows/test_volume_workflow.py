"""The volume and user-setup workflows in the time-skipping environment: create, sample, expand, and a
project's grace that leaves volumes alone while its deletion deletes them."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.storage import LocalStorage
from activities.user_setup import UserSetupActivities
from models.lifecycle import AdmitRequest, ProjectStatus, Quota
from models.user_setup import SetupStatus, UserSetup, UserSetupInput
from models.volumes import (
    Volume,
    VolumeInput,
    VolumePermission,
    VolumeResize,
    VolumeState,
    VolumeTimings,
    VolumeType,
)
from tests.workflows.project_harness import (
    MailCatcher,
    ensure_users,
    new_state,
    project_worker,
    start_project,
)
from tests.workflows.test_project_workflow import approve
from workflows.project import ProjectWorkflow
from workflows.user_setup import UserSetupWorkflow
from workflows.volume import VolumeWorkflow, volume_workflow_id


def volume_state(project_id: str, name: str, capacity_gb: float | None = None) -> VolumeState:
    return VolumeState(
        id="v" + uuid.uuid4().hex[:9],
        project_id=project_id,
        name=name,
        type=VolumeType.s3 if capacity_gb else VolumeType.nfs,
        capacity_gb=capacity_gb,
        owner="alice",
        owner_id="alice",
        permission=VolumePermission.project_write,
        reserved_gb=capacity_gb or 0,
    )


def row(engine: Engine, volume_id: str) -> Volume:
    with Session(engine) as session:
        found = session.get(Volume, volume_id)
        assert found is not None
        return found


async def test_volumes_outlive_grace_and_go_with_their_project(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    env = time_skipping_env
    now = await env.get_current_time()
    state = new_state(
        start=now - timedelta(minutes=1), end=now + timedelta(days=3), quota=Quota(storage_gb=10)
    )
    async with project_worker(env.client, engine, MailCatcher(), extra_workflows=[VolumeWorkflow]) as tq:
        project = await start_project(env.client, tq, state)
        await approve(project, f"a-{state.id}")
        volume = volume_state(state.id, "data")
        hold = AdmitRequest(
            resource_id=volume.id,
            kind="volume",
            workflow_id=volume_workflow_id(volume.id),
            owner_id="alice",
            request=Quota(),
        )
        panel = await project.execute_update(ProjectWorkflow.hold_storage, hold)
        assert panel.limit.storage_gb == 10
        too_much = hold.model_copy(update={"resource_id": "vbig", "request": Quota(storage_gb=11)})
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await project.execute_update(ProjectWorkflow.hold_storage, too_much)
        assert "10 GB" in str(refused.value.cause)

        handle = await env.client.start_workflow(
            VolumeWorkflow.run,
            VolumeInput(state=volume, timings=VolumeTimings(usage_interval=timedelta(days=2))),
            id=volume_workflow_id(volume.id),
            task_queue=tq,
        )
        await handle.execute_update(VolumeWorkflow.recorded)
        for _ in range(50):
            if row(engine, volume.id).status == "available":
                break
            await env.sleep(timedelta(seconds=1))
        assert row(engine, volume.id).status == "available"
        first = row(engine, volume.id).usage_at
        await env.sleep(timedelta(days=2, minutes=1))
        assert row(engine, volume.id).usage_at != first  # sampled again

        with pytest.raises(WorkflowUpdateFailedError):  # an nfs volume has no capacity to grow
            await handle.execute_update(
                VolumeWorkflow.expand, VolumeResize(capacity_gb=5, requested_by="alice")
            )

        assert await project.result() == ProjectStatus.deleted  # time skips through the end and grace
        assert await handle.result() == "deleted"
        final = row(engine, volume.id)
        assert (final.status, final.message) == ("deleted", "removed with its project")


async def test_user_setup_ends_ready_or_failed_with_the_reason(
    time_skipping_env: WorkflowEnvironment, engine: Engine, tmp_path: Path
) -> None:
    env = time_skipping_env
    ensure_users(engine, "alice", "bob")

    class Broken(LocalStorage):
        def ensure_home(self, username: str) -> str:
            raise ValueError("homes need MLCP_NFS_MOUNT")

    for storage, user, expected in (
        (LocalStorage(tmp_path), "alice", SetupStatus.ready),
        (Broken(tmp_path), "bob", SetupStatus.failed),
    ):
        activities = UserSetupActivities(engine, storage)
        queue = "setup-" + uuid.uuid4().hex[:6]
        async with Worker(
            env.client,
            task_queue=queue,
            workflows=[UserSetupWorkflow],
            activities=[activities.provision_home, activities.record_setup],
            activity_executor=ThreadPoolExecutor(max_workers=2),
        ):
            result = await env.client.execute_workflow(
                UserSetupWorkflow.run,
                UserSetupInput(user_id=user, username=user),
                id=f"setup-{user}-{uuid.uuid4().hex[:4]}",
                task_queue=queue,
            )
        assert result == expected
        with Session(engine) as session:
            setup = session.get(UserSetup, user)
            assert setup is not None and setup.status == expected
            if expected == SetupStatus.failed:
                assert setup.reason == "StorageRefused" and "NFS_MOUNT" in setup.message
    assert (tmp_path / "homes" / "alice").is_dir()
