"""Training clusters through the API: the create rules, and a real Horovod cluster of three on the local
runtime with a worker: counts, the hostfile, the launcher reaching every worker by SSH, scaling out (a worker
waiting for quota stays out of the hostfile) and in, each pod's log and events, and a delete that releases
all of its quota."""

from __future__ import annotations

import shutil
from decimal import Decimal
from typing import Any

import asyncssh
import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from activities import local_mounts
from models.catalog import GpuModel, GpuVendor, Spec
from tests.api import test_projects
from tests.api.test_containers import active_project, make_spec
from tests.api.test_projects import Headers, eventually

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
platform = test_projects.platform
people = test_projects.people
PASSWORD = "open sesame 42"


def cluster_body(spec_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "bert-large",
        "type": "horovod",
        "containers": 3,
        "spec_id": spec_id,
        "image": "horovod/horovod:0.28.1",
        "password": PASSWORD,
        "mount_home": False,
    }
    return body | overrides


def shareable_spec(engine: Engine) -> str:
    with Session(engine) as session:
        model = GpuModel(name="P4-8G-test", vendor=GpuVendor.NVIDIA, memory_gb=8, shareable=True)
        session.add(model)
        session.commit()
        spec = Spec(
            name="p4-shared", gpu_model_id=model.id, gpu_count=1, vcpu=2, ram_gb=8, hourly_price=Decimal(1)
        )
        session.add(spec)
        session.commit()
        return spec.id


async def test_a_create_that_breaks_a_rule_gets_422_naming_the_field(
    platform: httpx.AsyncClient, people: dict[str, Headers], engine: Engine
) -> None:
    alice, root = people["alice"], people["root"]
    project = await active_project(platform, people)
    url = f"/api/v1/projects/{project['id']}/clusters"
    spec = make_spec(engine, vcpu=2)
    image = await platform.post(
        "/api/v1/images/public",
        headers=root,
        json={"name": "ds", "tag": "1", "reference": "deepspeed/deepspeed:0.14", "frameworks": ["deepspeed"]},
    )
    assert image.status_code == 201, image.text
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": "-bad"}, "name"),
        ({"name": "Bad"}, "name"),
        ({"containers": 1}, "containers"),
        ({"type": "mpi"}, "type"),
        ({"spec_id": shareable_spec(engine)}, "spec_id"),
        ({"image": None, "image_id": image.json()["id"]}, "image_id"),  # it offers deepspeed only
        ({"shm_gb": 6}, "shm_gb"),  # over 70% of 8 GB
        ({"shm_gb": 0.5}, "shm_gb"),
        ({"hours": 721}, "hours"),
        ({"mount_home": True}, "mount_home"),  # Alice's home is not set up here
        ({"password": None}, "password"),
    ]
    for overrides, field in cases:
        response = await platform.post(url, headers=alice, json=cluster_body(spec) | overrides)
        assert response.status_code == 422, (overrides, response.text)
        assert field in response.text, (field, response.text)
    assert (await platform.get(url, headers=alice)).json()["total"] == 0  # nothing half-made


async def _launcher_run(port: int, key: asyncssh.SSHKey, command: str) -> str:
    async with asyncssh.connect(
        "127.0.0.1", port, username="root", known_hosts=None, client_keys=[key]
    ) as connection:
        done = await connection.run(command, check=True)
        return str(done.stdout)


EVERY_HOST = 'for host in $(cut -d: -f1 "$MLCP_HOSTFILE"); do ssh "$host" hostname; done'


@pytest.mark.skipif(
    local_mounts.bubblewrap() is None or shutil.which("ssh") is None,
    reason="a local cluster needs bubblewrap (its pods' host names) and an OpenSSH client (the launcher's)",
)
async def test_a_horovod_cluster_runs_scales_and_releases_its_quota(
    platform: httpx.AsyncClient, people: dict[str, Headers], engine: Engine
) -> None:
    alice, bob = people["alice"], people["bob"]
    project = await active_project(platform, people)
    base = f"/api/v1/projects/{project['id']}"
    key = asyncssh.generate_private_key("ssh-ed25519")
    body = cluster_body(make_spec(engine, vcpu=4), ssh_public_key=key.export_public_key().decode().strip())
    made = await platform.post(f"{base}/clusters", headers=alice, json=body)
    assert made.status_code == 201, made.text
    url = f"{base}/clusters/{made.json()['id']}"
    shown: dict[str, Any] = {}

    async def hosts(*expected: str) -> bool:
        shown.update((await platform.get(url, headers=alice)).json())
        assert shown["status"] not in ("failed", "deleted"), shown
        return shown["status"] == "running" and shown["hosts"] == list(expected)

    await eventually(lambda: hosts("worker-00", "worker-01"), 90)
    assert (shown["launcher_ready"], shown["launcher_total"]) == (1, 1)
    assert (shown["workers_ready"], shown["workers_total"]) == (2, 2)
    assert [pod["name"] for pod in shown["pods"]] == ["launcher", "worker-00", "worker-01"]
    assert all(pod["started_at"] for pod in shown["pods"])
    hostfile = (await platform.get(f"{url}/hostfile", headers=alice)).json()
    # One generation per change of the ready workers: one or two, as the workers came up together or not.
    assert hostfile["hostfile"] == "worker-00:1\nworker-01:1\n" and hostfile["generation"] in (1, 2)
    assert hostfile["path"] == "/etc/mlcp/hostfile" and "hosts" in hostfile["discover_hosts"]
    ssh = next(e for e in shown["endpoints"] if e["name"] == "ssh")
    assert await _launcher_run(ssh["port"], key, EVERY_HOST) == "worker-00\nworker-01\n"
    assert (await platform.get(url, headers=bob)).status_code == 404  # a member sees only their own

    # Scale to 5: the quota (16 vCPU) holds four pods, so worker-03 waits for it, out of the hostfile.
    scaled = await platform.post(f"{url}/scale", headers=alice, json={"containers": 5})
    assert scaled.status_code == 202, scaled.text
    await eventually(lambda: hosts("worker-00", "worker-01", "worker-02"), 90)
    waiting = next(pod for pod in shown["pods"] if pod["name"] == "worker-03")
    assert (waiting["status"], waiting["in_hostfile"], waiting["queue_position"]) == ("queued", False, 1)
    assert await _launcher_run(ssh["port"], key, EVERY_HOST) == "worker-00\nworker-01\nworker-02\n"

    assert (await platform.post(f"{url}/scale", headers=alice, json={"containers": 2})).status_code == 202
    await eventually(lambda: hosts("worker-00"), 60)
    assert [pod["name"] for pod in shown["pods"]] == ["launcher", "worker-00"]
    assert await _launcher_run(ssh["port"], key, EVERY_HOST) == "worker-00\n"

    log = await platform.get(f"{url}/pods/worker-00/log", headers=alice)
    assert log.status_code == 200 and "services" in log.text
    events = await platform.get(f"{url}/pods/launcher/events", headers=alice)
    assert any(event["reason"] == "Started" for event in events.json())
    assert (await platform.get(f"{url}/pods/worker-09/log", headers=alice)).status_code == 404

    deleted = await platform.delete(url, headers=alice)
    assert deleted.status_code == 202, deleted.text

    async def released() -> bool:
        panel = (await platform.get(base, headers=alice)).json()["quota_panel"]
        row = (await platform.get(url, headers=alice)).json()
        return row["status"] == "deleted" and panel["in_use"]["vcpu"] + panel["in_flight"]["vcpu"] == 0

    await eventually(released, 60)
