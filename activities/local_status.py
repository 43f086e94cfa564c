"""What a local workload's folder says of it: its status, read from the records the runtime and the
supervisor keep there (activities/local.py describes the folder)."""

from __future__ import annotations

from collections.abc import Callable

from activities.local_environment import LOOPBACK, serves, service_view, unsupported
from activities.local_folder import RESTORED_FILE, ExitRecord, LaunchRecord, WorkloadFolder
from activities.runtime import RuntimeKind
from models.workloads import Endpoint, WorkloadSpec, WorkloadState, WorkloadStatus

MESSAGE_LIMIT = 300


def status_of(
    folder: WorkloadFolder,
    spec: WorkloadSpec,
    kind: RuntimeKind,
    running: Callable[[LaunchRecord], bool],
    gpu_shortage: Callable[[WorkloadSpec], str],
) -> WorkloadStatus:
    endpoints = [Endpoint(name=port.name, port=port.port, host=LOOPBACK) for port in spec.main.ports]
    notes = unsupported(spec, kind, restored=(folder.path / RESTORED_FILE).exists())
    finished = folder.finished()
    launch = folder.launch()
    if finished is None and launch is not None and running(launch):
        state, message = WorkloadState.running, ""
        if serves(spec):  # running once every service listens or has said why it cannot
            view = service_view(folder.path, spec)
            endpoints, notes = view.endpoints, notes + view.notes
            if view.waiting:
                state, message = WorkloadState.creating, view.waiting
        return WorkloadStatus(
            state=state,
            message=message,
            started_at=launch.started_at,
            endpoints=endpoints,
            gpus=launch.gpus,
            unsupported=notes,
        )
    finished = finished or folder.finished()  # it may have ended between the two reads
    if finished is not None:
        return _finished(folder, kind, launch, finished, notes)
    if launch is not None:
        return WorkloadStatus(
            state=WorkloadState.failed,
            reason="Lost",
            message="the process ended without recording how (the host restarted or it was killed "
            "from outside); applying it again starts it anew",
            started_at=launch.started_at,
            unsupported=notes,
        )
    if spec.main.resources.gpu:
        reason, message = "Unschedulable", gpu_shortage(spec)
    else:
        reason, message = "", "not started yet: the next apply starts it"
    return WorkloadStatus(
        state=WorkloadState.pending,
        reason=reason,
        message=message,
        endpoints=[] if serves(spec) else endpoints,  # nothing listens before it runs
        unsupported=notes,
    )


def _finished(
    folder: WorkloadFolder,
    kind: RuntimeKind,
    launch: LaunchRecord | None,
    record: ExitRecord,
    notes: list[str],
) -> WorkloadStatus:
    code = record.exit_code
    if record.reason:
        state, reason, message = WorkloadState.failed, record.reason, record.message
    elif code == 0 and kind.runs_to_completion:
        state, reason, message = WorkloadState.succeeded, "Completed", ""
    else:
        # A workload meant to run until deleted has failed when it ends, even with exit code 0.
        state, reason = WorkloadState.failed, "Completed" if code == 0 else "Error"
        message = folder.last_log_line() or record.message or f"exited with code {code}"
    return WorkloadStatus(
        state=state,
        reason=reason,
        message=message[:MESSAGE_LIMIT],
        exit_code=code,
        started_at=launch.started_at if launch else None,
        finished_at=record.finished_at,
        gpus=launch.gpus if launch else [],
        unsupported=notes,
    )
