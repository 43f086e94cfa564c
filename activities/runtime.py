"""The runtime interface every workload goes through, and the factory that picks one from settings."""

from __future__ import annotations

from typing import Protocol

from config import Settings
from models.workloads import ProjectEnvironment, RuntimeEvent, WorkloadKind, WorkloadSpec, WorkloadStatus

LABEL_PROJECT = "mlcp.io/project"
LABEL_OWNER = "mlcp.io/owner"
LABEL_KIND = "mlcp.io/kind"
LABEL_RESOURCE_ID = "mlcp.io/resource-id"
FIELD_MANAGER = "mlcp"


def namespace_name(project_id: str) -> str:
    return f"mlcp-{project_id}"


def workload_name(kind: WorkloadKind, resource_id: str) -> str:
    """Kubernetes object names and local folder names derive from the resource ID, never from user input."""
    return f"{kind.value}-{resource_id}"


class WorkloadRuntime(Protocol):
    """Every method is idempotent: a retried call leaves the world as one call would.

    Methods block (Kubernetes client, subprocesses); activities call them from the worker's thread pool.
    """

    name: str

    def ensure_project(self, environment: ProjectEnvironment) -> None:
        """Create or update the project's place: namespace, ResourceQuota and NetworkPolicy on Kubernetes."""
        ...

    def delete_project(self, project_id: str) -> None:
        """Remove the project's place and anything left in it; absent is success."""
        ...

    def apply(self, spec: WorkloadSpec) -> WorkloadStatus:
        """Create or patch the workload (and its services and secret); returns its status now."""
        ...

    def status(self, project_id: str, kind: WorkloadKind, resource_id: str) -> WorkloadStatus:
        """Current status; state ``gone`` when the runtime holds nothing for it."""
        ...

    def logs(self, project_id: str, kind: WorkloadKind, resource_id: str, tail_lines: int = 200) -> str:
        ...

    def events(self, project_id: str, kind: WorkloadKind, resource_id: str) -> list[RuntimeEvent]:
        ...

    def delete(self, project_id: str, kind: WorkloadKind, resource_id: str) -> None:
        """Stop and remove the workload with everything it owns; absent is success."""
        ...


def runtime_from_settings(settings: Settings) -> WorkloadRuntime:
    if settings.runtime == "kubernetes":
        from activities.kube import KubernetesRuntime

        return KubernetesRuntime.from_settings(settings)
    from activities.local import LocalRuntime

    return LocalRuntime.from_settings(settings)
