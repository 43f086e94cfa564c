"""A project's place in the runtime follows its lifecycle: namespace and quota from activation to deletion."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException
from sqlalchemy import Engine
from temporalio.testing import WorkflowEnvironment

from activities.kube import KubernetesRuntime
from activities.runtime import namespace_name
from models.lifecycle import Application, ApplicationType, Decision, ProjectStatus, Quota
from services.kinds import runtime_kinds
from tests.kube_double.double import KubeDouble
from tests.kube_double.fixtures import kube_double  # noqa: F401
from tests.workflows.project_harness import MailCatcher, new_state, project_worker, start_project
from workflows.project import ProjectWorkflow


def hard_quota(core: Any, namespace: str) -> dict[str, str]:
    return dict(core.read_namespaced_resource_quota("mlcp-quota", namespace).spec.hard)


async def test_namespace_and_quota_follow_the_project(
    time_skipping_env: WorkflowEnvironment,
    engine: Engine,
    kube_double: KubeDouble,  # noqa: F811
) -> None:
    env = time_skipping_env
    core: Any = kubernetes.client.CoreV1Api(kube_double.api_client)
    runtime = KubernetesRuntime(kube_double.api_client, runtime_kinds())
    now = await env.get_current_time()
    state = new_state(
        start=now + timedelta(days=1), end=now + timedelta(days=10), quota=Quota(gpu=2, vcpu=8, ram_gb=32)
    )
    namespace = namespace_name(state.id)
    async with project_worker(env.client, engine, MailCatcher(), runtime=runtime) as tq:
        handle = await start_project(env.client, tq, state)
        admin = {"admin_id": "root", "admin": "root"}
        await handle.execute_update(
            ProjectWorkflow.decide, Decision(application_id=f"a-{state.id}", approve=True, **admin)
        )
        assert namespace not in [n.metadata.name for n in core.list_namespace().items]  # not before its start

        await env.sleep(timedelta(days=1, minutes=1))
        assert (await handle.query(ProjectWorkflow.view)).state.status == ProjectStatus.active
        assert core.read_namespace(namespace).metadata.labels["mlcp.io/project"] == state.id
        assert hard_quota(core, namespace)["requests.nvidia.com/gpu"] == "2"

        raise_quota = Application(
            id="more",
            type=ApplicationType.quota,
            applicant_id="alice",
            applicant="alice",
            submitted_at=await env.get_current_time(),
            quota_delta=Quota(gpu=3),
        )
        await handle.execute_update(ProjectWorkflow.apply, raise_quota)
        await handle.execute_update(
            ProjectWorkflow.decide, Decision(application_id="more", approve=True, **admin)
        )
        await env.sleep(timedelta(seconds=5))
        assert hard_quota(core, namespace)["requests.nvidia.com/gpu"] == "5"

        assert await handle.result() == ProjectStatus.deleted  # end, grace, deletion
        kube_double.settle()
        try:
            phase = core.read_namespace(namespace).status.phase
        except ApiException as exc:
            assert exc.status == 404
        else:
            assert phase == "Terminating"
