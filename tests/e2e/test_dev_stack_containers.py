"""Containers on ``make run``: the local runtime starts a real process, a second container waits in the
project's queue with its position and starts once the first is deleted."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest

from activities.local_folder import LaunchRecord
from activities.runtime import namespace_name, workload_name
from models.base import utcnow
from tests.e2e.stack import ADMIN_PASSWORD, DevStack, is_alive
from tests.e2e.test_dev_stack import _create_user, _sign_in

pytestmark = pytest.mark.e2e

Headers = dict[str, str]


async def _eventually(check: Callable[[], Awaitable[bool]], seconds: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.2)


async def _until(
    api: httpx.AsyncClient, who: Headers, url: str, status: str, reason: str | None = None
) -> Any:
    seen: dict[str, Any] = {}

    async def reached() -> bool:
        seen.update((await api.get(url, headers=who)).json())
        return seen["status"] == status and reason in (None, seen.get("reason"))

    await _eventually(reached)
    return seen


def _process_of(home: Path, project_id: str, container_id: str) -> int:
    folder = home / "runtime" / namespace_name(project_id) / workload_name("container", container_id)
    return LaunchRecord.model_validate_json((folder / "pid").read_text()).pid


async def _active_project(api: httpx.AsyncClient, admin: Headers) -> str:
    now = utcnow()
    applied = await api.post(
        "/api/v1/projects",
        headers=admin,
        json={
            "name": "Vision",
            "start_at": (now - timedelta(minutes=1)).isoformat(),
            "end_at": (now + timedelta(days=30)).isoformat(),
            "members": [{"username": "bob"}],
            "quota": {"gpu": 0, "vcpu": 16, "ram_gb": 64, "storage_gb": 10},
            "reason": "research",
        },
    )
    assert applied.status_code == 201, applied.text
    project_id: str = applied.json()["id"]
    listed = await api.get("/api/v1/applications", headers=admin, params={"project_id": project_id})
    approved = await api.post(
        f"/api/v1/applications/{listed.json()['items'][0]['id']}/approve", headers=admin
    )
    assert approved.status_code == 200, approved.text
    await _until(api, admin, f"/api/v1/projects/{project_id}", "active")
    return project_id


async def test_a_member_runs_a_container_and_a_second_one_waits_its_turn(dev_stack: DevStack) -> None:
    await dev_stack.start()
    async with httpx.AsyncClient(base_url=dev_stack.api_url, timeout=30) as api:
        admin = await _sign_in(api, "admin", ADMIN_PASSWORD)
        await _create_user(api, admin, "bob")
        bob = await _sign_in(api, "bob", "bob-password-1")
        spec = await api.post(
            "/api/v1/catalog/specs",
            headers=admin,
            json={"name": "cpu-10", "vcpu": 10, "ram_gb": 8, "hourly_price": "1"},
        )
        assert spec.status_code == 201, spec.text
        project_id = await _active_project(api, admin)
        url = f"/api/v1/projects/{project_id}/containers"
        body = {"spec_id": spec.json()["id"], "image": "pytorch:latest", "password": "bob-container-pw"}

        first = await api.post(url, headers=bob, json=body | {"name": "first"})
        assert first.status_code == 201, first.text
        first_url = f"{url}/{first.json()['id']}"
        running = await _until(api, bob, first_url, "running")
        pid = _process_of(dev_stack.home, project_id, running["id"])
        assert is_alive(pid)
        assert "image pytorch:latest is not pulled" in running["message"]  # said plainly

        async def logged() -> bool:
            detail = (await api.get(first_url, headers=bob)).json()
            return "mlcp local runtime: services" in detail["log_tail"] and bool(detail["events"])

        await _eventually(logged)
        # Its SSH answers at the endpoint shown; Jupyter, not installed for this stack, shows none.
        (ssh,) = running["endpoints"]
        async with asyncssh.connect(
            ssh["host"],
            ssh["port"],
            username="bob",
            password=body["password"],
            known_hosts=None,
            client_keys=None,
        ) as connection:
            assert (await connection.run("echo hi", check=True)).stdout == "hi\n"

        second = await api.post(url, headers=bob, json=body | {"name": "second"})
        assert second.status_code == 201, second.text
        second_url = f"{url}/{second.json()['id']}"
        waiting = await _until(api, bob, second_url, "waiting", reason="Queued")
        assert waiting["queue_position"] == 1
        assert waiting["message"] == "waiting for resources: 4 vCPU short, position 1"

        assert (await api.delete(first_url, headers=bob)).status_code == 202
        await _until(api, bob, first_url, "deleted")
        assert not is_alive(pid)
        started = await _until(api, bob, second_url, "running")
        assert started["queue_position"] is None

        assert (await api.delete(second_url, headers=bob)).status_code == 202
        await _until(api, bob, second_url, "deleted")
    assert await dev_stack.stop() == 0
