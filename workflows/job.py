"""JobWorkflow: one per batch job, from admission to its end and cleanup (manual 5.5.1).

The main loop looks at the state and does the next step: ask the project for quota (and wait in its
queue), apply the workload with the platform's active deadline, watch it until it succeeds or fails, keep
its log, delete the workload and give the reservation back. A delete or the project's shutdown stops it
on the way. Every step is recorded; a finished job's row stays with its final status.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.jobs import JobActivities
    from models.jobs import JobDelete, JobInput, JobState, JobStatus, JobTimings
    from models.workloads import WorkloadState, WorkloadStatus
    from workflows.workload import POLL_BACKOFF, SHORT_TIMEOUT, WorkloadLifecycle

RUNTIME_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=1))
SHUTDOWN_REASON = "ProjectShutdown"
SHUTDOWN_MESSAGES = {
    "grace": "stopped: the project's end date has passed (grace period)",
    "deleting": "stopped: the project is being deleted",
}
OUTCOMES = (JobStatus.succeeded, JobStatus.failed)


def workflow_id(job_id: str) -> str:
    return f"job-{job_id}"


@workflow.defn
class JobWorkflow(WorkloadLifecycle):
    kind = "job"
    waiting = JobStatus.waiting
    failed = JobStatus.failed
    _state: JobState
    _timings: JobTimings

    @workflow.init
    def __init__(self, input: JobInput) -> None:
        self._input = input
        self._timings = input.timings
        self._max_history_events = input.max_history_events
        self._state = input.resume or JobState(
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
        self._poll_delay = self._state.poll_delay or self._timings.first_poll
        self._begin()

    # ---- main loop -------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: JobInput) -> JobStatus:
        state = self._state
        self._announce()
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
                await self._request_admission()
            elif state.status == JobStatus.waiting:
                if await self._wait_for_admission():
                    self._set(JobStatus.creating, "", "admitted: starting")
            elif not state.applied:
                await self._apply()
            else:  # creating or running: look, less often the longer it runs
                await self._watch()

    def _stop_requested(self) -> bool:
        return bool(self._state.delete_requested_by or self._state.shutdown_reason)

    # ---- steps -----------------------------------------------------------------------------

    async def _apply(self) -> None:
        status = await self._apply_workload()
        if status is None:
            return
        self._state.applied_at = workflow.now()
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
        self._poll_delay = min(self._poll_delay * POLL_BACKOFF, self._timings.max_poll)
        await self._follow(await self._runtime_status())

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

    async def _follow(self, status: WorkloadStatus) -> None:
        """Take the runtime's word for where the job is."""
        state = self._state
        if status.state in (WorkloadState.pending, WorkloadState.creating):
            self._set(JobStatus.creating, status.reason, status.message)
        elif status.state == WorkloadState.running:
            state.started_at = state.started_at or status.started_at or workflow.now()
            self._set(JobStatus.running, "", "; ".join(status.unsupported))
            await self._report_running()
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
        state.finished_at = state.finished_at or workflow.now()
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
        """Keep the log first: it goes with the workload."""
        state = self._state
        if state.applied and not state.log_kept:
            await self._keep_log()
            state.log_kept = True
            state.version += 1
            await self._record()
        await super()._remove_workload()

    # ---- bookkeeping -----------------------------------------------------------------------

    async def _write_record(self) -> None:
        await workflow.execute_activity_method(
            JobActivities.record_job, self._state, start_to_close_timeout=SHORT_TIMEOUT
        )

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

    # ---- updates and queries ---------------------------------------------------------------

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
