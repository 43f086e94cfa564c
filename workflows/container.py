"""ContainerWorkflow: one per container, from its start time to deletion (manual 5.4.1-5.4.3).

The main loop looks at the state and does the next step: wait for the start time, ask the project for
quota (and wait in its queue), apply the workload, watch it start, hold it until its end time, a delete
or the project's shutdown, then delete it and give the reservation back. Every step is recorded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.containers import ContainerRecords
    from activities.workloads import WorkloadActivities, WorkloadRef
    from models.containers import (
        ContainerDelete,
        ContainerInput,
        ContainerState,
        ContainerStatus,
    )
    from models.lifecycle import (
        PROJECT_ADMISSION_REQUEST_SIGNAL,
        WORKLOAD_ADMISSION_SIGNAL,
        WORKLOAD_ADMITTED_SIGNAL,
        WORKLOAD_SHUTDOWN_SIGNAL,
        AdmissionAnswer,
        AdmitRequest,
        Quota,
        ShutdownNotice,
        WorkloadEvent,
    )
    from models.workloads import WorkloadState, WorkloadStatus
    from workflows import search_attributes

# The project workflow's signal names (workflows/project.py), kept as strings so this module stays light.
PROJECT_RELEASE = "release"
PROJECT_WORKLOAD_RUNNING = "workload_running"
KIND = "container"
SHORT_TIMEOUT = timedelta(seconds=30)
POLL_BACKOFF = 1.5  # 1, 1.5, 2.3, 3.4 ... s: a quick start is seen quickly, a slow image pull costs few polls
ANSWER_WAIT = timedelta(minutes=10)  # longer only if the project's workflow is gone, with its ledger
RUNTIME_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=1))
SHUTDOWN_MESSAGES = {
    "grace": "the project's end date has passed (grace period)",
    "deleting": "the project is being deleted",
}


def workflow_id(container_id: str) -> str:
    return f"container-{container_id}"


def project_workflow_id(project_id: str) -> str:
    return f"project-{project_id}"


@workflow.defn
class ContainerWorkflow:
    @workflow.init
    def __init__(self, input: ContainerInput) -> None:
        self._input = input
        self._timings = input.timings
        self._state: ContainerState = input.resume or ContainerState(
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
        self._recorded_version = -1
        self._poll_delay = self._timings.first_poll
        self._wakeups = 0  # every signal and update counts, so waits notice them

    # ---- main loop -------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: ContainerInput) -> ContainerStatus:
        state = self._state
        workflow.upsert_search_attributes(
            [
                search_attributes.PROJECT.value_set(state.project_id),
                search_attributes.OWNER.value_set(state.owner),
                search_attributes.KIND.value_set(KIND),
                search_attributes.STATUS.value_set(state.status.value),
            ]
        )
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
                await self._wait_for(lambda: state.admitted or state.status != ContainerStatus.waiting)
                if state.admitted and state.status == ContainerStatus.waiting:
                    self._set(ContainerStatus.creating, "", "admitted: starting")
            elif state.status == ContainerStatus.creating and not state.applied:
                await self._apply()
            elif state.status == ContainerStatus.creating:
                await self._wait_for(lambda: False, self._poll_delay)
                self._poll_delay = min(self._poll_delay * POLL_BACKOFF, self._timings.max_poll)
                await self._look()
            else:  # running or failed: look rarely, keep the reservation until deleted
                await self._wait_for(lambda: False, self._timings.check_interval)
                await self._look()

    def _stop_reason(self) -> str | None:
        state = self._state
        if state.delete_requested_by:
            return f"deleted by {state.delete_requested_by}"
        if state.shutdown_reason:
            return SHUTDOWN_MESSAGES.get(state.shutdown_reason, f"the project is {state.shutdown_reason}")
        if state.end_at is not None and workflow.now() >= state.end_at:
            return "its end time has come"
        return None

    async def _wait_for(self, ready: Callable[[], bool], wake_in: timedelta | None = None) -> None:
        """Sleep until `ready()` holds, a signal or update arrives, `wake_in` passes or the end time comes."""
        wakeups, deadline = self._wakeups, self._deadline(wake_in)
        timeout = None if deadline is None else deadline - workflow.now()
        if timeout is not None and timeout <= timedelta(0):
            return
        with contextlib.suppress(TimeoutError):
            # A change not yet recorded (one a signal made while a step was running) also ends the wait.
            await workflow.wait_condition(
                lambda: self._wakeups != wakeups or ready() or self._recorded_version < self._state.version,
                timeout=timeout,
            )

    def _deadline(self, wake_in: timedelta | None) -> datetime | None:
        times = [t for t in (self._state.end_at,) if t is not None]
        if wake_in is not None:
            times.append(workflow.now() + wake_in)
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
            await self._admit()

    async def _admit(self) -> None:
        """Ask the project for quota; its answer arrives as a signal (admission_answered)."""
        state, resources = self._state, self._state.spec.resources
        request = AdmitRequest(
            resource_id=state.id,
            kind=KIND,
            workflow_id=workflow.info().workflow_id,
            owner_id=state.owner_id,
            request=Quota(gpu=resources.gpu, vcpu=resources.vcpu, ram_gb=resources.ram_gb),
        )
        project = workflow.get_external_workflow_handle(project_workflow_id(state.project_id))
        try:
            await project.signal(PROJECT_ADMISSION_REQUEST_SIGNAL, request)
        except Exception:
            self._set(
                ContainerStatus.failed, "Conflict", f"project {state.project_id} has no running lifecycle"
            )
            return
        state.admission_requested = True
        if not state.admitted:
            self._set(ContainerStatus.waiting, "Admitting", "asking the project for quota")

    async def _apply(self) -> None:
        state = self._state
        try:
            status = await workflow.execute_activity_method(
                WorkloadActivities.apply_workload,
                state.spec,
                start_to_close_timeout=self._timings.apply_timeout,
                retry_policy=RUNTIME_RETRY,
            )
        except ActivityError as exc:
            cause = exc.cause
            if not isinstance(cause, ApplicationError):
                raise
            state.applied = True  # a refused apply may have created part of it: delete cleans up
            self._set(ContainerStatus.failed, cause.type or "RuntimeRejected", cause.message)
            return
        state.applied = True
        self._poll_delay = self._timings.first_poll
        await self._follow(status)

    async def _look(self) -> None:
        status = await workflow.execute_activity_method(
            WorkloadActivities.workload_status,
            self._ref(),
            start_to_close_timeout=SHORT_TIMEOUT,
            retry_policy=RUNTIME_RETRY,
        )
        await self._follow(status)

    async def _follow(self, status: WorkloadStatus) -> None:
        """Take the runtime's word for where the container is."""
        state = self._state
        if status.state == WorkloadState.running:
            state.endpoints = status.endpoints
            self._set(ContainerStatus.running, "", "; ".join(status.unsupported))
            if not state.running_reported:
                await self._signal_project(PROJECT_WORKLOAD_RUNNING)
                state.running_reported = True
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
        if state.applied:
            await workflow.execute_activity_method(
                WorkloadActivities.delete_workload,
                self._ref(),
                start_to_close_timeout=self._timings.delete_timeout,
                retry_policy=RUNTIME_RETRY,
            )
            await self._until_gone()
            state.applied = False
        if state.admission_requested and not state.admission_answered:
            # The project answers every request; a reservation it made meanwhile must go back.
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: state.admission_answered, timeout=ANSWER_WAIT)
        if state.registered:
            await self._signal_project(PROJECT_RELEASE)
            state.registered = state.admitted = False
        state.endpoints, state.queue_position = [], None
        self._set(ContainerStatus.deleted, "", state.message)

    async def _until_gone(self) -> None:
        """A deleted workload may hold its GPUs a while (Kubernetes deletes in the foreground): the
        reservation goes back only once the runtime holds nothing, so the next in line finds them free."""
        delay = self._timings.first_poll
        while True:
            status = await workflow.execute_activity_method(
                WorkloadActivities.workload_status,
                self._ref(),
                start_to_close_timeout=SHORT_TIMEOUT,
                retry_policy=RUNTIME_RETRY,
            )
            if status.state == WorkloadState.gone:
                return
            await workflow.sleep(delay)
            delay = min(delay * POLL_BACKOFF, self._timings.max_poll)

    async def _signal_project(self, signal: str) -> None:
        handle = workflow.get_external_workflow_handle(project_workflow_id(self._state.project_id))
        try:
            await handle.signal(signal, WorkloadEvent(resource_id=self._state.id))
        except Exception:
            # The project's workflow has ended: it holds no ledger any more.
            workflow.logger.warning("project %s is gone; %s not delivered", self._state.project_id, signal)

    # ---- bookkeeping -----------------------------------------------------------------------

    def _ref(self) -> WorkloadRef:
        spec = self._state.spec
        return WorkloadRef(project_id=spec.project_id, kind=spec.kind, resource_id=spec.resource_id)

    def _set(self, status: ContainerStatus, reason: str, message: str) -> None:
        state = self._state
        if (state.status, state.reason, state.message) == (status, reason, message):
            return
        if state.status != status:
            workflow.upsert_search_attributes([search_attributes.STATUS.value_set(status.value)])
        state.status, state.reason, state.message = status, reason, message
        state.version += 1

    async def _record(self) -> None:
        if self._recorded_version < self._state.version:
            version = self._state.version
            await workflow.execute_activity_method(
                ContainerRecords.record_container, self._state, start_to_close_timeout=SHORT_TIMEOUT
            )
            self._recorded_version = max(self._recorded_version, version)
        workflow.set_current_details(self._details())

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

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or (
            info.get_current_history_length() > self._input.max_history_events
        )

    # ---- signals, updates, queries ---------------------------------------------------------

    @workflow.signal(name=WORKLOAD_ADMISSION_SIGNAL)
    def admission_answered(self, answer: AdmissionAnswer) -> None:
        state = self._state
        self._wakeups += 1
        state.admission_answered = True
        state.registered = state.registered or answer.refusal is None  # so a teardown gives it back
        if state.admitted or state.status != ContainerStatus.waiting:
            return  # admitted from the queue already, or stopping
        if answer.refusal:
            self._set(ContainerStatus.failed, answer.refusal, answer.reason)
            return
        if answer.admitted:
            state.admitted, state.queue_position = True, None
        else:
            state.queue_position = answer.position
            self._set(ContainerStatus.waiting, "Queued", f"{answer.reason}, position {answer.position}")

    @workflow.signal(name=WORKLOAD_ADMITTED_SIGNAL)
    def project_admitted(self, event: WorkloadEvent) -> None:
        self._state.registered = self._state.admitted = self._state.admission_answered = True
        self._state.queue_position = None
        self._wakeups += 1

    @workflow.signal(name=WORKLOAD_SHUTDOWN_SIGNAL)
    def project_shutdown(self, notice: ShutdownNotice) -> None:
        self._state.shutdown_reason = notice.reason
        self._wakeups += 1

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

    @workflow.update
    async def recorded(self) -> None:
        """Answers once the read model holds the container; the API creates with update-with-start on it."""
        await workflow.wait_condition(lambda: self._recorded_version >= 0)

    @workflow.query
    def describe(self) -> ContainerState:
        return self._state
