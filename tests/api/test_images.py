"""Images through the API: the public catalog (admins write, everyone reads, search and filters), what an
image decides of a container made from it (services, login methods, CUDA versions, the vendor warning), and
a commit on the local runtime with a real worker: a file written over SSH is in the committed image and in
a second container made from it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncssh
import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from activities.oci_layout import ImageStore
from config import Settings
from models.catalog import GpuModel, GpuVendor, Spec
from models.images import ROCM_ON_NVIDIA
from tests.api import test_projects
from tests.api.test_containers import active_project, make_spec
from tests.api.test_projects import Headers, eventually

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
platform = test_projects.platform
people = test_projects.people
PUBLIC = "/api/v1/images/public"
PASSWORD = "open sesame 42"


def image_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "pytorch",
        "tag": "23.10-py3",
        "reference": "nvcr.io/nvidia/pytorch:23.10-py3",
        "description": "PyTorch with CUDA",
        "size_bytes": 18_640_000_000,
        "accelerator": "cuda",
        "cuda_versions": ["12.2", "11.8"],
        "services": [{"name": "ssh"}, {"name": "jupyterlab"}, {"name": "board", "port": 7000}],
        "login_methods": ["password", "key"],
    }
    body.update(overrides)
    return body


async def publish(api: httpx.AsyncClient, root: Headers, **overrides: Any) -> dict[str, Any]:
    response = await api.post(PUBLIC, headers=root, json=image_body(**overrides))
    assert response.status_code == 201, response.text
    return dict(response.json())


def gpu_spec(engine: Engine, vendor: GpuVendor) -> str:
    with Session(engine) as session:
        model = GpuModel(name=f"gpu-{vendor.value}", vendor=vendor, memory_gb=16)
        session.add(model)
        session.commit()
        spec = Spec(
            name=f"{vendor.value}-1",
            gpu_model_id=model.id,
            gpu_count=1,
            vcpu=2,
            ram_gb=8,
            hourly_price=Decimal(1),
        )
        session.add(spec)
        session.commit()
        return spec.id


async def test_admins_publish_images_everyone_searches_them(
    platform: httpx.AsyncClient, people: dict[str, Headers]
) -> None:
    root, bob = people["root"], people["bob"]
    pytorch = await publish(platform, root)
    assert pytorch["uploader"] == "root" and pytorch["cuda_versions"] == ["11.8", "12.2"]
    assert [(s["name"], s["port"]) for s in pytorch["services"]] == [
        ("ssh", 22),
        ("jupyterlab", 8889),
        ("board", 7000),
    ]
    await publish(
        platform,
        root,
        name="tensorflow",
        tag="rocm6.1",
        reference="rocm/tensorflow:rocm6.1",
        accelerator="rocm",
        cuda_versions=[],
        services=[{"name": "jupyter"}],
    )

    assert (await platform.post(PUBLIC, headers=bob, json=image_body(tag="x"))).status_code == 403
    again = await platform.post(PUBLIC, headers=root, json=image_body())
    assert again.status_code == 409 and again.json()["field"] == "tag"
    for wrong, field in (
        ({"accelerator": "none"}, "cuda_versions"),
        ({"services": [{"name": "custom"}]}, "services"),
        ({"services": [{"name": "ssh"}, {"name": "other", "port": 22}]}, "services"),
        ({"cuda_versions": ["twelve"]}, "cuda_versions"),
        ({"reference": "UPPER/Case"}, "reference"),
    ):
        refused = await platform.post(PUBLIC, headers=root, json=image_body(tag="t2", **wrong))
        assert refused.status_code == 422 and field in refused.json()["field"], (wrong, refused.text)

    listed = (await platform.get(PUBLIC, headers=bob, params={"service": "jupyterlab"})).json()
    assert [i["name"] for i in listed["items"]] == ["pytorch"] and listed["total"] == 1
    rocm = (await platform.get(PUBLIC, headers=bob, params={"accelerator": "rocm"})).json()
    assert [i["name"] for i in rocm["items"]] == ["tensorflow"]
    named = (await platform.get(PUBLIC, headers=bob, params={"name": "tensor", "limit": 1})).json()
    assert named["total"] == 1 and named["limit"] == 1

    changed = await platform.patch(f"{PUBLIC}/{pytorch['id']}", headers=root, json={"description": "new"})
    assert changed.status_code == 200 and changed.json()["description"] == "new"
    assert (
        await platform.patch(f"{PUBLIC}/{pytorch['id']}", headers=bob, json={"description": "x"})
    ).status_code == 403
    assert (await platform.get(f"{PUBLIC}/{pytorch['id']}", headers=bob)).json()["description"] == "new"
    assert (await platform.delete(f"{PUBLIC}/{pytorch['id']}", headers=root)).status_code == 204
    assert (await platform.get(f"{PUBLIC}/{pytorch['id']}", headers=bob)).status_code == 404


async def test_the_image_decides_services_logins_and_cuda_of_what_runs_it(
    platform: httpx.AsyncClient, people: dict[str, Headers], engine: Engine
) -> None:
    root, alice = people["root"], people["alice"]
    project = await active_project(platform, people)
    containers = f"/api/v1/projects/{project['id']}/containers"
    cpu = make_spec(engine)
    image = await publish(platform, root, login_methods=["password"])

    def body(**overrides: Any) -> dict[str, Any]:
        return {
            "name": "box",
            "spec_id": cpu,
            "image_id": image["id"],
            "password": PASSWORD,
            "hours": 1,
            **overrides,
        }

    for wrong, field, words in (
        ({"cuda_version": "12.4"}, "cuda_version", ("12.4", "11.8, 12.2")),
        ({"services": ["tensorboard"]}, "services", ("tensorboard",)),
        (
            {"ssh_public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk0bmZ0 x"},
            "ssh_public_key",
            ("key login",),
        ),
        ({"image": "python:3.11"}, "image_id", ("one of them",)),
        ({"image_id": "nosuchimage"}, "image_id", ("nosuchimage",)),
    ):
        refused = await platform.post(containers, headers=alice, json=body(**wrong))
        assert refused.status_code == 422, refused.text
        assert refused.json()["field"] == field and all(w in refused.json()["message"] for w in words), (
            refused.text
        )

    made = await platform.post(containers, headers=alice, json=body(services=["ssh"], cuda_version="11.8"))
    assert made.status_code == 201, made.text
    row = made.json()
    assert (row["image"], row["image_id"], row["cuda_version"]) == (image["reference"], image["id"], "11.8")
    assert row["services"] == ["ssh"] and row["image_warning"] == ""
    newest = await platform.post(containers, headers=alice, json=body(name="box2"))
    assert newest.json()["cuda_version"] == "12.2" and newest.json()["services"] == [
        "ssh",
        "jupyterlab",
        "board",
    ]

    rocm = await publish(
        platform,
        root,
        name="rocmtf",
        reference="rocm/tensorflow:latest",
        accelerator="rocm",
        cuda_versions=[],
    )
    warned = await platform.post(
        containers,
        headers=alice,
        json=body(name="box3", image_id=rocm["id"], spec_id=gpu_spec(engine, GpuVendor.NVIDIA)),
    )
    assert warned.status_code == 201 and warned.json()["image_warning"] == ROCM_ON_NVIDIA  # allowed, warned

    jobs = f"/api/v1/projects/{project['id']}/jobs"
    job = await platform.post(
        jobs, headers=alice, json={"name": "j1", "spec_id": cpu, "image_id": image["id"], "command": "true"}
    )
    assert job.status_code == 201 and job.json()["image"] == image["reference"], job.text
    templates = f"/api/v1/projects/{project['id']}/job-templates"
    template = await platform.post(
        templates,
        headers=alice,
        json={"name": "t", "spec_id": cpu, "image_id": image["id"], "command": "true"},
    )
    assert template.status_code == 201 and template.json()["image_id"] == image["id"], template.text
    await platform.delete(f"{PUBLIC}/{image['id']}", headers=root)
    run = await platform.post(f"{templates}/{template.json()['id']}/run", headers=alice, json={})
    assert run.status_code == 422 and run.json()["field"] == "image_id"
    await delete_containers(platform, alice, f"/api/v1/projects/{project['id']}")


async def ssh_run(port: int, command: str) -> str:
    async with asyncssh.connect(
        "127.0.0.1", port, username="root", password=PASSWORD, known_hosts=None, client_keys=None
    ) as connection:
        done = await connection.run(command, check=True)
        return str(done.stdout)


async def running_container(
    api: httpx.AsyncClient, who: Headers, url: str, body: dict[str, Any]
) -> dict[str, Any]:
    made = await api.post(url, headers=who, json=body)
    assert made.status_code == 201, made.text
    found: dict[str, Any] = {}

    async def running() -> bool:
        found.update((await api.get(f"{url}/{made.json()['id']}", headers=who)).json())
        return found["status"] == "running" and bool(found["endpoints"])

    try:
        await eventually(running, 60)
    except AssertionError:
        pytest.fail(f"container {found.get('name')} is {found.get('status')}: {found.get('message')} {found}")
    return found


async def test_a_commit_captures_what_was_written_and_a_new_container_restores_it(
    platform: httpx.AsyncClient, people: dict[str, Headers], engine: Engine, settings: Settings
) -> None:
    alice, bob = people["alice"], people["bob"]
    project = await active_project(platform, people)
    base = f"/api/v1/projects/{project['id']}"
    box = {
        "spec_id": make_spec(engine, vcpu=2),
        "image": "python:3.11-slim",
        "password": PASSWORD,
        "services": ["ssh"],
    }
    first = await running_container(platform, alice, f"{base}/containers", {"name": "first", **box})
    ssh = next(e for e in first["endpoints"] if e["name"] == "ssh")
    assert ssh["connect"] == f"ssh root@127.0.0.1 -p {ssh['port']}"
    await ssh_run(ssh["port"], "mkdir -p work && echo trained > work/model.txt")

    commit = f"{base}/containers/{first['id']}/commit"
    refused = await platform.post(commit, headers=bob, json={"name": "mine"})
    assert refused.status_code == 404  # Bob does not see Alice's container
    started = await platform.post(
        commit, headers=alice, json={"name": "mymodel", "tag": "v1", "description": "trained"}
    )
    assert started.status_code == 202, started.text
    image = started.json()
    assert (image["status"], image["type"], image["uploader"]) == ("committing", "private", "alice")
    images = f"{base}/images"

    async def available() -> bool:
        image.update((await platform.get(f"{images}/{image['id']}", headers=alice)).json())
        assert image["status"] != "failed", image
        return image["status"] == "available"

    await eventually(available, 60)
    assert image["digest"].startswith("sha256:") and image["reference"].endswith("@" + image["digest"])
    assert image["size_bytes"] > 0 and any("processes" in note for note in image["notes"])
    assert [s["name"] for s in image["services"]] == ["ssh"]
    store = ImageStore(settings.home / "images")
    assert store.tagged(f"mlcp/{project['id']}/mymodel:v1") == image["digest"]
    # Private: Bob neither sees nor uses it; once it is a project image he does.
    assert (await platform.get(f"{images}/{image['id']}", headers=bob)).status_code == 404
    assert (await platform.get(images, headers=bob)).json()["total"] == 0
    bob_box = {**box, "image_id": image["id"], "image": None}
    assert (
        await platform.post(f"{base}/containers", headers=bob, json={"name": "b", **bob_box})
    ).status_code == 422
    shared = await platform.patch(f"{images}/{image['id']}", headers=alice, json={"type": "project"})
    assert shared.status_code == 200 and shared.json()["type"] == "project"
    assert (await platform.get(images, headers=bob, params={"status": "available"})).json()["total"] == 1

    # The same files commit to the same digest.
    twin = await platform.post(commit, headers=alice, json={"name": "mymodel", "tag": "v2"})
    assert twin.status_code == 202
    again = await platform.post(commit, headers=alice, json={"name": "mymodel", "tag": "v1"})
    assert again.status_code == 409  # the tag is taken (or a commit is running)

    second = await running_container(platform, bob, f"{base}/containers", {"name": "second", **bob_box})
    port = next(e for e in second["endpoints"] if e["name"] == "ssh")["port"]
    assert await ssh_run(port, "cat work/model.txt") == "trained\n"

    async def twin_done() -> bool:
        row = (await platform.get(f"{images}/{twin.json()['id']}", headers=alice)).json()
        return row["status"] == "available" and row["digest"] == image["digest"]

    await eventually(twin_done, 60)
    deleted = await platform.delete(f"{images}/{image['id']}", headers=alice)
    assert deleted.status_code == 200 and deleted.json()["status"] in ("deleting", "deleted")

    async def gone() -> bool:
        return (await platform.get(f"{images}/{image['id']}", headers=alice)).status_code == 404

    await eventually(gone, 30)
    assert store.tagged(f"mlcp/{project['id']}/mymodel:v1") is None
    assert store.has(image["digest"])  # v2 still holds the same manifest
    await delete_containers(platform, alice, base)


async def delete_containers(api: httpx.AsyncClient, who: Headers, base: str) -> None:
    """Every container of the project gone, so no process outlives the test."""
    listed = (await api.get(f"{base}/containers", headers=who, params={"limit": 500})).json()["items"]
    ids = [item["id"] for item in listed]
    if ids:
        answer = await api.post(f"{base}/containers/delete", headers=who, json={"ids": ids})
        assert answer.status_code == 200, answer.text

    async def gone() -> bool:
        left = (await api.get(f"{base}/containers", headers=who)).json()["items"]
        return not [item for item in left if item["status"] != "deleted"]

    await eventually(gone, 60)
