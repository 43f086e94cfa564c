"""Chaos: mixed container and job lifecycles while the worker is killed with SIGKILL and restarted.

On the real Temporal dev server, with the API in this process and the worker as a real `mlcp worker`
subprocess, on the local runtime and on the Kubernetes API double. Every lifecycle must reach its end
state; each job's command must have run exactly once; the project's ledger must be back to zero within
30 s of the last workload ending; nothing may be left: no runtime object, no process, no running workflow
but the project's, and the project's deletion must then leave none at all. Every runtime activity must
have been scheduled with a heartbeat timeout of at most 30 s, which is what makes recovery take seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sysconfig
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from temporalio.testing import WorkflowEnvironment

from activities.local_environment import workload_labels
from activities.local_supervisor import labelled_groups
from api.app import create_app
from config import Settings
from models.accounts import PlatformRole
from models.clusters import ClusterStatus
from models.containers import ContainerStatus
from models.images import CustomImage
from models.jobs import JobStatus
from tests.api.test_containers import make_spec
from tests.api.test_projects import Headers, approved_project, eventually
from tests.conftest import make_user, sign_in
from tests.kube_double import resources as r
from tests.kube_double.double import KubeDouble
from tests.kube_double.knobs import Knobs, NodePool
from workflows import search_attributes

MLCP = Path(sysconfig.get_path("scripts")) / "mlcp"
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
CONTAINERS, JOBS, KILLS = 10, 10, 3
JOBS_DELETED = 2  # stopped mid-way; the others run to success
SEED = 20261201
# Activities that talk to a runtime or SMTP: each must heartbeat, with a timeout of at most 30 s.
HEARTBEATING = {
    "apply_workload",
    "workload_status",
    "delete_workload",
    "keep_job_log",
    "ensure_project_environment",
    "delete_project_environment",
    "send_mail",
    "create_volume",
    "resize_volume",
    "measure_volume",
    "copy_volume",
    "delete_volume",
    "delete_project_storage",
    "commit_container",
    "publish_image",
    "clean_up_commit",
    "delete_image",
    "prepare_cluster",
    "publish_hosts",
    "member_statuses",
    "delete_cluster",
}
ENDED = {
    "container": {ContainerStatus.deleted.value},
    "cluster": {"deleted"},
    "job": {JobStatus.succeeded.value, JobStatus.deleted.value},
}


@dataclass
class Worker:
    """`mlcp worker` as a process of its own, which the test kills and starts again."""

    environment: dict[str, str]
    folder: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    restarts: list[float] = field(default_factory=list)

    def start(self) -> None:
        self.starts += 1
        log = (self.folder / f"worker-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            [str(MLCP), "worker"], cwd=self.folder, env=self.environment, stdout=log, stderr=subprocess.STDOUT
        )
        self.restarts.append(time.monotonic())

    def kill(self) -> None:
        assert self.process is not None and self.process.poll() is None, self.output()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def output(self) -> str:
        return "\n".join(
            path.read_text(errors="replace")[-3000:] for path in sorted(self.folder.glob("*.log"))
        )


@dataclass
class Lane:
    name: str
    settings: Settings
    double: KubeDouble | None = None


@pytest.fixture(params=["local", "kubernetes"])
def lane(request: pytest.FixtureRequest, settings: Settings, tmp_path: Path) -> Iterator[Lane]:
    queue = f"chaos-{request.param}-{uuid.uuid4().hex[:6]}"
    if request.param == "local":
        yield Lane("local", settings.model_copy(update={"temporal_task_queue": queue}))
        return
    knobs = Knobs(pod_start_delay=0.5, run_seconds=2.0, tick_seconds=0.05)
    with KubeDouble(knobs=knobs, nodes=(NodePool(count=2, cpu="64", memory="256Gi", gpu=0),)) as double:
        kubeconfig = double.write_kubeconfig(tmp_path / "kubeconfig")
        update = {"temporal_task_queue": queue, "runtime": "kubernetes", "kubeconfig": str(kubeconfig)}
        yield Lane("kubernetes", settings.model_copy(update=update), double)


@pytest.fixture
async def worker(lane: Lane, dev_server_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Worker]:
    settings = lane.settings
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MLCP_")}
    environment.update(
        MLCP_HOME=str(settings.home),
        MLCP_DATABASE_URL=settings.database_url,
        MLCP_TEMPORAL_ADDRESS=dev_server_env.client.service_client.config.target_host,
        MLCP_TEMPORAL_TASK_QUEUE=settings.temporal_task_queue,
        MLCP_RUNTIME=settings.runtime,
        MLCP_KUBECONFIG=settings.kubeconfig,
        MLCP_LOG_LEVEL="WARNING",
    )
    process = Worker(environment, tmp_path)
    process.start()
    yield process
    process.stop()


def statuses(kind: str) -> list[tuple[str, str | int | float | bool | None]]:
    values = {"container": ContainerStatus, "cluster": ClusterStatus}.get(kind, JobStatus)
    return [*(("status", status.value) for status in values), ("limit", 500)]


async def current(api: httpx.AsyncClient, who: Headers, project_id: str) -> dict[str, str]:
    """Every workload's status, by ID."""
    seen = {}
    for kind, plural in (("container", "containers"), ("job", "jobs"), ("cluster", "clusters")):
        page = await api.get(f"/api/v1/projects/{project_id}/{plural}", headers=who, params=statuses(kind))
        assert page.status_code == 200, page.text
        seen.update({item["id"]: item["status"] for item in page.json()["items"]})
    return seen


