"""Replays recorded histories: a non-deterministic change to a workflow fails here.

After an intended change, re-record them with `.venv/bin/python -m tests.workflows.record_history`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.workflows.record_history import (
    CLUSTER_HISTORY,
    CONTAINER_HISTORY,
    HISTORY,
    IMAGE_HISTORY,
    JOB_HISTORY,
    VOLUME_HISTORY,
)
from workflows.cluster import ClusterWorkflow
from workflows.container import ContainerWorkflow
from workflows.image_commit import ImageCommitWorkflow
from workflows.job import JobWorkflow
from workflows.project import ProjectWorkflow
from workflows.volume import VolumeWorkflow


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


@pytest.mark.parametrize(
    ("path", "workflow", "least_events"),
    [
        (HISTORY, ProjectWorkflow, 50),  # the whole life, with an extension and a workload
        (CONTAINER_HISTORY, ContainerWorkflow, 30),  # queued, admitted, running, deleted
        (JOB_HISTORY, JobWorkflow, 30),  # admitted, running, succeeded, log kept, cleaned up
        (VOLUME_HISTORY, VolumeWorkflow, 20),  # made, sampled, an expand refused, deleted with its project
        (IMAGE_HISTORY, ImageCommitWorkflow, 20),  # committed, published, deleted with its project
        (CLUSTER_HISTORY, ClusterWorkflow, 60),  # running, scaled 2 -> 3 -> 2, deleted
    ],
    ids=["project", "container", "job", "volume", "image", "cluster"],
)
async def test_recorded_history_replays(path: Path, workflow: type, least_events: int) -> None:
    history = load(path)
    assert len(history.events) > least_events
    await Replayer(workflows=[workflow], data_converter=pydantic_data_converter).replay_workflow(history)
