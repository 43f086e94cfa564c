"""N container lifecycles (create → running → delete) through the API, the worker and the Temporal dev
server, on the Kubernetes runtime against the Kubernetes API double; then a bare Temporal workflow running
the same number of no-op activities per lifecycle, and the ratio.

    .venv/bin/python -m benchmarks.container_lifecycles --count 500 --concurrency 50

Everything runs in this one process (API in-process through httpx, worker, double), so the peak RSS is the
whole platform's less the Temporal server.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sysconfig
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
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
from tests.kube_double.knobs import NodePool
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
        if response.status_code == 200 and response.json()["status"] == "failed":
            raise RuntimeError(f"{path} failed: {response.json()}")
        await asyncio.sleep(0.5)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def platform_run(
    count: int, concurrency: int, env: WorkflowEnvironment, folder: Path, double: KubeDouble
) -> tuple[float, list[float], int]:
    settings = Settings(
        home=folder / "home",
        database_url=f"sqlite:///{folder / 'bench.db'}",
        runtime="kubernetes",
        kubeconfig=str(double.write_kubeconfig(folder / "kubeconfig")),
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
                # A 503 means "not recorded yet, retry"; the Idempotency-Key makes the retry safe.
                retry_safe = {**admin, "Idempotency-Key": f"bench-{index}"}
                created = await api.post(base, headers=retry_safe, json=body)
                while created.status_code == 503:
                    created = await api.post(base, headers=retry_safe, json=body)
                created.raise_for_status()
                path = f"{base}/{created.json()['id']}"
                await wait_for(api, path, admin, "running")
                latencies.append(time.perf_counter() - started)
                (await api.delete(path, headers=admin)).raise_for_status()
                await wait_for(api, path, admin, "deleted")

        began = time.perf_counter()
        await asyncio.gather(*(lifecycle(i) for i in range(count)))
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
    with (
        tempfile.TemporaryDirectory() as folder,
        KubeDouble(nodes=(NodePool(count=4, cpu="256", memory="1024Gi"),)) as double,
    ):
        env = await WorkflowEnvironment.start_local(
            data_converter=pydantic_data_converter,
            dev_server_existing_path=str(scripts / "temporal"),
            search_attributes=list(ALL),
            dev_server_log_level="error",
        )
        try:
            elapsed, latencies, activities = await platform_run(count, concurrency, env, Path(folder), double)
            bare = await bare_run(count, concurrency, activities, env)
        finally:
            await env.shutdown()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"container lifecycles: {count} (concurrency {concurrency}) in {elapsed:.1f} s = "
        f"{count / elapsed:.2f} lifecycles/s"
    )
    print(
        f"create→running latency: p50 {statistics.median(latencies):.2f} s, "
        f"p99 {percentile(latencies, 0.99):.2f} s"
    )
    print(f"peak RSS (API + worker + double, one process): {peak_mb:.0f} MB")
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
