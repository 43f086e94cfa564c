"""VolumeWorkflow: one per volume (`volume-<id>`), from creation to deletion (manual 5.7).

The API holds the volume's capacity in the project's ledger before starting it (so a volume that does not
fit is refused at once, naming the numbers) and the workflow gives it back when the volume is gone. The
workflow creates the bucket or folder with its hard quota (copying the source's files for a clone), then
samples usage every `usage_interval` until an expand or a delete arrives. Volumes are data: the project's
grace period leaves them alone; its deletion deletes them through this workflow (the shutdown notice
says `deleting`), and a cancelled workflow deletes the volume before it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.heartbeat import HEARTBEAT_TIMEOUT
    from activities.storage import VolumePlace
    from activities.volumes import VolumeActivities, VolumeCopy
    from models.lifecycle import WORKLOAD_SHUTDOWN_SIGNAL, ShutdownNotice, WorkloadEvent
    from models.volumes import VolumeDelete, VolumeInput, VolumeResize, VolumeState, VolumeStatus
    from workflows import search_attributes
    from workflows.recording import ReadModel
    from workflows.workload import (
        PROJECT_RELEASE,
        failure_of,
        project_workflow_id,
    )

KIND = "volume"
STORAGE_TIMEOUT = timedelta(hours=2)  # a clone or an emptying copies or removes every object
CHANGE_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=30), maximum_attempts=8)
# Deleting data must finish: it is retried for a long while before the volume is left `unavailable`.
DELETE_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=2), maximum_attempts=40)
MAX_HISTORY_EVENTS = 5_000


def volume_workflow_id(volume_id: str) -> str:
    return f"{KIND}-{volume_id}"


@workflow.defn
class VolumeWorkflow:
    @workflow.init
    def __init__(self, input: VolumeInput) -> None:
        self._state: VolumeState = input.state
        self._timings = input.timings
        self._read_model = ReadModel(VolumeActivities.record_volume)
        self._resizes: list[VolumeResize] = []
        self._resized: list[VolumeResize] = []  # done, for the updates waiting on them
        self._wakeups = 0

    @workflow.run
    async def run(self, input: VolumeInput) -> str:
        state = self._state
        search_attributes.announce(state.project_id, state.owner, KIND, state.status.value)
        try:
            await self._record()
            if state.status == VolumeStatus.creating and not state.delete_requested_by:
                await self._create()
            while not state.delete_requested_by:
                await self._record()
                if self._should_continue_as_new():
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    await self._record()
                    workflow.continue_as_new(VolumeInput(state=state, timings=self._timings))
                await self._next_change()
            await self._delete()
        except asyncio.CancelledError:
            # Cancelled (an operator, or a project deletion out of patience): the data goes all the same.
            if state.status != VolumeStatus.deleted:
                state.delete_requested_by = state.delete_requested_by or "cancellation"
                await self._delete()
            raise
        await workflow.wait_condition(workflow.all_handlers_finished)
        return state.status.value

    # ---- steps -------------------------------------------------------------------------------

    def _place(self, capacity_gb: float | None = None) -> VolumePlace:
        state = self._state
        return VolumePlace(
            project_id=state.project_id,
            volume_id=state.id,
            type=state.type.value,
            capacity_gb=capacity_gb if capacity_gb is not None else state.capacity_gb,
            clone_of=state.cloned_from,
        )

    async def _create(self) -> None:
        state = self._state
        try:
            ready = await self._storage(VolumeActivities.create_volume, self._place(), CHANGE_RETRY)
            state.bucket, state.quota_note = ready.bucket, ready.quota_note
            if state.cloned_from:
                self._set(VolumeStatus.creating, "", f"copying the files of volume {state.cloned_from}")
                await self._record()
                source = self._place().model_copy(update={"volume_id": state.cloned_from, "clone_of": None})
                await self._storage(
                    VolumeActivities.copy_volume,
                    VolumeCopy(source=source, target=self._place()),
                    CHANGE_RETRY,
                )
        except ActivityError as error:
            reason, message = failure_of(error)
            self._set(VolumeStatus.unavailable, reason, message)
            return
        self._set(VolumeStatus.available, "", state.quota_note)
        await self._measure()

    async def _next_change(self) -> None:
        state = self._state
        wakeups = self._wakeups
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self._wakeups != wakeups or bool(state.delete_requested_by),
                timeout=self._timings.usage_interval,
            )
        if state.delete_requested_by:
            return
        resized = []
        while self._resizes:
            resize = self._resizes.pop(0)
            await self._resize(resize)
            resized.append(resize)
        if not resized and state.status != VolumeStatus.creating:
            await self._measure()
        await self._record()
        self._resized += resized

    async def _resize(self, resize: VolumeResize) -> None:
        state = self._state
        try:
            note = await self._storage(
                VolumeActivities.resize_volume, self._place(resize.capacity_gb), CHANGE_RETRY
            )
        except ActivityError as error:
            reason, message = failure_of(error)
            self._set(state.status, reason, f"expanding to {resize.capacity_gb:g} GB failed: {message}")
            return
        state.capacity_gb, state.reserved_gb, state.quota_note = resize.capacity_gb, resize.capacity_gb, note
        self._set(state.status, "", f"expanded to {resize.capacity_gb:g} GB by {resize.requested_by}")

    async def _measure(self) -> None:
        state = self._state
        try:
            usage = await self._storage(
                VolumeActivities.measure_volume, self._place(), RetryPolicy(maximum_attempts=3)
            )
        except ActivityError:
            return  # a missed sample is taken again next time
        state.usage_bytes, state.usage_at = usage.usage_bytes, workflow.now()
        if usage.over_quota != state.over_quota:
            state.over_quota = usage.over_quota
            if usage.over_quota:
                self._set(
                    state.status,
                    "OverQuota",
                    f"over quota: {usage.usage_bytes} bytes stored, above its {state.capacity_gb:g} GB; "
                    "writes are refused until files are removed or the volume is expanded",
                )
            else:
                self._set(state.status, "", state.quota_note)
        self._state.version += 1

    async def _delete(self) -> None:
        state = self._state
        self._set(VolumeStatus.deleting, "", f"deleted by {state.delete_requested_by}")
        await self._record()
        try:
            await self._storage(VolumeActivities.delete_volume, self._place(), DELETE_RETRY)
        except ActivityError as error:
            reason, message = failure_of(error)
            self._set(VolumeStatus.unavailable, reason, f"could not be deleted: {message}")
            await self._record()
            raise ApplicationError(f"volume {state.id} could not be deleted: {message}") from error
        project = workflow.get_external_workflow_handle(project_workflow_id(state.project_id))
        with contextlib.suppress(Exception):  # a project already gone holds no reservation
            await project.signal(PROJECT_RELEASE, WorkloadEvent(resource_id=state.id))
        state.reserved_gb = 0
        reason = state.delete_reason or f"deleted by {state.delete_requested_by}"
        self._set(VolumeStatus.deleted, "", reason)
        await self._record()

    # ---- plumbing ----------------------------------------------------------------------------

    async def _storage(self, activity: Any, argument: object, retry: RetryPolicy) -> Any:
        return await workflow.execute_activity(
            activity,
            argument,
            start_to_close_timeout=STORAGE_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=retry,
        )

    def _set(self, status: VolumeStatus, reason: str, message: str) -> None:
        state = self._state
        if status != state.status:
            search_attributes.status_changed(status.value)
        state.status, state.reason, state.message = status, reason, message
        state.version += 1

    async def _record(self) -> None:
        await self._read_model.record(self._state)

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() > MAX_HISTORY_EVENTS

    # ---- updates and signals -------------------------------------------------------------------

    @workflow.update
    async def recorded(self) -> VolumeState:
        """Answers once the row exists; the API creates volumes with update-with-start on it."""
        await workflow.wait_condition(lambda: self._read_model.version >= 0)
        return self._state

    @workflow.update
    async def expand(self, resize: VolumeResize) -> VolumeState:
        self._resizes.append(resize)
        self._wakeups += 1
        await workflow.wait_condition(lambda: resize in self._resized)
        self._resized.remove(resize)
        return self._state

    @expand.validator
    def validate_expand(self, resize: VolumeResize) -> None:
        state = self._state
        if state.delete_requested_by or state.status not in (
            VolumeStatus.available,
            VolumeStatus.unavailable,
        ):
            raise ApplicationError(
                f"volume {state.id} is {state.status.value}; it can be expanded once available",
                type="Conflict",
                non_retryable=True,
            )
        if state.capacity_gb is None or resize.capacity_gb <= state.capacity_gb:
            raise ApplicationError(
                f"capacity_gb: a volume only grows; it has {state.capacity_gb:g} GB, {resize.capacity_gb:g} "
                "GB is not more",
                type="Invalid",
                non_retryable=True,
            )

    @workflow.update
    async def delete(self, request: VolumeDelete) -> VolumeState:
        """Begin the deletion; answers once `deleting` is recorded (the data goes after)."""
        state = self._state
        if not state.delete_requested_by:
            state.delete_requested_by, state.delete_reason = request.requested_by, request.reason
            self._wakeups += 1
        await workflow.wait_condition(
            lambda: (
                state.status in (VolumeStatus.deleting, VolumeStatus.deleted)
                and self._read_model.shows(state)
            )
        )
        return state

    @workflow.signal(name=WORKLOAD_SHUTDOWN_SIGNAL)
    def project_shutdown(self, notice: ShutdownNotice) -> None:
        # Grace leaves data alone: only the project's deletion deletes its volumes.
        if notice.reason == "deleting" and not self._state.delete_requested_by:
            self._state.delete_requested_by = "the project's deletion"
            self._state.delete_reason = "removed with its project"
            self._wakeups += 1

    @workflow.query
    def view(self) -> VolumeState:
        return self._state
