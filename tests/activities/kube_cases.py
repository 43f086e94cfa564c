"""The runtime's core flows, written once and run against the API double and against real k3s.

A flow drives the runtime and checks the cluster through the official client. `until` is how a
cluster moves: the double settles (no waiting), k3s is polled with a deadline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from activities.kube import KubernetesRuntime
from activities.runtime import namespace_name
from models.lifecycle import Quota
from models.workloads import (
    Credentials,
    ProjectEnvironment,
    ResourceRequest,
    ServicePort,
    WorkloadSpec,
    WorkloadState,
    WorkloadStatus,
)
from tests.specs import one_role_spec

Until = Callable[[Callable[[], bool], str], None]
IMAGE = "busybox:1.36"
MISSING_IMAGE = "registry.invalid/mlcp/missing:0"
SMALL = ResourceRequest(vcpu=0.1, ram_gb=0.125, shm_gb=0.0625)
QUOTA = Quota(gpu=0, vcpu=2, ram_gb=2, storage_gb=1)


@dataclass
class Cluster:
    runtime: KubernetesRuntime
    until: Until

    def api(self, kind: type[Any]) -> Any:
        return kind(self.runtime.api_client)

    def names(self, kind: type[Any], method: str, project_id: str) -> list[str]:
        """Names of live objects in the project's namespace, listed through the official client."""
        items = getattr(self.api(kind), method)(namespace_name(project_id)).items
        return sorted(i.metadata.name for i in items if i.metadata.deletion_timestamp is None)

    def status(self, spec: WorkloadSpec) -> WorkloadStatus:
        return self.runtime.status(spec.project_id, spec.kind, spec.resource_id)

    def wait_for(self, spec: WorkloadSpec, *states: WorkloadState) -> WorkloadStatus:
        self.until(lambda: self.status(spec).state in states, f"{spec.resource_id} {'/'.join(states)}")
        return self.status(spec)

    def namespace_exists(self, project_id: str) -> bool:
        try:
            self.api(client.CoreV1Api).read_namespace(namespace_name(project_id))
        except client.ApiException as error:
            if error.status == 404:
                return False
            raise
        return True


def container_spec(project_id: str, image: str = IMAGE) -> WorkloadSpec:
    return one_role_spec(
        project_id=project_id,
        resource_id="devbox1",
        kind="container",
        owner="carol@example.com",
        name="dev box",
        image=image,
        command=["sleep", "3600"],
        resources=SMALL,
        ports=[ServicePort(name="ssh", port=22), ServicePort(name="jupyter", port=8888)],
        credentials=Credentials(password_hash="$6$salt$hash", authorized_keys=["ssh-ed25519 AAAA carol"]),
    )


def job_spec(project_id: str, resource_id: str, script: str) -> WorkloadSpec:
    return one_role_spec(
        project_id=project_id,
        resource_id=resource_id,
        kind="job",
        owner="carol",
        name=resource_id,
        image=IMAGE,
        command=["sh", "-c", script],
        resources=SMALL,
        active_deadline_seconds=600,
    )


def flow_project(cluster: Cluster, project_id: str) -> None:
    """Namespace, quota and isolation once however often applied; quota changes patch; deletion."""
    runtime, core = cluster.runtime, cluster.api(client.CoreV1Api)
    for _ in range(2):
        runtime.ensure_project(ProjectEnvironment(project_id=project_id, quota=QUOTA))
    assert cluster.names(client.CoreV1Api, "list_namespaced_resource_quota", project_id) == ["mlcp-quota"]
    policies = cluster.names(client.NetworkingV1Api, "list_namespaced_network_policy", project_id)
    assert policies == ["mlcp-isolate"]
    bigger = QUOTA.model_copy(update={"vcpu": 3.5})
    runtime.ensure_project(ProjectEnvironment(project_id=project_id, quota=bigger))
    quota = core.read_namespaced_resource_quota("mlcp-quota", namespace_name(project_id))
    assert quota.spec.hard["requests.cpu"] in ("3500m", "3.5")
    runtime.delete_project(project_id)
    runtime.delete_project(project_id)
    cluster.until(lambda: not cluster.namespace_exists(project_id), f"namespace of {project_id} gone")
    runtime.delete_project(project_id)


