"""Activities over the workload runtime: thin, idempotent, and the same for both runtimes."""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.kube import KubernetesApiError
from activities.runtime import WorkloadRuntime
from models.workloads import ProjectEnvironment, WorkloadKind, WorkloadSpec, WorkloadStatus


class WorkloadRef(BaseModel):
    project_id: str
    kind: WorkloadKind
    resource_id: str


# Refusals of the request itself (422 Invalid, 403 Forbidden) fail the same way on every retry.
_PERMANENT = {400, 403, 422}


def _refused(exc: KubernetesApiError) -> ApplicationError | KubernetesApiError:
    if exc.status not in _PERMANENT:
        return exc
    return ApplicationError(str(exc)[:2000], type="RuntimeRejected", non_retryable=True)


class WorkloadActivities:
    def __init__(self, runtime: WorkloadRuntime) -> None:
        self._runtime = runtime

    @activity.defn
    def ensure_project_environment(self, environment: ProjectEnvironment) -> None:
        try:
            self._runtime.ensure_project(environment)
        except KubernetesApiError as exc:
            raise _refused(exc) from exc

    @activity.defn
    def delete_project_environment(self, project_id: str) -> None:
        self._runtime.delete_project(project_id)

    @activity.defn
    def apply_workload(self, spec: WorkloadSpec) -> WorkloadStatus:
        try:
            return self._runtime.apply(spec)
        except KubernetesApiError as exc:
            raise _refused(exc) from exc

    @activity.defn
    def workload_status(self, ref: WorkloadRef) -> WorkloadStatus:
        return self._runtime.status(ref.project_id, ref.kind, ref.resource_id)

    @activity.defn
    def delete_workload(self, ref: WorkloadRef) -> None:
        self._runtime.delete(ref.project_id, ref.kind, ref.resource_id)

    @activity.defn
    def workload_logs(self, ref: WorkloadRef) -> str:
        """Read once, before deletion, so a job's log outlives its workload."""
        return self._runtime.logs(ref.project_id, ref.kind, ref.resource_id, tail_lines=2000)
