"""ImageCommitWorkflow: one per custom image (`image-commit-<id>`), from the commit to the image's deletion.

The commit runs as one heartbeating activity (its stage and bytes show in the Temporal UI's pending
activity and on the image's row), then the result is published under the user's tag and checked, and
whatever the commit left behind (a Kubernetes Job) is always cleaned up. The workflow then waits, at no
cost, for the image's deletion: a delete arriving mid-commit cancels the commit first, so a delete always
wins. The project's deletion deletes its images the same way (they hold nothing in its ledger, but are in
it so its shutdown notice reaches them); its grace period leaves them alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.heartbeat import HEARTBEAT_TIMEOUT
    from activities.image_commits import ImageCommitActivities, PublishRequest
    from models.images import (
        CommitResult,
        ImageCommitInput,
        ImageCommitState,
        ImageDelete,
        ImageStatus,
    )
    from models.lifecycle import WORKLOAD_SHUTDOWN_SIGNAL, ShutdownNotice, WorkloadEvent
    from workflows import search_attributes
    from workflows.recording import ReadModel
    from workflows.workload import (
        PROJECT_RELEASE,
        failure_of,
        project_workflow_id,
    )

KIND = "image-commit"
COMMIT_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=30), maximum_attempts=3)
STEP_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=30), maximum_attempts=10)
STEP_TIMEOUT = timedelta(minutes=30)  # publishing copies nothing: it checks and tags a manifest


@workflow.defn
class ImageCommitWorkflow:
    @workflow.init
    def __init__(self, input: ImageCommitInput) -> None:
        self._state: ImageCommitState = input.state
        self._timings = input.timings
        self._read_model = ReadModel(ImageCommitActivities.record_image)

    @workflow.run
    async def run(self, input: ImageCommitInput) -> str:
        state = self._state
        search_attributes.announce(state.project_id, state.owner, KIND, state.status.value)
        try:
            await self._record()
            if state.status == ImageStatus.committing and not state.delete_requested_by:
                await self._until_deleted(self._commit())
            await workflow.wait_condition(lambda: bool(state.delete_requested_by))
            await self._delete()
        except asyncio.CancelledError:
            if state.status != ImageStatus.deleted:  # cancelled by an operator: the image goes all the same
                state.delete_requested_by = state.delete_requested_by or "cancellation"
                await self._delete()
            raise
        await workflow.wait_condition(workflow.all_handlers_finished)
        return state.status.value

    # ---- steps -------------------------------------------------------------------------------

    async def _until_deleted(self, commit: Coroutine[Any, Any, None]) -> None:
        """Run the commit unless a delete arrives first; then it is cancelled (and cleaned up)."""
        task = asyncio.ensure_future(commit)
        try:
            await workflow.wait_condition(lambda: task.done() or bool(self._state.delete_requested_by))
        finally:
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _commit(self) -> None:
        state = self._state
        try:
            self._set(ImageStatus.committing, "committing", "", "capturing the container's files")
            await self._record()
            if state.result is None:
                state.result = await workflow.execute_activity_method(
                    ImageCommitActivities.commit_container,
                    state.source,
                    start_to_close_timeout=self._timings.commit_timeout,
                    heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    retry_policy=COMMIT_RETRY,
                )
            self._set(ImageStatus.committing, "publishing", "", "checking and tagging the pushed image")
            await self._record()
            published = await workflow.execute_activity_method(
                ImageCommitActivities.publish_image,
                PublishRequest(source=state.source, result=state.result),
                start_to_close_timeout=STEP_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=STEP_RETRY,
            )
            state.reference, state.digest = published.reference, published.digest
            state.size_bytes, state.notes = published.size_bytes, published.notes
            self._set(
                ImageStatus.available, "done", "", f"committed from container {state.source.container_id}"
            )
        except ActivityError as error:
            reason, message = failure_of(error)
            self._set(ImageStatus.failed, "failed", reason, message)
        finally:
            # Whatever the commit left (its Job, a scratch copy) goes, even when the commit was cancelled.
            await self._clean_up()
            await self._record()

    async def _clean_up(self) -> None:
        with contextlib.suppress(ActivityError):
            await self._step(ImageCommitActivities.clean_up_commit, self._state.source)

    async def _delete(self) -> None:
        state = self._state
        self._set(ImageStatus.deleting, "deleting", "", f"deleted by {state.delete_requested_by}")
        await self._record()
        try:
            await self._step(
                ImageCommitActivities.delete_image,
                PublishRequest(source=state.source, result=state.result or _nothing(state)),
            )
        except ActivityError as error:
            reason, message = failure_of(error)
            self._set(ImageStatus.failed, "deleting", reason, f"could not be deleted: {message}")
            await self._record()
            raise ApplicationError(f"image {state.id} could not be deleted: {message}") from error
        project = workflow.get_external_workflow_handle(project_workflow_id(state.project_id))
        with contextlib.suppress(Exception):  # a project already gone holds nothing for it
            await project.signal(PROJECT_RELEASE, WorkloadEvent(resource_id=state.id))
        self._set(ImageStatus.deleted, "deleted", "", f"deleted by {state.delete_requested_by}")
        await self._record()

    # ---- plumbing ----------------------------------------------------------------------------

    async def _step(self, activity: Any, argument: object) -> None:
        await workflow.execute_activity_method(
            activity,
            argument,
            start_to_close_timeout=STEP_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=STEP_RETRY,
        )

    def _set(self, status: ImageStatus, stage: str, reason: str, message: str) -> None:
        state = self._state
        if status != state.status:
            search_attributes.status_changed(status.value)
        state.status, state.stage, state.reason, state.message = status, stage, reason[:128], message[:2000]
        state.version += 1

    async def _record(self) -> None:
        await self._read_model.record(self._state)

    # ---- updates and signals -------------------------------------------------------------------

    @workflow.update
    async def recorded(self) -> ImageCommitState:
        """Answers once the row is the workflow's; the API starts commits with update-with-start on it."""
        await workflow.wait_condition(lambda: self._read_model.version >= 0)
        return self._state

    @workflow.update
    async def delete(self, request: ImageDelete) -> ImageCommitState:
        """Begin the deletion; answers once `deleting` is recorded."""
        state = self._state
        if not state.delete_requested_by:
            state.delete_requested_by = request.requested_by
        await workflow.wait_condition(
            lambda: (
                state.status in (ImageStatus.deleting, ImageStatus.deleted) and self._read_model.shows(state)
            )
        )
        return state

    @workflow.signal(name=WORKLOAD_SHUTDOWN_SIGNAL)
    def project_shutdown(self, notice: ShutdownNotice) -> None:
        if notice.reason == "deleting" and not self._state.delete_requested_by:
            self._state.delete_requested_by = "the project's deletion"

    @workflow.query
    def view(self) -> ImageCommitState:
        return self._state


def _nothing(state: ImageCommitState) -> CommitResult:
    """A commit that never finished: only its internal tag may exist."""
    return CommitResult(
        repository="", internal_tag=f"commit-{state.id}", digest="", config_digest="", size_bytes=0
    )
