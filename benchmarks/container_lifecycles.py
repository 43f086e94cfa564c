"""N container lifecycles (create → running → delete) through the API, the worker and the Temporal dev
server, on the Kubernetes runtime against the Kubernetes API double; then a bare Temporal workflow running
the same number of no-op activities per lifecycle, and the ratio.

    .venv/bin/python -m benchmarks.container_lifecycles --count 500 --concurrency 50

The API (in-process through httpx) and the worker share this process, so its peak RSS is the platform's
less the Temporal server; the double runs in a process of its own so its simulated cluster neither adds to
that figure nor competes for this process's interpreter lock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import resource
import statistics
import sysconfig
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path

import httpx
from temporalio import activity, workflow
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from api.app import create_app
from api.bootstrap import ensure_bootstrap_admin
from config import Settings
from models.database import make_engine, migrate
from tests.kube_double.double import KubeDouble
from tests.kube_double.knobs import Knobs, NodePool
from worker import build_worker
from workflows.search_attributes import ALL

ADMIN_PASSWORD = "benchmark-admin-password"


@activity.defn
def noop(_: int) -> int:
    return 0


@workflow.defn(sandboxed=False)
class NoopWorkflow:
    @workflow.run
    async def run(self, activities: int) -> None:
        for i in range(activities):
            await workflow.execute_activity(noop, i, start_to_close_timeout=timedelta(seconds=30))


async def wait_for(api: httpx.AsyncClient, path: str, headers: dict[str, str], status: str) -> None:
    while True:
        response = await api.get(path, headers=headers)
        if response.status_code == 200 and response.json()["status"] == status:
            return
        await asyncio.sleep(0.5)


class StatusWatcher:
    """One poller of the container list for every lifecycle, as a dashboard would do, rather than one
    detail request per container every half second (the detail also asks the runtime for events and logs)."""

    def __init__(self, api: httpx.AsyncClient, base: str, headers: dict[str, str]) -> None:
        self._api, self._base, self._headers = api, base, headers
        self._waiting: dict[tuple[str, str], asyncio.Future[None]] = {}

    async def reach(self, container_id: str, status: str) -> None:
        future = self._waiting.setdefault((container_id, status), asyncio.get_running_loop().create_future())
        await future

    async def run(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            if not self._waiting:
                continue
            seen: dict[str, str] = {}
            offset = 0
            while True:
                params: list[tuple[str, str | int | float | bool | None]] = [
                    *(("status", status) for status in ("running", "failed", "deleted")),
                    ("limit", 500),
                    ("offset", offset),
                ]
                page = (await self._api.get(self._base, headers=self._headers, params=params)).json()
                seen.update((item["id"], item["status"]) for item in page["items"])
                offset += len(page["items"])
                if offset >= page["total"] or not page["items"]:
                    break
            for (container_id, status), future in list(self._waiting.items()):
                current = seen.get(container_id)
                if current == status:
                    future.set_result(None)
                elif current == "failed":
                    future.set_exception(RuntimeError(f"container {container_id} failed"))
                else:
                    continue
                del self._waiting[(container_id, status)]


def serve_double(folder: str, replies: Connection) -> None:
    """The double's own process: serve until the parent closes the pipe."""
    nodes = (NodePool(count=4, cpu="256", memory="1024Gi"),)
    with KubeDouble(nodes=nodes, knobs=Knobs(tick_seconds=0.1)) as double:
        replies.send(str(double.write_kubeconfig(Path(folder) / "kubeconfig")))
        with contextlib.suppress(EOFError):
            replies.recv()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def platform_run(
    count: int, concurrency: int, env: WorkflowEnvironment, folder: Path, kubeconfig: str
) -> tuple[float, list[float], int]:
    settings = Settings(
        home=folder / "home",
        database_url=f"sqlite:///{folder / 'bench.db'}",
        runtime="kubernetes",
        kubeconfig=kubeconfig,
        temporal_task_queue="bench-" + uuid.uuid4().hex[:6],
        admin_password=ADMIN_PASSWORD,
    )
    migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    ensure_bootstrap_admin(engine, settings)
    app = create_app(settings, engine=engine, temporal=env.client)
    transport = httpx.ASGITransport(app=app)
    async with (
        build_worker(env.client, settings, engine),
        httpx.AsyncClient(transport=transport, base_url="http://mlcp", timeout=120) as api,
    ):
        token = await api.post("/api/v1/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD})
        admin = {"Authorization": f"Bearer {token.json()['access_token']}"}
        spec = await api.post(
            "/api/v1/catalog/specs",
            headers=admin,
            json={"name": "bench", "vcpu": 0.1, "ram_gb": 0.25, "hourly_price": "1"},
        )
        now = datetime.now(UTC)
        project = await api.post(
            "/api/v1/projects",
            headers=admin,
            json={
                "name": "bench",
                "start_at": (now - timedelta(minutes=1)).isoformat(),
                "end_at": (now + timedelta(days=30)).isoformat(),
                "members": [{"username": "admin", "role": "admin"}],
                "quota": {"gpu": 0, "vcpu": count * 0.1 + 1, "ram_gb": count * 0.25 + 1, "storage_gb": 1},
            },
        )
        project_id = project.json()["id"]
        application = (await api.get("/api/v1/applications", headers=admin)).json()["items"][0]
        await api.post(f"/api/v1/applications/{application['id']}/approve", headers=admin)
        await wait_for(api, f"/api/v1/projects/{project_id}", admin, "active")

        latencies: list[float] = []
        gate = asyncio.Semaphore(concurrency)
        base = f"/api/v1/projects/{project_id}/containers"
        watcher = StatusWatcher(api, base, admin)
        watching = asyncio.create_task(watcher.run())

        async def lifecycle(index: int) -> None:
            async with gate:
                started = time.perf_counter()
                body = {
                    "name": f"c{index}",
                    "spec_id": spec.json()["id"],
                    "image": "pytorch:latest",
                    "password": "benchmark-pw",
                    "services": ["ssh"],
                }
                created = await api.post(base, headers=admin, json=body)
                created.raise_for_status()
                container_id = created.json()["id"]
                await watcher.reach(container_id, "running")
                latencies.append(time.perf_counter() - started)
                (await api.delete(f"{base}/{container_id}", headers=admin)).raise_for_status()
                await watcher.reach(container_id, "deleted")

        began = time.perf_counter()
        try:
            await asyncio.gather(*(lifecycle(i) for i in range(count)))
        finally:
            watching.cancel()
        elapsed = time.perf_counter() - began
        deleted = await api.get(base, headers=admin, params={"status": "deleted", "limit": 1})
        one = env.client.get_workflow_handle(f"container-{deleted.json()['items'][0]['id']}")
        activities = 0
        async for event in one.fetch_history_events():
            activities += event.HasField("activity_task_scheduled_event_attributes")
    engine.dispose()
    return elapsed, latencies, activities


async def bare_run(count: int, concurrency: int, activities: int, env: WorkflowEnvironment) -> float:
    queue = "bare-" + uuid.uuid4().hex[:6]
    gate = asyncio.Semaphore(concurrency)
    from concurrent.futures import ThreadPoolExecutor

    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[NoopWorkflow],
        activities=[noop],
        activity_executor=ThreadPoolExecutor(32),
    ):

        async def one(index: int) -> None:
            async with gate:
                await env.client.execute_workflow(
                    NoopWorkflow.run, activities, id=f"bare-{queue}-{index}", task_queue=queue
                )

        began = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        return time.perf_counter() - began


