"""Workload specs for tests, written as containers and jobs are: one role with its image and resources."""

from __future__ import annotations

from typing import Any

from models.workloads import ResourceRequest, ServicePort, WorkloadRole, WorkloadSpec


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
