"""Platform metrics: `GET /metrics` parses as Prometheus' text format and counts every lifecycle kind by
status, the queues and the API's latency by route template; the worker's Temporal metrics (activity failures,
retries, latencies) are served where MLCP_WORKER_METRICS_ADDRESS says."""

from __future__ import annotations

import asyncio
import socket
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy import Engine
from temporalio.testing import WorkflowEnvironment

from config import Settings, connect_temporal, worker_runtime
from services.kinds import DATA_KINDS, KINDS, DataKind, WorkloadKind
from tests.api import test_projects
from tests.api.test_containers import active_project
from tests.api.test_projects import Headers
from worker import build_worker
from workflows.system_check import SystemCheckWorkflow

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
platform = test_projects.platform
people = test_projects.people


def samples(text: str) -> dict[str, list[Sample]]:
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


async def test_metrics_count_lifecycles_queues_projects_and_api_latency(
    platform: httpx.AsyncClient, people: dict[str, Headers]
) -> None:
    project = await active_project(platform, people)
    assert (await platform.get("/api/v1/users/me", headers=people["alice"])).status_code == 200
    assert (await platform.get("/api/v1/nowhere", headers=people["alice"])).status_code == 404
    scraped = await platform.get("/metrics")
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    found = samples(scraped.text)

    lifecycles = {(s.labels["kind"], s.labels["status"]): s.value for s in found["mlcp_lifecycles"]}
    kinds: list[WorkloadKind | DataKind] = [*KINDS, *DATA_KINDS]
    for kind in kinds:
        assert all((kind.name, status.value) in lifecycles for status in kind.status), kind.name
    assert {s.labels["kind"] for s in found["mlcp_queue_length"]} == {kind.name for kind in KINDS}
    projects = {s.labels["status"]: s.value for s in found["mlcp_projects"]}
    assert projects["active"] >= 1, projects

    counts = {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for s in found["mlcp_api_request_duration_seconds"]
        if s.name.endswith("_count")
    }
    assert counts[("GET", "/api/v1/users/me", "200")] >= 1
    assert counts[("GET", "/api/v1/projects/{project_id}", "200")] >= 1  # templates, never IDs
    assert counts[("GET", "unmatched", "404")] >= 1
    assert not any(project["id"] in route for _, route, _ in counts)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_the_worker_serves_temporals_metrics_at_its_address(
    settings: Settings, engine: Engine, dev_server_env: WorkflowEnvironment
) -> None:
    address = f"127.0.0.1:{free_port()}"
    settings = settings.model_copy(
        update={
            "temporal_address": dev_server_env.client.service_client.config.target_host,
            "temporal_task_queue": "metrics-" + uuid.uuid4().hex[:6],
            "worker_metrics_address": address,
        }
    )
    client = await connect_temporal(settings, worker_runtime(settings))
    async with build_worker(client, settings, engine):
        await client.execute_workflow(
            SystemCheckWorkflow.run,
            id=f"check-{uuid.uuid4().hex[:6]}",
            task_queue=settings.temporal_task_queue,
        )
        async with httpx.AsyncClient() as http:
            for _ in range(50):  # the runtime exports on its own schedule
                text = (await http.get(f"http://{address}/metrics")).text
                if "temporal_activity_execution_latency" in text:
                    break
                await asyncio.sleep(0.2)
    found = samples(text)
    assert "temporal_activity_execution_latency" in found, sorted(found)
    assert "temporal_workflow_completed" in found, sorted(found)
    failed = found.get("temporal_activity_execution_failed", [])
    assert all(s.value == 0 for s in failed)  # the check's activity succeeded at its first attempt