async def main(count: int, concurrency: int) -> None:
    scripts = Path(sysconfig.get_path("scripts"))
    with tempfile.TemporaryDirectory() as folder:
        ours, theirs = multiprocessing.Pipe()
        cluster = multiprocessing.get_context("spawn").Process(target=serve_double, args=(folder, theirs))
        cluster.start()
        theirs.close()
        kubeconfig = ours.recv()
        env = await WorkflowEnvironment.start_local(
            data_converter=pydantic_data_converter,
            dev_server_existing_path=str(scripts / "temporal"),
            search_attributes=list(ALL),
            dev_server_log_level="error",
        )
        try:
            elapsed, latencies, activities = await platform_run(
                count, concurrency, env, Path(folder), kubeconfig
            )
            bare = await bare_run(count, concurrency, activities, env)
        finally:
            await env.shutdown()
            ours.close()
            cluster.join(timeout=10)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"container lifecycles: {count} (concurrency {concurrency}) in {elapsed:.1f} s = "
        f"{count / elapsed:.2f} lifecycles/s"
    )
    print(
        f"create→running latency: p50 {statistics.median(latencies):.2f} s, "
        f"p99 {percentile(latencies, 0.99):.2f} s"
    )
    print(f"peak RSS (API + worker, one process): {peak_mb:.0f} MB")
    print(
        f"bare workflow with {activities} no-op activities each: {count / bare:.2f} workflows/s; "
        f"platform/bare throughput ratio {(count / elapsed) / (count / bare):.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.count, arguments.concurrency))
