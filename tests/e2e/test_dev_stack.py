"""``make run`` end to end: boot, use, stop cleanly, restart with everything intact."""

from __future__ import annotations

from uuid import uuid4

import httpx
import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.contrib.pydantic import pydantic_data_converter

from tests.e2e.stack import ADMIN_PASSWORD, DevStack, descendants, is_alive, port_answers
from workflows.search_attributes import KIND

pytestmark = pytest.mark.e2e

FIRST_START = "First start: platform admin created"


async def _sign_in(client: httpx.AsyncClient, username: str, password: str) -> dict[str, str]:
    response = await client.post("/api/v1/auth/token", data={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def _create_user(client: httpx.AsyncClient, admin: dict[str, str], username: str) -> None:
    response = await client.post(
        "/api/v1/users", headers=admin, json={"username": username, "password": f"{username}-password-1"}
    )
    assert response.status_code == 201, response.text


async def test_make_run_serves_runs_workflows_and_stops_cleanly(dev_stack: DevStack) -> None:
    await dev_stack.start()
    assert dev_stack.process is not None
    output = dev_stack.output()
    assert f"{dev_stack.api_url}/docs" in output
    assert f"http://127.0.0.1:{dev_stack.ports.temporal_ui}" in output
    assert FIRST_START in output
    assert ADMIN_PASSWORD not in output

    async with httpx.AsyncClient(base_url=dev_stack.api_url, timeout=30) as api:
        admin = await _sign_in(api, "admin", ADMIN_PASSWORD)
        await _create_user(api, admin, "dana")
        dana = await _sign_in(api, "dana", "dana-password-1")
        assert (await api.get("/api/v1/users/me", headers=dana)).json()["username"] == "dana"

        check = await api.post("/api/v1/system/check", headers=admin)
        assert check.status_code == 200, check.text
        assert check.json()["database"]["users"] == 2
        assert check.json()["database"]["dialect"] == "sqlite"
        assert (await api.post("/api/v1/system/check", headers=dana)).status_code == 403

    async with httpx.AsyncClient(timeout=10) as browser:
        ui = await browser.get(f"http://127.0.0.1:{dev_stack.ports.temporal_ui}/")
    assert ui.status_code == 200

    children = descendants(dev_stack.process.pid)
    assert children, "the Temporal dev server should run as a child process"
    assert await dev_stack.stop() == 0
    assert not [pid for pid in children if is_alive(pid)], "a child process outlived mlcp dev"
    for port in (dev_stack.ports.api, dev_stack.ports.temporal, dev_stack.ports.temporal_ui):
        assert not port_answers(port), f"port {port} still answers after the stop"


async def test_restart_keeps_data_and_workflows_and_prints_credentials_once(dev_stack: DevStack) -> None:
    probe_id = f"restart-probe-{uuid4().hex[:8]}"
    await dev_stack.start()
    assert FIRST_START in dev_stack.output()
    async with httpx.AsyncClient(base_url=dev_stack.api_url, timeout=30) as api:
        admin = await _sign_in(api, "admin", ADMIN_PASSWORD)
        await _create_user(api, admin, "carol")
        seeded = await api.get("/api/v1/catalog/gpu-models", headers=admin, params={"name": "A100"})
        assert seeded.json()["total"] == 1  # the first start seeds a starter catalog
        gpu = await api.post(
            "/api/v1/catalog/gpu-models",
            headers=admin,
            json={"name": "H100-80G", "vendor": "NVIDIA", "memory_gb": 80},
        )
        assert gpu.status_code == 201, gpu.text
        spec = await api.post(
            "/api/v1/catalog/specs",
            headers=admin,
            json={
                "name": "a100x2",
                "gpu_model_id": gpu.json()["id"],
                "gpu_count": 2,
                "vcpu": 16,
                "ram_gb": 128,
                "hourly_price": "120.5",
            },
        )
        assert spec.status_code == 201, spec.text
        check = await api.post("/api/v1/system/check", headers=admin)
        assert check.status_code == 200, check.text
        finished_id = check.json()["workflow_id"]

    temporal = await Client.connect(dev_stack.temporal_address, data_converter=pydantic_data_converter)
    # Nobody polls this task queue, so the execution stays open across the restart.
    await temporal.start_workflow(
        "RestartProbe",
        id=probe_id,
        task_queue="restart-probe",
        search_attributes=TypedSearchAttributes([SearchAttributePair(KIND, "restart-probe")]),
    )
    assert await dev_stack.stop() == 0

    await dev_stack.start()
    assert FIRST_START not in dev_stack.output()
    async with httpx.AsyncClient(base_url=dev_stack.api_url, timeout=30) as api:
        admin = await _sign_in(api, "admin", ADMIN_PASSWORD)
        await _sign_in(api, "carol", "carol-password-1")
        kept = await api.get("/api/v1/catalog/specs/a100x2", headers=admin)
        assert kept.status_code == 200, kept.text
        assert kept.json()["gpu_count"] == 2
        assert kept.json()["gpu_model_id"] == gpu.json()["id"]

    temporal = await Client.connect(dev_stack.temporal_address, data_converter=pydantic_data_converter)
    probe = temporal.get_workflow_handle(probe_id)
    assert (await probe.describe()).status == WorkflowExecutionStatus.RUNNING
    found = [w.id async for w in temporal.list_workflows("MlcpKind = 'restart-probe'")]
    assert found == [probe_id]
    finished = await temporal.get_workflow_handle(finished_id).describe()
    assert finished.status == WorkflowExecutionStatus.COMPLETED
    await probe.terminate("test over")
    assert await dev_stack.stop() == 0
