"""Records the history that test_replay.py replays: run it again after an intended workflow change.

.venv/bin/python -m tests.workflows.record_history
"""

from __future__ import annotations

import asyncio
import sysconfig
import tempfile
from datetime import timedelta
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from config import register_search_attributes
from models.database import make_engine, migrate
from models.lifecycle import Application, ApplicationType, Decision, WorkloadEvent
from tests.workflows.fake_workload import FakeWorkloadWorkflow
from tests.workflows.project_harness import (
    MailCatcher,
    admit,
    new_state,
    project_worker,
    start_project,
    start_workload,
)
from workflows.project import ProjectWorkflow

HISTORY = Path(__file__).parent / "histories" / "project_whole_life.json"


async def record() -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=str(Path(sysconfig.get_path("scripts")) / "temporal-test-server"),
    )
    await register_search_attributes(env.client, "default")
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/history.db"
        migrate(url)
        engine = make_engine(url)
        now = await env.get_current_time()
        state = new_state(start=now + timedelta(days=1), end=now + timedelta(days=10), project_id="replay1")
        async with project_worker(env.client, engine, MailCatcher(), [FakeWorkloadWorkflow]) as tq:
            handle = await start_project(env.client, tq, state)
            await handle.execute_update(ProjectWorkflow.synced)
            admin = {"admin_id": "root", "admin": "root"}
            await handle.execute_update(
                ProjectWorkflow.decide, Decision(application_id="a-replay1", approve=True, **admin)
            )
            await env.sleep(timedelta(days=2))
            workload, request = await start_workload(env.client, tq, state.id, "r1", gpu=1)
            await admit(handle, workload, request)
            await handle.signal(ProjectWorkflow.workload_running, WorkloadEvent(resource_id="r1"))
            extension = Application(
                id="ext-r",
                type=ApplicationType.extension,
                applicant_id="alice",
                applicant="alice",
                submitted_at=await env.get_current_time(),
                extension_days=5,
            )
            await handle.execute_update(ProjectWorkflow.apply, extension)
            await handle.execute_update(
                ProjectWorkflow.decide, Decision(application_id="ext-r", approve=True, **admin)
            )
            await handle.result()
            history = await handle.fetch_history()
        HISTORY.write_text(history.to_json())
        engine.dispose()
    await env.shutdown()


if __name__ == "__main__":
    asyncio.run(record())
