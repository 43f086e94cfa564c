"""Projects and applications through the API, with a real worker on the Temporal dev server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from config import Settings
from models.accounts import PlatformRole
from models.base import utcnow
from tests.conftest import make_user, sign_in
from worker import build_worker

Headers = dict[str, str]


@pytest.fixture
async def platform(
    settings: Settings,
    engine: Engine,
    dev_server_env: WorkflowEnvironment,
) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings.model_copy(update={"temporal_task_queue": "api-" + uuid.uuid4().hex[:8]})
    app = create_app(settings, engine=engine, temporal=dev_server_env.client)
    async with (
        build_worker(dev_server_env.client, settings, engine),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://mlcp.test", timeout=30
        ) as client,
    ):
        yield client


@pytest.fixture
async def people(platform: httpx.AsyncClient, engine: Engine) -> dict[str, Headers]:
    make_user(engine, "root", PlatformRole.admin)
    for name in ("alice", "bob", "carol"):
        make_user(engine, name)
    return {name: await sign_in(platform, name) for name in ("root", "alice", "bob", "carol")}


def application_body(**overrides: Any) -> dict[str, Any]:
    now = utcnow()
    body: dict[str, Any] = {
        "name": "Vision",
        "description": "image models",
        "start_at": (now - timedelta(minutes=1)).isoformat(),
        "end_at": (now + timedelta(days=30)).isoformat(),
        "members": [{"username": "bob"}],
        "quota": {"gpu": 4, "vcpu": 16, "ram_gb": 64, "storage_gb": 100},
        "reason": "research",
    }
    body.update(overrides)
    return body


async def apply(api: httpx.AsyncClient, who: Headers, **overrides: Any) -> dict[str, Any]:
    response = await api.post("/api/v1/projects", headers=who, json=application_body(**overrides))
    assert response.status_code == 201, response.text
    return response.json()


async def project_application(api: httpx.AsyncClient, who: Headers, project_id: str) -> dict[str, Any]:
    listed = await api.get("/api/v1/applications", headers=who, params={"project_id": project_id})
    return listed.json()["items"][0]


async def approved_project(
    api: httpx.AsyncClient, people: dict[str, Headers], **overrides: Any
) -> dict[str, Any]:
    project = await apply(api, people["alice"], **overrides)
    application = await project_application(api, people["alice"], project["id"])
    approved = await api.post(f"/api/v1/applications/{application['id']}/approve", headers=people["root"])
    assert approved.status_code == 200, approved.text
    return project


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.2)


async def test_apply_lists_the_project_and_its_application_to_the_applicant_only(
    platform: httpx.AsyncClient, people: dict[str, Headers]
) -> None:
    project = await apply(platform, people["alice"])
    assert project["status"] == "pending" and project["my_role"] == "admin"
    assert {(m["username"], m["role"]) for m in project["members"]} == {("alice", "admin"), ("bob", "member")}
    mine = (await platform.get("/api/v1/projects", headers=people["alice"])).json()
    assert [p["id"] for p in mine["items"]] == [project["id"]]
    application = await project_application(platform, people["alice"], project["id"])
    assert (application["type"], application["status"], application["applicant"]) == (
        "project",
        "pending",
        "alice",
    )

    outsider = people["carol"]
    assert (await platform.get("/api/v1/projects", headers=outsider)).json()["total"] == 0
    assert (await platform.get(f"/api/v1/projects/{project['id']}", headers=outsider)).status_code == 404
    assert (
        await platform.get(f"/api/v1/applications/{application['id']}", headers=outsider)
    ).status_code == 404
    pending = await platform.get(
        "/api/v1/applications", headers=people["root"], params={"all": True, "status": "pending"}
    )
    assert [a["id"] for a in pending.json()["items"]] == [application["id"]]


async def test_application_validation_names_the_field(
    platform: httpx.AsyncClient, people: dict[str, Headers]
) -> None:
    now = utcnow()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"end_at": (now - timedelta(days=40)).isoformat()}, "end_at"),  # before start
        ({"members": []}, "members"),
        ({"members": [{"username": "nobody"}]}, "members[0].username"),
        ({"purpose_id": "missing"}, "purpose_id"),
        ({"quota": {"gpu": -1}}, "quota.gpu"),
        ({"start_at": "2027-01-01T00:00:00"}, "start_at"),  # no time zone
    ]
    for overrides, field in cases:
        response = await platform.post(
            "/api/v1/projects", headers=people["alice"], json=application_body(**overrides)
        )
        assert response.status_code == 422, (overrides, response.text)
        assert response.json()["field"] == field, response.json()
    assert (await platform.get("/api/v1/projects", headers=people["alice"])).json()["total"] == 0


async def test_idempotency_key_makes_a_retried_apply_create_one_project(
    platform: httpx.AsyncClient, people: dict[str, Headers]
) -> None:
    headers = {**people["alice"], "Idempotency-Key": "apply-42"}
    first = await platform.post("/api/v1/projects", headers=headers, json=application_body())
    second = await platform.post("/api/v1/projects", headers=headers, json=application_body())
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    assert (await platform.get("/api/v1/projects", headers=people["alice"])).json()["total"] == 1


async def test_admin_approves_once_and_the_project_turns_active_with_its_quota_panel(
    platform: httpx.AsyncClient, people: dict[str, Headers]
) -> None:
    project = await apply(platform, people["alice"])
    application = await project_application(platform, people["alice"], project["id"])
    path = f"/api/v1/applications/{application['id']}"
    assert (await platform.post(f"{path}/approve", headers=people["alice"])).status_code == 403
    approved = await platform.post(f"{path}/approve", headers=people["root"], json={"reason": "welcome"})
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    again = await platform.post(f"{path}/approve", headers=people["root"])
    assert again.status_code == 409 and again.json()["code"] == "conflict"

    async def active() -> bool:
        detail = (await platform.get(f"/api/v1/projects/{project['id']}", headers=people["alice"])).json()
        return bool(detail["status"] == "active")

    await eventually(active)
    detail = (await platform.get(f"/api/v1/projects/{project['id']}", headers=people["alice"])).json()
    panel = detail["quota_panel"]
    assert panel["limit"]["gpu"] == 4 and panel["remaining"]["gpu"] == 4 and panel["in_use"]["gpu"] == 0
    assert len(detail["delete_code"]) == 6
    as_member = (await platform.get(f"/api/v1/projects/{project['id']}", headers=people["bob"])).json()
    assert as_member["delete_code"] is None and as_member["my_role"] == "member"

    outbox = (await platform.get("/api/v1/admin/outbox", headers=people["root"])).json()
    assert any("approved" in m["subject"] and "alice@example.com" in m["recipients"] for m in outbox["items"])


async def test_rejection_needs_a_reason_and_is_mailed(
    platform: httpx.AsyncClient, people: dict[str, Headers]
) -> None:
    project = await apply(platform, people["alice"])
    application = await project_application(platform, people["alice"], project["id"])
    path = f"/api/v1/applications/{application['id']}/reject"
    missing = await platform.post(path, headers=people["root"], json={"reason": " "})
    assert missing.status_code == 422 and missing.json()["field"] == "reason"
    rejected = await platform.post(path, headers=people["root"], json={"reason": "no budget this year"})
    assert (
        rejected.json()["status"] == "rejected"
        and rejected.json()["decision_reason"] == "no budget this year"
    )
    listed = await platform.get("/api/v1/projects", headers=people["alice"], params={"status": "rejected"})
    assert [p["status"] for p in listed.json()["items"]] == ["rejected"]
    outbox = (await platform.get("/api/v1/admin/outbox", headers=people["root"])).json()
    assert any("no budget this year" in m["body"] for m in outbox["items"])


async def test_withdraw_by_the_applicant_only(
    platform: httpx.AsyncClient, people: dict[str, Headers]
) -> None:
    project = await apply(platform, people["alice"])
    application = await project_application(platform, people["alice"], project["id"])
    path = f"/api/v1/applications/{application['id']}/withdraw"
    assert (await platform.post(path, headers=people["bob"])).status_code == 404
    withdrawn = await platform.post(path, headers=people["alice"])
    assert withdrawn.status_code == 200 and withdrawn.json()["status"] == "withdrawn"
    assert (await platform.get("/api/v1/projects", headers=people["alice"])).json()["total"] == 0  # hidden
    late = await platform.post(f"/api/v1/applications/{application['id']}/approve", headers=people["root"])
    assert late.status_code == 409


async def test_extension_and_quota_applications(
    platform: httpx.AsyncClient, people: dict[str, Headers]
) -> None:
    project = await approved_project(platform, people)
    base = f"/api/v1/projects/{project['id']}"
    assert (
        await platform.post(f"{base}/extensions", headers=people["bob"], json={"days": 7})
    ).status_code == 403
    bad = await platform.post(f"{base}/extensions", headers=people["alice"], json={"days": 0})
    assert bad.status_code == 422 and bad.json()["field"] == "days"
    extension = await platform.post(
        f"{base}/extensions", headers=people["alice"], json={"days": 10, "reason": "x"}
    )
    assert extension.status_code == 201 and extension.json()["type"] == "extension"
    twice = await platform.post(f"{base}/extensions", headers=people["alice"], json={"days": 3})
    assert twice.status_code == 409
    await platform.post(f"/api/v1/applications/{extension.json()['id']}/approve", headers=people["root"])
    moved = (await platform.get(base, headers=people["alice"])).json()
    assert moved["end_at"][:10] == (utcnow() + timedelta(days=40)).isoformat()[:10]

    empty = await platform.post(f"{base}/quota-requests", headers=people["bob"], json={"reason": "more"})
    assert empty.status_code == 422
    quota = await platform.post(
        f"{base}/quota-requests", headers=people["bob"], json={"gpu": 2, "ram_gb": 32}
    )
    assert quota.status_code == 201
    await platform.post(f"/api/v1/applications/{quota.json()['id']}/approve", headers=people["root"])
    raised = (await platform.get(base, headers=people["bob"])).json()
    assert raised["quota"]["gpu"] == 6 and raised["quota"]["ram_gb"] == 96
    assert raised["quota_panel"]["limit"]["gpu"] == 6
    mine = await platform.get("/api/v1/applications", headers=people["bob"], params={"type": "quota"})
    assert [a["status"] for a in mine.json()["items"]] == ["approved"]


async def test_edit_by_project_admins(platform: httpx.AsyncClient, people: dict[str, Headers]) -> None:
    project = await approved_project(platform, people)
    base = f"/api/v1/projects/{project['id']}"
    assert (await platform.patch(base, headers=people["bob"], json={"name": "Mine"})).status_code == 403
    no_admin = await platform.patch(base, headers=people["alice"], json={"members": [{"username": "bob"}]})
    assert no_admin.status_code == 422 and no_admin.json()["field"] == "members"
    edited = await platform.patch(
        base,
        headers=people["alice"],
        json={
            "name": "Vision 2",
            "members": [
                {"username": "alice", "role": "admin"},
                {"username": "bob", "role": "admin"},
                {"username": "carol"},
            ],
        },
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["name"] == "Vision 2"
    as_carol = await platform.get(base, headers=people["carol"])
    assert as_carol.status_code == 200 and as_carol.json()["my_role"] == "member"
    assert (
        await platform.patch(base, headers=people["bob"], json={"description": "now mine too"})
    ).status_code == 200


async def test_delete_needs_the_code_shown_to_project_admins(
    platform: httpx.AsyncClient, people: dict[str, Headers]
) -> None:
    project = await approved_project(platform, people)
    base = f"/api/v1/projects/{project['id']}"
    code = (await platform.get(base, headers=people["alice"])).json()["delete_code"]
    assert (
        await platform.delete(base, headers=people["bob"], params={"confirmation_code": code})
    ).status_code == 403
    wrong = await platform.delete(base, headers=people["alice"], params={"confirmation_code": "NOPE00"})
    assert wrong.status_code == 422 and wrong.json()["field"] == "confirmation_code"
    assert (
        await platform.delete(base, headers=people["alice"], params={"confirmation_code": code})
    ).status_code == 202

    async def deleted() -> bool:
        listed = await platform.get("/api/v1/projects", headers=people["alice"], params={"status": "deleted"})
        return bool(listed.json()["total"] == 1)

    await eventually(deleted)


async def test_whole_life_with_shortened_durations(
    settings: Settings, engine: Engine, dev_server_env: WorkflowEnvironment
) -> None:
    """Apply, approve, active, grace, deleted — in seconds, on the real server, through the API."""
    short = settings.model_copy(
        update={
            "temporal_task_queue": "life-" + uuid.uuid4().hex[:8],
            "project_reminder_days": 1 / 86400,
            "project_grace_days": 2 / 86400,
        }
    )
    app = create_app(short, engine=engine, temporal=dev_server_env.client)
    async with (
        build_worker(dev_server_env.client, short, engine),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://mlcp.test", timeout=30
        ) as api,
    ):
        make_user(engine, "root", PlatformRole.admin)
        make_user(engine, "alice")
        make_user(engine, "bob")
        people = {name: await sign_in(api, name) for name in ("root", "alice")}
        now = utcnow()
        await approved_project(
            api,
            {**people},
            start_at=(now + timedelta(seconds=1)).isoformat(),
            end_at=(now + timedelta(seconds=3)).isoformat(),
        )

        async def reached(status: str) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                listed = await api.get("/api/v1/projects", headers=people["alice"], params={"status": status})
                return bool(listed.json()["total"])

            return check

        for status in ("active", "grace", "deleted"):
            await eventually(await reached(status), seconds=30)
        outbox = (await api.get("/api/v1/admin/outbox", headers=people["root"])).json()
        subjects = " | ".join(m["subject"] for m in outbox["items"])
        assert "ends" in subjects and "has ended" in subjects and "was deleted" in subjects
