"""Workload specs for tests, written as containers and jobs are: one role with its image and resources."""

from __future__ import annotations

from typing import Any

from models.clusters import ClusterState, ClusterType
from models.workloads import Credentials, ResourceRequest, ServicePort, WorkloadRole, WorkloadSpec


def one_role_spec(
    *,
    image: str,
    resources: ResourceRequest,
    command: list[str] | None = None,
    env: dict[str, str] | None = None,
    ports: list[ServicePort] | None = None,
    **spec: Any,
) -> WorkloadSpec:
    role = WorkloadRole(image=image, command=command, env=env or {}, resources=resources, ports=ports or [])
    return WorkloadSpec(roles=[role], **spec)


def with_main(spec: WorkloadSpec, **role: Any) -> WorkloadSpec:
    """A copy of `spec` whose main role has `role`'s fields changed."""
    return spec.model_copy(update={"roles": [spec.main.model_copy(update=role), *spec.roles[1:]]})


def cluster_spec(
    *,
    project_id: str,
    cluster_id: str,
    workers: int,
    resources: ResourceRequest,
    image: str = "registry.example/horovod:0.28",
    owner: str = "alice",
    credentials: Credentials | None = None,
) -> WorkloadSpec:
    """A training cluster's whole spec as the API makes it: a launcher with SSH, workers with SSH inside."""
    ssh = [ServicePort(name="ssh", port=22)]
    return WorkloadSpec(
        project_id=project_id,
        resource_id=cluster_id,
        kind="cluster",
        owner=owner,
        name="train",
        roles=[
            WorkloadRole(name="launcher", image=image, resources=resources, ports=ssh),
            WorkloadRole(
                name="worker", count=workers, image=image, resources=resources, ports=ssh, expose=False
            ),
        ],
        credentials=credentials,
    )


def cluster_state(
    *, project_id: str, cluster_id: str, workers: int, user_key: str, public_key: str = ""
) -> ClusterState:
    """A CPU cluster's workflow state as its pods are made from it: the user's key on the launcher."""
    spec = cluster_spec(
        project_id=project_id,
        cluster_id=cluster_id,
        workers=workers,
        resources=ResourceRequest(vcpu=1, ram_gb=1),
        credentials=Credentials(authorized_keys=[user_key]),
    )
    return ClusterState(
        id=cluster_id,
        project_id=project_id,
        owner_id="u1",
        owner="alice",
        name="train",
        spec=spec,
        status="creating",
        type=ClusterType.horovod,
        public_key=public_key,
    )