async def chaos(worker: Worker, rng: random.Random) -> None:
    for _ in range(KILLS):
        await asyncio.sleep(rng.uniform(1.0, 4.0))
        worker.kill()
        await asyncio.sleep(rng.uniform(0.2, 1.5))
        worker.start()


@SQLITE_ONLY
async def test_lifecycles_finish_once_and_clean_when_the_worker_is_killed(
    lane: Lane,
    worker: Worker,
    engine: Engine,
    dev_server_env: WorkflowEnvironment,
    tmp_path: Path,
) -> None:
    rng = random.Random(f"{SEED}-{lane.name}")
    client = dev_server_env.client
    app = create_app(lane.settings, engine=engine, temporal=client)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://mlcp.test", timeout=120) as api:
        make_user(engine, "root", PlatformRole.admin)
        for name in ("alice", "bob"):
            make_user(engine, name)
        people = {name: await sign_in(api, name) for name in ("root", "alice", "bob")}
        quota = {"gpu": 0, "vcpu": 6, "ram_gb": 48, "storage_gb": 0}  # six at a time: the rest queue
        project = await approved_project(api, people, quota=quota)
        project_id, url = project["id"], f"/api/v1/projects/{project['id']}"

        async def active() -> bool:
            detail = (await api.get(url, headers=people["alice"])).json()
            return bool(detail["status"] == "active" and detail["quota_panel"])

        await eventually(active, 60)
        spec_id = make_spec(engine, vcpu=1)
        markers = tmp_path / "ran"
        markers.mkdir()

        # Twenty lifecycles, created before the first kill (a create waits for the worker to record it).
        kinds: dict[str, str] = {}
        names: dict[str, str] = {}
        for number in range(JOBS):
            name = f"job{number}"
            command = f'echo ran >> "$MARKER"; sleep {rng.uniform(0.5, 2.5):.1f}'
            body = {
                "name": name,
                "spec_id": spec_id,
                "image": "busybox:1.36",
                "command": command,
                "env": {"MARKER": str(markers / name)},
            }
            created = await api.post(f"{url}/jobs", headers=people["bob"], json=body)
            assert created.status_code == 201, created.text
            kinds[created.json()["id"]], names[created.json()["id"]] = "job", name
        for number in range(CONTAINERS):
            body = {
                "name": f"box{number}",
                "spec_id": spec_id,
                "image": "busybox:1.36",
                "password": "p" * 12,
                "services": [],
            }
            created = await api.post(f"{url}/containers", headers=people["alice"], json=body)
            assert created.status_code == 201, created.text
            kinds[created.json()["id"]] = "container"

        # A training cluster of three, each pod queued for its own reservation, deleted along the way.
        cluster: dict[str, Any] = {
            "name": "ring",
            "type": "horovod",
            "containers": 3,
            "spec_id": spec_id,
            "image": "busybox:1.36",
            "password": "p" * 12,
            "mount_home": False,
            "shm": False,
        }
        created = await api.post(f"{url}/clusters", headers=people["alice"], json=cluster)
        assert created.status_code == 201, created.text
        kinds[created.json()["id"]] = "cluster"

        # Two custom images committed from one of Alice's containers (on Kubernetes, with no registry set,
        # they fail, saying why): one deleted along the way, one that lives until its project is deleted.
        source = next(i for i, k in kinds.items() if k == "container")
        images = await commit_two_images(api, people["alice"], url, source)

        # Two volumes: one deleted along the way, one that lives until its project is deleted.
        volumes: dict[str, str] = {}
        for name in ("keep", "drop"):
            created = await api.post(
                f"{url}/volumes", headers=people["alice"], json={"name": name, "type": "nfs"}
            )
            assert created.status_code == 201, created.text
            volumes[name] = created.json()["id"]

        # Bob's transfer service over them, stopped along the way.
        started = await api.post(f"{url}/transfer", headers=people["bob"], json={"password": "sftp-pass-123"})
        assert started.status_code == 201, started.text
        transfer_id = started.json()["id"]

        doomed_jobs = rng.sample([i for i, k in kinds.items() if k == "job"], JOBS_DELETED)

        async def delete_along_the_way() -> None:
            """Containers go, one by one, whatever state they are in; two jobs are stopped mid-way."""
            order = [i for i, k in kinds.items() if k in ("container", "cluster")] + doomed_jobs
            order.append(volumes["drop"])
            order += [transfer_id, images["drop"]]
            rng.shuffle(order)
            for resource_id in order:
                await asyncio.sleep(rng.uniform(0.3, 1.2))
                if resource_id == transfer_id:
                    stopped = await api.delete(f"{url}/transfer", headers=people["bob"])
                    assert stopped.status_code == 200, stopped.text
                    continue
                plurals = {"container": "containers", "job": "jobs", "cluster": "clusters"}
                plural = plurals.get(kinds.get(resource_id, ""), "volumes")
                plural = "images" if resource_id == images["drop"] else plural
                owner = people["bob"] if plural == "jobs" else people["alice"]
                deleted = await api.delete(f"{url}/{plural}/{resource_id}", headers=owner)
                # A job may have succeeded before its delete; then the delete only hides it. A volume's
                # delete answers once `deleting` is recorded.
                assert deleted.status_code in (200, 202, 409), deleted.text

        began = time.monotonic()
        await asyncio.gather(chaos(worker, rng), delete_along_the_way())

        ended_at: dict[str, float] = {}

        async def all_ended() -> bool:
            seen = await current(api, people["root"], project_id)
            now = time.monotonic()
            for resource_id, status in seen.items():
                if status in ENDED[kinds[resource_id]]:
                    ended_at.setdefault(resource_id, now)
            return len(ended_at) == len(kinds)

        try:
            await eventually(all_ended, 180)
        except AssertionError:
            seen = await current(api, people["root"], project_id)
            stuck = {i: s for i, s in seen.items() if i not in ended_at}
            raise AssertionError(f"not ended: {stuck}\n{worker.output()}") from None
        last_end = max(ended_at.values())

        async def transfer_gone() -> bool:
            return (await api.get(f"{url}/transfer", headers=people["bob"])).status_code == 404

        await eventually(transfer_gone, 60)
        await check_heartbeats(client, [transfer_id], {transfer_id: "transfer"})

        async def ledger_empty() -> bool:
            panel = (await api.get(url, headers=people["alice"])).json()["quota_panel"]
            return all(
                panel[part][key] == 0 for part in ("in_use", "in_flight", "requested") for key in quota
            )

        await eventually(ledger_empty, 30)
        ledger_lag = time.monotonic() - last_end
        assert ledger_lag <= 30

        final = await current(api, people["root"], project_id)
        for resource_id, kind in kinds.items():
            if kind != "job":
                continue
            runs = count_runs(lane, markers, project_id, resource_id, names[resource_id])
            if final[resource_id] == JobStatus.succeeded:
                assert runs == 1, (resource_id, runs)
            else:
                assert runs <= 1, (resource_id, runs)
        assert [i for i in doomed_jobs if final[i] == JobStatus.deleted] or JOBS_DELETED == 0

        assert leftovers(lane, project_id) == []
        running = [
            found.id
            async for found in client.list_workflows(
                f'{search_attributes.PROJECT.name} = "{project_id}" AND ExecutionStatus = "Running"'
            )
        ]
        kept = [f"project-{project_id}", f"volume-{volumes['keep']}", f"image-commit-{images['keep']}"]
        assert sorted(running) == sorted(kept), running
        await check_heartbeats(client, list(kinds), kinds)
        await check_heartbeats(client, list(images.values()), dict.fromkeys(images.values(), "image-commit"))
        assert image_status(engine, images["drop"]) == "deleted"

        async def volume_status(volume_id: str) -> str:
            shown = await api.get(f"{url}/volumes/{volume_id}", headers=people["alice"])
            return str(shown.json()["status"])

        async def dropped() -> bool:
            return await volume_status(volumes["drop"]) == "deleted"

        await eventually(dropped, 60)

        code = (await api.get(url, headers=people["alice"])).json()["delete_code"]
        assert (
            await api.delete(url, headers=people["alice"], params={"confirmation_code": code})
        ).status_code == 202

        async def project_deleted() -> bool:
            return bool((await api.get(url, headers=people["root"])).json()["status"] == "deleted")

        await eventually(project_deleted, 120)
        assert await volume_status(volumes["keep"]) == "deleted"  # data goes with its project, not before
        assert image_status(engine, images["keep"]) == "deleted"
        remaining = [
            found.id
            async for found in client.list_workflows(
                f'{search_attributes.PROJECT.name} = "{project_id}" AND ExecutionStatus = "Running"'
            )
        ]
        assert remaining == []
        report = {
            "lane": lane.name,
            "lifecycles": len(kinds),
            "kills": KILLS,
            "seconds_from_last_restart_to_last_end": round(last_end - worker.restarts[-1], 1),
            "seconds_from_last_end_to_empty_ledger": round(ledger_lag, 1),
            "seconds_in_all": round(time.monotonic() - began, 1),
        }
        print("chaos:", json.dumps(report))


