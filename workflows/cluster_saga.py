"""What a training cluster's workflow does to the runtime, the project's ledger and the read model, apart
from its main loop (workflows/cluster.py): status changes, the teardown that is also the saga's
compensation, one pod's removal, releases, interruptible runtime calls, waits and records."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.clusters import ClusterActivities
    from activities.workloads import WorkloadActivities, WorkloadRef
    from models.clusters import (
        ClusterInput,
        ClusterMember,
        ClusterRef,
        ClusterState,
        ClusterStatus,
        ClusterTimings,
        member_resource_id,
    )
    from models.lifecycle import WorkloadEvent
    from models.workloads import WorkloadState
    from workflows import cluster_members as members
    from workflows import search_attributes
    from workflows.workload import (
        PROJECT_RELEASE,
        RECORD_RETRY,
        RECORD_TIMEOUT,
        delete_until_gone,
        failure_of,
        interruptible,
        project_workflow_id,
    )

KIND = "cluster"


class Failed(Exception):
    """The cluster cannot run: its compensation follows."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


class ClusterSaga(ABC):
    _input: ClusterInput
    _state: ClusterState
    _timings: ClusterTimings
    _recorded_version: int
    _wakeups: int
    _removal_note: str

    @abstractmethod
    def _stop_reason(self) -> str | None: ...

    @abstractmethod
    def _stopping(self) -> bool: ...

    def _ref(self, member: ClusterMember) -> WorkloadRef:
        state = self._state
        return WorkloadRef(
            project_id=state.project_id, kind=KIND, resource_id=member_resource_id(state.id, member.name)
        )

    def _count(self) -> None:
        if members.update_counts(self._state):
            self._touch()

    def _set(self, status: ClusterStatus, reason: str, message: str) -> None:
        state = self._state
        if (state.status, state.reason, state.message) == (status, reason, message):
            return
        if state.status != status:
            search_attributes.status_changed(status.value)
        state.status, state.reason, state.message = status, reason, message
        state.version += 1

    def _touch(self) -> None:
        self._state.version += 1

    # ---- teardown and compensation ---------------------------------------------------------------

    async def _tear_down(self, final: ClusterStatus) -> None:
        """Everything created is deleted and everything reserved released; bounded, so it always ends."""
        state = self._state
        if final == ClusterStatus.deleted and state.status != ClusterStatus.deleting:
            self._set(ClusterStatus.deleting, "", self._stop_reason() or "deleted")
            await self._record()
        if state.prepared or any(m.applied for m in state.members):
            ref = ClusterRef(project_id=state.project_id, cluster_id=state.id)
            self._removal_note = await delete_until_gone(
                ClusterActivities.delete_cluster, ref, self._timings, lambda gone: bool(gone)
            )
        for member in list(state.members):
            await self._release(member)
        state.members, state.prepared, state.hosts = [], False, []
        self._count()
        message = state.message if final == ClusterStatus.failed else self._stop_reason() or state.message
        note = f"; {self._removal_note}" if self._removal_note else ""
        self._set(final, state.reason if final == ClusterStatus.failed else "", f"{message}{note}")

    async def _remove(self, member: ClusterMember) -> None:
        """Delete one pod and wait until the runtime holds nothing of it (its GPUs are free again)."""
        if not member.applied:
            return
        note = await delete_until_gone(
            WorkloadActivities.delete_workload,
            self._ref(member),
            self._timings,
            lambda status: status.state == WorkloadState.gone,
        )
        if note:
            workflow.logger.warning("cluster %s: %s: %s", self._state.id, member.name, note)
        member.applied = False

    async def _release(self, member: ClusterMember) -> None:
        """Give its reservation back, or take its request out of the queue (the ledger does either)."""
        if member.requested:
            await self._signal_project(PROJECT_RELEASE, member)
        member.requested = member.admitted = False
        member.queue_position = None

    async def _signal_project(self, signal: str, member: ClusterMember) -> None:
        state = self._state
        handle = workflow.get_external_workflow_handle(project_workflow_id(state.project_id))
        try:
            await handle.signal(signal, WorkloadEvent(resource_id=member_resource_id(state.id, member.name)))
        except Exception:
            workflow.logger.warning("project %s is gone; %s not delivered", state.project_id, signal)

    # ---- the runtime and the read model -----------------------------------------------------------

    async def _runtime(
        self, activity: Callable[..., Any], arg: Any, retry: Any, reads_only: bool = False
    ) -> Any:
        try:
            return await interruptible(
                activity, arg, self._timings.apply_timeout, retry, self._stopping, reads_only=reads_only
            )
        except ActivityError as exc:
            raise Failed(*failure_of(exc)) from exc

    async def _wait(self, wake_in: timedelta) -> None:
        wakeups = self._wakeups
        deadline = workflow.now() + wake_in
        if self._state.end_at is not None:
            deadline = min(deadline, self._state.end_at)
        timeout = deadline - workflow.now()
        if timeout <= timedelta(0):
            return
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(lambda: self._wakeups != wakeups, timeout=timeout)

    async def _record(self) -> None:
        self._count()
        if self._recorded_version < self._state.version:
            version = self._state.version
            self._state.as_of = workflow.now()
            try:
                await workflow.execute_activity_method(
                    ClusterActivities.record_cluster,
                    self._state,
                    start_to_close_timeout=RECORD_TIMEOUT,
                    retry_policy=RECORD_RETRY,
                )
            except ActivityError:
                workflow.logger.exception("cluster %s: could not record", self._state.id)
            self._recorded_version = max(self._recorded_version, version)
        workflow.set_current_details(self._details())

    def _details(self) -> str:
        state, resources = self._state, self._state.spec.main.resources
        lines = [
            f"**{state.name}** ({state.type}, {state.spec.main.image}) — {state.status}",
            f"launcher {state.launcher_ready}/{state.launcher_total}, workers {state.workers_ready}/"
            f"{state.workers_total}; hostfile generation {state.hostfile_generation}",
            f"per pod {resources.gpu} GPU, {resources.vcpu:g} vCPU, {resources.ram_gb:g} GB RAM; "
            f"owner {state.owner}",
        ]
        if state.message or state.reason:
            lines.append(": ".join(part for part in (state.reason, state.message) if part))
        return "\n".join(lines)

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or (
            info.get_current_history_length() > self._input.max_history_events
        )
