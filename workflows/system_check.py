"""A round trip through the worker: proves workflows run and activities reach the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.system import DatabaseStatus, SystemActivities


@dataclass
class SystemCheckResult:
    started_at: str
    database: DatabaseStatus


@workflow.defn
class SystemCheckWorkflow:
    @workflow.run
    async def run(self) -> SystemCheckResult:
        started = workflow.now().isoformat()
        database = await workflow.execute_activity_method(
            SystemActivities.check_database, start_to_close_timeout=timedelta(seconds=30)
        )
        return SystemCheckResult(started_at=started, database=database)
