"""ContainerWorkflow: one per container, from its start time to deletion (manual 5.4.1-5.4.3).

On top of the shared lifecycle (workflows/workload.py) a container waits for its start time, holds its
reservation while it runs (and after a failure, until someone deletes it: its owner may want to look), is
looked at rarely once running, and stops at its end time as at a delete.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.containers import ContainerRecords
    from models.containers import ContainerInput, ContainerState, ContainerStatus, ContainerTimings
    from models.workloads import WorkloadState, WorkloadStatus
    from workflows.workload import WorkloadLifecycle, workload_workflow_id

KIND = "container"


def workflow_id(container_id: str) -> str:
    return workload_workflow_id(KIND, container_id)


@workflow.defn
class ContainerWorkflow(WorkloadLifecycle):
    kind = KIND
    status_enum = ContainerStatus
    record_activity = ContainerRecords.record_container
    state_class = ContainerState
    _state: ContainerState
    _timings: ContainerTimings

    @workflow.init
    def __init__(self, input: ContainerInput) -> None:
        self._open(
            input,
            status=ContainerStatus.scheduled,
            start_at=input.start_at,
            end_at=input.end_at,
            ssh_key_id=input.ssh_key_id,
        )

    @workflow.run
    async def run(self, input: ContainerInput) -> ContainerStatus:
        return ContainerStatus(await self._live())

    # ---- what a container does its own way ---------------------------------------------------

    def _stop_reason(self) -> str | None:
        state = self._state
        reason = super()._stop_reason()
        if reason is None and state.end_at is not None and workflow.now() >= state.end_at:
            return "its end time has come"
        return reason

    def _deadline(self, wake_in: timedelta | None) -> datetime | None:
        """Waits also end at the container's end time."""
        times = [t for t in (self._state.end_at, super()._deadline(wake_in)) if t is not None]
        return min(times) if times else None

    async def _step(self) -> None:
        state = self._state
        if state.status != ContainerStatus.scheduled:
            await super()._step()
        elif state.start_at is not None and workflow.now() < state.start_at:
            self._set(ContainerStatus.scheduled, "", f"starts at {state.start_at:%Y-%m-%d %H:%M} UTC")
            await self._record()
            await self._wait_for(lambda: False, state.start_at - workflow.now())
        else:
            await self._request_admission()

    async def _watch(self) -> None:
        if self._state.status == ContainerStatus.creating:
            await super()._watch()
        else:  # running or failed: look rarely, keep the reservation until deleted
            await self._wait_for(lambda: False, self._timings.check_interval)
            await self._look()

    async def _follow(self, status: WorkloadStatus) -> None:
        state = self._state
        if status.state == WorkloadState.running:
            state.endpoints = status.endpoints
            self._set(ContainerStatus.running, "", "; ".join(status.unsupported))
            await self._report_running()
        elif status.state in (WorkloadState.pending, WorkloadState.creating):
            self._set(ContainerStatus.creating, status.reason, status.message)
        elif status.state == WorkloadState.gone:
            # Removed behind our back: apply it again, the reservation is still ours.
            state.applied = False
            self._set(ContainerStatus.creating, "Recreating", "the runtime held nothing for it")
        else:  # failed, or a container that ended on its own
            state.endpoints = []
            self._set(ContainerStatus.failed, status.reason or "Failed", status.message)

    def _stopped(self) -> None:
        self._state.endpoints = []
        super()._stopped()

    def _detail_lines(self) -> list[str]:
        end_at = self._state.end_at
        return [] if end_at is None else [f"ends {end_at:%Y-%m-%d %H:%M} UTC"]

    @workflow.query
    def describe(self) -> ContainerState:
        return self._state
