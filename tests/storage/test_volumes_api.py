"""Volumes through the API with a real worker, the Temporal dev server, SeaweedFS and the local runtime
(bubblewrap mounts): what a member does on `make run`."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from minio import Minio
from pydantic import SecretStr
from sqlalchemy import Engine
from temporalio.testing import WorkflowEnvironment

from activities.local_mounts import bubblewrap
from activities.object_storage import ObjectStore
from api.app import create_app
from config import Settings
from embedded_s3 import S3Admin
from models.accounts import PlatformRole
from tests.api.test_containers import active_project, make_spec
from tests.api.test_jobs import create as create_job
from tests.api.test_jobs import job_body, wait_status
from tests.api.test_projects import Headers, eventually
from tests.conftest import make_user, sign_in
from worker import build_worker

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
pytestmark = SQLITE_ONLY


@pytest.fixture
async def platform(
    settings: Settings, engine: Engine, dev_server_env: WorkflowEnvironment, seaweedfs: S3Admin
) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings.model_copy(
        update={
            "temporal_task_queue": "vol-" + uuid.uuid4().hex[:8],
            "s3_endpoint": seaweedfs.endpoint,
            "s3_access_key": seaweedfs.access_key,
            "s3_secret_key": SecretStr(seaweedfs.secret_key),
        }
    )
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


def volumes_url(project_id: str) -> str:
    return f"/api/v1/projects/{project_id}/volumes"


async def available(
    api: httpx.AsyncClient, who: Headers, project_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    response = await api.post(volumes_url(project_id), headers=who, json=body)
    assert response.status_code == 201, response.text
    volume: dict[str, Any] = response.json()

    async def ready() -> bool:
        volume.update((await api.get(f"{volumes_url(project_id)}/{volume['id']}", headers=who)).json())
        return volume["status"] in ("available", "unavailable")

    try:
        await eventually(ready, 30)
    except AssertionError:
        raise AssertionError(f"volume not ready: {volume}") from None
    assert volume["status"] == "available", volume
    return volume


async def test_s3_volumes_capacity_rules_credentials_and_deletion_with_the_project(
    platform: httpx.AsyncClient, people: dict[str, Headers], seaweedfs: S3Admin
) -> None:
    alice, bob = people["alice"], people["bob"]
    project = await active_project(platform, people)  # storage quota 100 GB
    url = volumes_url(project["id"])

    missing = await platform.post(url, headers=alice, json={"name": "raw", "type": "s3"})
    assert missing.status_code == 422 and missing.json()["field"] == "capacity_gb"
    settings = await platform.put(
        "/api/v1/admin/storage-settings", headers=people["root"], json={"max_volume_gb": 60}
    )
    assert settings.status_code == 200
    limits = (await platform.get(f"{url}/limits", headers=bob)).json()
    assert limits == {
        "max_volume_gb": 60,
        "project_total_gb": 100,
        "project_used_gb": 0,
        "project_remaining_gb": 100,
        "largest_allowed_gb": 60,
        "shown": "per_volume_maximum",
    }
    too_big = await platform.post(url, headers=alice, json={"name": "big", "type": "s3", "capacity_gb": 70})
    assert too_big.status_code == 422 and "60 GB" in too_big.json()["message"]

    data = await available(platform, alice, project["id"], {"name": "data", "type": "s3", "capacity_gb": 5})
    assert data["capacity_gb"] == 5 and data["owner"] == "alice"
    await available(platform, bob, project["id"], {"name": "more", "type": "s3", "capacity_gb": 60})
    refused = await platform.post(url, headers=alice, json={"name": "over", "type": "s3", "capacity_gb": 40})
    assert refused.status_code == 409, refused.text
    assert "100 GB" in refused.json()["message"] and "35 GB remains" in refused.json()["message"]
    limits = (await platform.get(f"{url}/limits", headers=bob)).json()
    assert limits["project_remaining_gb"] == 35 and limits["shown"] == "project_total_and_remaining"

    first = (await platform.get(f"{url}/{data['id']}/credentials", headers=bob)).json()
    assert first["secret_key"] and first["bucket"].endswith(data["id"])
    again = (await platform.get(f"{url}/{data['id']}/credentials", headers=alice)).json()
    assert again["secret_key"] is None and again["access_key"] == first["access_key"]
    client = Minio(
        first["endpoint"], access_key=first["access_key"], secret_key=first["secret_key"], secure=False
    )
    client.put_object(first["bucket"], "notes.txt", io.BytesIO(b"kept"), 4)
    assert client.get_object(first["bucket"], "notes.txt").read() == b"kept"

    shrink = await platform.post(f"{url}/{data['id']}/expand", headers=alice, json={"capacity_gb": 2})
    assert shrink.status_code == 422 and "cannot shrink" in shrink.json()["message"]
    assert (
        await platform.post(f"{url}/{data['id']}/expand", headers=bob, json={"capacity_gb": 9})
    ).status_code == 403
    grown = await platform.post(f"{url}/{data['id']}/expand", headers=alice, json={"capacity_gb": 10})
    assert grown.status_code == 200, grown.text
    assert grown.json()["capacity_gb"] == 10
    assert (await platform.get(f"{url}/limits", headers=bob)).json()["project_remaining_gb"] == 30

    base = f"/api/v1/projects/{project['id']}"
    code = (await platform.get(base, headers=alice)).json()["delete_code"]
    assert (await platform.delete(base, headers=alice, params={"confirmation_code": code})).status_code == 202
    store = ObjectStore(seaweedfs.endpoint, seaweedfs.access_key, seaweedfs.secret_key)

    async def gone() -> bool:
        return store.buckets_with_prefix(f"mlcp-{project['id']}-") == []

    await eventually(gone, 60)
    root = people["root"]
    listed = (await platform.get(url, headers=root, params={"status": "deleted"})).json()
    assert listed["total"] == 2


@pytest.mark.skipif(bubblewrap() is None, reason="bubblewrap cannot run here: mounts become links")
async def test_nfs_volumes_are_really_mounted_with_their_permission(
    platform: httpx.AsyncClient, people: dict[str, Headers], engine: Engine
) -> None:
    alice, bob = people["alice"], people["bob"]
    project = await active_project(platform, people)
    spec = make_spec(engine)
    shared = await available(platform, alice, project["id"], {"name": "shared", "type": "nfs"})
    readonly = await available(
        platform, alice, project["id"], {"name": "papers", "type": "nfs", "permission": "project_read"}
    )
    mine = await available(
        platform, alice, project["id"], {"name": "mine", "type": "nfs", "permission": "owner"}
    )

    writer = await create_job(
        platform,
        alice,
        project["id"],
        **job_body(
            spec,
            name="writer",
            command="echo trained > /data/model.txt && echo ok > /papers/a.txt",
            mounts=[
                {"volume_id": shared["id"], "path": "/data"},
                {"volume_id": readonly["id"], "path": "/papers"},
            ],
        ),
    )
    done = await wait_status(platform, alice, project["id"], writer["id"], "succeeded", "failed")
    assert done["status"] == "succeeded", done
    # Bob's job sees Alice's file; the project_read volume is read-only for him.
    reader = await create_job(
        platform,
        bob,
        project["id"],
        **job_body(
            spec,
            name="reader",
            command="cat /data/model.txt /papers/a.txt && touch /papers/b.txt",
            mounts=[
                {"volume_id": shared["id"], "path": "/data"},
                {"volume_id": readonly["id"], "path": "/papers"},
            ],
        ),
    )
    failed = await wait_status(platform, bob, project["id"], reader["id"], "succeeded", "failed")
    assert failed["status"] == "failed"
    detail = (await platform.get(f"/api/v1/projects/{project['id']}/jobs/{reader['id']}", headers=bob)).json()
    assert "trained" in detail["log_tail"] and "Read-only file system" in detail["log_tail"]

    owner_only = await platform.post(
        f"/api/v1/projects/{project['id']}/jobs",
        headers=bob,
        json=job_body(spec, name="sneak", mounts=[{"volume_id": mine["id"], "path": "/mine"}]),
    )
    assert owner_only.status_code == 422 and owner_only.json()["field"] == "mounts[0].volume_id"
    # Bob does not even see Alice's own volume.
    assert (await platform.get(f"{volumes_url(project['id'])}/{mine['id']}", headers=bob)).status_code == 404

    container = await platform.post(
        f"/api/v1/projects/{project['id']}/containers",
        headers=bob,
        json={
            "name": "look",
            "spec_id": spec,
            "image": "python:3.11-slim",
            "password": "secret-pass-1",
            "hours": 1,
            "mounts": [{"volume_id": shared["id"], "path": "/data", "read_only": True}],
        },
    )
    assert container.status_code == 201, container.text
    busy = await platform.delete(f"{volumes_url(project['id'])}/{shared['id']}", headers=alice)
    assert busy.status_code == 409 and container.json()["id"] in busy.json()["message"]
