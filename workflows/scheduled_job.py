"""ScheduledJobWorkflow: one run of a schedule (manual 5.5.2), started by its Temporal Schedule.

It reads the schedule's job template when it fires (so edits to the template apply from the next run on),
runs the job as a child JobWorkflow and ends when the job ends. Because the run lasts as long as its job,
the single-line policy (BUFFER_ONE) really makes each run wait for the previous job to finish, and
multi-line (ALLOW_ALL) lets them overlap. A run whose project is not active starts no job: it records why
and pauses the schedule (or removes it from Temporal once the project is deleted).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import (
    RetryPolicy,
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.schedules import PauseOrder, RunRequest, ScheduleActivities
    from models.jobs import JobStatus
    from models.schedules import RunEnd, RunOutcome, ScheduledJobInput, StopAction
    from workflows import search_attributes
    from workflows.job import JobWorkflow
    from workflows.job import workflow_id as job_workflow_id

SHORT_TIMEOUT = timedelta(seconds=30)
# A run may fire a moment before its schedule's row is committed; a deleted schedule stays missing.
PLAN_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)
SCHEDULED_START = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")
OUTCOMES = {
    JobStatus.succeeded: RunOutcome.succeeded,
    JobStatus.failed: RunOutcome.failed,
    JobStatus.deleted: RunOutcome.deleted,
}


@workflow.defn
class ScheduledJobWorkflow:
    def __init__(self) -> None:
        self._details = "planning"

    @workflow.run
    async def run(self, input: ScheduledJobInput) -> RunEnd:
        run_id = workflow.info().workflow_id
        request = RunRequest(
            schedule_id=input.schedule_id,
            project_id=input.project_id,
            run_id=run_id,
            fired_at=self._fired_at(),
        )
        try:
            plan = await workflow.execute_activity_method(
                ScheduleActivities.plan_scheduled_run,
                request,
                start_to_close_timeout=SHORT_TIMEOUT,
                retry_policy=PLAN_RETRY,
            )
        except ActivityError as exc:
            if not isinstance(exc.cause, ApplicationError) or exc.cause.type != "NotFound":
                raise
            return self._said(RunEnd(run_id=run_id, outcome=RunOutcome.skipped, message=exc.cause.message))
        if plan.job_input is None:
            if plan.stop != StopAction.none:
                await workflow.execute_activity_method(
                    ScheduleActivities.pause_schedule,
                    PauseOrder(schedule_id=input.schedule_id, note=plan.skipped, action=plan.stop),
                    start_to_close_timeout=SHORT_TIMEOUT,
                )
            return self._said(RunEnd(run_id=run_id, outcome=RunOutcome.skipped, message=plan.skipped))

        job = plan.job_input
        self._details = f"job {plan.job_name} ({plan.job_id}) running"
        workflow.set_current_details(self._details)
        try:
            status = await workflow.execute_child_workflow(
                JobWorkflow.run,
                job,
                id=job_workflow_id(job.id),
                # The job outlives an operator terminating this run; it is a job like any other.
                parent_close_policy=ParentClosePolicy.ABANDON,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(search_attributes.PROJECT, job.project_id),
                        SearchAttributePair(search_attributes.OWNER, job.owner),
                        SearchAttributePair(search_attributes.KIND, "job"),
                        SearchAttributePair(search_attributes.STATUS, JobStatus.waiting.value),
                    ]
                ),
                static_summary=(
                    f"Job “{job.spec.name}” of {job.owner} from a schedule ({job.spec.main.image})"
                ),
            )
            outcome = OUTCOMES.get(status, RunOutcome.failed)
            end = RunEnd(run_id=run_id, outcome=outcome, message=f"job {plan.job_name} {status.value}")
        except ChildWorkflowError as exc:
            end = RunEnd(run_id=run_id, outcome=RunOutcome.failed, message=str(exc.cause or exc))
        await workflow.execute_activity_method(
            ScheduleActivities.record_run_end, end, start_to_close_timeout=SHORT_TIMEOUT
        )
        return self._said(end)

    def _fired_at(self) -> datetime:
        """The time the schedule meant this run for (a buffered or backfilled run starts later)."""
        scheduled = workflow.info().typed_search_attributes.get(SCHEDULED_START)
        return scheduled or workflow.now()

    def _said(self, end: RunEnd) -> RunEnd:
        self._details = f"{end.outcome.value}: {end.message}" if end.message else end.outcome.value
        workflow.set_current_details(self._details)
        return end
