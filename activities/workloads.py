"""Activities over the workload runtime: thin, idempotent, the same for both runtimes, and heartbeating.

Each call heartbeats while it blocks, so a worker killed mid-call has it retried within the heartbeat
timeout, and a delete can cancel it. A refusal that no retry can change (an unknown kind, a request the
Kubernetes API rejects as invalid or forbidden) fails at once and for good; everything else is retried by
the workflow's retry policy, which is bounded, so a failure that never clears ends the workload with its
reason instead of being retried for ever.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating
from activities.kube import KubernetesApiError
from activities.runtime import UnknownWorkloadKind, WorkloadRuntime
from models.workloads import ProjectEnvironment, WorkloadSpec, WorkloadStatus

T = TypeVar("T")
RUNTIME_REJECTED = "RuntimeRejected"
UNKNOWN_KIND = "UnknownWorkloadKind"


class WorkloadRef(BaseModel):
    project_id: str
    kind: str
    resource_id: str


# Refusals of the request itself (422 Invalid, 403 Forbidden) fail the same way on every retry.
_PERMANENT = {400, 403, 422}


@contextmanager
def runtime_call() -> Iterator[None]:
    """Heartbeat while the runtime works; turn refusals that retrying cannot fix into final failures."""
    with heartbeating():
        try:
            yield
        except UnknownWorkloadKind as exc:
            raise ApplicationError(str(exc), type=UNKNOWN_KIND, non_retryable=True) from exc
        except KubernetesApiError as exc:
            if exc.status not in _PERMANENT:
                raise
            raise ApplicationError(str(exc)[:2000], type=RUNTIME_REJECTED, non_retryable=True) from exc


def _call(method: Callable[[], T]) -> T:
    with runtime_call():
        return method()


class WorkloadActivities:
    def __init__(self, runtime: WorkloadRuntime) -> None:
        self._runtime = runtime

    @activity.defn
    def ensure_project_environment(self, environment: ProjectEnvironment) -> None:
        _call(lambda: self._runtime.ensure_project(environment))

    @activity.defn
    def delete_project_environment(self, project_id: str) -> None:
        _call(lambda: self._runtime.delete_project(project_id))

    @activity.defn
    def apply_workload(self, spec: WorkloadSpec) -> WorkloadStatus:
        return _call(lambda: self._runtime.apply(spec))

    @activity.defn
    def workload_status(self, ref: WorkloadRef) -> WorkloadStatus:
        return _call(lambda: self._runtime.status(ref.project_id, ref.kind, ref.resource_id))

    @activity.defn
    def delete_workload(self, ref: WorkloadRef) -> WorkloadStatus:
        """Delete, then say what the runtime still holds (`gone` once nothing is left); repeated until
        gone, so a workload an interrupted apply created after an earlier delete goes too."""
        with runtime_call():
            self._runtime.delete(ref.project_id, ref.kind, ref.resource_id)
            return self._runtime.status(ref.project_id, ref.kind, ref.resource_id)
