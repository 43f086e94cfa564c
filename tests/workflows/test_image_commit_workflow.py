"""ImageCommitWorkflow in the time-skipping environment with a committer that records what it is asked:
a commit published and later deleted, a failure with its reason, and a delete that wins over a commit
still running (cancelled, cleaned up, deleted)."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import Engine
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.image_commits import ImageCommitActivities, ProgressReport, Published, PublishRequest
from activities.runtime import CommitFailed
from models.images import (
    CommitProgress,
    CommitResult,
    CommitSource,
    ImageCommitInput,
    ImageCommitState,
    ImageDelete,
    ImageStatus,
)
from workflows.image_commit import ImageCommitWorkflow


@dataclass
class RecordingCommitter:
    fail: CommitFailed | None = None
    block: bool = False
    calls: list[str] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)

    def commit(self, source: CommitSource, progress: ProgressReport) -> CommitResult:
        self.calls.append("commit")
        self.started.set()
        while self.block:  # until the delete cancels it (the cancellation arrives with a heartbeat)
            progress(CommitProgress(stage="committing", bytes=1))
            time.sleep(0.05)
        if self.fail is not None:
            raise self.fail
        return CommitResult(
            repository="r", internal_tag="commit-x", digest="sha256:d", config_digest="c", size_bytes=9
        )

    def publish(self, request: PublishRequest) -> Published:
        self.calls.append("publish")
        return Published(reference="reg/r@sha256:d", digest="sha256:d", size_bytes=9, notes=["n"])

    def clean_up(self, source: CommitSource) -> None:
        self.calls.append("clean_up")

    def remove(self, request: PublishRequest) -> None:
        self.calls.append("remove")


def new_input() -> ImageCommitInput:
    image_id = "i" + uuid.uuid4().hex[:9]
    source = CommitSource(
        image_id=image_id,
        project_id="p1",
        container_id="c1",
        container_kind="container",
        owner="alice",
        name="model",
        tag="v1",
        base_image="python:3.11",
    )
    return ImageCommitInput(
        state=ImageCommitState(id=image_id, project_id="p1", owner_id="a", owner="alice", source=source)
    )


async def run(
    env: WorkflowEnvironment, engine: Engine, committer: RecordingCommitter
) -> tuple[ImageCommitState, ImageCommitState]:
    queue = "images-" + uuid.uuid4().hex[:6]
    start = new_input()
    with ThreadPoolExecutor(4) as pool:
        async with Worker(
            env.client,
            task_queue=queue,
            workflows=[ImageCommitWorkflow],
            activities=ImageCommitActivities(engine, committer).all(),
            activity_executor=pool,
        ):
            handle = await env.client.start_workflow(
                ImageCommitWorkflow.run, start, id=f"image-commit-{start.state.id}", task_queue=queue
            )
            if committer.block:
                while not committer.started.is_set():
                    await env.sleep(0.1)
            else:
                while (await handle.query(ImageCommitWorkflow.view)).status == ImageStatus.committing:
                    await env.sleep(1)
            before = await handle.query(ImageCommitWorkflow.view)
            await handle.execute_update(ImageCommitWorkflow.delete, ImageDelete(requested_by="alice"))
            assert await handle.result() == ImageStatus.deleted.value
            return before, await handle.query(ImageCommitWorkflow.view)


async def test_a_commit_is_published_then_deleted(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    committer = RecordingCommitter()
    before, after = await run(time_skipping_env, engine, committer)
    assert before.status == ImageStatus.available
    assert committer.calls == ["commit", "publish", "clean_up", "remove"]
    assert (after.reference, after.size_bytes, after.notes) == ("reg/r@sha256:d", 9, ["n"])


async def test_a_failed_commit_says_why_and_is_cleaned_up(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    committer = RecordingCommitter(fail=CommitFailed("PushRefused", "push: denied"))
    before, after = await run(time_skipping_env, engine, committer)
    assert (before.status, before.reason, before.message) == (
        ImageStatus.failed,
        "PushRefused",
        "push: denied",
    )
    assert after.status == ImageStatus.deleted
    assert committer.calls == ["commit", "clean_up", "remove"]  # a permanent failure is not retried


async def test_a_delete_wins_over_a_running_commit(
    time_skipping_env: WorkflowEnvironment, engine: Engine
) -> None:
    committer = RecordingCommitter(block=True)
    before, after = await run(time_skipping_env, engine, committer)
    assert before.status == ImageStatus.committing and after.status == ImageStatus.deleted
    assert committer.calls == ["commit", "clean_up", "remove"]  # cancelled, cleaned up, deleted
