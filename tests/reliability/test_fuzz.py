"""API fuzzing: schemathesis generates requests from the app's own OpenAPI schema, seeded and a bounded
number per operation: valid and invalid ones as a platform admin, valid ones as a project member.

The API is a real server with a real worker behind it (the Temporal dev server, the Kubernetes runtime on
the API double, so the generated commands run nowhere). Path IDs are a real project's, template's,
schedule's and workload's, and bodies name a real catalog spec, so the fuzzer reaches past the 404s into
real creates. Nothing may answer 5xx; afterwards every lifecycle the fuzzer started reaches a steady or
end state, and deleting every project it reached completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from config import Settings
from models.accounts import PlatformRole, User
from models.base import new_id
from models.catalog import Spec
from models.clusters import Cluster
from models.containers import Container
from models.images import CustomImage, ImageStatus
from models.jobs import Job
from models.lifecycle import DeleteRequest
from models.projects import Project
from services.projects import project_handle
from tests.api.test_projects import Headers, approved_project, eventually
from tests.conftest import make_user, sign_in
from tests.kube_double.double import KubeDouble
from tests.kube_double.knobs import Knobs, NodePool
from tests.kube_double.pod_exec import PodFolders, pod_folders  # noqa: F401
from worker import build_worker
from workflows.project import ProjectWorkflow

# Imported here, while collection runs in one thread, rather than lazily by the first request in the fuzz
# thread: schemathesis is a pytest plugin, so pytest rewrites its modules' asserts on import, with
# ast.parse. On Python 3.11.7, where this suite runs, two threads building ASTs at once share one recursion
# counter and fail with "SystemError: AST constructor recursion depth mismatch" (python/cpython#106905).
for _lazy in (
    "schemathesis.generation._hooks",
    "schemathesis.generation.body_overrides",
    "schemathesis.generation.dictionaries",
    "schemathesis.python.asgi",
    "schemathesis.transport.asgi",
    "schemathesis.transport.requests",
    "schemathesis.transport.wsgi",
):
    importlib.import_module(_lazy)

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
EXAMPLES = 4  # per operation, mode and role
# Signing out would end the fuzzer's own session; it is covered by the account tests.
SKIPPED = {"POST /api/v1/auth/logout"}
STEADY = {
    "container": {"waiting", "running", "failed", "deleted"},
    "job": {"waiting", "succeeded", "failed", "deleted"},
    "cluster": {"waiting", "running", "failed", "deleted"},
}


@dataclass
class Targets:
    """Real IDs to put in paths, so that generated requests reach real resources."""

    path: dict[str, str]
    spec_id: str
    template_id: str
    container_id: str = ""
    job_id: str = ""
    cluster_id: str = ""
    public_image_id: str = ""
    custom_image_id: str = ""
    answers: Counter[int] = field(default_factory=Counter)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn has no event to wait for)
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def fuzz(
    schema: Any, base_url: str, who: dict[str, str], targets: Targets, modes: tuple[GenerationMode, ...]
) -> list[str]:
    """Every operation, in each of `modes` (valid, invalid requests); the 5xx answers found (in a thread)."""
    failures: list[str] = []
    for operation in schema.get_all_operations():
        operation = operation.ok()
        if operation.label in SKIPPED:
            continue
        names = [parameter.name for parameter in operation.path_parameters]
        path = {name: targets.path[name] for name in names if name in targets.path}
        if "resource_id" in names:
            kinds = {"/containers/": targets.container_id, "/clusters/": targets.cluster_id}
            found = [resource for segment, resource in kinds.items() if segment in operation.path]
            path["resource_id"] = found[0] if found else targets.job_id
        if "container_id" in names:
            path["container_id"] = targets.container_id
        if "image_id" in names:
            public = "/images/public/" in operation.path
            path["image_id"] = targets.public_image_id if public else targets.custom_image_id
        for mode in modes:
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=path or None)
            positive = mode == GenerationMode.POSITIVE

            @settings(
                max_examples=EXAMPLES,
                derandomize=True,
                database=None,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy, positive=st.just(positive))
            def send(case: Any, positive: bool) -> None:
                if positive and isinstance(case.body, dict):
                    for key, value in (("spec_id", targets.spec_id), ("template_id", targets.template_id)):
                        if key in case.body:
                            case.body[key] = value
                response = case.call(base_url=base_url, headers=who, timeout=60)
                targets.answers[response.status_code] += 1
                if response.status_code >= 500:
                    failures.append(
                        f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
                    )

            try:
                send()
            except Unsatisfiable:
                continue  # nothing in this operation to make invalid (GET /healthz, say)
    return failures


@SQLITE_ONLY
async def test_no_generated_request_answers_5xx(
    settings: Settings,
    engine: Engine,
    dev_server_env: WorkflowEnvironment,
    tmp_path: Path,
    pod_folders: PodFolders,  # noqa: F811
) -> None:
    client = dev_server_env.client
    nodes = (NodePool(count=2, cpu="256", memory="1024Gi", gpu=8),)
    with KubeDouble(knobs=Knobs(pod_start_delay=0.2, run_seconds=1.0), nodes=nodes) as double:
        kubeconfig = double.write_kubeconfig(tmp_path / "kubeconfig")
        update = {
            "temporal_task_queue": "fuzz-" + uuid.uuid4().hex[:6],
            "runtime": "kubernetes",
            "kubeconfig": str(kubeconfig),
        }
        settings = settings.model_copy(update=update)
        app = create_app(settings, engine=engine, temporal=client)
        async with (
            build_worker(client, settings, engine),
            serving(app) as base_url,
            httpx.AsyncClient(base_url=base_url, timeout=60) as api,
        ):
            make_user(engine, "root", PlatformRole.admin)
            for name in ("alice", "bob"):
                make_user(engine, name)
            people: dict[str, Headers] = {n: await sign_in(api, n) for n in ("root", "alice", "bob")}
            targets = await seed(api, people, engine)
            schema = schemathesis.openapi.from_dict(app.openapi())
            failures = []
            # Invalid requests as the platform admin, who reaches every route's validation; valid ones as
            # them and as a project member, whose answers depend on who asks.
            both = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
            for role, modes in (("root", both), ("bob", (GenerationMode.POSITIVE,))):
                failures += await asyncio.to_thread(fuzz, schema, base_url, people[role], targets, modes)
            assert failures == [], "\n".join(failures)
            assert targets.answers[201] > 0 and sum(targets.answers.values()) > 500, targets.answers
            await everything_settles(engine, client)
        print("fuzz:", dict(sorted(targets.answers.items())))


async def seed(api: httpx.AsyncClient, people: dict[str, Headers], engine: Engine) -> Targets:
    """A project with a container, a job, a template and a schedule, as a person would leave it."""
    project = await approved_project(api, people)
    url = f"/api/v1/projects/{project['id']}"

    async def active() -> bool:
        return bool((await api.get(url, headers=people["alice"])).json()["status"] == "active")

    await eventually(active, 30)
    with Session(engine) as session:
        spec = Spec(name="fuzz-cpu", vcpu=1, ram_gb=1, hourly_price=Decimal("1"))
        session.add(spec)
        session.commit()
        spec_id = spec.id
    bob = people["bob"]
    template = await api.post(
        f"{url}/job-templates",
        headers=bob,
        json={"name": "fuzz", "spec_id": spec_id, "image": "busybox:1.36", "command": "echo fuzz"},
    )
    schedule = await api.post(
        f"{url}/schedules",
        headers=bob,
        json={
            "name": "nightly",
            "trigger": {"kind": "daily", "at": "03:00"},
            "template_id": template.json()["id"],
        },
    )
    container = await api.post(
        f"{url}/containers",
        headers=bob,
        json={"name": "box", "spec_id": spec_id, "image": "busybox:1.36", "password": "p" * 12},
    )
    job = await api.post(
        f"{url}/jobs",
        headers=bob,
        json={"name": "hello", "spec_id": spec_id, "image": "busybox", "command": "true"},
    )
    image = await api.post(
        "/api/v1/images/public",
        headers=people["root"],
        json={"name": "fuzz", "tag": "v1", "reference": "busybox:1.36", "services": [{"name": "ssh"}]},
    )
    cluster = await api.post(
        f"{url}/clusters",
        headers=bob,
        json={
            "name": "ring",
            "type": "deepspeed",
            "containers": 2,
            "spec_id": spec_id,
            "image": "busybox:1.36",
            "password": "p" * 12,
            "mount_home": False,
            "shm": False,
        },
    )
    for created in (template, schedule, container, job, image, cluster):
        assert created.status_code == 201, created.text
    with Session(engine) as session:  # Bob's committed image, as a commit leaves it
        owner = session.exec(select(User).where(User.username == "bob")).one()
        custom = CustomImage(
            id=new_id(),
            project_id=project["id"],
            owner_id=owner.id,
            owner="bob",
            name="mine",
            tag="v1",
            status=ImageStatus.available,
            source_container_id=container.json()["id"],
        )
        session.add(custom)
        session.commit()
        custom_id = custom.id
    return Targets(
        path={
            "project_id": project["id"],
            "template_id": template.json()["id"],
            "schedule_id": schedule.json()["id"],
            "pod": "launcher",
        },
        spec_id=spec_id,
        template_id=template.json()["id"],
        container_id=container.json()["id"],
        job_id=job.json()["id"],
        cluster_id=cluster.json()["id"],
        public_image_id=image.json()["id"],
        custom_image_id=custom_id,
    )


async def everything_settles(engine: Engine, client: Any) -> None:
    """Every workload reaches a steady or end state; every project reached is deleted."""

    def unsettled() -> list[str]:
        with Session(engine) as session:
            rows: list[tuple[str, Container | Job | Cluster]] = [
                ("container", row) for row in session.exec(select(Container))
            ]
            rows += [("job", row) for row in session.exec(select(Job))]
            rows += [("cluster", row) for row in session.exec(select(Cluster))]
            return [f"{kind} {row.id} {row.status}" for kind, row in rows if row.status not in STEADY[kind]]

    async def settled() -> bool:
        return not unsettled()

    try:
        await eventually(settled, 120)
    except AssertionError:
        raise AssertionError(f"still moving: {unsettled()}") from None
    with Session(engine) as session:
        live = session.exec(
            select(Project).where(col(Project.status).not_in(["deleted", "rejected", "withdrawn"]))
        ).all()
        codes = {project.id: project.delete_code for project in live}
    for project_id, code in codes.items():
        request = DeleteRequest(user_id="root", username="root", confirmation_code=code)
        await project_handle(client, project_id).execute_update(ProjectWorkflow.request_delete, request)
    for project_id in codes:
        assert await asyncio.wait_for(project_handle(client, project_id).result(), 180) == "deleted"
