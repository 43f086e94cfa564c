"""UserSetupWorkflow: one run per attempt (`user-setup-<user-id>`) that provisions a new user's home storage,
ending `ready`, or `failed` with the reason for a platform admin to retry."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.heartbeat import HEARTBEAT_TIMEOUT
    from activities.user_setup import SetupRecord, UserSetupActivities
    from models.user_setup import SetupStatus, UserSetupInput
    from workflows.workload import RECORD_RETRY, RECORD_TIMEOUT, failure_of

PROVISION_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=30), maximum_attempts=8)


def setup_workflow_id(user_id: str) -> str:
    return f"user-setup-{user_id}"


@workflow.defn
class UserSetupWorkflow:
    @workflow.run
    async def run(self, input: UserSetupInput) -> SetupStatus:
        record = SetupRecord(user_id=input.user_id, username=input.username, attempt=input.attempt)
        await self._record(record)
        try:
            record.home = await workflow.execute_activity_method(
                UserSetupActivities.provision_home,
                input.username,
                start_to_close_timeout=timedelta(minutes=5),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=PROVISION_RETRY,
            )
            record.status, record.message = SetupStatus.ready, "home storage is ready"
        except ActivityError as error:
            record.status = SetupStatus.failed
            record.reason, record.message = failure_of(error)
        await self._record(record)
        return record.status

    async def _record(self, record: SetupRecord) -> None:
        await workflow.execute_activity_method(
            UserSetupActivities.record_setup,
            record,
            start_to_close_timeout=RECORD_TIMEOUT,
            retry_policy=RECORD_RETRY,
        )