async def commit_two_images(
    api: httpx.AsyncClient, who: Headers, url: str, container_id: str
) -> dict[str, str]:
    async def running() -> bool:
        shown = await api.get(f"{url}/containers/{container_id}", headers=who)
        return bool(shown.json()["status"] == "running")

    await eventually(running, 60)
    images: dict[str, str] = {}
    for name in ("keep", "drop"):
        started = await api.post(f"{url}/containers/{container_id}/commit", headers=who, json={"name": name})
        assert started.status_code == 202, started.text
        images[name] = started.json()["id"]

        async def settled(image_id: str = images[name]) -> bool:
            shown = await api.get(f"{url}/images/{image_id}", headers=who)
            return bool(shown.json()["status"] in ("available", "failed"))

        await eventually(settled, 60)  # one commit per container at a time
    return images


def image_status(engine: Engine, image_id: str) -> str:
    with Session(engine) as session:
        return str(session.get_one(CustomImage, image_id).status)


def count_runs(lane: Lane, markers: Path, project_id: str, job_id: str, name: str) -> int:
    """How often the job's command started: its marker's lines (local), its pods created (Kubernetes)."""
    if lane.double is None:
        marker = markers / name
        return len(marker.read_text().splitlines()) if marker.exists() else 0
    events = lane.double.store.list(r.EVENTS, f"mlcp-{project_id}")["items"]
    return sum(
        1
        for event in events
        if event.get("reason") == "SuccessfulCreate"
        and (event.get("involvedObject") or {}).get("name") == f"job-{job_id}"
    )


