"""Volumes through the API with a real worker, the Temporal dev server, SeaweedFS and the local runtime
(bubblewrap mounts): what a member does on `make run`."""

from __future__ import annotations

import asyncio
import contextlib
import io
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest
from minio import Minio
from minio.error import S3Error
from pydantic import SecretStr
from sqlalchemy import Engine

from activities.local_environment import workload_labels
from activities.local_mounts import bubblewrap
from activities.local_supervisor import group_members, labelled_groups
from activities.object_storage import ObjectStore
from config import Settings
from embedded_s3 import S3Admin
from tests.api import test_projects
from tests.api.test_containers import active_project, make_spec
from tests.api.test_jobs import create as create_job
from tests.api.test_jobs import job_body, wait_status
from tests.api.test_projects import Headers, eventually
from tests.conftest import sign_in

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
pytestmark = SQLITE_ONLY


@pytest.fixture
def settings(settings: Settings, seaweedfs: S3Admin) -> Settings:
    """The platform's settings pointed at the tests' SeaweedFS server."""
    return settings.model_copy(
        update={
            "s3_endpoint": seaweedfs.endpoint,
            "s3_access_key": seaweedfs.access_key,
            "s3_secret_key": SecretStr(seaweedfs.secret_key),
        }
    )


# The API with a real worker, and signed-in people, as the project tests set them up.
platform = test_projects.platform
people = test_projects.people


def container_sees(project_id: str, container_id: str, path: str, text: str) -> bool:
    """Whether the container's own processes see `text` at `path`, through their mount namespace."""
    for group in labelled_groups(workload_labels(project_id, "container", container_id)):
        for pid in group_members(group):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/root{path}").read_text() == text:
                    return True
    return False


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

    rotate = f"/api/v1/projects/{project['id']}/storage-identity/rotate"
    assert (await platform.post(rotate, headers=bob)).status_code == 403
    rotated = await platform.post(rotate, headers=alice)
    assert rotated.status_code == 200 and rotated.json()["secret_pending"]
    fresh = (await platform.get(f"{url}/{data['id']}/credentials", headers=alice)).json()
    assert fresh["secret_key"] and fresh["access_key"] != first["access_key"]
    renewed = Minio(
        fresh["endpoint"], access_key=fresh["access_key"], secret_key=fresh["secret_key"], secure=False
    )

    async def old_keys_refused() -> bool:
        try:
            client.put_object(first["bucket"], "late.txt", io.BytesIO(b"x"), 1)
        except S3Error:
            return True
        return False

    await eventually(old_keys_refused, 10)
    assert renewed.get_object(first["bucket"], "notes.txt").read() == b"kept"

    clone = await platform.post(f"{url}/{data['id']}/clone", headers=bob, json={"name": "data-copy"})
    assert clone.status_code == 201, clone.text
    copy: dict[str, Any] = clone.json()

    async def cloned() -> bool:
        copy.update((await platform.get(f"{url}/{copy['id']}", headers=bob)).json())
        return copy["status"] != "creating"

    await eventually(cloned, 30)
    assert copy["status"] == "available" and copy["cloned_from"] == data["id"] and copy["owner"] == "bob"
    assert renewed.get_object(f"mlcp-{project['id']}-{copy['id']}", "notes.txt").read() == b"kept"

    shrink = await platform.post(f"{url}/{data['id']}/expand", headers=alice, json={"capacity_gb": 2})
    assert shrink.status_code == 422 and "cannot shrink" in shrink.json()["message"]
    assert (
        await platform.post(f"{url}/{data['id']}/expand", headers=bob, json={"capacity_gb": 9})
    ).status_code == 403
    grown = await platform.post(f"{url}/{data['id']}/expand", headers=alice, json={"capacity_gb": 10})
    assert grown.status_code == 200, grown.text
    assert grown.json()["capacity_gb"] == 10
    assert (await platform.get(f"{url}/limits", headers=bob)).json()["project_remaining_gb"] == 25

    base = f"/api/v1/projects/{project['id']}"
    code = (await platform.get(base, headers=alice)).json()["delete_code"]
    assert (await platform.delete(base, headers=alice, params={"confirmation_code": code})).status_code == 202
    store = ObjectStore(seaweedfs.endpoint, seaweedfs.access_key, seaweedfs.secret_key)

    async def gone() -> bool:
        return store.buckets_with_prefix(f"mlcp-{project['id']}-") == []

    await eventually(gone, 60)

    async def recorded() -> bool:
        listed = await platform.get(url, headers=people["root"], params={"status": "deleted"})
        return bool(listed.json()["total"] == 3)

    await eventually(recorded, 30)


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
    box = container.json()["id"]

    async def sees_the_file() -> bool:
        return await asyncio.to_thread(container_sees, project["id"], box, "/data/model.txt", "trained\n")

    await eventually(sees_the_file, 30)
    changed = await platform.patch(
        f"{volumes_url(project['id'])}/{shared['id']}", headers=bob, json={"permission": "project_read"}
    )
    assert changed.status_code == 403  # only its owner and the project's admins
    changed = await platform.patch(
        f"{volumes_url(project['id'])}/{shared['id']}", headers=alice, json={"permission": "project_read"}
    )
    assert changed.status_code == 200 and changed.json()["permission"] == "project_read"
    busy = await platform.delete(f"{volumes_url(project['id'])}/{shared['id']}", headers=alice)
    assert busy.status_code == 409 and container.json()["id"] in busy.json()["message"]

    # Once the container is gone, the volume goes too, and with it the folder.
    containers = f"/api/v1/projects/{project['id']}/containers"
    assert (await platform.delete(f"{containers}/{box}", headers=bob)).status_code == 202

    async def container_gone() -> bool:
        return bool((await platform.get(f"{containers}/{box}", headers=bob)).json()["status"] == "deleted")

    await eventually(container_gone, 30)
    deleted = await platform.delete(f"{volumes_url(project['id'])}/{shared['id']}", headers=alice)
    assert deleted.status_code == 200 and deleted.json()["status"] in ("deleting", "deleted")


