"""The bookkeeping of a cluster's pods: pure and deterministic, so the workflow (workflows/cluster.py) decides
with it and acts on what it decides. Nothing here waits or calls anything."""

from __future__ import annotations

from datetime import datetime

from models.clusters import (
    MEMBER_STATE_PHASES,
    ClusterMember,
    ClusterState,
    ClusterStatus,
    MemberPhase,
    member_resource_id,
    worker_name,
)
from models.workloads import WorkloadState, WorkloadStatus

ENDED = (ClusterStatus.failed, ClusterStatus.deleting, ClusterStatus.deleted)


def workers(state: ClusterState) -> list[ClusterMember]:
    return sorted((m for m in state.members if not m.is_launcher), key=lambda m: m.ordinal or 0)


def launcher(state: ClusterState) -> ClusterMember | None:
    return next((m for m in state.members if m.is_launcher), None)


def by_reservation(state: ClusterState, reservation: str) -> ClusterMember | None:
    return next((m for m in state.members if member_resource_id(state.id, m.name) == reservation), None)


def ready_hosts(state: ClusterState) -> list[str]:
    """The hostfile's hosts: ready workers by ordinal, never one waiting for quota or still starting."""
    return [w.name for w in workers(state) if w.phase == MemberPhase.running]


def update_counts(state: ClusterState) -> bool:
    """The manual's list shows launcher and workers as ready/total; True when they changed."""
    first, rest = launcher(state), workers(state)
    values = {
        "launcher_total": 1,
        "launcher_ready": int(first is not None and first.phase == MemberPhase.running),
        "workers_total": len([w for w in rest if w.phase != MemberPhase.draining]),
        "workers_ready": len([w for w in rest if w.phase == MemberPhase.running]),
    }
    if all(getattr(state, name) == value for name, value in values.items()):
        return False
    for name, value in values.items():
        setattr(state, name, value)
    return True


def rescale(state: ClusterState, containers: int) -> None:
    """Towards a new total: new workers join the end of the queue; the highest ordinals drain (those still
    queued are the highest, then those starting, then those running)."""
    wanted = containers - 1
    present = workers(state)
    if wanted > len(present):
        start = (present[-1].ordinal or 0) + 1 if present else 0
        state.members += [
            ClusterMember(name=worker_name(i), ordinal=i) for i in range(start, start + wanted - len(present))
        ]
    for member in present[wanted:]:
        member.phase, member.message = MemberPhase.draining, "scale-in: leaving the hostfile"
    state.containers = containers
    state.spec.roles[1].count = wanted
    state.scale_to = None


def follow(member: ClusterMember, status: WorkloadStatus, now: datetime) -> bool:
    """Take the runtime's word for one pod; True when that changed what is known of it."""
    before = member.model_dump()
    if status.state == WorkloadState.gone:
        # Removed behind the platform's back: made again, its reservation is still held.
        member.applied = False
        member.phase, member.reason, member.message = MemberPhase.reserved, "Recreating", "the pod was lost"
        member.started_at = None
        member.restarts += 1
    else:
        member.phase = MEMBER_STATE_PHASES[status.state]
        member.reason, member.message = status.reason, status.message
        if status.state == WorkloadState.running:
            member.started_at = member.started_at or status.started_at or now
            member.endpoints = status.endpoints
            member.reason, member.message = "", "; ".join(status.unsupported)
    return member.model_dump() != before


def settled(state: ClusterState) -> tuple[ClusterStatus, str, str] | None:
    """Where the cluster stands from its pods (None once it fails or goes): waiting while the launcher waits
    for quota, running once the launcher and a worker in the hostfile are ready, scaling while new workers
    start, creating otherwise. Also keeps the cluster's queue place, the launcher's."""
    if state.status in ENDED:
        return None
    first, rest = launcher(state), workers(state)
    queued = [w for w in rest if w.phase == MemberPhase.queued and w.requested]
    waiting_note = f"; {len(queued)} worker(s) wait for quota" if queued else ""
    if first is None or not first.admitted:
        state.queue_position = first.queue_position if first else None
        reason = "Queued" if state.queue_position else "Admitting"
        return ClusterStatus.waiting, reason, first.message if first else ""
    state.queue_position = None
    in_flight = any(w.phase in (MemberPhase.reserved, MemberPhase.pending) for w in rest)
    ready = first.phase == MemberPhase.running and bool(state.hosts)
    if ready and state.status == ClusterStatus.scaling and in_flight:
        return ClusterStatus.scaling, "", f"scaling to {state.containers} containers{waiting_note}"
    if ready:
        return ClusterStatus.running, "", f"{len(state.hosts)} worker(s) in the hostfile{waiting_note}"
    # The first pod that says what it waits for (an image pull, a service being installed) speaks for all.
    trouble = next(
        (m for m in state.members if m.phase == MemberPhase.pending and (m.reason or m.message)), None
    )
    if trouble is not None:
        return ClusterStatus.creating, trouble.reason, f"{trouble.name}: {trouble.message}"
    return ClusterStatus.creating, "", "starting the launcher and the workers"
