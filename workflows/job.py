"""JobWorkflow: one per batch job, from admission to its end and cleanup (manual 5.5.1).

The main loop looks at the state and does the next step: ask the project for quota (and wait in its
queue), apply the workload with the platform's active deadline, watch it until it succeeds or fails, keep
its log, delete the workload and give the reservation back. A delete or the project's shutdown stops it
on the way. Every step is recorded; a finished job's row stays with its final status.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.jobs import JobActivities
    from activities.workloads import WorkloadActivities, WorkloadRef
    from models.jobs import JobDelete, JobInput, JobState, JobStatus
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
KIND = "job"
SHORT_TIMEOUT = timedelta(seconds=30)
ANSWER_WAIT = timedelta(minutes=10)  # longer only if the project's workflow is gone, with its ledger
RUNTIME_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=1))
SHUTDOWN_REASON = "ProjectShutdown"
SHUTDOWN_MESSAGES = {
    "grace": "stopped: the project's end date has passed (grace period)",
    "deleting": "stopped: the project is being deleted",
}
OUTCOMES = (JobStatus.succeeded, JobStatus.failed)


def workflow_id(job_id: str) -> str:
    return f"job-{job_id}"


def project_workflow_id(project_id: str) -> str:
    return f"project-{project_id}"


@workflow.defn
class JobWorkflow:
    @workflow.init
    def __init__(self, input: JobInput) -> None:
        self._input = input
        self._timings = input.timings
        self._state: JobState = input.resume or JobState(
            id=input.id,
            project_id=input.project_id,
            owner_id=input.owner_id,
            owner=input.owner,
            name=input.spec.name,
            spec_id=input.spec_id,
            command=input.command,
            spec=input.spec,
            created_at=input.created_at,
            reason="Admitting",
            message="asking the project for quota",
        )
        self._recorded_version = -1
        self._poll_delay = self._state.poll_delay or self._timings.first_poll
        self._wakeups = 0  # every signal and update counts, so waits notice them

    # ---- main loop -------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: JobInput) -> JobStatus:
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
            if state.cleaned_up:
                if state.delete_requested_by and state.status != JobStatus.deleted:
                    # A finished job keeps its exit code and reason; only its visibility changes.
                    self._set(JobStatus.deleted, state.reason, f"deleted by {state.delete_requested_by}")
                    continue
                await workflow.wait_condition(workflow.all_handlers_finished)
                await self._record()
                return state.status
            stopping = state.status == JobStatus.deleting or (
                self._stop_requested() and state.status not in OUTCOMES
            )
            if not stopping and self._should_continue_as_new():
                # A delete arriving meanwhile waits for the teardown, so it must not hold this up.
                await workflow.wait_condition(
                    lambda: workflow.all_handlers_finished() or self._stop_requested()
                )
                if not self._stop_requested():
                    await self._record()
                    state.poll_delay = self._poll_delay
                    workflow.continue_as_new(self._input.model_copy(update={"resume": state}))
                continue
            if stopping:
                await self._stop()
            elif state.status in OUTCOMES:
                await self._clean_up()
            elif state.status == JobStatus.waiting and not state.admission_requested:
                await self._admit()
            elif state.status == JobStatus.waiting:
                await self._wait_for(lambda: state.admitted or state.status != JobStatus.waiting)
                if state.admitted and state.status == JobStatus.waiting:
                    self._set(JobStatus.creating, "", "admitted: starting")
            elif not state.applied:
                await self._apply()
            else:  # creating or running: look, less often the longer it runs
                await self._watch()

    def _stop_requested(self) -> bool:
        return bool(self._state.delete_requested_by or self._state.shutdown_reason)

    async def _wait_for(self, ready: Callable[[], bool], wake_in: timedelta | None = None) -> None:
        """Sleep until `ready()` holds, a signal or update arrives, or `wake_in` passes."""
        wakeups = self._wakeups
        with contextlib.suppress(TimeoutError):
            # A change not yet recorded (one a signal made while a step was running) also ends the wait.
            await workflow.wait_condition(
                lambda: self._wakeups != wakeups or ready() or self._recorded_version < self._state.version,
                timeout=wake_in,
            )

    # ---- steps -----------------------------------------------------------------------------

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
            self._set(JobStatus.failed, "Conflict", f"project {state.project_id} has no running lifecycle")
            return
        state.admission_requested = True
        if not state.admitted:
            self._set(JobStatus.waiting, "Admitting", "asking the project for quota")

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
            state.applied = True  # a refused apply may have created part of it: cleanup deletes it
            self._set(JobStatus.failed, cause.type or "RuntimeRejected", cause.message)
            return
        state.applied, state.applied_at = True, workflow.now()
        self._poll_delay = self._timings.first_poll
        await self._follow(status)

    async def _watch(self) -> None:
        state, snapshot_at = self._state, self._log_snapshot_at()
        wake_in = self._poll_delay
        if snapshot_at is not None:
            wake_in = max(min(wake_in, snapshot_at - workflow.now()), timedelta(0))
        wakeups = self._wakeups
        await self._wait_for(lambda: False, wake_in)
        if self._wakeups != wakeups:
            return  # a delete or shutdown: the loop decides
        if snapshot_at is not None and workflow.now() >= snapshot_at:
            await self._keep_log()
            state.log_snapshot_taken = True
            return
        self._poll_delay = min(self._poll_delay * 2, self._timings.max_poll)
        await self._look()

    def _log_snapshot_at(self) -> datetime | None:
        state = self._state
        deadline = state.spec.active_deadline_seconds
        if state.log_snapshot_taken or state.applied_at is None or deadline is None:
            return None
        return state.applied_at + timedelta(seconds=deadline) - self._timings.log_before_deadline

    async def _keep_log(self) -> None:
        await workflow.execute_activity_method(
            JobActivities.keep_job_log,
            self._ref(),
            start_to_close_timeout=self._timings.log_timeout,
            retry_policy=RUNTIME_RETRY,
        )

    async def _look(self) -> None:
        status = await workflow.execute_activity_method(
            WorkloadActivities.workload_status,
            self._ref(),
            start_to_close_timeout=SHORT_TIMEOUT,
            retry_policy=RUNTIME_RETRY,
        )
        await self._follow(status)

    async def _follow(self, status: WorkloadStatus) -> None:
        """Take the runtime's word for where the job is."""
        state = self._state
        if status.state in (WorkloadState.pending, WorkloadState.creating):
            self._set(JobStatus.creating, status.reason, status.message)
        elif status.state == WorkloadState.running:
            state.started_at = state.started_at or status.started_at or workflow.now()
            self._set(JobStatus.running, "", "; ".join(status.unsupported))
            if not state.running_reported:
                await self._signal_project(PROJECT_WORKLOAD_RUNNING)
                state.running_reported = True
        elif status.state == WorkloadState.gone:
            # Re-applying would run the command a second time; a job lost behind our back has failed.
            self._finish(JobStatus.failed, "Lost", "the runtime no longer holds the job", status)
        elif status.state == WorkloadState.succeeded:
            self._finish(JobStatus.succeeded, status.reason or "Completed", status.message, status)
        else:
            message = status.message or (
                f"exited with code {status.exit_code}" if status.exit_code is not None else ""
            )
            self._finish(JobStatus.failed, status.reason or "Error", message, status)

    def _finish(self, outcome: JobStatus, reason: str, message: str, status: WorkloadStatus) -> None:
        state = self._state
        state.exit_code = status.exit_code
        state.started_at = state.started_at or status.started_at
        state.finished_at = status.finished_at or workflow.now()
        self._set(outcome, reason, message)

    async def _clean_up(self) -> None:
        """After the outcome: keep the log, delete the workload, give the reservation back."""
        await self._remove_workload()
        await self._release()
        self._state.queue_position = None
        self._state.cleaned_up = True
        self._state.version += 1

    async def _stop(self) -> None:
        """A delete or the project's shutdown ends the job before its outcome."""
        state = self._state
        shutdown = state.shutdown_reason and not state.delete_requested_by
        if state.status != JobStatus.deleting:
            self._set(JobStatus.deleting, "", "stopping: " + (self._stop_message() or "deleted"))
            await self._record()
        await self._remove_workload()
        await self._release()
        state.queue_position, state.finished_at = None, state.finished_at or workflow.now()
        state.cleaned_up = True
        if shutdown:
            # Stopped by the platform, not its owner: it stays listed as a failure saying why.
            self._set(JobStatus.failed, SHUTDOWN_REASON, self._stop_message())
        else:
            self._set(JobStatus.deleted, "", self._stop_message())

    def _stop_message(self) -> str:
        state = self._state
        if state.delete_requested_by:
            return f"deleted by {state.delete_requested_by}"
        reason = state.shutdown_reason or ""
        return SHUTDOWN_MESSAGES.get(reason, f"stopped: the project is {reason}")

    async def _remove_workload(self) -> None:
        state = self._state
        if not state.applied:
            return
        if not state.log_kept:
            await self._keep_log()
            state.log_kept = True
            state.version += 1
            await self._record()
        await workflow.execute_activity_method(
            WorkloadActivities.delete_workload,
            self._ref(),
            start_to_close_timeout=self._timings.delete_timeout,
            retry_policy=RUNTIME_RETRY,
        )
        await self._until_gone()
        state.applied = False

    async def _until_gone(self) -> None:
        """The reservation goes back once the runtime holds nothing, so the next in line finds it free."""
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
            delay = min(delay * 2, self._timings.gone_max_poll)

    async def _release(self) -> None:
        state = self._state
        if state.admission_requested and not state.admission_answered:
            # The project answers every request; a reservation it made meanwhile must go back.
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda: state.admission_answered, timeout=ANSWER_WAIT)
        if state.registered:
            await self._signal_project(PROJECT_RELEASE)
            state.registered = state.admitted = False

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

    def _set(self, status: JobStatus, reason: str, message: str) -> None:
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
                JobActivities.record_job, self._state, start_to_close_timeout=SHORT_TIMEOUT
            )
            self._recorded_version = max(self._recorded_version, version)
        workflow.set_current_details(self._details())

    def _details(self) -> str:
        state, resources = self._state, self._state.spec.resources
        lines = [
            f"**{state.name}** ({state.spec.image}) — {state.status.value}",
            f"{resources.gpu} GPU, {resources.vcpu:g} vCPU, {resources.ram_gb:g} GB RAM; owner {state.owner}",
            f"command: {state.command[:200]}",
        ]
        if state.message or state.reason:
            lines.append(": ".join(part for part in (state.reason, state.message) if part))
        if state.exit_code is not None:
            lines.append(f"exit code {state.exit_code}")
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
        state.registered = state.registered or answer.refusal is None  # so a cleanup gives it back
        if state.admitted or state.status != JobStatus.waiting:
            return  # admitted from the queue already, or stopping
        if answer.refusal:
            self._set(JobStatus.failed, answer.refusal, answer.reason)
            return
        if answer.admitted:
            state.admitted, state.queue_position = True, None
        else:
            state.queue_position = answer.position
            self._set(JobStatus.waiting, "Queued", f"{answer.reason}, position {answer.position}")

    @workflow.signal(name=WORKLOAD_ADMITTED_SIGNAL)
    def project_admitted(self, event: WorkloadEvent) -> None:
        """A queued job's turn has come."""
        self._state.registered = self._state.admitted = self._state.admission_answered = True
        self._state.queue_position = None
        self._wakeups += 1

    @workflow.signal(name=WORKLOAD_SHUTDOWN_SIGNAL)
    def project_shutdown(self, notice: ShutdownNotice) -> None:
        self._state.shutdown_reason = notice.reason
        self._wakeups += 1

    @workflow.update
    async def delete(self, request: JobDelete) -> JobState:
        """Stops a queued or running job; marks a finished one deleted once its cleanup is done."""
        state = self._state
        state.delete_requested_by = state.delete_requested_by or request.username
        self._wakeups += 1
        await workflow.wait_condition(lambda: state.status in (JobStatus.deleting, JobStatus.deleted))
        return state

    @delete.validator
    def validate_delete(self, request: JobDelete) -> None:
        if self._state.status == JobStatus.deleted:
            raise ApplicationError("the job is already deleted", type="Conflict", non_retryable=True)

    @workflow.query
    def describe(self) -> JobState:
        return self._state
