"""The samples' upkeep, run by a Temporal Schedule every few minutes: roll raw samples up into 1-minute
buckets, those into hourly ones, then prune what is past its keeping.

Pruning runs only after both rollups succeeded, so no sample is deleted before it is rolled up. Every step
is idempotent (activities/metric_store.py): a run that overlaps, repeats or catches up after an outage
leaves the same tables. Operators see each run, and its counts, in the Temporal UI.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    SchedulePolicy,
    ScheduleSpec,
)
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.heartbeat import HEARTBEAT_TIMEOUT
    from activities.sample_rollups import RollupStep, SampleActivities
    from models.monitoring import Resolution

SCHEDULE_ID = "mlcp-sample-rollups"
WORKFLOW_ID = "sample-rollups"
EVERY = timedelta(minutes=5)
STEP_TIMEOUT = timedelta(minutes=10)
STEP_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_attempts=5)


@dataclass
class RollupResult:
    minute_buckets: int
    hour_buckets: int
    pruned: int


@workflow.defn
class SampleRollupWorkflow:
    @workflow.run
    async def run(self) -> RollupResult:
        now = workflow.now()
        written = {}
        for resolution in (Resolution.minute, Resolution.hour):
            written[resolution] = await workflow.execute_activity_method(
                SampleActivities.roll_up_samples,
                RollupStep(resolution=resolution, now=now),
                start_to_close_timeout=STEP_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=STEP_RETRY,
            )
        pruned = await workflow.execute_activity_method(
            SampleActivities.prune_samples,
            now,
            start_to_close_timeout=STEP_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=STEP_RETRY,
        )
        return RollupResult(written[Resolution.minute], written[Resolution.hour], pruned)


async def ensure_rollup_schedule(client: Client, task_queue: str, schedule_id: str = SCHEDULE_ID) -> bool:
    """The schedule, created once (by whichever worker starts first); True when this call created it."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            SampleRollupWorkflow.run, id=WORKFLOW_ID, task_queue=task_queue, execution_timeout=EVERY * 6
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=EVERY)]),
        # The default overlap policy skips a run while the last one still works: the next catches up.
        policy=SchedulePolicy(),
    )
    try:
        await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:
        return False
    return True