@pytest.mark.skipif(bubblewrap() is None, reason="bubblewrap cannot run here: mounts become links")
async def test_the_transfer_service_serves_the_members_volumes_over_sftp(
    platform: httpx.AsyncClient, people: dict[str, Headers], engine: Engine, settings: Settings
) -> None:
    alice, bob = people["alice"], people["bob"]
    project = await active_project(platform, people)
    base = f"/api/v1/projects/{project['id']}"
    shared = await available(platform, alice, project["id"], {"name": "shared", "type": "nfs"})
    papers = await available(
        platform, bob, project["id"], {"name": "papers", "type": "nfs", "permission": "project_read"}
    )
    await available(platform, bob, project["id"], {"name": "bobs", "type": "nfs", "permission": "owner"})

    short = await platform.post(f"{base}/transfer", headers=alice, json={"password": "short"})
    assert short.status_code == 422 and short.json()["field"] == "password"
    started = await platform.post(f"{base}/transfer", headers=alice, json={"password": "sftp-pass-123"})
    assert started.status_code == 201, started.text
    assert {(v["name"], v["read_only"]) for v in started.json()["volumes"]} == {
        ("shared", False),
        ("papers", True),
    }
    again = await platform.post(f"{base}/transfer", headers=alice, json={"password": "sftp-pass-123"})
    assert again.status_code == 409
    shown: dict[str, Any] = {}

    async def running() -> bool:
        shown.update((await platform.get(f"{base}/transfer", headers=alice)).json())
        return shown["status"] in ("running", "failed")

    await eventually(running, 30)
    assert shown["status"] == "running", shown
    assert shown["connect"] == f"sftp -P {shown['port']} alice@127.0.0.1"
    assert (await platform.get(f"{base}/transfer", headers=bob)).status_code == 404  # bob has none

    async def connected() -> bool:
        try:
            conn = await asyncssh.connect(
                "127.0.0.1", shown["port"], username="alice", password="sftp-pass-123", known_hosts=None
            )
        except OSError:
            return False
        conn.close()
        return True

    await eventually(connected, 20)  # the process listens a moment after it starts
    async with (
        asyncssh.connect(
            "127.0.0.1", shown["port"], username="alice", password="sftp-pass-123", known_hosts=None
        ) as conn,
        conn.start_sftp_client() as sftp,
    ):
        assert sorted(await sftp.listdir("/")) == [".", "..", "papers", "shared"] or sorted(
            await sftp.listdir("/")
        ) == ["papers", "shared"]
        async with sftp.open("/shared/upload.txt", "w") as handle:
            await handle.write("from sftp")
        with pytest.raises(asyncssh.SFTPError):
            async with sftp.open("/papers/nope.txt", "w") as handle:
                await handle.write("refused")
        with pytest.raises(asyncssh.SFTPError):
            await sftp.open("/shared/../../etc/passwd")
    stored = settings.home.resolve() / "volumes" / f"mlcp-{project['id']}" / shared["id"] / "upload.txt"
    assert stored.read_text() == "from sftp"
    assert papers["id"] not in str(stored)

    stopped = await platform.delete(f"{base}/transfer", headers=alice)
    assert stopped.status_code == 200, stopped.text

    async def gone() -> bool:
        return (await platform.get(f"{base}/transfer", headers=alice)).status_code == 404

    await eventually(gone, 30)


@pytest.mark.skipif(bubblewrap() is None, reason="bubblewrap cannot run here: mounts become links")
async def test_user_setup_provisions_a_home_that_workloads_mount(
    platform: httpx.AsyncClient, people: dict[str, Headers], engine: Engine, settings: Settings
) -> None:
    root, bob = people["root"], people["bob"]
    created = await platform.post(
        "/api/v1/users", headers=root, json={"username": "dora", "password": "dora-pass-123"}
    )
    assert created.status_code == 201, created.text
    dora = await sign_in(platform, "dora", "dora-pass-123")

    async def ready(who: Headers) -> bool:
        return bool((await platform.get("/api/v1/users/me/setup", headers=who)).json()["status"] == "ready")

    await eventually(lambda: ready(dora), 20)
    assert (settings.home.resolve() / "homes" / "dora").is_dir()

    # Bob's account was made before setups ran: his home cannot be mounted until an admin runs it.
    project = await active_project(platform, people)
    spec = make_spec(engine)
    body = job_body(
        spec,
        name="athome",
        command="echo notes > /home/bob/notes.txt",
        mounts=[{"volume_id": "home", "path": "/home/bob"}],
    )
    refused = await platform.post(f"/api/v1/projects/{project['id']}/jobs", headers=bob, json=body)
    assert refused.status_code == 422 and refused.json()["field"] == "mounts[0].volume_id"
    assert (await platform.get("/api/v1/users/me/setup", headers=bob)).json()["reason"] == "NotSetUp"
    bob_id = (await platform.get("/api/v1/users/me", headers=bob)).json()["id"]
    retried = await platform.post(f"/api/v1/users/{bob_id}/setup", headers=root)
    assert retried.status_code == 202, retried.text
    await eventually(lambda: ready(bob), 20)

    job = await create_job(platform, bob, project["id"], **body)
    done = await wait_status(platform, bob, project["id"], job["id"], "succeeded", "failed")
    assert done["status"] == "succeeded", done
    assert (settings.home.resolve() / "homes" / "bob" / "notes.txt").read_text() == "notes\n"
