"""Replays a recorded ProjectWorkflow history: a non-deterministic change to the workflow fails here."""

from __future__ import annotations

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.workflows.record_history import HISTORY
from workflows.project import ProjectWorkflow


async def test_recorded_project_history_replays() -> None:
    history = WorkflowHistory.from_json("project-replay1", HISTORY.read_text())
    assert len(history.events) > 50  # the whole life, with an extension and a workload, is in it
    await Replayer(workflows=[ProjectWorkflow], data_converter=pydantic_data_converter).replay_workflow(
        history
    )