def flow_container(cluster: Cluster, project_id: str) -> None:
    """Applied twice: one of each object, running with NodePort endpoints; deleted: all of it gone."""
    runtime, spec = cluster.runtime, container_spec(project_id)
    runtime.ensure_project(ProjectEnvironment(project_id=project_id, quota=QUOTA))
    runtime.apply(spec)
    runtime.apply(spec)
    running = cluster.wait_for(spec, WorkloadState.running)
    assert [e.name for e in running.endpoints] == ["ssh", "jupyter"]
    assert all(e.host and e.node_port and 30000 <= e.node_port <= 32767 for e in running.endpoints)
    assert cluster.names(client.AppsV1Api, "list_namespaced_deployment", project_id) == ["container-devbox1"]
    assert cluster.names(client.CoreV1Api, "list_namespaced_service", project_id) == [
        "container-devbox1-jupyter",
        "container-devbox1-ssh",
    ]
    assert cluster.names(client.CoreV1Api, "list_namespaced_secret", project_id) == [
        "container-devbox1-credentials"
    ]
    assert len(cluster.names(client.CoreV1Api, "list_namespaced_pod", project_id)) == 1
    assert "Scheduled" in [e.reason for e in runtime.events(project_id, spec.kind, spec.resource_id)]
    runtime.delete(project_id, spec.kind, spec.resource_id)
    runtime.delete(project_id, spec.kind, spec.resource_id)
    cluster.wait_for(spec, WorkloadState.gone)

    def children_gone() -> bool:
        methods = ("list_namespaced_service", "list_namespaced_secret", "list_namespaced_pod")
        return not any(cluster.names(client.CoreV1Api, method, project_id) for method in methods)

    cluster.until(children_gone, "services, secret and pod collected with the deployment")
    runtime.delete(project_id, spec.kind, spec.resource_id)
    runtime.delete_project(project_id)


def flow_jobs(cluster: Cluster, project_id: str) -> None:
    """A job that succeeds and one that fails, each with its exit code and log."""
    runtime = cluster.runtime
    runtime.ensure_project(ProjectEnvironment(project_id=project_id, quota=QUOTA))
    good = job_spec(project_id, "good1", "echo hello; echo done")
    bad = job_spec(project_id, "bad1", "echo failing; exit 3")
    for spec in (good, bad, good):
        runtime.apply(spec)
    done = cluster.wait_for(good, WorkloadState.succeeded, WorkloadState.failed)
    assert (done.state, done.exit_code) == (WorkloadState.succeeded, 0)
    assert runtime.logs(project_id, good.kind, good.resource_id) == "hello\ndone\n"
    failed = cluster.wait_for(bad, WorkloadState.succeeded, WorkloadState.failed)
    assert (failed.state, failed.exit_code, failed.reason) == (WorkloadState.failed, 3, "Error")
    assert runtime.logs(project_id, bad.kind, bad.resource_id) == "failing\n"
    assert len(cluster.names(client.BatchV1Api, "list_namespaced_job", project_id)) == 2
    runtime.delete_project(project_id)


def flow_image_pull_failure(cluster: Cluster, project_id: str) -> None:
    """An image that cannot be pulled surfaces as failed with Kubernetes' own reason."""
    runtime, spec = cluster.runtime, container_spec(project_id, MISSING_IMAGE)
    runtime.ensure_project(ProjectEnvironment(project_id=project_id, quota=QUOTA))
    runtime.apply(spec)
    failed = cluster.wait_for(spec, WorkloadState.failed)
    assert failed.reason in ("ErrImagePull", "ImagePullBackOff")
    assert runtime.logs(project_id, spec.kind, spec.resource_id) == ""
    runtime.delete_project(project_id)


FLOWS: dict[str, Callable[[Cluster, str], None]] = {
    "project": flow_project,
    "container": flow_container,
    "jobs": flow_jobs,
    "image-pull-failure": flow_image_pull_failure,
}
