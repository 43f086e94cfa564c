"""ContainerWorkflow: one per container, from its start time to deletion (manual 5.4.1-5.4.3).

The main loop looks at the state and does the next step: wait for the start time, ask the project for
quota (and wait in its queue), apply the workload, watch it start, hold it until its end time, a delete
or the project's shutdown, then delete it and give the reservation back. Every step is recorded.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.containers import ContainerRecords
    from models.containers import (
        ContainerDelete,
        ContainerInput,
        ContainerState,
        ContainerStatus,
        ContainerTimings,
    )
    from models.workloads import WorkloadState, WorkloadStatus
    from workflows.workload import POLL_BACKOFF, SHORT_TIMEOUT, WorkloadLifecycle

SHUTDOWN_MESSAGES = {
    "grace": "the project's end date has passed (grace period)",
    "deleting": "the project is being deleted",
}


def workflow_id(container_id: str) -> str:
    return f"container-{container_id}"


@workflow.defn
class ContainerWorkflow(WorkloadLifecycle):
    kind = "container"
    waiting = ContainerStatus.waiting
    failed = ContainerStatus.failed
    _state: ContainerState
    _timings: ContainerTimings

    @workflow.init
    def __init__(self, input: ContainerInput) -> None:
        self._input = input
        self._timings = input.timings
        self._max_history_events = input.max_history_events
        self._state = input.resume or ContainerState(
            id=input.id,
            project_id=input.project_id,
            owner_id=input.owner_id,
            owner=input.owner,
            name=input.spec.name,
            spec_id=input.spec_id,
            spec=input.spec,
            start_at=input.start_at,
            end_at=input.end_at,
            created_at=input.created_at,
        )
        self._poll_delay = self._timings.first_poll
        self._begin()

    # ---- main loop -------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: ContainerInput) -> ContainerStatus:
        state = self._state
        self._announce()
        while True:
            await self._record()
            if state.status == ContainerStatus.deleted or (
                state.status == ContainerStatus.failed and not state.registered
            ):
                await workflow.wait_condition(workflow.all_handlers_finished)
                await self._record()
                return state.status
            stopping = self._stop_reason() is not None or state.status == ContainerStatus.deleting
            if not stopping and self._should_continue_as_new():
                # A delete arriving meanwhile waits for the teardown, so it must not hold this up.
                await workflow.wait_condition(
                    lambda: workflow.all_handlers_finished() or self._stop_reason() is not None
                )
                if self._stop_reason() is None:
                    await self._record()
                    workflow.continue_as_new(self._input.model_copy(update={"resume": self._state}))
                continue
            if stopping:
                await self._tear_down()
            elif state.status == ContainerStatus.scheduled:
                await self._start_when_due()
            elif state.status == ContainerStatus.waiting:
                if await self._wait_for_admission():
                    self._set(ContainerStatus.creating, "", "admitted: starting")
            elif state.status == ContainerStatus.creating and not state.applied:
                status = await self._apply_workload()
                self._poll_delay = self._timings.first_poll
                if status is not None:
                    await self._follow(status)
            elif state.status == ContainerStatus.creating:
                await self._wait_for(lambda: False, self._poll_delay)
                self._poll_delay = min(self._poll_delay * POLL_BACKOFF, self._timings.max_poll)
                await self._follow(await self._runtime_status())
            else:  # running or failed: look rarely, keep the reservation until deleted
                await self._wait_for(lambda: False, self._timings.check_interval)
                await self._follow(await self._runtime_status())

    def _stop_reason(self) -> str | None:
        state = self._state
        if state.delete_requested_by:
            return f"deleted by {state.delete_requested_by}"
        if state.shutdown_reason:
            return SHUTDOWN_MESSAGES.get(state.shutdown_reason, f"the project is {state.shutdown_reason}")
        if state.end_at is not None and workflow.now() >= state.end_at:
            return "its end time has come"
        return None

    def _deadline(self, wake_in: timedelta | None) -> datetime | None:
        """Waits also end at the container's end time."""
        times = [t for t in (self._state.end_at, super()._deadline(wake_in)) if t is not None]
        return min(times) if times else None

    # ---- steps -----------------------------------------------------------------------------

    async def _start_when_due(self) -> None:
        state = self._state
        if state.start_at is not None and workflow.now() < state.start_at:
            self._set(ContainerStatus.scheduled, "", f"starts at {state.start_at:%Y-%m-%d %H:%M} UTC")
            await self._record()
            await self._wait_for(lambda: False, state.start_at - workflow.now())
            return
        if not state.admission_requested:
            await self._request_admission()

    async def _follow(self, status: WorkloadStatus) -> None:
        """Take the runtime's word for where the container is."""
        state = self._state
        if status.state == WorkloadState.running:
            state.endpoints = status.endpoints
            self._set(ContainerStatus.running, "", "; ".join(status.unsupported))
            await self._report_running()
        elif status.state in (WorkloadState.pending, WorkloadState.creating):
            self._set(ContainerStatus.creating, status.reason, status.message)
        elif status.state == WorkloadState.gone:
            # Removed behind our back: apply it again, the reservation is still ours.
            state.applied = False
            self._set(ContainerStatus.creating, "Recreating", "the runtime held nothing for it")
        else:  # failed, or a container that ended on its own
            state.endpoints = []
            self._set(ContainerStatus.failed, status.reason or "Failed", status.message)

    async def _tear_down(self) -> None:
        state = self._state
        if state.status != ContainerStatus.deleting:
            reason = self._stop_reason() or "deleted"
            self._set(ContainerStatus.deleting, "", reason)
            await self._record()
        await self._remove_workload()
        await self._release()
        state.endpoints = []
        self._set(ContainerStatus.deleted, "", state.message)

    # ---- bookkeeping -----------------------------------------------------------------------

    async def _write_record(self) -> None:
        await workflow.execute_activity_method(
            ContainerRecords.record_container, self._state, start_to_close_timeout=SHORT_TIMEOUT
        )

    def _details(self) -> str:
        state, resources = self._state, self._state.spec.resources
        lines = [
            f"**{state.name}** ({state.spec.image}) — {state.status.value}",
            f"{resources.gpu} GPU, {resources.vcpu:g} vCPU, {resources.ram_gb:g} GB RAM; owner {state.owner}",
        ]
        if state.message or state.reason:
            lines.append(": ".join(part for part in (state.reason, state.message) if part))
        if state.end_at is not None:
            lines.append(f"ends {state.end_at:%Y-%m-%d %H:%M} UTC")
        return "\n".join(lines)

    # ---- updates and queries ---------------------------------------------------------------

    @workflow.update
    async def delete(self, request: ContainerDelete) -> ContainerState:
        state = self._state
        state.delete_requested_by = state.delete_requested_by or request.username
        self._wakeups += 1
        await workflow.wait_condition(
            lambda: (
                state.status in (ContainerStatus.deleting, ContainerStatus.deleted)
                or (state.status == ContainerStatus.failed and not state.registered)
            )
        )
        return state

    @delete.validator
    def validate_delete(self, request: ContainerDelete) -> None:
        if self._state.status == ContainerStatus.deleted:
            raise ApplicationError("the container is already deleted", type="Conflict", non_retryable=True)

    @workflow.query
    def describe(self) -> ContainerState:
        return self._state
