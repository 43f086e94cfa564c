"""Containers through the API, with a real worker on the Temporal dev server and the local runtime."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import Engine
from sqlmodel import Session
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.runtime import runtime_from_settings
from config import Settings
from models.catalog import Spec
from models.containers import Container
from models.workloads import WorkloadKind, WorkloadState
from tests.api import test_projects
from tests.api.test_projects import Headers, eventually

# The API with a real worker, and signed-in people, as the project tests set them up.
platform = test_projects.platform
people = test_projects.people

PASSWORD = "correct horse battery"
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop"


async def active_project(api: httpx.AsyncClient, people: dict[str, Headers]) -> dict[str, Any]:
    """Alice's project with Bob as a member, approved and started (its start time has passed)."""
    project = await test_projects.approved_project(api, people)

    async def active() -> bool:
        response = await api.get(f"/api/v1/projects/{project['id']}", headers=people["alice"])
        return bool(response.json()["status"] == "active")

    await eventually(active)
    return project


def make_spec(engine: Engine, vcpu: float = 10, is_active: bool = True) -> str:
    with Session(engine) as session:
        spec = Spec(
            name=f"cpu-{vcpu:g}-{is_active}",
            vcpu=vcpu,
            ram_gb=8,
            hourly_price=Decimal("1.5"),
            is_active=is_active,
        )
        session.add(spec)
        session.commit()
        return spec.id


def container_body(spec_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "train1",
        "spec_id": spec_id,
        "image": "pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime",
        "password": PASSWORD,
        "ssh_public_key": SSH_KEY,
        "hours": 2,
    }
    body.update(overrides)
    return body


def containers_url(project_id: str) -> str:
    return f"/api/v1/projects/{project_id}/containers"


async def create(api: httpx.AsyncClient, who: Headers, project_id: str, **body: Any) -> dict[str, Any]:
    response = await api.post(containers_url(project_id), headers=who, json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def wait_status(
    api: httpx.AsyncClient, who: Headers, project_id: str, container_id: str, *statuses: str
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def reached() -> bool:
        response = await api.get(f"{containers_url(project_id)}/{container_id}", headers=who)
        seen.update(response.json())
        return seen.get("status") in statuses

    await eventually(reached)
    return seen


async def test_a_member_creates_a_running_container_and_deletes_it(
    platform: httpx.AsyncClient,
    people: dict[str, Headers],
    engine: Engine,
    settings: Settings,
    dev_server_env: WorkflowEnvironment,
) -> None:
    project = await active_project(platform, people)
    spec_id = make_spec(engine)
    created = await create(platform, people["bob"], project["id"], **container_body(spec_id))
    assert created["owner"] == "bob" and created["services"] == ["ssh", "jupyter"]
    assert created["status"] in ("scheduled", "waiting", "creating", "running")
    assert PASSWORD not in str(created)

    detail = await wait_status(platform, people["bob"], project["id"], created["id"], "running")
    ssh = next(e for e in detail["endpoints"] if e["name"] == "ssh")
    assert ssh["connect"] == f"ssh root@{ssh['host']} -p {ssh['port']}"
    jupyter = next(e for e in detail["endpoints"] if e["name"] == "jupyter")
    assert jupyter["connect"].startswith("http://")
    assert isinstance(detail["events"], list) and isinstance(detail["log_tail"], str)
    runtime = runtime_from_settings(settings)
    status = runtime.status(project["id"], WorkloadKind.container, created["id"])
    assert status.state == WorkloadState.running

    with Session(engine) as session:
        row = session.get(Container, created["id"])
        assert row is not None and PASSWORD not in str([getattr(row, f) for f in Container.model_fields])
    workflow_input = await recorded_input(dev_server_env.client, created["id"])
    assert PASSWORD not in workflow_input and "$6$" in workflow_input

    deleted = await platform.delete(f"{containers_url(project['id'])}/{created['id']}", headers=people["bob"])
    assert deleted.status_code == 202, deleted.text
    assert deleted.json()["status"] in ("deleting", "deleted")
    await wait_status(platform, people["bob"], project["id"], created["id"], "deleted")
    gone = runtime.status(project["id"], WorkloadKind.container, created["id"])
    assert gone.state == WorkloadState.gone
    listed = await platform.get(containers_url(project["id"]), headers=people["bob"])
    assert listed.json()["total"] == 0
    shown = await platform.get(
        containers_url(project["id"]), headers=people["bob"], params={"status": "deleted"}
    )
    assert [c["id"] for c in shown.json()["items"]] == [created["id"]]
    again = await platform.delete(f"{containers_url(project['id'])}/{created['id']}", headers=people["bob"])
    assert again.status_code == 409, again.text


async def recorded_input(client: Client, container_id: str) -> str:
    """The workflow's input as Temporal recorded it, as JSON text."""
    history = await client.get_workflow_handle(f"container-{container_id}").fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    return "".join(payload.data.decode() for payload in started.input.payloads)
