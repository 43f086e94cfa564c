from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import Engine
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from api.routers import system
from config import Settings
from models.accounts import PlatformRole
from tests.conftest import make_user, sign_in
from worker import build_worker


@pytest.fixture
async def system_api(
    settings: Settings, engine: Engine, dev_server_env: WorkflowEnvironment
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, engine=engine, temporal=dev_server_env.client)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://mlcp.test"
    ) as client:
        yield client


async def _admin(client: httpx.AsyncClient, engine: Engine) -> dict[str, str]:
    make_user(engine, "root", PlatformRole.admin)
    return await sign_in(client, "root")


async def test_system_check_runs_a_workflow_through_the_worker(
    system_api: httpx.AsyncClient, engine: Engine, settings: Settings, dev_server_env: WorkflowEnvironment
) -> None:
    headers = await _admin(system_api, engine)
    async with build_worker(dev_server_env.client, settings, engine):
        response = await system_api.post("/api/v1/system/check", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["workflow_id"].startswith("system-check-")
    assert body["task_queue"] == settings.temporal_task_queue
    assert body["database"]["dialect"] == engine.dialect.name
    assert body["database"]["schema_revision"]
    assert body["database"]["users"] == 1
    handle = dev_server_env.client.get_workflow_handle(body["workflow_id"])
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED


async def test_system_check_answers_503_when_no_worker_polls(
    system_api: httpx.AsyncClient, engine: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = await _admin(system_api, engine)
    # No worker polls this task queue, so the check must give up after the (shortened) timeout.
    monkeypatch.setattr(system, "SYSTEM_CHECK_TIMEOUT", timedelta(seconds=1))
    response = await system_api.post("/api/v1/system/check", headers=headers)
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "unavailable"
    assert "no worker" in body["message"]
    assert repr(settings.temporal_task_queue) in body["message"]


async def test_system_check_is_for_admins_only(system_api: httpx.AsyncClient, engine: Engine) -> None:
    make_user(engine, "alice")
    headers = await sign_in(system_api, "alice")
    response = await system_api.post("/api/v1/system/check", headers=headers)
    assert response.status_code == 403
    assert (await system_api.post("/api/v1/system/check")).status_code == 401