def leftovers(lane: Lane, project_id: str) -> list[str]:
    """What the runtime still holds for the project's workloads."""
    if lane.double is None:
        found = [f"process group {group}" for group in labelled_groups(workload_labels(project_id))]
        folder = lane.settings.home.resolve() / "runtime" / f"mlcp-{project_id}"
        if folder.is_dir():
            found += [entry.name for entry in folder.iterdir() if entry.is_dir() and entry.name != "logs"]
        return found
    namespace = f"mlcp-{project_id}"
    return [
        f"{resource.kind} {item['metadata']['name']}"
        for resource in (r.DEPLOYMENTS, r.JOBS, r.PODS)
        for item in lane.double.store.list(resource, namespace)["items"]
    ]


async def check_heartbeats(client: Any, resource_ids: list[str], kinds: dict[str, str]) -> None:
    limit = timedelta(seconds=30)
    for resource_id in resource_ids:
        handle = client.get_workflow_handle(f"{kinds[resource_id]}-{resource_id}")
        async for event in handle.fetch_history_events():
            if not event.HasField("activity_task_scheduled_event_attributes"):
                continue
            scheduled = event.activity_task_scheduled_event_attributes
            if scheduled.activity_type.name in HEARTBEATING:
                timeout = scheduled.heartbeat_timeout.ToTimedelta()
                assert timedelta(0) < timeout <= limit, (resource_id, scheduled.activity_type.name, timeout)
