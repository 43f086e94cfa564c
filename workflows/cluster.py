"""ClusterWorkflow: one per training cluster (manual 6.2), from its start time to deletion, as one saga.

Each pod (the launcher, then the workers by ordinal) asks the project's ledger for its own reservation; a
worker that does not fit waits in the queue with its place. Admitted pods are created; once the launcher and
a worker are ready the hostfile, which lists only ready workers, is written into the launcher; a lost worker
is re-created under its old name. Scaling is the same loop towards a new count: scale-out queues, creates,
waits until ready, then rewrites the hostfile; scale-in takes the highest ordinals out of the hostfile
first, then deletes them and releases their reservations. Scale requests are serialised here; the last wins.

A delete always wins: it interrupts whatever runs, everything created is deleted, everything reserved
released. A failure does the same (the compensation) and ends the cluster `failed` with its reason.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.clusters import ClusterActivities
    from activities.workloads import WorkloadActivities
    from models.clusters import (
        LAUNCHER,
        ClusterHosts,
        ClusterInput,
        ClusterMember,
        ClusterPlace,
        ClusterScale,
        ClusterScaleAnswer,
        ClusterState,
        ClusterStatus,
        MemberPhase,
        member_resource_id,
        member_spec,
        worker_name,
    )
    from models.lifecycle import (
        PROJECT_ADMISSION_REQUEST_SIGNAL,
        WORKLOAD_ADMISSION_SIGNAL,
        WORKLOAD_ADMITTED_SIGNAL,
        WORKLOAD_SHUTDOWN_SIGNAL,
        AdmissionAnswer,
        AdmitRequest,
        ShutdownNotice,
        WorkloadEvent,
    )
    from models.workload_lifecycle import WorkloadDelete
    from models.workloads import WorkloadStatus
    from workflows import cluster_members as members
    from workflows import search_attributes
    from workflows.cluster_saga import KIND, ClusterSaga, Failed
    from workflows.workload import (
        APPLY_RETRY,
        CANCELLED_MESSAGE,
        INTERRUPTED,
        LOOK_RETRY,
        POLL_BACKOFF,
        PROJECT_WORKLOAD_RUNNING,
        SHUTDOWN_MESSAGES,
        DeleteAnswer,
        project_workflow_id,
        workload_workflow_id,
    )


def workflow_id(cluster_id: str) -> str:
    return workload_workflow_id(KIND, cluster_id)


@workflow.defn
class ClusterWorkflow(ClusterSaga):
    kind = KIND

    @workflow.init
    def __init__(self, input: ClusterInput) -> None:
        self._input, self._timings = input, input.timings
        spec = input.spec
        workers = spec.roles[1].count
        self._state = input.resume or ClusterState(
            id=input.id,
            project_id=input.project_id,
            owner_id=input.owner_id,
            owner=input.owner,
            name=spec.name,
            spec_id=input.spec_id,
            spec=spec,
            created_at=input.created_at,
            status=ClusterStatus.scheduled,
            type=input.type,
            description=input.description,
            containers=workers + 1,
            start_at=input.start_at,
            end_at=input.end_at,
            ssh_key_id=input.ssh_key_id,
            slots=max(spec.main.resources.gpu, 1),
            members=[ClusterMember(name=LAUNCHER)]
            + [ClusterMember(name=worker_name(i), ordinal=i) for i in range(workers)],
        )
        self._recorded_version = -1
        self._wakeups = 0
        self._poll_delay = self._timings.first_poll
        self._removal_note = ""

    @workflow.run
    async def run(self, input: ClusterInput) -> ClusterStatus:
        state = self._state
        search_attributes.announce(state.project_id, state.owner, KIND, state.status)
        try:
            while True:
                await self._record()
                if self._over():
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    await self._record()
                    return ClusterStatus(state.status)
                if not self._stopping() and self._should_continue_as_new():
                    await workflow.wait_condition(
                        lambda: workflow.all_handlers_finished() or self._stop_reason() is not None
                    )
                    if self._stop_reason() is None:
                        await self._record()
                        workflow.continue_as_new(self._input.model_copy(update={"resume": state}))
                    continue
                if self._stopping():
                    await self._tear_down(ClusterStatus.deleted)
                    continue
                if state.status == ClusterStatus.failed:  # refused by the ledger: compensate
                    await self._tear_down(ClusterStatus.failed)
                    continue
                try:
                    await self._step()
                except Failed as failure:
                    self._set(ClusterStatus.failed, failure.reason, failure.message)
                    await self._record()
                    await self._tear_down(ClusterStatus.failed)
        except asyncio.CancelledError:
            state.cancelled = True
            if not self._over():
                await self._tear_down(ClusterStatus.deleted)
            await self._record()
            raise

    # ---- where it stands ------------------------------------------------------------------------

    def _over(self) -> bool:
        state = self._state
        return state.status == ClusterStatus.deleted or (
            state.status == ClusterStatus.failed and not state.members and not state.prepared
        )

    def _stop_reason(self) -> str | None:
        state = self._state
        if state.cancelled:
            return CANCELLED_MESSAGE
        if state.delete_requested_by:
            return f"deleted by {state.delete_requested_by}"
        if state.shutdown_reason:
            return SHUTDOWN_MESSAGES.get(state.shutdown_reason, state.shutdown_reason)
        if state.end_at is not None and workflow.now() >= state.end_at:
            return "its end time has come"
        return None

    def _stopping(self) -> bool:
        if self._state.status == ClusterStatus.deleting:
            return True
        return self._stop_reason() is not None and self._state.status != ClusterStatus.failed

    def _workers(self) -> list[ClusterMember]:
        return members.workers(self._state)

    def _launcher(self) -> ClusterMember | None:
        return members.launcher(self._state)

    # ---- the saga's steps -------------------------------------------------------------------------

    async def _step(self) -> None:
        state = self._state
        if state.status == ClusterStatus.scheduled:
            if state.start_at is not None and workflow.now() < state.start_at:
                self._set(ClusterStatus.scheduled, "", f"starts at {state.start_at:%Y-%m-%d %H:%M} UTC")
                await self._record()
                await self._wait(state.start_at - workflow.now())
                return
            self._set(ClusterStatus.waiting, "Admitting", "asking the project for quota, pod by pod")
        if state.scale_to is not None and not any(m.phase == MemberPhase.draining for m in state.members):
            self._rescale(state.scale_to)
        await self._drain()
        await self._request_admissions()
        launcher = self._launcher()
        if launcher is not None and launcher.admitted and not state.prepared:
            await self._prepare()
        await self._apply_admitted()
        await self._look()
        await self._publish_hosts()
        self._settle_status()
        await self._record()
        busy = any(
            m.phase in (MemberPhase.reserved, MemberPhase.pending, MemberPhase.failed, MemberPhase.draining)
            for m in state.members
        )
        if busy or state.status in (ClusterStatus.creating, ClusterStatus.scaling):
            await self._wait(self._poll_delay)
            self._poll_delay = min(self._poll_delay * POLL_BACKOFF, self._timings.ready_max_poll)
        else:
            self._poll_delay = self._timings.first_poll
            await self._wait(self._timings.check_interval)

    def _rescale(self, containers: int) -> None:
        members.rescale(self._state, containers)
        self._set(ClusterStatus.scaling, "", f"scaling to {containers} containers")
        self._poll_delay = self._timings.first_poll

    async def _drain(self) -> None:
        """Scale-in: out of the hostfile first, then deleted, then their reservations released."""
        state = self._state
        leaving = [m for m in state.members if m.phase == MemberPhase.draining]
        if not leaving:
            return
        names = {m.name for m in leaving}
        await self._write_hosts([host for host in state.hosts if host not in names])
        for member in sorted(leaving, key=lambda m: -(m.ordinal or 0)):
            await self._remove(member)
            await self._release(member)
            state.members.remove(member)
        self._touch()

    async def _request_admissions(self) -> None:
        """Every pod not yet asked for asks now, the launcher first; the ledger answers in that order."""
        state = self._state
        for member in state.members:
            if member.requested or member.phase == MemberPhase.draining:
                continue
            request = AdmitRequest(
                resource_id=member_resource_id(state.id, member.name),
                kind=KIND,
                workflow_id=workflow.info().workflow_id,
                owner_id=state.owner_id,
                request=state.spec.main.resources.quota(),
            )
            project = workflow.get_external_workflow_handle(project_workflow_id(state.project_id))
            try:
                await project.signal(PROJECT_ADMISSION_REQUEST_SIGNAL, request)
            except Exception as exc:
                raise Failed("Conflict", f"project {state.project_id} has no running lifecycle") from exc
            member.requested = True
            member.message = "asking the project for quota"
            self._touch()

    async def _prepare(self) -> None:
        state = self._state
        place = ClusterPlace(
            project_id=state.project_id,
            cluster_id=state.id,
            owner=state.owner,
            name=state.name,
            type=state.type,
        )
        state.prepared = True  # even an interrupted call may have made part of it: the teardown removes it
        key = await self._runtime(ClusterActivities.prepare_cluster, place, APPLY_RETRY)
        if key is not INTERRUPTED:
            state.public_key = key
            self._touch()

    async def _apply_admitted(self) -> None:
        state = self._state
        if not state.public_key:
            return
        for member in state.members:
            if not member.admitted or member.applied or member.phase == MemberPhase.draining:
                continue
            member.applied = True
            status = await self._runtime(
                WorkloadActivities.apply_workload, member_spec(state, member), APPLY_RETRY
            )
            if status is INTERRUPTED:
                return
            member.phase = MemberPhase.pending
            self._follow(member, status)
            self._touch()

    async def _look(self) -> None:
        state = self._state
        applied = [m for m in state.members if m.applied and m.phase != MemberPhase.draining]
        if not applied:
            return
        refs = [self._ref(m) for m in applied]
        statuses = await self._runtime(ClusterActivities.member_statuses, refs, LOOK_RETRY, reads_only=True)
        if statuses is INTERRUPTED:
            return
        for member, status in zip(applied, statuses, strict=True):
            self._follow(member, status)
        for member in applied:
            if member.phase == MemberPhase.failed:
                await self._recover(member)
            elif member.phase == MemberPhase.running and not member.reported:
                await self._signal_project(PROJECT_WORKLOAD_RUNNING, member)
                member.reported = True

    def _follow(self, member: ClusterMember, status: WorkloadStatus) -> None:
        if members.follow(member, status, workflow.now()):
            self._touch()

    async def _recover(self, member: ClusterMember) -> None:
        """A pod that ran once and failed is lost: delete it and make it again. One that never ran cannot
        (its image or spec does not start), and neither can the cluster."""
        if member.started_at is None:
            raise Failed(member.reason or "Failed", f"{member.name}: {member.message or 'it did not start'}")
        await self._remove(member)
        member.phase, member.started_at, member.restarts = MemberPhase.reserved, None, member.restarts + 1
        member.reason, member.message = "Recreating", "the pod failed; it is created again"
        self._touch()

    async def _publish_hosts(self) -> None:
        await self._write_hosts(members.ready_hosts(self._state))

    async def _write_hosts(self, hosts: list[str]) -> None:
        """Into the launcher, only when the set changed (or the launcher is new), with a new generation."""
        state, launcher = self._state, self._launcher()
        if launcher is None or launcher.phase != MemberPhase.running:
            if hosts != state.hosts and set(hosts) <= set(state.hosts):
                state.hosts = hosts  # nothing to write into yet; a launcher that starts gets the rest
                self._touch()
            return
        if (
            hosts == state.hosts
            and state.hosts_written_for == launcher.started_at
            and state.hostfile_generation
        ):
            return
        published = ClusterHosts(
            project_id=state.project_id,
            cluster_id=state.id,
            owner=state.owner,
            type=state.type,
            hosts=hosts,
            slots=state.slots,
            generation=state.hostfile_generation + 1,
        )
        if await self._runtime(ClusterActivities.publish_hosts, published, APPLY_RETRY) is INTERRUPTED:
            return
        state.hosts, state.hostfile_generation = hosts, published.generation
        state.hosts_written_for = launcher.started_at
        self._touch()

    def _settle_status(self) -> None:
        settled = members.settled(self._state)
        if settled is not None:
            self._set(*settled)

    # ---- handlers: they change state, the main loop acts --------------------------------------------

    @workflow.signal(name=WORKLOAD_ADMISSION_SIGNAL)
    def admission_answered(self, answer: AdmissionAnswer) -> None:
        member = members.by_reservation(self._state, answer.resource_id)
        self._wakeups += 1
        if member is None or member.admitted or member.phase == MemberPhase.draining:
            return
        if answer.refusal:
            member.requested = False  # the ledger holds nothing for it
            if self._state.status not in (ClusterStatus.deleting, ClusterStatus.deleted):
                self._state.scale_to = None
                self._set(ClusterStatus.failed, answer.refusal, f"{member.name}: {answer.reason}")
            return
        if answer.admitted:
            member.admitted, member.queue_position = True, None
            member.phase, member.message = MemberPhase.reserved, "admitted"
        else:
            member.queue_position = answer.position
            member.message = f"{answer.reason}, position {answer.position}"
        self._touch()

    @workflow.signal(name=WORKLOAD_ADMITTED_SIGNAL)
    def project_admitted(self, event: WorkloadEvent) -> None:
        member = members.by_reservation(self._state, event.resource_id)
        self._wakeups += 1
        if member is None or member.phase == MemberPhase.draining:
            return
        member.admitted = True
        member.queue_position = None
        member.phase, member.message = MemberPhase.reserved, "admitted from the queue"
        self._touch()

    @workflow.signal(name=WORKLOAD_SHUTDOWN_SIGNAL)
    def project_shutdown(self, notice: ShutdownNotice) -> None:
        self._state.shutdown_reason = notice.reason
        self._wakeups += 1

    @workflow.update
    async def recorded(self) -> None:
        """Answers once the read model holds the cluster; the API starts it with update-with-start."""
        await workflow.wait_condition(lambda: self._recorded_version >= 0)

    @workflow.update
    async def delete(self, request: WorkloadDelete) -> DeleteAnswer:
        """Stops it; answers once the teardown has begun."""
        state = self._state
        state.delete_requested_by = state.delete_requested_by or request.username
        self._wakeups += 1
        await workflow.wait_condition(
            lambda: state.status in (ClusterStatus.deleting, ClusterStatus.deleted) or self._over()
        )
        return DeleteAnswer(status=state.status, reason=state.reason, message=state.message)

    @delete.validator
    def validate_delete(self, request: WorkloadDelete) -> None:
        if self._state.status == ClusterStatus.deleted:
            raise ApplicationError("the cluster is already deleted", type="Conflict", non_retryable=True)

    @workflow.update
    async def scale(self, request: ClusterScale) -> ClusterScaleAnswer:
        """Accepted while it runs (manual 6.2.4); the main loop carries it out, the last request wins."""
        state = self._state
        state.scale_to = request.containers
        self._wakeups += 1
        await workflow.wait_condition(lambda: state.scale_to is None or self._stopping())
        return ClusterScaleAnswer(containers=state.containers, status=state.status, message=state.message)

    @scale.validator
    def validate_scale(self, request: ClusterScale) -> None:
        state = self._state
        if state.status not in (ClusterStatus.running, ClusterStatus.scaling) or self._stopping():
            raise ApplicationError(
                f"containers: a cluster can be scaled while it runs; this one is {state.status}",
                type="Conflict",
                non_retryable=True,
            )

    @workflow.query
    def describe(self) -> ClusterState:
        return self._state
