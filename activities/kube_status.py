"""Pure readings of Kubernetes objects: a workload's status from its pod, and its events.

The objects are the API's JSON as dicts, so these functions are exercised with the same shapes the
real API server and the test double return.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from models.workloads import Endpoint, RuntimeEvent, WorkloadState, WorkloadStatus

# Waiting reasons that will not resolve by themselves: the user has to change the image or command.
FAILURE_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
_CHILD_KINDS = ("Pod", "ReplicaSet")


def parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), None)


def _is_true(obj: dict[str, Any], kind: str) -> bool:
    found = _condition(obj, kind)
    return found is not None and found.get("status") == "True"


def newest_pod(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The pod that speaks for the workload: the newest one not being deleted, else the newest."""
    if not pods:
        return None

    def order(pod: dict[str, Any]) -> tuple[bool, str, str]:
        metadata = pod["metadata"]
        return (
            not metadata.get("deletionTimestamp"),
            metadata.get("creationTimestamp", ""),
            metadata["name"],
        )

    return max(pods, key=order)


def _main_container(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return statuses[0] if statuses else {}


def _endpoints(pod: dict[str, Any], services: list[dict[str, Any]], node_host: str) -> list[Endpoint]:
    """One endpoint per port the pod's container declares, in its order, with the Service's node port."""
    node_ports = {
        port.get("name"): port.get("nodePort")
        for service in services
        for port in (service.get("spec") or {}).get("ports") or []
    }
    host = node_host or (pod.get("status") or {}).get("hostIP", "")
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    return [
        Endpoint(
            name=port["name"], port=port["containerPort"], host=host, node_port=node_ports.get(port["name"])
        )
        for port in containers[0].get("ports") or []
        if port.get("name")
    ]


def _terminated(container: dict[str, Any]) -> dict[str, Any]:
    state = container.get("state") or {}
    return state.get("terminated") or (container.get("lastState") or {}).get("terminated") or {}


def pod_status(pod: dict[str, Any], services: list[dict[str, Any]], node_host: str) -> WorkloadStatus:
    status = pod.get("status") or {}
    phase = status.get("phase", "Pending")
    container = _main_container(pod)
    state = container.get("state") or {}
    waiting = state.get("waiting") or {}
    terminated = _terminated(container)
    exit_code = terminated.get("exitCode")
    started = parse_time((state.get("running") or {}).get("startedAt") or terminated.get("startedAt"))
    if waiting.get("reason") in FAILURE_REASONS:
        return WorkloadStatus(
            state=WorkloadState.failed,
            reason=waiting["reason"],
            message=waiting.get("message", ""),
            exit_code=exit_code,
        )
    if phase == "Succeeded":
        return WorkloadStatus(
            state=WorkloadState.succeeded,
            reason=terminated.get("reason", "Completed"),
            exit_code=exit_code if exit_code is not None else 0,
            started_at=started,
            finished_at=parse_time(terminated.get("finishedAt")),
        )
    if phase == "Failed":
        return WorkloadStatus(
            state=WorkloadState.failed,
            reason=status.get("reason") or terminated.get("reason", "Error"),
            message=status.get("message") or terminated.get("message", ""),
            exit_code=exit_code,
            started_at=started,
            finished_at=parse_time(terminated.get("finishedAt")),
        )
    scheduled = _condition(pod, "PodScheduled")
    if scheduled is not None and scheduled.get("status") == "False":
        return WorkloadStatus(
            state=WorkloadState.pending,
            reason=scheduled.get("reason", "Unschedulable"),
            message=scheduled.get("message", ""),
        )
    if not (pod.get("spec") or {}).get("nodeName"):
        return WorkloadStatus(state=WorkloadState.pending, reason="Scheduling")
    if phase == "Running" and (_is_true(pod, "Ready") or pod["spec"].get("restartPolicy") == "Never"):
        return WorkloadStatus(
            state=WorkloadState.running, started_at=started, endpoints=_endpoints(pod, services, node_host)
        )
    return WorkloadStatus(
        state=WorkloadState.creating,
        reason=waiting.get("reason", "ContainerCreating"),
        message=waiting.get("message", ""),
    )


def job_outcome(job: dict[str, Any], pod: dict[str, Any] | None) -> WorkloadStatus | None:
    """The final status of a finished Job (exit code from its pod while that exists), else None."""
    container = _main_container(pod) if pod is not None else {}
    terminated = _terminated(container)
    started = parse_time((job.get("status") or {}).get("startTime"))
    if _is_true(job, "Complete"):
        exit_code = terminated.get("exitCode")
        return WorkloadStatus(
            state=WorkloadState.succeeded,
            reason="Completed",
            exit_code=exit_code if exit_code is not None else 0,
            started_at=started,
            finished_at=parse_time((job.get("status") or {}).get("completionTime")),
        )
    failed = _condition(job, "Failed")
    if failed is None or failed.get("status") != "True":
        return None
    # A deadline says more than the SIGKILL it caused; otherwise the container's own reason (Error,
    # OOMKilled) says more than BackoffLimitExceeded.
    reason, message, exit_code = (
        failed.get("reason", ""),
        failed.get("message", ""),
        terminated.get("exitCode"),
    )
    if reason != "DeadlineExceeded":
        reason = terminated.get("reason") or reason or "Error"
        if exit_code is not None:
            message = terminated.get("message") or f"the container exited with code {exit_code}"
    return WorkloadStatus(
        state=WorkloadState.failed,
        reason=reason,
        message=message,
        exit_code=exit_code,
        started_at=started,
        finished_at=parse_time(failed.get("lastTransitionTime")),
    )


def belongs_to(event: dict[str, Any], workload: str) -> bool:
    """Whether an event is about the workload itself or one of its pods (or, for a Deployment, replica sets).

    Resource IDs contain no '-', so the `<workload>-` prefix never matches another workload's children.
    """
    involved = event.get("involvedObject") or {}
    name = involved.get("name", "")
    return name == workload or (involved.get("kind") in _CHILD_KINDS and name.startswith(f"{workload}-"))


def _event_order(event: dict[str, Any]) -> tuple[str, int]:
    metadata = event.get("metadata") or {}
    when = (
        event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("firstTimestamp")
        or metadata.get("creationTimestamp")
        or ""
    )
    version = str(metadata.get("resourceVersion", ""))
    return when, int(version) if version.isdigit() else 0


def runtime_events(events: list[dict[str, Any]], workload: str) -> list[RuntimeEvent]:
    """The workload's events, oldest first, newest last."""
    mine = sorted((e for e in events if belongs_to(e, workload)), key=_event_order)
    return [
        RuntimeEvent(
            at=parse_time(_event_order(event)[0] or None),
            type=event.get("type", "Normal"),
            reason=event.get("reason", ""),
            message=event.get("message", ""),
        )
        for event in mine
    ]


def creation_refusal(events: list[RuntimeEvent]) -> RuntimeEvent | None:
    """Why no pod exists, when its controller was refused one (e.g. the project quota is exhausted)."""
    refusals = [e for e in events if e.type == "Warning" and e.reason == "FailedCreate"]
    return refusals[-1] if refusals else None


def workload_status(
    workload: dict[str, Any],
    pods: list[dict[str, Any]],
    services: list[dict[str, Any]],
    node_host: str,
    events: list[RuntimeEvent] | None = None,
    outcome: Callable[[dict[str, Any], dict[str, Any] | None], WorkloadStatus | None] | None = None,
) -> WorkloadStatus:
    """Status of a workload's controller from its newest pod; `outcome` reads a finished controller (a Job),
    `events` explain a missing pod."""
    pod = newest_pod(pods)
    if outcome is not None:
        finished = outcome(workload, pod)
        if finished is not None:
            return finished
    if pod is not None:
        return pod_status(pod, services, node_host)
    refusal = creation_refusal(events or [])
    if refusal is not None:
        return WorkloadStatus(state=WorkloadState.pending, reason=refusal.reason, message=refusal.message)
    return WorkloadStatus(state=WorkloadState.pending, message="waiting for its pod to be created")
