"""JobWorkflow: one per batch job, from admission to its end and cleanup (manual 5.5.1).

On top of the shared lifecycle (workflows/workload.py) a job runs to an outcome (succeeded or failed, with
its exit code and reason) within the platform's active deadline, keeps its log before the runtime loses
it (shortly before the deadline, and before its workload is deleted), and is never applied twice: a job
the runtime lost has failed. A finished job's row stays with its final status; a delete then only hides it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.heartbeat import HEARTBEAT_TIMEOUT
    from activities.jobs import JobActivities
    from models.jobs import JobInput, JobState, JobStatus, JobTimings
    from models.workload_lifecycle import WorkloadInput
    from models.workloads import WorkloadState, WorkloadStatus
    from workflows.workload import (
        APPLY_RETRY,
        POLL_BACKOFF,
        WorkloadLifecycle,
        failure_of,
        workload_workflow_id,
    )

KIND = "job"
SHUTDOWN_REASON = "ProjectShutdown"
CANCELLED_REASON = "Cancelled"


def workflow_id(job_id: str) -> str:
    return workload_workflow_id(KIND, job_id)


@workflow.defn
class JobWorkflow(WorkloadLifecycle):
    kind = KIND
    status_enum = JobStatus
    outcomes = frozenset({JobStatus.succeeded.value, JobStatus.failed.value})
    record_activity = JobActivities.record_job
    state_class = JobState
    _state: JobState
    _timings: JobTimings

    @workflow.init
    def __init__(self, input: JobInput) -> None:
        self._open(
            input,
            status=JobStatus.waiting,
            command=input.command,
            reason="Admitting",
            message="asking the project for quota",
        )
        self._poll_delay = self._state.poll_delay or self._timings.first_poll

    @workflow.run
    async def run(self, input: JobInput) -> JobStatus:
        return JobStatus(await self._live())

    # ---- what a job does its own way ---------------------------------------------------------

    def _over(self) -> bool:
        state = self._state
        return state.cleaned_up and (not state.delete_requested_by or state.status == JobStatus.deleted)

    async def _step(self) -> None:
        state = self._state
        if state.cleaned_up:
            # Deleted after its outcome: the exit code and reason stay; only its visibility changes.
            self._set(JobStatus.deleted, state.reason, f"deleted by {state.delete_requested_by}")
        else:
            await super()._step()

    async def _apply_workload(self) -> WorkloadStatus | None:
        status = await super()._apply_workload()
        if status is not None:
            self._state.applied_at = workflow.now()
        return status

    async def _watch(self) -> None:
        """Look with back-off, and keep a copy of the log shortly before the deadline takes it."""
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
        await self._look()

    def _log_snapshot_at(self) -> datetime | None:
        state = self._state
        deadline = state.spec.active_deadline_seconds
        if state.log_snapshot_taken or state.applied_at is None or deadline is None:
            return None
        return state.applied_at + timedelta(seconds=deadline) - self._timings.log_before_deadline

    async def _keep_log(self) -> bool:
        """Copy the log into the read model; False when the runtime would not give it."""
        try:
            await workflow.execute_activity_method(
                JobActivities.keep_job_log,
                self._ref(),
                start_to_close_timeout=self._timings.log_timeout,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=APPLY_RETRY,
            )
        except ActivityError as exc:
            workflow.logger.warning("job %s: log not kept: %s", self._state.id, failure_of(exc))
            return False
        return True

    async def _follow(self, status: WorkloadStatus) -> None:
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

    def _runtime_failed(self, reason: str, message: str) -> None:
        self._state.finished_at = self._state.finished_at or workflow.now()
        super()._runtime_failed(reason, message)

    async def _clean_up(self) -> None:
        """After the outcome: keep the log, delete the workload, give the reservation back."""
        await super()._clean_up()
        state = self._state
        state.cleaned_up = True
        if self._removal_note:
            self._set(JobStatus(state.status), state.reason, self._final_message(state.message))
        state.version += 1

    def _teardown_message(self, reason: str) -> str:
        return f"stopping: {reason}"

    def _stopped(self) -> None:
        """A delete ends it deleted; the platform stopping it (shutdown, cancellation) leaves it listed as a
        failure saying why."""
        state = self._state
        state.finished_at = state.finished_at or workflow.now()
        state.cleaned_up = True
        if state.delete_requested_by and not state.cancelled:
            self._set(JobStatus.deleted, "", self._final_message(f"deleted by {state.delete_requested_by}"))
            return
        reason = CANCELLED_REASON if state.cancelled else SHUTDOWN_REASON
        self._set(JobStatus.failed, reason, self._final_message(f"stopped: {self._stop_reason() or ''}"))

    async def _remove_workload(self) -> None:
        """Keep the log first: it goes with the workload."""
        state = self._state
        if state.applied and not state.log_kept:
            state.log_kept = await self._keep_log()
            state.version += 1
            await self._record()
        await super()._remove_workload()

    def _resume_input(self) -> WorkloadInput:
        self._state.poll_delay = self._poll_delay  # so continue-as-new does not restart the back-off
        return super()._resume_input()

    def _detail_lines(self) -> list[str]:
        state = self._state
        lines = [f"command: {state.command[:200]}"]
        if state.exit_code is not None:
            lines.append(f"exit code {state.exit_code}")
        return lines

    @workflow.query
    def describe(self) -> JobState:
        return self._state
