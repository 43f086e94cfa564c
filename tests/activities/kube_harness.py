"""The Kubernetes runtime on the API double: specs, the `kube` fixture and shortcuts into the double's store.

The double's controllers only move when a test calls `settle()`, so nothing waits on a clock. Object
counts are read from the double's store, behind the API the runtime talks to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from activities.kube import KubernetesRuntime
from activities.runtime import LABEL_KIND, LABEL_OWNER, LABEL_PROJECT, LABEL_RESOURCE_ID
from models.lifecycle import Quota
from models.workloads import (
    Credentials,
    ProjectEnvironment,
    ResourceRequest,
    ServicePort,
    WorkloadSpec,
)
from services.kinds import runtime_kinds
from tests.kube_double import resources as r
from tests.kube_double.double import KubeDouble
from tests.specs import one_role_spec

PROJECT = "pr0ject42"
NAMESPACE = f"mlcp-{PROJECT}"
QUOTA = Quota(gpu=8, vcpu=32, ram_gb=128, storage_gb=500)
PASSWORD_HASH = "$6$saltsalt$Yq0c0ZbN1iJ2nR0mTQW3hPQ5eLFpcKx8pV4g3Z4gKjP7bq1sxS0C3a8o0c3"
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnly alice@laptop"
CONTAINER = one_role_spec(
    project_id=PROJECT,
    resource_id="c0ntainer1",
    kind="container",
    owner="alice@example.com",
    name="dev box",
    image="registry.example/pytorch:2.3",
    env={"WANDB_MODE": "offline"},
    resources=ResourceRequest(gpu=1, vcpu=4, ram_gb=16, shm_gb=2),
    ports=[ServicePort(name="ssh", port=22), ServicePort(name="jupyter", port=8888)],
    credentials=Credentials(password_hash=PASSWORD_HASH, authorized_keys=[PUBLIC_KEY]),
)
JOB = one_role_spec(
    project_id=PROJECT,
    resource_id="j0b1",
    kind="job",
    owner="bob",
    name="train",
    image="busybox:1.36",
    command=["sh", "-c", "echo epoch 1; echo done"],
    env={"EPOCHS": "1"},
    resources=ResourceRequest(vcpu=1, ram_gb=1.5),
    active_deadline_seconds=3600,
)
WORKLOAD_LABELS = (LABEL_PROJECT, LABEL_OWNER, LABEL_KIND, LABEL_RESOURCE_ID, "app.kubernetes.io/managed-by")


@dataclass
class Kube:
    double: KubeDouble
    runtime: KubernetesRuntime
    sleeps: list[float] = field(default_factory=list)

    def settle(self) -> None:
        self.double.settle()

    def objects(self, resource: r.ResourceType) -> list[dict[str, Any]]:
        return self.double.objects(resource, None if resource is r.NAMESPACES else NAMESPACE)

    def names(self, resource: r.ResourceType) -> list[str]:
        return sorted(o["metadata"]["name"] for o in self.objects(resource))

    def one(self, resource: r.ResourceType, name: str) -> dict[str, Any]:
        found = [o for o in self.objects(resource) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"{len(found)} {resource.plural} named {name}"
        return found[0]

    def project(self, quota: Quota = QUOTA) -> None:
        self.runtime.ensure_project(ProjectEnvironment(project_id=PROJECT, quota=quota))


@pytest.fixture
def kube(kube_double: KubeDouble) -> Kube:
    """A runtime on the double, whose retry pauses are recorded instead of slept."""
    kube_double.knobs.auto_step = False
    sleeps: list[float] = []
    return Kube(
        kube_double, KubernetesRuntime(kube_double.api_client, runtime_kinds(), sleep=sleeps.append), sleeps
    )


def status_of(kube: Kube, spec: WorkloadSpec) -> Any:
    return kube.runtime.status(spec.project_id, spec.kind, spec.resource_id)


def pod_spec(kube: Kube, name: str = "container-c0ntainer1") -> dict[str, Any]:
    return kube.one(r.DEPLOYMENTS, name)["spec"]["template"]["spec"]
