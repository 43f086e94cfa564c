"""Containers through the API, with a real worker on the Temporal dev server and the local runtime."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import Engine
from sqlmodel import Session
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from config import Settings
from models.base import utcnow
from models.catalog import Spec
from models.containers import Container
from models.workloads import WorkloadState
from services.runtimes import runtime_from_settings
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


def container_body(spec: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "train1",
        "spec_id": spec,
        "image": "pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime",
        "password": PASSWORD,
        "ssh_public_key": SSH_KEY,
        "hours": 2,
    }
    body.update(overrides)
    return body


def row_position(engine: Engine, container_id: str) -> int | None:
    with Session(engine) as session:
        row = session.get(Container, container_id)
        assert row is not None
        return row.queue_position


def containers_url(project_id: str) -> str:
    return f"/api/v1/projects/{project_id}/containers"


async def create(api: httpx.AsyncClient, who: Headers, project_id: str, **body: Any) -> dict[str, Any]:
    response = await api.post(containers_url(project_id), headers=who, json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def wait_status(
    api: httpx.AsyncClient,
    who: Headers,
    project_id: str,
    container_id: str,
    *statuses: str,
    reason: str | None = None,
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def reached() -> bool:
        response = await api.get(f"{containers_url(project_id)}/{container_id}", headers=who)
        seen.update(response.json())
        return seen.get("status") in statuses and reason in (None, seen.get("reason"))

    await eventually(reached)
    return seen


async def delete_and_wait(api: httpx.AsyncClient, who: Headers, project_id: str, container_id: str) -> None:
    """Tests leave no process behind on the local runtime."""
    response = await api.delete(f"{containers_url(project_id)}/{container_id}", headers=who)
    assert response.status_code == 202, response.text
    await wait_status(api, who, project_id, container_id, "deleted")


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
    # Kubernetes serves the image's own Jupyter; locally it is not installed for the tests, and no endpoint
    # points at a port nothing listens on.
    expected = ["ssh", "jupyter"] if settings.runtime == "kubernetes" else ["ssh"]
    assert [e["name"] for e in detail["endpoints"]] == expected
    assert isinstance(detail["events"], list) and isinstance(detail["log_tail"], str)
    runtime = runtime_from_settings(settings)
    status = runtime.status(project["id"], "container", created["id"])
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
    gone = runtime.status(project["id"], "container", created["id"])
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


async def test_validation_names_the_field(
    platform: httpx.AsyncClient, people: dict[str, Headers], engine: Engine
) -> None:
    project = await active_project(platform, people)
    spec_id, retired = make_spec(engine), make_spec(engine, is_active=False)
    now = utcnow()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": "Train_1"}, "name"),
        ({"name": ""}, "name"),
        ({"spec_id": "missing"}, "spec_id"),
        ({"spec_id": retired}, "spec_id"),
        ({"image": ""}, "image"),
        ({"password": "short"}, "password"),
        ({"password": None, "ssh_public_key": None}, "password"),
        ({"ssh_public_key": "not a key"}, "ssh_public_key"),
        ({"services": ["ssh", "gopher"]}, "services"),
        ({"shm_gb": 0}, "shm_gb"),
        ({"start_at": (now - timedelta(hours=1)).isoformat()}, "start_at"),
        ({"start_at": "2099-01-01T00:00:00"}, "start_at"),  # no time zone
        ({"end_at": (now + timedelta(days=1)).isoformat()}, "hours"),  # both end_at and hours
        ({"hours": None, "end_at": (now - timedelta(hours=1)).isoformat()}, "end_at"),
        ({"hours": 0}, "hours"),
    ]
    for overrides, field in cases:
        response = await platform.post(
            containers_url(project["id"]), headers=people["bob"], json=container_body(spec_id, **overrides)
        )
        assert response.status_code == 422, (overrides, response.text)
        assert response.json()["field"] == field, (overrides, response.json())
        assert PASSWORD not in response.text
    listed = await platform.get(containers_url(project["id"]), headers=people["alice"])
    assert listed.json()["total"] == 0


async def test_members_see_their_own_admins_see_all_outsiders_nothing(
    platform: httpx.AsyncClient, people: dict[str, Headers], engine: Engine
) -> None:
    project = await active_project(platform, people)
    spec_id = make_spec(engine, vcpu=1)
    url = containers_url(project["id"])
    bobs = await create(platform, people["bob"], project["id"], **container_body(spec_id, name="bob1"))
    alices = await create(platform, people["alice"], project["id"], **container_body(spec_id, name="alice1"))

    seen_by_bob = (await platform.get(url, headers=people["bob"])).json()
    assert [c["id"] for c in seen_by_bob["items"]] == [bobs["id"]]
    seen_by_alice = (await platform.get(url, headers=people["alice"])).json()
    assert {c["id"] for c in seen_by_alice["items"]} == {bobs["id"], alices["id"]}
    only_bob = (await platform.get(url, headers=people["alice"], params={"owner": "bob"})).json()
    assert [c["id"] for c in only_bob["items"]] == [bobs["id"]]
    paged = (await platform.get(url, headers=people["alice"], params={"limit": 1})).json()
    assert (len(paged["items"]), paged["total"]) == (1, 2)

    assert (await platform.get(f"{url}/{alices['id']}", headers=people["bob"])).status_code == 404
    assert (await platform.delete(f"{url}/{alices['id']}", headers=people["bob"])).status_code == 404
    assert (await platform.get(url, headers=people["carol"])).status_code == 404
    assert (await platform.get(f"{url}/{bobs['id']}", headers=people["carol"])).status_code == 404
    outsider_create = await platform.post(url, headers=people["carol"], json=container_body(spec_id))
    assert outsider_create.status_code == 404

    both = await platform.post(
        f"{url}/delete", headers=people["bob"], json={"ids": [bobs["id"], alices["id"], "missing"]}
    )
    assert both.status_code == 200, both.text
    results = {r["id"]: r for r in both.json()["results"]}
    assert results[bobs["id"]]["ok"] is True
    assert (results[alices["id"]]["ok"], results[alices["id"]]["error"]) == (False, "not_found")
    assert results["missing"]["error"] == "not_found"
    by_admin = await platform.post(f"{url}/delete", headers=people["alice"], json={"ids": [alices["id"]]})
    assert by_admin.json()["results"][0]["ok"] is True
    for container in (bobs, alices):
        await wait_status(platform, people["alice"], project["id"], container["id"], "deleted")


async def test_a_container_beyond_the_quota_waits_and_starts_after_the_first_is_deleted(
    platform: httpx.AsyncClient, people: dict[str, Headers], engine: Engine
) -> None:
    project = await active_project(platform, people)  # 16 vCPU
    spec_id = make_spec(engine, vcpu=10)
    first = await create(platform, people["bob"], project["id"], **container_body(spec_id, name="first"))
    await wait_status(platform, people["bob"], project["id"], first["id"], "running")
    second = await create(platform, people["bob"], project["id"], **container_body(spec_id, name="second"))
    waiting = await wait_status(
        platform, people["bob"], project["id"], second["id"], "waiting", reason="Queued"
    )
    assert waiting["queue_position"] == 1 and waiting["endpoints"] == []
    third = await create(platform, people["bob"], project["id"], **container_body(spec_id, name="third"))
    behind = await wait_status(
        platform, people["bob"], project["id"], third["id"], "waiting", reason="Queued"
    )
    assert behind["queue_position"] == 2

    # The line moves up when one ahead leaves it; pages show the place the project holds now.
    url = containers_url(project["id"])
    await delete_and_wait(platform, people["bob"], project["id"], waiting["id"])
    moved = (await platform.get(f"{url}/{third['id']}", headers=people["bob"])).json()
    assert (moved["queue_position"], moved["message"]) == (
        1,
        "waiting for resources: 4 vCPU short, position 1",
    )
    assert row_position(engine, third["id"]) == 2  # what was recorded when it joined
    listed = (await platform.get(url, headers=people["alice"], params={"status": "waiting"})).json()
    assert [(c["id"], c["queue_position"]) for c in listed["items"]] == [(third["id"], 1)]
    second = third

    assert (await platform.delete(f"{url}/{first['id']}", headers=people["alice"])).status_code == 202
    started = await wait_status(platform, people["bob"], project["id"], second["id"], "creating", "running")
    assert started["queue_position"] is None
    await delete_and_wait(platform, people["bob"], project["id"], second["id"])


async def test_an_idempotency_key_makes_a_retried_create_reach_the_same_container(
    platform: httpx.AsyncClient, people: dict[str, Headers], engine: Engine
) -> None:
    project = await active_project(platform, people)
    spec_id = make_spec(engine, vcpu=1)
    url, key = containers_url(project["id"]), {"Idempotency-Key": "retry-1"}
    first = await platform.post(url, headers=people["bob"] | key, json=container_body(spec_id))
    again = await platform.post(url, headers=people["bob"] | key, json=container_body(spec_id))
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert first.json()["id"] == again.json()["id"]
    assert (await platform.get(url, headers=people["bob"])).json()["total"] == 1
    await delete_and_wait(platform, people["bob"], project["id"], first.json()["id"])
    # A retry arriving after the container's whole life still names it, and starts nothing new.
    late = await platform.post(url, headers=people["bob"] | key, json=container_body(spec_id))
    assert (late.status_code, late.json()["id"], late.json()["status"]) == (
        201,
        first.json()["id"],
        "deleted",
    )


async def test_a_project_admin_creates_numbered_containers_for_members(
    platform: httpx.AsyncClient, people: dict[str, Headers], engine: Engine
) -> None:
    project = await active_project(platform, people)
    spec_id = make_spec(engine, vcpu=1)
    url = containers_url(project["id"])
    batch = container_body(spec_id, name="lab", members=["bob", "alice"], count_per_member=2)
    refused = await platform.post(f"{url}/batch", headers=people["bob"], json=batch)
    assert refused.status_code == 403, refused.text
    outsider = await platform.post(
        f"{url}/batch", headers=people["alice"], json=batch | {"members": ["carol"]}
    )
    assert (outsider.status_code, outsider.json()["field"]) == (422, "members[0]")

    made = await platform.post(f"{url}/batch", headers=people["alice"], json=batch)
    assert made.status_code == 201, made.text
    assert sorted((c["owner"], c["name"]) for c in made.json()) == [
        ("alice", "lab1"),
        ("alice", "lab2"),
        ("bob", "lab1"),
        ("bob", "lab2"),
    ]
    bobs = (await platform.get(url, headers=people["bob"])).json()
    assert sorted(c["name"] for c in bobs["items"]) == ["lab1", "lab2"]

    ids = [c["id"] for c in made.json()]
    deleted = await platform.post(f"{url}/delete", headers=people["alice"], json={"ids": ids})
    assert all(result["ok"] for result in deleted.json()["results"]), deleted.text
    for container_id in ids:
        await wait_status(platform, people["alice"], project["id"], container_id, "deleted")
