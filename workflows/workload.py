"""The part of every workload workflow that is the same for containers and jobs.

A workload asks its project for quota by signal and learns the answer by signal (admitted, queued with its
place, or refused for good); it applies itself to the runtime, looks at it with back-off, removes it and
waits until the runtime holds nothing, then gives the reservation back. Every change of state is recorded to
the read model before the workflow waits again. The subclasses (`ContainerWorkflow`, `JobWorkflow`) are the
`@workflow.defn` classes: their run loops decide which step comes next.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import ClassVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.workloads import WorkloadActivities, WorkloadRef
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
    from models.workload_lifecycle import WorkloadLifecycleState, WorkloadTimings
    from models.workloads import WorkloadState as RuntimeState
    from models.workloads import WorkloadStatus
    from workflows import search_attributes

# The project workflow's signal names (workflows/project.py), kept as strings so this module stays light.
PROJECT_RELEASE = "release"
PROJECT_WORKLOAD_RUNNING = "workload_running"
SHORT_TIMEOUT = timedelta(seconds=30)
ANSWER_WAIT = timedelta(minutes=10)  # longer only if the project's workflow is gone, with its ledger
RUNTIME_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=1))
POLL_BACKOFF = 1.5  # 1, 1.5, 2.3, 3.4 ... s: a quick start is seen quickly, a slow one costs few polls


def project_workflow_id(project_id: str) -> str:
    return f"project-{project_id}"


class WorkloadLifecycle:
    kind: ClassVar[str]
    waiting: ClassVar[StrEnum]  # the status while asking for quota and queued
    failed: ClassVar[StrEnum]  # the status of a refused request

    _state: WorkloadLifecycleState
    _timings: WorkloadTimings
    _max_history_events: int

    def _begin(self) -> None:
        self._recorded_version = -1
        self._wakeups = 0  # every signal and update counts, so waits notice them

    def _announce(self) -> None:
        state = self._state
        workflow.upsert_search_attributes(
            [
                search_attributes.PROJECT.value_set(state.project_id),
                search_attributes.OWNER.value_set(state.owner),
                search_attributes.KIND.value_set(self.kind),
                search_attributes.STATUS.value_set(state.status.value),
            ]
        )

    # ---- waiting ---------------------------------------------------------------------------

    async def _wait_for(self, ready: Callable[[], bool], wake_in: timedelta | None = None) -> None:
        """Sleep until `ready()` holds, a signal or update arrives, or `_deadline(wake_in)` comes."""
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
        return None if wake_in is None else workflow.now() + wake_in

    async def _wait_for_admission(self) -> bool:
        """While waiting: True once admitted (the caller moves on), False when something else happened."""
        state = self._state
        await self._wait_for(lambda: state.admitted or state.status != self.waiting)
        return state.admitted and state.status == self.waiting

    # ---- the project's ledger --------------------------------------------------------------

    async def _request_admission(self) -> None:
        """Ask the project for quota; its answer arrives as a signal (admission_answered)."""
        state, resources = self._state, self._state.spec.resources
        request = AdmitRequest(
            resource_id=state.id,
            kind=self.kind,
            workflow_id=workflow.info().workflow_id,
            owner_id=state.owner_id,
            request=Quota(gpu=resources.gpu, vcpu=resources.vcpu, ram_gb=resources.ram_gb),
        )
        project = workflow.get_external_workflow_handle(project_workflow_id(state.project_id))
        try:
            await project.signal(PROJECT_ADMISSION_REQUEST_SIGNAL, request)
        except Exception:
            self._set(self.failed, "Conflict", f"project {state.project_id} has no running lifecycle")
            return
        state.admission_requested = True
        if not state.admitted:
            self._set(self.waiting, "Admitting", "asking the project for quota")

    async def _release(self) -> None:
        state = self._state
        if state.admission_requested and not state.admission_answered:
            # The project answers every request; a reservation it made meanwhile must go back.
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: state.admission_answered, timeout=ANSWER_WAIT)
        if state.registered:
            await self._signal_project(PROJECT_RELEASE)
            state.registered = state.admitted = False
        state.queue_position = None

    async def _report_running(self) -> None:
        if not self._state.running_reported:
            await self._signal_project(PROJECT_WORKLOAD_RUNNING)
            self._state.running_reported = True

    async def _signal_project(self, signal: str) -> None:
        handle = workflow.get_external_workflow_handle(project_workflow_id(self._state.project_id))
        try:
            await handle.signal(signal, WorkloadEvent(resource_id=self._state.id))
        except Exception:
            # The project's workflow has ended: it holds no ledger any more.
            workflow.logger.warning("project %s is gone; %s not delivered", self._state.project_id, signal)

    # ---- the runtime -----------------------------------------------------------------------

    async def _apply_workload(self) -> WorkloadStatus | None:
        """Apply the spec; None when the runtime refused it for good (the state says failed and why)."""
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
            state.applied = True  # a refused apply may have created part of it: removal cleans up
            self._set(self.failed, cause.type or "RuntimeRejected", cause.message)
            return None
        state.applied = True
        return status

    async def _runtime_status(self) -> WorkloadStatus:
        return await workflow.execute_activity_method(
            WorkloadActivities.workload_status,
            self._ref(),
            start_to_close_timeout=SHORT_TIMEOUT,
            retry_policy=RUNTIME_RETRY,
        )

    async def _remove_workload(self) -> None:
        """Delete it and wait until the runtime holds nothing: a deleted workload may hold its GPUs a while
        (Kubernetes deletes in the foreground), and the next in line must find them free."""
        if not self._state.applied:
            return
        await workflow.execute_activity_method(
            WorkloadActivities.delete_workload,
            self._ref(),
            start_to_close_timeout=self._timings.delete_timeout,
            retry_policy=RUNTIME_RETRY,
        )
        delay = self._timings.first_poll
        while (await self._runtime_status()).state != RuntimeState.gone:
            await workflow.sleep(delay)
            delay = min(delay * POLL_BACKOFF, self._timings.gone_max_poll)
        self._state.applied = False

    # ---- bookkeeping -----------------------------------------------------------------------

    def _ref(self) -> WorkloadRef:
        spec = self._state.spec
        return WorkloadRef(project_id=spec.project_id, kind=spec.kind, resource_id=spec.resource_id)

    def _set(self, status: StrEnum, reason: str, message: str) -> None:
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
            await self._write_record()
            self._recorded_version = max(self._recorded_version, version)
        workflow.set_current_details(self._details())

    async def _write_record(self) -> None:
        raise NotImplementedError  # each kind has its own read model

    def _details(self) -> str:
        raise NotImplementedError

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or (
            info.get_current_history_length() > self._max_history_events
        )

    # ---- handlers every workload has -------------------------------------------------------

    @workflow.signal(name=WORKLOAD_ADMISSION_SIGNAL)
    def admission_answered(self, answer: AdmissionAnswer) -> None:
        state = self._state
        self._wakeups += 1
        state.admission_answered = True
        state.registered = state.registered or answer.refusal is None  # so a teardown gives it back
        if state.admitted or state.status != self.waiting:
            return  # admitted from the queue already, or stopping
        if answer.refusal:
            self._set(self.failed, answer.refusal, answer.reason)
            return
        if answer.admitted:
            state.admitted, state.queue_position = True, None
        else:
            state.queue_position = answer.position
            self._set(self.waiting, "Queued", f"{answer.reason}, position {answer.position}")

    @workflow.update
    async def recorded(self) -> None:
        """Answers once the read model holds the workload; the API starts workloads with update-with-start
        on it, so a 201 means the row is there."""
        await workflow.wait_condition(lambda: self._recorded_version >= 0)

    @workflow.signal(name=WORKLOAD_ADMITTED_SIGNAL)
    def project_admitted(self, event: WorkloadEvent) -> None:
        """A queued workload's turn has come."""
        self._state.registered = self._state.admitted = self._state.admission_answered = True
        self._state.queue_position = None
        self._wakeups += 1

    @workflow.signal(name=WORKLOAD_SHUTDOWN_SIGNAL)
    def project_shutdown(self, notice: ShutdownNotice) -> None:
        self._state.shutdown_reason = notice.reason
        self._wakeups += 1
